"""Sine positional encodings of the CapeFormer lineage (DETR style, no parameters).

Mirrors ``SinePositionalEncoding.forward`` (all-valid mask only, which is the only case the
heads use) and ``SinePositionalEncoding.forward_coordinates`` from
``capeformer/models/utils/positional_encoding.py`` (copied unchanged into PoseAnything and
CapeX). Both return ``cat(pos_y, pos_x)`` with sin/cos interleaved per frequency pair.

Note the two conventions (spec §9 quirk 3): the grid encoding places cell ``i`` at
``(i + 1) / (n + eps)`` (a cumulative sum normalised by its last value), whereas coordinate
inputs are used as given, and the proposal generator feeds cell *centres* ``(i + 0.5) / n``.
"""

from __future__ import annotations

import math

import torch

TEMPERATURE = 10000
SCALE = 2 * math.pi
EPS = 1e-6


def _inverse_frequencies(num_feats: int, device: torch.device) -> torch.Tensor:
    """float32[F]: ``temperature ** (2 * (i // 2) / F)``, computed in float32 as officially."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    return TEMPERATURE ** (2 * (dim_t // 2) / num_feats)


def _interleave_sin_cos(pos: torch.Tensor) -> torch.Tensor:
    """[..., F] phases -> [..., F] with even slots sin, odd slots cos."""
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_grid_embedding(
    batch: int, height: int, width: int, num_feats: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Positional encoding of an all-valid ``height x width`` grid.

    Args:
        batch: batch size B.
        height: rows h.
        width: columns w.
        num_feats: F, features per axis (output has 2F channels).
        device: torch device.

    Returns:
        float32[B, 2F, h, w]: channels ``[0, F)`` encode y, ``[F, 2F)`` encode x.
    """
    device = torch.device(device)
    ones = torch.ones(batch, height, width, dtype=torch.float32, device=device)
    # Same arithmetic order as the official cumsum / (last + eps) * 2π (bit-for-bit).
    y_embed = ones.cumsum(1)
    x_embed = ones.cumsum(2)
    y_embed = y_embed / (y_embed[:, -1:, :] + EPS) * SCALE
    x_embed = x_embed / (x_embed[:, :, -1:] + EPS) * SCALE
    dim_t = _inverse_frequencies(num_feats, device)
    pos_x = _interleave_sin_cos(x_embed[..., None] / dim_t)
    pos_y = _interleave_sin_cos(y_embed[..., None] / dim_t)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def sine_coord_embedding(coords: torch.Tensor, num_feats: int) -> torch.Tensor:
    """Positional encoding of normalised point coordinates (``forward_coordinates``).

    Args:
        coords: float32[B, K, 2] points, normalised [0, 1] (x, y).
        num_feats: F, features per axis.

    Returns:
        float32[B, K, 2F]: ``cat(pos_y, pos_x)``.
    """
    x_embed = coords[..., 0] * SCALE
    y_embed = coords[..., 1] * SCALE
    dim_t = _inverse_frequencies(num_feats, coords.device)
    pos_x = _interleave_sin_cos(x_embed[..., None] / dim_t)
    pos_y = _interleave_sin_cos(y_embed[..., None] / dim_t)
    return torch.cat((pos_y, pos_x), dim=-1)


def support_order_embedding(batch: int, num_slots: int, num_feats: int, kind: str,
                            device: torch.device | str = "cpu") -> torch.Tensor:
    """Embedding of the support keypoint slots (spec §9 quirk 5).

    CapeFormer (``support_embedding_type="fixed"``) encodes a ``1 x num_slots`` all-valid grid,
    so slot ``k`` gets x-phase ``(k + 1) / (num_slots + eps) * 2π`` and a constant y-phase:
    the embedding depends on the padded slot count (official ``max_kpt_num = 100``).
    PoseAnything and CapeX disable it (an all-zero tensor).

    Args:
        batch: B.
        num_slots: K, padded keypoint slots.
        num_feats: F.
        kind: ``"sine"`` (CapeFormer) or ``"zeros"`` (PoseAnything, CapeX).
        device: torch device.

    Returns:
        float32[B, K, 2F].
    """
    if kind == "sine":
        return sine_grid_embedding(batch, 1, num_slots, num_feats, device).flatten(2).transpose(1, 2)
    if kind == "zeros":
        return torch.zeros(batch, num_slots, 2 * num_feats, device=device)
    raise ValueError(f"unknown support order embedding {kind!r} (expected 'sine' or 'zeros')")
