"""POMNet's keypoint head (``TransformerHead``) in plain PyTorch.

Faithful re-implementation of ``pomnet/models/keypoint_heads/transformer_head.py`` and
``pomnet/models/utils/transformer.py`` in ``luminxu/Pose-for-Everything`` @ ``ea9c039``, with the
mmcv 1.x bricks it builds on (``MultiheadAttention``, ``FFN``, ``BaseTransformerLayer``,
``ConvModule``) written out. The module tree and parameter names are the official ones, so the
``keypoint_head.*`` part of an official checkpoint loads with ``strict=True`` after stripping
the prefix (:func:`strip_prefix`).

Pipeline (spec §2.2), E = ``embed_dims``, K keypoint slots, S shots:

1. query features ``x`` float32[B, C, h, w] → ``input_proj`` → [B, E, h, w] (+ sine positions);
2. support keypoint tokens: every shot's features are resized bilinearly to the heatmap size,
   pooled with its support heatmaps normalised to sum 1 → [B, K, C]; mean over shots, times the
   support mask, ``query_proj`` → [B, K, E];
3. DETR encoder (post-norm) on the query features, decoder on the keypoint tokens (self-attention
   masks support-invisible slots) → last post-normed decoder output [B, K, E];
4. per keypoint: token broadcast over the memory, ``RelationModel`` conv, 3 deconvs, 1×1 conv →
   one 64×64 heatmap; stacked → float32[B, K, 64, 64].

Deliberate deviations from the released code (none changes an output in eval mode):

* the per-keypoint relation/deconv branch runs keypoints in chunks (``max_maps_per_chunk``)
  instead of a Python loop over single keypoints. In training mode the batch norms still use one
  set of batch statistics per keypoint and update their running statistics once per keypoint in
  keypoint order (:class:`~baselines.pomnet.branch.KeypointBatchNorm2d`), exactly as the loop does;
* ``forward(..., num_keypoints=n)`` (and the default of :func:`pomnet_predict`) runs only the
  first ``n`` slots — a category's real keypoints — instead of all padded slots. Padded slots are
  masked keys in the decoder self-attention and the relation branch is per keypoint, so the real
  keypoints' outputs do not change (tested). In training mode this would change the batch-norm
  running statistics (the official loop also updates them on padded slots), so use it for
  inference;
* decoding is vectorised and correct at any batch size (:mod:`baselines.common.heatmaps`);
* the cross-attention and encoder receive no all-False key-padding mask (identical arithmetic).

This file imports torch at module level (allowed for ``baselines/`` model files).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.common.heatmaps import keypoints_from_heatmaps, keypoints_from_heatmaps_crop
from baselines.common.positional import sine_grid_embedding
from baselines.pomnet.branch import RelationModel, make_deconv_layers
from baselines.pomnet.config import MAX_KEYPOINTS, POMNetHeadConfig  # noqa: F401  (the model's public names)
from baselines.pomnet.transformer import PomnetTransformer

# --------------------------------------------------------------------------------------------
# The head
# --------------------------------------------------------------------------------------------


class PomnetHeadOutput(NamedTuple):
    """Everything one head forward produces.

    Attributes:
        heatmaps: float32[B, K, H, W] (H = W = 64 for 8×8 features).
        outs_dec: float32[L, B, K, E] every decoder layer's post-normed output.
        memory: float32[B, E, h, w] encoder output.
    """

    heatmaps: Tensor
    outs_dec: Tensor
    memory: Tensor


class TransformerHead(nn.Module):
    """POMNet ``TransformerHead`` (official parameter names, see module docstring)."""

    def __init__(self, cfg: POMNetHeadConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or POMNetHeadConfig()
        self.transformer = PomnetTransformer(cfg)
        self.relation_model = RelationModel(2 * cfg.embed_dims, cfg.embed_dims)
        self.deconv_layers = make_deconv_layers(cfg)
        self.final_layer = nn.Conv2d(cfg.num_deconv_filters[-1], 1, kernel_size=1)
        self.input_proj = nn.Conv2d(cfg.in_channels, cfg.embed_dims, kernel_size=1)
        self.query_proj = nn.Linear(cfg.in_channels, cfg.embed_dims)

    def init_weights(self) -> None:
        """Official ``TransformerHead.init_weights`` (training from scratch).

        Transformer: xavier-uniform on every sub-module with a ≥2-D ``weight`` (Linear layers;
        ``nn.MultiheadAttention.in_proj_weight`` keeps PyTorch's own xavier init), bias 0.
        Relation, deconv and final convs N(0, 0.001), bias 0; BN weight 1, bias 0.
        ``input_proj`` / ``query_proj`` keep PyTorch's default init.
        """
        for m in self.transformer.modules():
            weight = getattr(m, "weight", None)
            if isinstance(weight, Tensor) and weight.dim() > 1:
                nn.init.xavier_uniform_(weight)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        for branch in (self.relation_model, self.deconv_layers, self.final_layer):
            for m in branch.modules():
                if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                    nn.init.normal_(m.weight, std=0.001)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)

    # -- support side -------------------------------------------------------------------------

    @staticmethod
    def support_tokens(feature_s: Sequence[Tensor], target_s: Sequence[Tensor], mask_s: Tensor) -> Tensor:
        """Support keypoint tokens before ``query_proj`` (transformer_head.py ``forward``).

        Per shot: features resized bilinearly (align_corners False) to the heatmap size, heatmaps
        normalised to sum 1 (``t / (Σt + 1e-8)``), token = heatmap-weighted feature average;
        then mean over shots and multiplication by the support mask.

        Args:
            feature_s: S tensors float32[B, C, h, w] support backbone features.
            target_s: S tensors float32[B, K, H, W] support target heatmaps.
            mask_s: float32[B, K, 1] support mask (product of the shots' target weights).

        Returns:
            float32[B, K, C].
        """
        tokens = []
        for feature, target in zip(feature_s, target_s, strict=True):
            resized = F.interpolate(feature, size=target.shape[-2:], mode="bilinear", align_corners=False)
            target = target / (target.sum(dim=-1).sum(dim=-1)[:, :, None, None] + 1e-8)
            tokens.append(target.flatten(2) @ resized.flatten(2).permute(0, 2, 1))
        return torch.mean(torch.stack(tokens, dim=0), 0) * mask_s

    # -- query side ---------------------------------------------------------------------------

    def forward_tokens(self, x: Tensor, tokens: Tensor, mask_s: Tensor) -> PomnetHeadOutput:
        """Head forward from precomputed support tokens.

        Args:
            x: float32[B, C, h, w] query backbone features.
            tokens: float32[B, K, C] from :meth:`support_tokens`.
            mask_s: float32[B, K, 1] support mask.

        Returns:
            :class:`PomnetHeadOutput` (heatmaps float32[B, K, 8h, 8w] for three deconvs).
        """
        x = self.input_proj(x)
        B, _, h, w = x.shape
        pos = sine_grid_embedding(B, h, w, self.cfg.num_feats, x.device).to(x.dtype)
        query_embed = self.query_proj(tokens)
        mask_query = (~mask_s.to(torch.bool)).squeeze(-1)
        outs_dec, memory = self.transformer(x, pos, query_embed, mask_query)
        heatmaps = self.keypoint_heatmaps(outs_dec[-1], memory)
        return PomnetHeadOutput(heatmaps, outs_dec, memory)

    def keypoint_heatmaps(self, out_dec: Tensor, memory: Tensor) -> Tensor:
        """The per-keypoint relation/deconv branch, chunked over keypoints.

        Args:
            out_dec: float32[B, K, E] last decoder output.
            memory: float32[B, E, h, w] encoder memory.

        Returns:
            float32[B, K, H, W] one heatmap per keypoint.
        """
        B, K, E = out_dec.shape
        chunk = max(1, self.cfg.max_maps_per_chunk // max(B, 1))
        maps = []
        for k0 in range(0, K, chunk):
            tok = out_dec[:, k0:k0 + chunk].transpose(0, 1)  # [Kc, B, E], keypoint-major
            kc = tok.shape[0]
            if self.training:  # per-keypoint batch statistics: the official broadcast, memory repeated per keypoint
                mem = memory.unsqueeze(0).expand(kc, *memory.shape).reshape(kc * B, *memory.shape[1:])
                feat = self.relation_model(tok.reshape(kc * B, E), mem, groups=kc)
            else:
                feat = self.relation_model.forward_shared_memory(tok, memory)
            feat = self.deconv_layers(feat, kc)
            hm = self.final_layer(feat)  # [Kc*B, 1, H, W]
            maps.append(hm.view(kc, B, *hm.shape[-2:]).transpose(0, 1))
        return torch.cat(maps, dim=1)

    def forward_with_intermediates(
        self,
        x: Tensor,
        feature_s: Sequence[Tensor],
        target_s: Sequence[Tensor],
        mask_s: Tensor,
        num_keypoints: int | None = None,
    ) -> PomnetHeadOutput:
        """:meth:`forward` that also returns the transformer outputs.

        Args:
            x: float32[B, C, h, w] query features.
            feature_s: S tensors float32[B, C, h, w] support features.
            target_s: S tensors float32[B, K, H, W] support heatmaps.
            mask_s: float32[B, K, 1] support mask.
            num_keypoints: run only the first n slots (the category's real keypoints); None runs
                every given slot, as the official head does.

        Returns:
            :class:`PomnetHeadOutput` with K' = ``num_keypoints`` or K slots.
        """
        if num_keypoints is not None:
            if not 0 < num_keypoints <= mask_s.shape[1]:
                raise ValueError(f"num_keypoints {num_keypoints} outside 1..{mask_s.shape[1]}")
            target_s = [t[:, :num_keypoints] for t in target_s]
            mask_s = mask_s[:, :num_keypoints]
        return self.forward_tokens(x, self.support_tokens(feature_s, target_s, mask_s), mask_s)

    def forward(
        self,
        x: Tensor,
        feature_s: Sequence[Tensor],
        target_s: Sequence[Tensor],
        mask_s: Tensor,
        num_keypoints: int | None = None,
    ) -> Tensor:
        """Official ``TransformerHead.forward``: float32[B, K, H, W] heatmaps (see above)."""
        return self.forward_with_intermediates(x, feature_s, target_s, mask_s, num_keypoints).heatmaps

    # -- loss and decoding --------------------------------------------------------------------

    @staticmethod
    def get_loss(output: Tensor, target: Tensor, target_weight: Tensor) -> dict[str, Tensor]:
        """Official ``get_loss``: ``{'mse_loss': JointsMSELoss(use_target_weight=True)}``.

        Args:
            output: float32[B, K, H, W] predicted heatmaps.
            target: float32[B, K, H, W] query target heatmaps.
            target_weight: float32[B, K, 1], officially ``target_weight_q * mask_s``.
        """
        return {"mse_loss": joints_mse_loss(output, target, target_weight)}

    @staticmethod
    def decode(heatmaps: Tensor | np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Official ``decode``'s ``preds``: keypoints in original image pixels plus score.

        Args:
            heatmaps: float32[B, K, H, W].
            center: float[B, 2] query crop centre, image px.
            scale: float[B, 2] query crop scale (side / 200).

        Returns:
            float32[B, K, 3]: x, y (image px), heatmap maximum.
        """
        hm = heatmaps.detach().cpu().numpy() if isinstance(heatmaps, Tensor) else np.asarray(heatmaps)
        peaks = keypoints_from_heatmaps(hm, center, scale)
        return np.concatenate([peaks.coords, peaks.maxvals], axis=-1).astype(np.float32)


def joints_mse_loss(output: Tensor, target: Tensor, target_weight: Tensor) -> Tensor:
    """mmpose ``JointsMSELoss(use_target_weight=True)``, loss weight 1.

    ``(1/K) Σ_k mean_{b, pixels} (w_bk · pred - w_bk · gt)²`` — the official per-joint loop,
    vectorised.

    Args:
        output: float32[B, K, H, W].
        target: float32[B, K, H, W].
        target_weight: float32[B, K, 1].

    Returns:
        float32 scalar.
    """
    B, K = output.shape[:2]
    pred = output.reshape(B, K, -1) * target_weight
    gt = target.reshape(B, K, -1) * target_weight
    return ((pred - gt) ** 2).mean(dim=(0, 2)).sum() / K


def strip_prefix(state_dict: Mapping[str, Any], prefix: str = "keypoint_head.") -> dict[str, Any]:
    """Select one sub-module's entries of an official checkpoint ``state_dict``.

    Drops a leading ``module.`` (DataParallel) and keeps only keys under ``prefix``, without it.

    Args:
        state_dict: official ``ckpt['state_dict']``.
        prefix: sub-module prefix, e.g. ``"keypoint_head."``.

    Returns:
        dict ready for ``TransformerHead.load_state_dict(..., strict=True)``.
    """
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if key.startswith(prefix):
            out[key[len(prefix):]] = value
    return out


# --------------------------------------------------------------------------------------------
# Inference entry point for the method plug-in
# --------------------------------------------------------------------------------------------


class PomnetPrediction(NamedTuple):
    """Query predictions of one episode.

    Attributes:
        heatmaps: float32[B, K, H, W] (torch, on the head's device).
        keypoints_crop: float32[B, K, 2] argmax + quarter offset, crop px.
        scores: float32[B, K] heatmap maxima.
    """

    heatmaps: Tensor
    keypoints_crop: np.ndarray
    scores: np.ndarray


@torch.no_grad()
def pomnet_predict(
    head: TransformerHead,
    query_feats: Tensor,
    support_feats: Tensor,
    support_targets: Tensor,
    support_mask: Tensor,
    input_size: int = 256,
    pad_to: int | None = None,
) -> PomnetPrediction:
    """Predict the B queries of one episode from its shared S-shot support set.

    Equivalent to the official per-pair forward with the same supports repeated for every query.
    Runs only the category's K keypoints by default; ``pad_to`` reproduces the official padded
    layout (zero heatmaps and mask up to ``pad_to`` slots, e.g. 100) and returns the K real slots.
    Put the head in ``eval()`` mode first.

    Args:
        head: the POMNet head.
        query_feats: float32[B, C, h, w] query backbone features.
        support_feats: float32[S, C, h, w] support backbone features.
        support_targets: float32[S, K, H, W] support target heatmaps (:func:`msra_targets`).
        support_mask: float[K] support mask (product over shots of the target weights).
        input_size: crop side in px, for ``keypoints_crop``.
        pad_to: total slots to run (official layout) or None for the K real keypoints only.

    Returns:
        :class:`PomnetPrediction` for the K keypoints.
    """
    S, K = support_targets.shape[:2]
    mask = support_mask.reshape(1, K, 1).to(query_feats.dtype)
    targets = support_targets
    if pad_to is not None:
        if pad_to < K:
            raise ValueError(f"pad_to {pad_to} < number of keypoints {K}")
        targets = F.pad(targets, (0, 0, 0, 0, 0, pad_to - K))
        mask = F.pad(mask, (0, 0, 0, pad_to - K))
    tokens = head.support_tokens(
        [support_feats[s : s + 1] for s in range(S)], [targets[s : s + 1] for s in range(S)], mask
    )
    B = query_feats.shape[0]
    out = head.forward_tokens(query_feats, tokens.expand(B, -1, -1), mask.expand(B, -1, -1))
    heatmaps = out.heatmaps[:, :K]
    peaks = keypoints_from_heatmaps_crop(heatmaps.float().cpu().numpy(), input_size)
    return PomnetPrediction(heatmaps, peaks.coords, peaks.maxvals[..., 0])
