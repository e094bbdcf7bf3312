"""The keypoint head of the CapeFormer lineage (CapeFormer → PoseAnything/GraphCape → CapeX).

Mirrors ``TwoStageHead`` (``capeformer/models/keypoint_heads/two_stage_head.py``) and its
copies ``PoseHead`` (PoseAnything ``models/models/keypoint_heads/head.py``, CapeX same path).
The three differ only through :class:`LineageHeadConfig` switches:

===================  ==============  ================  =============
switch               CapeFormer      PoseAnything      CapeX
===================  ==============  ================  =============
``token_source``     ``"image"``     ``"image"``       ``"text"``
``support_order``    ``"sine"``      ``"zeros"``       ``"zeros"``
``decoder_ffn``      ``"linear"``    ``"graph_pre"``   ``"graph_pre"``
``target_sigma``     2               1                 1
===================  ==============  ================  =============

State-dict keys equal the official ones relative to ``keypoint_head.`` (``input_proj``,
``query_proj`` or ``text_proj``, ``kpt_branch.N.mlp.*``, ``transformer.*``); the head has no
buffers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines.common.geometry import normalized_to_image
from baselines.common.lineage_transformer import (
    SupportRefineTransformer,
    TokenDecodeMLP,
    TransformerConfig,
    inverse_sigmoid,
    pad_skeleton,
)
from baselines.common.positional import sine_grid_embedding, support_order_embedding
from baselines.common.support_tokens import msra_support_targets, pool_support_tokens, shot_mask


@dataclass(frozen=True)
class LineageHeadConfig:
    """Configuration of a lineage head; defaults are the official CapeFormer sizes.

    Attributes:
        in_channels: query backbone channels (``input_proj`` input; 2048 ResNet-50, 768 SwinV2).
        token_in_channels: width of the raw support tokens (pooled support features or text
            embeddings); None = ``in_channels``.
        token_source: ``"image"`` (``query_proj``) or ``"text"`` (``text_proj``).
        support_order: support order embedding, ``"sine"`` or ``"zeros"``.
        d_model: token width E (= 2 × positional ``num_feats``).
        nhead: attention heads.
        num_encoder_layers: encoder depth.
        num_decoder_layers: decoder depth (= number of ``kpt_branch`` copies).
        dim_feedforward: FFN width.
        dropout: dropout probability.
        similarity_proj_dim: proposal generator projection width.
        dynamic_proj_dim: proposal generator dynamic projection width.
        activation: FFN activation.
        decoder_ffn: ``"linear"`` | ``"graph_pre"`` | ``"graph_none"``.
        with_heatmap_loss: add the similarity-map heatmap loss.
        heatmap_loss_weight: its weight.
        max_keypoints: padded keypoint slots (official ``max_kpt_num``); the CapeFormer order
            embedding depends on it, so inference pads to this many slots.
        input_size: crop side, px.
        heatmap_size: support/target heatmap side, cells.
        target_sigma: MSRA σ of the support/target heatmaps, cells.
    """

    in_channels: int = 2048
    token_in_channels: int | None = None
    token_source: str = "image"
    support_order: str = "sine"
    d_model: int = 256
    nhead: int = 8
    num_encoder_layers: int = 3
    num_decoder_layers: int = 3
    dim_feedforward: int = 2048
    dropout: float = 0.1
    similarity_proj_dim: int = 256
    dynamic_proj_dim: int = 128
    activation: str = "relu"
    decoder_ffn: str = "linear"
    with_heatmap_loss: bool = True
    heatmap_loss_weight: float = 2.0
    max_keypoints: int = 100
    input_size: int = 256
    heatmap_size: int = 64
    target_sigma: int = 2

    def __post_init__(self) -> None:
        if self.token_source not in ("image", "text"):
            raise ValueError(f"token_source must be 'image' or 'text', got {self.token_source!r}")
        if self.support_order not in ("sine", "zeros"):
            raise ValueError(f"support_order must be 'sine' or 'zeros', got {self.support_order!r}")
        self.transformer_config()  # validates the transformer switches early

    @property
    def num_feats(self) -> int:
        """Sine features per axis (official ``positional_encoding.num_feats``)."""
        return self.d_model // 2

    @property
    def token_channels(self) -> int:
        return self.in_channels if self.token_in_channels is None else self.token_in_channels

    def transformer_config(self) -> TransformerConfig:
        names = {f.name for f in fields(TransformerConfig)}
        return TransformerConfig(**{n: getattr(self, n) for n in names})

    @classmethod
    def from_official(cls, head_cfg: dict, **overrides):
        """Build from an official mmpose ``keypoint_head`` config dict (as in golden sidecars).

        Args:
            head_cfg: dict with ``in_channels`` (or ``img_in_channels``/``text_in_channels``),
                ``transformer`` (d_model, nhead, …, ``graph_decoder``), ``positional_encoding``,
                ``num_decoder_layer``, ``with_heatmap_loss``, ``heatmap_loss_weight``.
            **overrides: any other field (e.g. ``target_sigma``, ``max_keypoints``).

        Returns:
            an instance of ``cls``.
        """
        t = dict(head_cfg.get("transformer", {}))
        if t.get("normalize_before", False):
            raise ValueError("normalize_before=True is not used by any official config")
        if not t.get("return_intermediate_dec", True):
            raise ValueError("return_intermediate_dec=False is not used by any official config")
        if head_cfg.get("share_kpt_branch", False):
            raise ValueError("share_kpt_branch=True is not supported")
        if head_cfg.get("support_order_dropout", -1) != -1:
            raise ValueError("support_order_dropout is not supported (every config uses -1)")
        if head_cfg.get("support_embedding_type", "fixed") != "fixed":
            raise ValueError("only support_embedding_type='fixed' is supported")
        kw: dict = {}
        if "text_in_channels" in head_cfg:
            kw.update(in_channels=head_cfg["img_in_channels"], token_in_channels=head_cfg["text_in_channels"],
                      token_source="text")
        else:
            kw.update(in_channels=head_cfg["in_channels"])
        for name in ("d_model", "nhead", "num_encoder_layers", "num_decoder_layers", "dim_feedforward",
                     "dropout", "similarity_proj_dim", "dynamic_proj_dim", "activation"):
            if name in t:
                kw[name] = t[name]
        if "graph_decoder" in t or t.get("type") == "EncoderDecoder":
            graph = t.get("graph_decoder")
            if graph not in (None, "pre"):
                raise ValueError(f"graph_decoder={graph!r} is not used by any released config")
            kw["decoder_ffn"] = "graph_pre" if graph == "pre" else "graph_none"
        num_feats = head_cfg.get("positional_encoding", {}).get("num_feats")
        if num_feats is not None and 2 * num_feats != kw.get("d_model", cls.d_model):
            raise ValueError("positional num_feats must be d_model / 2")
        n_branch = head_cfg.get("num_decoder_layer")
        if n_branch is not None and n_branch != kw.get("num_decoder_layers", cls.num_decoder_layers):
            raise ValueError("num_decoder_layer must equal transformer.num_decoder_layers")
        for name in ("with_heatmap_loss", "heatmap_loss_weight"):
            if name in head_cfg:
                kw[name] = head_cfg[name]
        kw.update(overrides)
        return cls(**kw)


@dataclass
class LineageOutputs:
    """Everything one forward pass of a lineage head produces (official names).

    Attributes:
        output_kpts: float32[L, B, K, 2] per-layer keypoints, normalised crop coords (x, y).
        initial_proposals_for_loss: float32[B, K, 2] global soft-argmax proposals.
        similarity_map: float32[B, K, h, w] raw similarity logits.
        out_points: float32[L + 1, B, K, 2] decoder reference points (initial proposals first).
        outs_dec: float32[L, B, K, E] ``decoder.norm``-ed decoder outputs.
        memory: float32[B, E, h, w] encoder memory of the query image.
        adjacency: float32[B, 2, K, K] skeleton adjacency (graph decoder only, else None).
    """

    output_kpts: torch.Tensor
    initial_proposals_for_loss: torch.Tensor
    similarity_map: torch.Tensor
    out_points: torch.Tensor
    outs_dec: torch.Tensor
    memory: torch.Tensor
    adjacency: torch.Tensor | None

    @property
    def keypoints(self) -> torch.Tensor:
        """float32[B, K, 2]: the prediction (last decoder layer), normalised crop coords."""
        return self.output_kpts[-1]


def _as_mask(mask_s: torch.Tensor) -> torch.Tensor:
    """[B, K] or [B, K, 1] float/bool → float32[B, K]."""
    if mask_s.ndim == 3:
        mask_s = mask_s.squeeze(-1)
    return mask_s.to(torch.float32)


class LineageHead(nn.Module):
    """CapeFormer-lineage keypoint head: projections, transformer and keypoint branches.

    Args:
        cfg: head configuration (official sizes by default).
    """

    def __init__(self, cfg: LineageHeadConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.input_proj = nn.Conv2d(cfg.in_channels, d, kernel_size=1)
        # Official attribute names: CapeFormer/PoseAnything ``query_proj``, CapeX ``text_proj``.
        self.token_proj_name = "query_proj" if cfg.token_source == "image" else "text_proj"
        self.add_module(self.token_proj_name, nn.Linear(cfg.token_channels, d))
        self.kpt_branch = nn.ModuleList(TokenDecodeMLP(d, d) for _ in range(cfg.num_decoder_layers))
        self.transformer = SupportRefineTransformer(cfg.transformer_config())

    @property
    def token_proj(self) -> nn.Linear:
        return getattr(self, self.token_proj_name)

    def init_weights(self) -> None:
        """Official training initialisation (``TwoStageHead.init_weights`` / ``PoseHead.init_weights``).

        mmcv ``xavier_init(uniform)`` on every module with a ≥2-D ``weight`` (bias → 0; the
        ``nn.MultiheadAttention`` containers have no ``weight`` and keep their own init, their
        ``out_proj`` is re-initialised), then the last layer of every ``kpt_branch`` is zeroed so
        the decoder starts from the proposals. The official code runs the xavier pass twice
        (head, then transformer); one pass draws from the same distribution.
        """
        for module in self.modules():
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.dim() > 1:
                nn.init.xavier_uniform_(weight, gain=1)
                if getattr(module, "bias", None) is not None:
                    nn.init.constant_(module.bias, 0)
        for branch in self.kpt_branch:
            nn.init.constant_(branch.mlp[-1].weight, 0)
            nn.init.constant_(branch.mlp[-1].bias, 0)

    # ------------------------------------------------------------------ forward passes
    def forward(self, x: torch.Tensor, support_tokens: torch.Tensor, mask_s: torch.Tensor,
                skeleton=None) -> LineageOutputs:
        """Full forward from query features and raw support tokens.

        Args:
            x: float32[B, C, h, w] query backbone features.
            support_tokens: float32[B, K, C_tok] raw support tokens: pooled support features
                (:func:`pool_support_tokens`) or text embeddings (CapeX).
            mask_s: float/bool[B, K] or [B, K, 1] support mask (1 = keypoint present).
            skeleton: graph decoder only: padded int64[B, E, 2] (-1 padding), [E, 2] shared,
                or a length-B list of 0-based edge lists.

        Returns:
            :class:`LineageOutputs`.
        """
        cfg = self.cfg
        mask = _as_mask(mask_s)
        x = self.input_proj(x)
        bs, _, h, w = x.shape
        k = support_tokens.shape[1]
        pos = sine_grid_embedding(bs, h, w, cfg.num_feats, x.device)
        # The sine order embedding depends on the slot count (official max_kpt_num = 100): compute it for the
        # official slots and keep the first k. Slots past k are masked as keys everywhere and their outputs
        # are never read, so running on k slots gives the 100-slot result at a fraction of the cost.
        order = support_order_embedding(bs, max(k, cfg.max_keypoints), cfg.num_feats, cfg.support_order,
                                        x.device)[:, :k]
        tokens = self.token_proj(support_tokens * mask[..., None])
        edges = pad_skeleton(skeleton, bs) if cfg.decoder_ffn == "graph_pre" else None
        out = self.transformer(x, pos, tokens, order, ~mask.bool(), self.kpt_branch, edges)

        output_kpts = torch.stack([
            (self.kpt_branch[i](out["outs_dec"][i]) + inverse_sigmoid(out["out_points"][i])).sigmoid()
            for i in range(out["outs_dec"].shape[0])
        ])
        return LineageOutputs(
            output_kpts=output_kpts,
            initial_proposals_for_loss=out["initial_proposals_for_loss"],
            similarity_map=out["similarity_map"],
            out_points=torch.stack(out["out_points"]),
            outs_dec=out["outs_dec"],
            memory=out["memory"],
            adjacency=out["adjacency"],
        )

    def forward_support_images(self, x: torch.Tensor, feature_s: Sequence[torch.Tensor],
                               target_s: Sequence[torch.Tensor], mask_s: torch.Tensor,
                               skeleton=None) -> LineageOutputs:
        """Official call ``head(x, feature_s, target_s, mask_s[, skeleton])`` (image support).

        Args:
            x: float32[B, C, h, w] query backbone features.
            feature_s: S tensors float32[B, C, h_s, w_s] support features per shot.
            target_s: S tensors float32[B, K, H, W] support heatmaps per shot.
            mask_s: float[B, K, 1] product of the shots' target weights.
            skeleton: see :meth:`forward`.
        """
        return self.forward(x, pool_support_tokens(feature_s, target_s), mask_s, skeleton)

    # ------------------------------------------------------------------ clean inference API
    def support_targets(self, support_kpts: torch.Tensor, support_visible: torch.Tensor):
        """Support heatmaps and mask from keypoints, as the official data pipeline makes them.

        Args:
            support_kpts: float32[S, B, K, 2] support keypoints, normalised crop coords.
            support_visible: bool/float[S, B, K] visibility.

        Returns:
            heatmaps: float32[S, B, K, H, W] MSRA heatmaps (σ = ``cfg.target_sigma``).
            mask: float32[B, K] product over shots of the target weights.
        """
        cfg = self.cfg
        heatmaps, weights = msra_support_targets(
            support_kpts * cfg.input_size, support_visible, cfg.target_sigma, cfg.input_size, cfg.heatmap_size)
        return heatmaps, shot_mask(weights)

    def image_support_tokens(self, support_feats: Sequence[torch.Tensor], support_kpts: torch.Tensor,
                             support_visible: torch.Tensor,
                             factorized: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw support tokens and mask for image-based heads (CapeFormer, GraphCape).

        Args:
            support_feats: S tensors float32[B, C, h, w] support backbone features.
            support_kpts: float32[S, B, K, 2] normalised crop coords.
            support_visible: bool/float[S, B, K].
            factorized: pool through the resize operator instead of resizing the features
                (same value up to float rounding, much cheaper; see :func:`pool_support_tokens`).

        Returns:
            tokens float32[B, K, C] and mask float32[B, K].
        """
        heatmaps, mask = self.support_targets(support_kpts, support_visible)
        return pool_support_tokens(list(support_feats), list(heatmaps), factorized=factorized), mask

    def predict(self, query_feats: torch.Tensor, support_tokens: torch.Tensor, support_mask: torch.Tensor,
                skeleton=None) -> torch.Tensor:
        """Predict query keypoints (last decoder layer), any batch size, any K ≤ max_keypoints.

        Runs on the K real slots only: the support-order embedding is computed for the official
        ``cfg.max_keypoints`` slots (see :meth:`forward`), so the result equals the padded official run.

        Args:
            query_feats: float32[B, C, h, w] query backbone features.
            support_tokens: float32[B, K, C_tok] raw support tokens (see :meth:`forward`).
            support_mask: float/bool[B, K] (1 = keypoint present in every support shot).
            skeleton: graph decoder only, 0-based edges (see :meth:`forward`).

        Returns:
            float32[B, K, 2] keypoints, normalised crop coords (x, y).
        """
        k = support_tokens.shape[1]
        if k > self.cfg.max_keypoints:
            raise ValueError(f"{k} keypoints exceed max_keypoints={self.cfg.max_keypoints}")
        mask = _as_mask(support_mask)
        return self.forward(query_feats, support_tokens, mask, skeleton).keypoints[:, :k]

    # ------------------------------------------------------------------ loss and decoding
    def get_loss(self, outputs: LineageOutputs, target: torch.Tensor, target_heatmap: torch.Tensor,
                 target_weight: torch.Tensor, target_sizes: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Official ``get_loss`` terms for ``outputs`` (see :func:`lineage_losses`)."""
        if target_sizes is None:
            target_sizes = torch.full((target.shape[0], 1, 2), float(self.cfg.input_size), device=target.device)
        return lineage_losses(
            outputs.output_kpts, outputs.initial_proposals_for_loss, outputs.similarity_map, target,
            target_heatmap, target_weight, target_sizes,
            heatmap_loss_weight=self.cfg.heatmap_loss_weight if self.cfg.with_heatmap_loss else None)

    def decode(self, keypoints: torch.Tensor | np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Normalised crop keypoints → original image pixels (official ``decode``, any batch size).

        Args:
            keypoints: float[B, K, 2] normalised crop coords.
            center: float[B, 2] crop centres, image px.
            scale: float[B, 2] crop scales (side / 200).

        Returns:
            float64[B, K, 2] image px.
        """
        if isinstance(keypoints, torch.Tensor):
            keypoints = keypoints.detach().cpu().numpy()
        return normalized_to_image(keypoints, center, scale, self.cfg.input_size)


def heatmap_loss(similarity_map: torch.Tensor, target_heatmap: torch.Tensor, target_weight: torch.Tensor,
                 normalizer: torch.Tensor) -> torch.Tensor:
    """MSE between sigmoid(similarity) and peak-normalised downsampled target heatmaps.

    Mirrors ``TwoStageHead.heatmap_loss``: the target is bilinearly resized (align_corners
    False) to the similarity map's size and divided by its per-map max (+1e-10); the squared
    error is weighted, averaged over cells, summed over keypoints, divided by the per-sample
    visible count and averaged over the batch.

    Args:
        similarity_map: float32[B, K, h, w] logits.
        target_heatmap: float32[B, K, H, W] query target heatmaps.
        target_weight: float32[B, K, 1] loss weights.
        normalizer: float32[B] visible keypoints per sample (0 replaced by 1).

    Returns:
        float32 scalar (unweighted).
    """
    h, w = similarity_map.shape[-2:]
    pred = similarity_map.sigmoid()
    target = F.interpolate(target_heatmap, size=(h, w), mode="bilinear", align_corners=False)
    target = target / (target.max(dim=-1)[0].max(dim=-1)[0] + 1e-10)[:, :, None, None]
    l2 = F.mse_loss(pred, target, reduction="none") * target_weight[:, :, :, None]
    l2 = l2.flatten(2, 3).sum(-1) / (h * w)
    return (l2.sum(-1) / normalizer).mean()


def lineage_losses(output_kpts: torch.Tensor, initial_proposals_for_loss: torch.Tensor,
                   similarity_map: torch.Tensor, target: torch.Tensor, target_heatmap: torch.Tensor,
                   target_weight: torch.Tensor, target_sizes: torch.Tensor,
                   heatmap_loss_weight: float | None = 2.0) -> dict[str, torch.Tensor]:
    """All training losses of the lineage (official ``get_loss``), same keys and reductions.

    Every term is normalised per sample by its number of weighted keypoints (0 → 1) and then
    summed over the batch and divided by B.

    Args:
        output_kpts: float32[L, B, K, 2] per-layer keypoints, normalised.
        initial_proposals_for_loss: float32[B, K, 2] global soft-argmax proposals.
        similarity_map: float32[B, K, h, w] logits.
        target: float32[B, K, 2] query keypoints, crop px.
        target_heatmap: float32[B, K, H, W] query target heatmaps.
        target_weight: float32[B, K, 1] ``target_weight_q * mask_s``.
        target_sizes: [B, 1, 2] crop sizes (w, h), px.
        heatmap_loss_weight: weight of ``heatmap_loss``; None drops the term.

    Returns:
        dict with ``heatmap_loss`` (already weighted), ``proposal_loss``, ``l1_loss_layer{l}``.
    """
    losses: dict[str, torch.Tensor] = {}
    num_layers, bs = output_kpts.shape[:2]
    target = target / target_sizes.to(output_kpts.device)
    weight = target_weight.squeeze(-1)
    normalizer = weight.sum(dim=-1)
    normalizer = torch.where(normalizer == 0, torch.ones_like(normalizer), normalizer)
    if heatmap_loss_weight is not None:
        losses["heatmap_loss"] = heatmap_loss(similarity_map, target_heatmap, target_weight,
                                              normalizer) * heatmap_loss_weight

    def l1(pred: torch.Tensor) -> torch.Tensor:
        per_kpt = F.l1_loss(pred, target, reduction="none").sum(dim=-1) * weight
        return (per_kpt.sum(dim=-1) / normalizer).sum() / bs

    losses["proposal_loss"] = l1(initial_proposals_for_loss)
    for idx in range(num_layers):
        losses[f"l1_loss_layer{idx}"] = l1(output_kpts[idx])
    return losses


def head_state_from_checkpoint(checkpoint: dict, prefix: str = "keypoint_head.") -> dict:
    """Extract the head's state dict from an official (mmcv) checkpoint or model state dict.

    Takes ``checkpoint["state_dict"]`` when present, strips a DataParallel ``module.`` prefix
    and keeps the entries under ``prefix`` with the prefix removed; the keys then load into a
    :class:`LineageHead` with ``strict=True`` (no key map needed).

    Args:
        checkpoint: mmcv checkpoint dict or a plain state dict.
        prefix: the head's prefix in the full model.

    Returns:
        dict of tensors keyed like ``LineageHead.state_dict()``.
    """
    state = checkpoint.get("state_dict", checkpoint)
    out = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.startswith(prefix):
            out[key[len(prefix):]] = value
    return out
