"""Support keypoint tokens of the CapeFormer lineage: MSRA support heatmaps and heatmap pooling.

The official heads never see support keypoint coordinates directly: the data pipeline renders
a Gaussian heatmap per support keypoint (``TopDownGenerateTargetFewShot``, MSRA encoding) and the
head pools the support feature map with it (``TwoStageHead.forward`` / ``PoseHead.forward``).
The visibility mask the heads use is the product over shots of the pipeline's target weights,
which also drops keypoints whose Gaussian window falls entirely outside the heatmap.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def msra_support_targets(
    joints_crop: torch.Tensor,
    visible: torch.Tensor,
    sigma: int,
    image_size: int = 256,
    heatmap_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render MSRA Gaussian heatmaps and target weights, vectorised over any leading dims.

    Mirrors ``TopDownGenerateTargetFewShot._msra_generate_target`` (unbiased_encoding=False)
    of ``datasets/pipelines/top_down_transform.py``: peak cell ``mu = int(joint / stride + 0.5)``
    (``int`` truncates toward zero), an unnormalised Gaussian (peak 1) pasted into a
    ``(6σ + 1)²`` window, weight = visibility, zeroed when the window misses the map entirely.

    Args:
        joints_crop: float[..., K, 2] keypoints, crop px (x, y).
        visible: float/bool[..., K] visibility (> 0 counts as visible).
        sigma: Gaussian σ in heatmap cells (integer: 2 for CapeFormer, 1 for PoseAnything/CapeX).
        image_size: crop side, px.
        heatmap_size: heatmap side, cells.

    Returns:
        heatmaps: float32[..., K, H, W].
        weights: float32[..., K] target weights (0 or 1).
    """
    mu, weights = _msra_peaks(joints_crop, visible, sigma, image_size, heatmap_size)
    tmp = 3 * int(sigma)
    cells = torch.arange(heatmap_size, device=joints_crop.device)
    dx = cells - mu[..., 0, None]  # [..., K, W]
    dy = cells - mu[..., 1, None]  # [..., K, H]
    # One exp of the summed squares, in float32, like the official pasted window.
    d2 = dy.to(torch.float32)[..., :, None] ** 2 + dx.to(torch.float32)[..., None, :] ** 2
    window = (dy.abs() <= tmp)[..., :, None] & (dx.abs() <= tmp)[..., None, :]
    heatmaps = torch.exp(-d2 / (2 * sigma**2)) * window * weights[..., None, None]
    return heatmaps, weights


def _msra_peaks(joints_crop, visible, sigma, image_size, heatmap_size):
    """Peak cells int64[..., K, 2] and weights float32[..., K] of the MSRA encoding."""
    if float(sigma) != int(sigma):
        raise ValueError(f"MSRA targets need an integer sigma, got {sigma}")
    tmp = 3 * int(sigma)
    stride = image_size / heatmap_size
    # float64 + trunc reproduces python int(x / stride + 0.5) on the official float64 path.
    mu = torch.trunc(joints_crop.to(torch.float64) / stride + 0.5).to(torch.long)
    in_bounds = (mu - tmp < heatmap_size).all(dim=-1) & (mu + tmp + 1 >= 0).all(dim=-1)
    return mu, ((visible > 0) & in_bounds).to(torch.float32)


def msra_target_weights(
    joints_crop: torch.Tensor,
    visible: torch.Tensor,
    sigma: int,
    image_size: int = 256,
    heatmap_size: int = 64,
) -> torch.Tensor:
    """Target weights of :func:`msra_support_targets` without rendering the heatmaps.

    Args:
        joints_crop: float[..., K, 2] keypoints, crop px (x, y).
        visible: float/bool[..., K] visibility (> 0 counts as visible).
        sigma: Gaussian σ in heatmap cells (integer).
        image_size: crop side, px.
        heatmap_size: heatmap side, cells.

    Returns:
        float32[..., K]: 1 where visible and the Gaussian window touches the heatmap.
    """
    return _msra_peaks(joints_crop, visible, sigma, image_size, heatmap_size)[1]


def bilinear_resize_matrix(src_hw: tuple[int, int], dst_hw: tuple[int, int], device=None,
                           dtype=torch.float32) -> torch.Tensor:
    """The linear operator of ``F.interpolate(mode="bilinear", align_corners=False)``.

    Args:
        src_hw: (h, w) of the input map.
        dst_hw: (H, W) of the output map.
        device: torch device.
        dtype: torch dtype.

    Returns:
        [H*W, h*w] matrix M with ``resize(f).flatten(-2) == f.flatten(-2) @ M.T``.
    """
    h, w = src_hw
    basis = torch.eye(h * w, device=device, dtype=dtype).reshape(h * w, 1, h, w)
    return F.interpolate(basis, size=dst_hw, mode="bilinear", align_corners=False).reshape(h * w, -1).T


def pool_support_tokens(features: Sequence[torch.Tensor], heatmaps: Sequence[torch.Tensor],
                        factorized: bool = False) -> torch.Tensor:
    """Heatmap-weighted average of support features, averaged over shots.

    Mirrors the support-token loop of ``TwoStageHead.forward`` (CapeFormer) and
    ``PoseHead.forward`` (PoseAnything): each feature map is resized bilinearly
    (align_corners=False) to the heatmap size, each heatmap normalised to sum 1 (+1e-8), and
    the token is ``heatmap · features``; tokens are then averaged over shots.

    Args:
        features: S tensors float32[B, C, h, w], support backbone features per shot.
        heatmaps: S tensors float32[B, K, H, W], support heatmaps per shot.
        factorized: False = the official operation order (resize the C-channel features to
            H×W, then pool). True = pull the heatmap back through the (linear) resize instead,
            ``(heatmap @ M) @ features``: the same value up to float summation order (~1e-7
            relative), about (H·W)/(h·w) times fewer operations for C ≫ K (ResNet-50: C=2048).

    Returns:
        float32[B, K, C] support tokens (before masking and projection).
    """
    tokens = []
    for feature, target in zip(features, heatmaps, strict=True):
        target = target / (target.sum(dim=-1).sum(dim=-1)[:, :, None, None] + 1e-8)
        if factorized:
            resize = bilinear_resize_matrix(feature.shape[-2:], target.shape[-2:], feature.device, feature.dtype)
            tokens.append((target.flatten(2) @ resize) @ feature.flatten(2).transpose(1, 2))
        else:
            resized = F.interpolate(feature, size=target.shape[-2:], mode="bilinear", align_corners=False)
            tokens.append(target.flatten(2) @ resized.flatten(2).permute(0, 2, 1))
    return torch.mean(torch.stack(tokens, dim=0), 0)


def shot_mask(weights: torch.Tensor) -> torch.Tensor:
    """Support mask = product over shots of the target weights (official detectors' forward).

    Args:
        weights: float32[S, B, K] per-shot target weights.

    Returns:
        float32[B, K] (1 = keypoint valid in every shot).
    """
    return torch.prod(weights, dim=0)
