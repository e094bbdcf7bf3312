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
  keypoint order (:class:`KeypointBatchNorm2d`), exactly as the loop does;
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
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from baselines.common.heatmaps import keypoints_from_heatmaps, keypoints_from_heatmaps_crop
from baselines.common.positional import sine_grid_embedding

#: Padded keypoint slots of the official MP-100 pipeline (``max_kpt_num``).
MAX_KEYPOINTS = 100


@dataclass(frozen=True)
class POMNetHeadConfig:
    """Hyper-parameters of ``TransformerHead`` (defaults: ``pomnet_mp100_split1_256x256_1shot.py``).

    Attributes:
        in_channels: C, backbone channels (2048 = ResNet-50 stage 4).
        embed_dims: E, transformer width (256); the sine encoding uses ``E / 2`` features per axis.
        num_heads: attention heads (8).
        feedforward_channels: FFN hidden width (2048).
        num_encoder_layers: DETR encoder layers (3).
        num_decoder_layers: DETR decoder layers (3).
        dropout: attention, residual and FFN dropout (0.1; inactive in eval).
        num_deconv_filters: output channels of the deconvolutions ((256, 256, 256)).
        num_deconv_kernels: their kernel sizes ((4, 4, 4)), each 2× upsampling.
        max_maps_per_chunk: efficiency knob, not a model hyper-parameter: at most this many
            (query, keypoint) heatmaps go through the relation/deconv branch at once.
    """

    in_channels: int = 2048
    embed_dims: int = 256
    num_heads: int = 8
    feedforward_channels: int = 2048
    num_encoder_layers: int = 3
    num_decoder_layers: int = 3
    dropout: float = 0.1
    num_deconv_filters: tuple[int, ...] = (256, 256, 256)
    num_deconv_kernels: tuple[int, ...] = (4, 4, 4)
    max_maps_per_chunk: int = 64

    def __post_init__(self) -> None:
        if self.embed_dims % 2 or self.embed_dims % self.num_heads:
            raise ValueError(f"embed_dims {self.embed_dims} must be even and divisible by num_heads")
        if len(self.num_deconv_filters) != len(self.num_deconv_kernels) or not self.num_deconv_filters:
            raise ValueError("num_deconv_filters and num_deconv_kernels need the same, non-zero length")
        if self.max_maps_per_chunk < 1:
            raise ValueError("max_maps_per_chunk must be >= 1")

    @property
    def num_feats(self) -> int:
        """Sine-encoding features per axis (official assert: ``2 * num_feats == embed_dims``)."""
        return self.embed_dims // 2

    @classmethod
    def from_official(cls, head_cfg: Mapping[str, Any], **overrides: Any) -> POMNetHeadConfig:
        """Read an official ``keypoint_head`` config dict (e.g. the golden sidecar's ``head_cfg``).

        Args:
            head_cfg: dict with ``in_channels``, ``transformer.{encoder,decoder}``,
                ``positional_encoding`` and optionally ``num_deconv_filters/kernels``.
            **overrides: fields to set afterwards (e.g. ``max_maps_per_chunk``).

        Returns:
            The configuration.
        """
        enc = head_cfg["transformer"]["encoder"]
        dec = head_cfg["transformer"]["decoder"]
        layer = enc["transformerlayers"]
        attn = layer["attn_cfgs"]
        attn = attn[0] if isinstance(attn, (list, tuple)) else attn
        ffn = layer["ffn_cfgs"]
        pos = head_cfg.get("positional_encoding", {"num_feats": 128, "normalize": True})
        if not pos.get("normalize", False) or pos.get("type", "SinePositionalEncoding") != "SinePositionalEncoding":
            raise ValueError("only the normalised SinePositionalEncoding of the official configs is supported")
        if head_cfg.get("extra"):
            raise ValueError("the 'extra' final-layer options are not used by POMNet and not supported")
        filters = tuple(head_cfg.get("num_deconv_filters", (256, 256, 256)))
        kwargs: dict[str, Any] = dict(
            in_channels=int(head_cfg["in_channels"]),
            embed_dims=int(attn["embed_dims"]),
            num_heads=int(attn["num_heads"]),
            feedforward_channels=int(ffn["feedforward_channels"]),
            num_encoder_layers=int(enc["num_layers"]),
            num_decoder_layers=int(dec["num_layers"]),
            dropout=float(attn.get("dropout", 0.0)),
            num_deconv_filters=filters,
            num_deconv_kernels=tuple(head_cfg.get("num_deconv_kernels", (4,) * len(filters))),
        )
        if 2 * int(pos["num_feats"]) != kwargs["embed_dims"]:
            raise ValueError("positional_encoding.num_feats must be embed_dims / 2 (official assert)")
        kwargs.update(overrides)
        return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# mmcv 1.x transformer bricks (mmcv/cnn/bricks/transformer.py), sequence-first [N, B, E]
