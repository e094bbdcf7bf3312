"""POMNet head configuration (official sizes by default; read from an official mmpose config)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
