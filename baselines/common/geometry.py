"""Crop-frame ↔ image-frame geometry of the official top-down pipeline (numpy, no torch).

The official pipeline warps every instance to a square crop of ``input_size`` pixels whose
source square has side ``scale * 200`` (pixel std 200) around ``center``; predictions are
mapped back with mmpose ``transform_preds`` (no rotation at test time, no UDP).
"""

from __future__ import annotations

import numpy as np

PIXEL_STD = 200.0


def _as_size(crop_size: int | tuple[int, int] | np.ndarray) -> np.ndarray:
    size = np.asarray(crop_size, dtype=np.float64).reshape(-1)
    if size.size == 1:
        size = np.repeat(size, 2)
    if size.size != 2:
        raise ValueError(f"crop_size must be an int or (w, h), got {crop_size!r}")
    return size


def crop_to_image(
    xy_crop: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    crop_size: int | tuple[int, int] = 256,
) -> np.ndarray:
    """Map crop-pixel coordinates back to original image pixels, batched.

    Mirrors mmpose ``transform_preds(coords, center, scale, output_size, use_udp=False)``
    (``mmpose/core/post_processing/post_transforms.py``) but vectorised over the batch, so
    it is correct at any batch size (the official CapeFormer/PoseAnything ``decode`` loops
    with a stale index and is only correct at batch size 1):
    ``x_img = x * scale_x * 200 / out_w + cx - scale_x * 200 / 2`` (same for y).

    Args:
        xy_crop: float[B, K, 2] (or [K, 2]) keypoints, crop px (x, y).
        center: float[B, 2] (or [2]) crop centre, image px.
        scale: float[B, 2] (or [2]) crop scale (source side / 200).
        crop_size: side of the crop in pixels, int or (w, h).

    Returns:
        float64[B, K, 2] (or [K, 2]) keypoints, image px.
    """
    xy = np.asarray(xy_crop, dtype=np.float64)
    single = xy.ndim == 2
    if single:
        xy = xy[None]
    c = np.asarray(center, dtype=np.float64).reshape(-1, 1, 2)
    side = np.asarray(scale, dtype=np.float64).reshape(-1, 1, 2) * PIXEL_STD
    out = xy * (side / _as_size(crop_size)) + c - side * 0.5
    return out[0] if single else out


def image_to_crop(
    xy_img: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    crop_size: int | tuple[int, int] = 256,
) -> np.ndarray:
    """Inverse of :func:`crop_to_image` (rotation-free affine of the official crop).

    Args:
        xy_img: float[B, K, 2] (or [K, 2]) keypoints, image px.
        center: float[B, 2] (or [2]) crop centre, image px.
        scale: float[B, 2] (or [2]) crop scale (source side / 200).
        crop_size: side of the crop in pixels, int or (w, h).

    Returns:
        float64[B, K, 2] (or [K, 2]) keypoints, crop px.
    """
    xy = np.asarray(xy_img, dtype=np.float64)
    single = xy.ndim == 2
    if single:
        xy = xy[None]
    c = np.asarray(center, dtype=np.float64).reshape(-1, 1, 2)
    side = np.asarray(scale, dtype=np.float64).reshape(-1, 1, 2) * PIXEL_STD
    out = (xy - c + side * 0.5) * (_as_size(crop_size) / side)
    return out[0] if single else out


def normalized_to_image(
    xy_norm: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    crop_size: int | tuple[int, int] = 256,
) -> np.ndarray:
    """Map normalised crop coordinates ([0, 1], x then y) to image pixels.

    This is the full official ``decode`` of the CapeFormer lineage: ``kpts * [W, H]`` then
    ``transform_preds`` (``two_stage_head.py::decode``, ``head.py::decode``), batched.

    Args:
        xy_norm: float[B, K, 2] keypoints, normalised crop coordinates.
        center: float[B, 2] crop centre, image px.
        scale: float[B, 2] crop scale (source side / 200).
        crop_size: side of the crop in pixels, int or (w, h).

    Returns:
        float64[B, K, 2] keypoints, image px.
    """
    size = _as_size(crop_size)
    return crop_to_image(np.asarray(xy_norm, dtype=np.float64) * size, center, scale, size)