# --------------------------------------------------------------------------------------------


class MMCVMultiheadAttention(nn.Module):
    """mmcv ``MultiheadAttention``: positions added to query/key, residual with dropout.

    Official config ``dropout=0.1`` sets both the attention-weight dropout (inside
    ``nn.MultiheadAttention``) and the residual ``dropout_layer``; ``proj_drop`` is 0.
    """

    def __init__(self, embed_dims: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(embed_dims, num_heads, dropout=dropout)
        self.dropout_layer = nn.Dropout(dropout)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        query_pos: Tensor | None = None,
        key_pos: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Attention with residual.

        Args:
            query: float32[L, B, E]; also the residual identity.
            key: float32[S, B, E].
            value: float32[S, B, E].
            query_pos: float32[L, B, E] added to the query only, or None.
            key_pos: float32[S, B, E] added to the key only, or None.
            key_padding_mask: bool[B, S], True = ignored key, or None.

        Returns:
            float32[L, B, E].
        """
        q = query if query_pos is None else query + query_pos
        k = key if key_pos is None else key + key_pos
        # need_weights=True keeps the official explicit-softmax path (NaN on all-masked rows,
        # spec §9 quirk 7) instead of the fused kernel.
        out = self.attn(q, k, value, key_padding_mask=key_padding_mask, need_weights=True)[0]
        return query + self.dropout_layer(out)


class MMCVFFN(nn.Module):
    """mmcv ``FFN`` (2 fcs, ReLU, ``ffn_drop`` after both, identity added).

    Keys: ``layers.0.0`` = fc1, ``layers.1`` = fc2.
    """

    def __init__(self, embed_dims: int, feedforward_channels: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Sequential(nn.Linear(embed_dims, feedforward_channels), nn.ReLU(inplace=True), nn.Dropout(dropout)),
            nn.Linear(feedforward_channels, embed_dims),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        """float32[..., E] -> float32[..., E] (with residual)."""
        return x + self.layers(x)


class DetrEncoderLayer(nn.Module):
    """``BaseTransformerLayer`` with order (self_attn, norm, ffn, norm), post-norm."""

    def __init__(self, cfg: POMNetHeadConfig) -> None:
        super().__init__()
        E = cfg.embed_dims
        self.attentions = nn.ModuleList([MMCVMultiheadAttention(E, cfg.num_heads, cfg.dropout)])
        self.ffns = nn.ModuleList([MMCVFFN(E, cfg.feedforward_channels, cfg.dropout)])
        self.norms = nn.ModuleList([nn.LayerNorm(E), nn.LayerNorm(E)])

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        """x, pos float32[HW, B, E] -> float32[HW, B, E]; q = k = x + pos, v = x."""
        x = self.norms[0](self.attentions[0](x, x, x, query_pos=pos, key_pos=pos))
        return self.norms[1](self.ffns[0](x))


class DetrDecoderLayer(nn.Module):
    """``DetrTransformerDecoderLayer``: (self_attn, norm, cross_attn, norm, ffn, norm).

    No query positional embedding (POMNet passes none); the cross-attention key is
    ``memory + pos``, its value ``memory``.
    """

    def __init__(self, cfg: POMNetHeadConfig) -> None:
        super().__init__()
        E = cfg.embed_dims
        self.attentions = nn.ModuleList(
            [MMCVMultiheadAttention(E, cfg.num_heads, cfg.dropout) for _ in range(2)]
        )
        self.ffns = nn.ModuleList([MMCVFFN(E, cfg.feedforward_channels, cfg.dropout)])
        self.norms = nn.ModuleList([nn.LayerNorm(E) for _ in range(3)])

    def forward(self, tgt: Tensor, memory: Tensor, memory_pos: Tensor, tgt_padding_mask: Tensor) -> Tensor:
        """Decoder step.

        Args:
            tgt: float32[K, B, E] keypoint tokens.
            memory: float32[HW, B, E] encoder output.
            memory_pos: float32[HW, B, E] sine positions.
            tgt_padding_mask: bool[B, K], True = support-invisible / padded slot.

        Returns:
            float32[K, B, E].
        """
        q = self.norms[0](self.attentions[0](tgt, tgt, tgt, key_padding_mask=tgt_padding_mask))
        q = self.norms[1](self.attentions[1](q, memory, memory, key_pos=memory_pos))
        return self.norms[2](self.ffns[0](q))


class DetrEncoder(nn.Module):
    """``DetrTransformerEncoder`` (post-norm layers, no final norm)."""

    def __init__(self, cfg: POMNetHeadConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList([DetrEncoderLayer(cfg) for _ in range(cfg.num_encoder_layers)])

    def forward(self, x: Tensor, pos: Tensor) -> Tensor:
        """float32[HW, B, E] -> float32[HW, B, E]."""
        for layer in self.layers:
            x = layer(x, pos)
        return x


class DetrDecoder(nn.Module):
    """``DetrTransformerDecoder(return_intermediate=True)`` with the shared ``post_norm``."""

    def __init__(self, cfg: POMNetHeadConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList([DetrDecoderLayer(cfg) for _ in range(cfg.num_decoder_layers)])
        self.post_norm = nn.LayerNorm(cfg.embed_dims)

    def forward(self, tgt: Tensor, memory: Tensor, memory_pos: Tensor, tgt_padding_mask: Tensor) -> Tensor:
        """Returns float32[L, K, B, E]: every layer's output passed through ``post_norm``."""
        intermediate = []
        for layer in self.layers:
            tgt = layer(tgt, memory, memory_pos, tgt_padding_mask)
            intermediate.append(self.post_norm(tgt))
        return torch.stack(intermediate)


class PomnetTransformer(nn.Module):
    """``Transformer`` of transformer_head.py (DETR encoder + decoder)."""

    def __init__(self, cfg: POMNetHeadConfig) -> None:
        super().__init__()
        self.encoder = DetrEncoder(cfg)
        self.decoder = DetrDecoder(cfg)

    def forward(self, x: Tensor, pos: Tensor, query_embed: Tensor, mask_query: Tensor) -> tuple[Tensor, Tensor]:
        """Encode the query image, decode the keypoint tokens.

        Args:
            x: float32[B, E, h, w] projected query features.
            pos: float32[B, E, h, w] sine positions.
            query_embed: float32[B, K, E] projected support keypoint tokens.
            mask_query: bool[B, K], True = masked slot.

        Returns:
            outs_dec float32[L, B, K, E] (post-normed) and memory float32[B, E, h, w].
        """
        bs, c, h, w = x.shape
        x_seq = x.flatten(2).permute(2, 0, 1)  # [HW, B, E]
        pos_seq = pos.flatten(2).permute(2, 0, 1)
        memory = self.encoder(x_seq, pos_seq)
        outs_dec = self.decoder(query_embed.permute(1, 0, 2), memory, pos_seq, mask_query)
        return outs_dec.transpose(1, 2), memory.permute(1, 2, 0).reshape(bs, c, h, w)


# --------------------------------------------------------------------------------------------
# Per-keypoint heatmap branch
# --------------------------------------------------------------------------------------------


class KeypointBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that can treat its batch as ``groups`` independent keypoint calls.

    The official head runs its relation/deconv branch once per keypoint, so in training mode each
    keypoint is normalised with its own batch statistics and the running statistics receive one
    momentum update per keypoint, in keypoint order. With ``groups > 1`` (input laid out
    keypoint-major, ``[G * B, C, H, W]``) this module reproduces that; in eval mode, or with
    ``groups == 1``, it is a plain ``BatchNorm2d``.
    """

    def forward(self, x: Tensor, groups: int = 1) -> Tensor:  # type: ignore[override]
        """float32[G*B, C, H, W] -> same shape."""
        use_batch_stats = self.training or not self.track_running_stats
        if groups == 1 or not use_batch_stats:
            return super().forward(x)
        n, c, h, w = x.shape
        xg = x.view(groups, n // groups, c, h, w)
        mean = xg.mean(dim=(1, 3, 4))
        var = xg.var(dim=(1, 3, 4), unbiased=False)
        y = (xg - mean[:, None, :, None, None]) * torch.rsqrt(var[:, None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, None, :, None, None] + self.bias[None, None, :, None, None]
        if self.training and self.track_running_stats:
            count = xg[0].numel() // c
            unbiased = var.detach() * (count / max(count - 1, 1))
            with torch.no_grad():
                for g in range(groups):  # sequential EMA, as the per-keypoint loop does
                    self.num_batches_tracked.add_(1)
                    m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                    self.running_mean.mul_(1 - m).add_(mean[g].detach(), alpha=m)
                    self.running_var.mul_(1 - m).add_(unbiased[g], alpha=m)
        return y.view(n, c, h, w)


class ConvModule(nn.Module):
    """mmcv ``ConvModule(conv3x3 without bias, BN, ReLU)`` as used by ``RelationModel``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn = KeypointBatchNorm2d(out_channels)

    def forward(self, x: Tensor, groups: int = 1) -> Tensor:
        """float32[N, Cin, h, w] -> float32[N, Cout, h, w]."""
        return F.relu(self.bn(self.conv(x), groups), inplace=True)


class RelationModel(nn.Module):
    """``RelationModel`` (transformer_head.py): concat(memory, token broadcast) → ConvModule.

    The official module also owns an unused ``AdaptiveAvgPool2d`` (no parameters), omitted.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = ConvModule(in_channels, out_channels)

    def forward(self, token: Tensor, memory: Tensor, groups: int = 1) -> Tensor:
        """Relation features.

        Args:
            token: float32[N, E] keypoint tokens.
            memory: float32[N, E, h, w] encoder memory (one per token).
            groups: keypoint groups in N (training-mode batch statistics).

        Returns:
            float32[N, E, h, w].
        """
        feature = torch.cat((memory, token[:, :, None, None].expand_as(memory)), dim=1)
        return self.conv(feature, groups)


def _deconv_padding(kernel: int) -> tuple[int, int]:
    """(padding, output_padding) of ``TopdownHeatmapBaseHead._get_deconv_cfg``."""
    if kernel == 4:
        return 1, 0
    if kernel == 3:
        return 1, 1
    if kernel == 2:
        return 0, 0
    raise ValueError(f"unsupported deconv kernel {kernel}")


def _make_deconv_layers(cfg: POMNetHeadConfig) -> nn.Sequential:
    """[ConvTranspose2d(no bias), BN, ReLU] × n, official indices ``0,1,2, 3,4,5, ...``."""
    layers: list[nn.Module] = []
    in_ch = cfg.embed_dims
    for planes, kernel in zip(cfg.num_deconv_filters, cfg.num_deconv_kernels):
        padding, output_padding = _deconv_padding(kernel)
        layers += [
            nn.ConvTranspose2d(in_ch, planes, kernel, stride=2, padding=padding,
                               output_padding=output_padding, bias=False),
            KeypointBatchNorm2d(planes),
            nn.ReLU(inplace=True),
        ]
        in_ch = planes
    return nn.Sequential(*layers)


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
        self.deconv_layers = _make_deconv_layers(cfg)
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
            mem = memory.unsqueeze(0).expand(kc, *memory.shape).reshape(kc * B, *memory.shape[1:])
            feat = self.relation_model(tok.reshape(kc * B, E), mem, groups=kc)
            for layer in self.deconv_layers:
                feat = layer(feat, kc) if isinstance(layer, KeypointBatchNorm2d) else layer(feat)
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
