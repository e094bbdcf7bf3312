"""Crop geometry of the official MP-100 pipeline, in numpy.

Mirrors ``_xywh2cs`` (transformer_dataset.py), mmpose 0.x ``get_affine_transform``,
``affine_transform`` and ``transform_preds`` (post_transforms.py). The official code keeps
centre and scale in float32; so does this module, because a float64 centre changes the last
bits of every decoded keypoint.
"""

from __future__ import annotations

import numpy as np

PIXEL_STD = 200.0  # mmpose's "pixel std": scale is expressed in units of 200 px
PADDING = 1.25  # official bbox padding


def clean_bbox(bbox_xywh: tuple[float, float, float, float], width: float, height: float):
    """The official sanitised box, or None when the official loader drops the instance.

    Mirrors ``_load_coco_keypoint_annotation_kernel``: clip to the image, then ``w-1``/``h-1``
    extents; kept only if ``x2 > x1 and y2 > y1``.

    Returns:
        ``[x1, y1, x2 - x1, y2 - y1]`` (original px, python floats) or None.
    """
    x, y, w, h = bbox_xywh
    x1 = max(0, x)
    y1 = max(0, y)
    x2 = min(width - 1, x1 + max(0, w - 1))
    y2 = min(height - 1, y1 + max(0, h - 1))
    if x2 > x1 and y2 > y1:
        return [x1, y1, x2 - x1, y2 - y1]
    return None


def bbox_center_scale(bbox_xywh: np.ndarray, aspect_ratio: float = 1.0, padding: float = PADDING):
    """Official ``_xywh2cs`` at test time (no centre jitter).

    Args:
        bbox_xywh: float[..., 4] clean boxes (original px).

    Returns:
        center: float32[..., 2] (original px); scale: float32[..., 2] (box side / 200, padded).
    """
    box = np.asarray(bbox_xywh, dtype=np.float64)
    x, y, w, h = box[..., 0], box[..., 1], box[..., 2], box[..., 3]
    center = np.stack([x + w * 0.5, y + h * 0.5], axis=-1).astype(np.float32)
    wide = w > aspect_ratio * h
    tall = w < aspect_ratio * h
    w2 = np.where(tall, h * aspect_ratio, w)
    h2 = np.where(wide, w / aspect_ratio, h)
    scale = np.stack([w2 / PIXEL_STD, h2 / PIXEL_STD], axis=-1).astype(np.float32) * np.float32(padding)
    return center, scale


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a - b
    return b + np.array([-d[1], d[0]], dtype=np.float32)


def _solve_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``cv2.getAffineTransform``: the 2×3 map sending 3 float32 points ``src`` to ``dst`` (solved in float64)."""
    src = src.astype(np.float64)
    dst = dst.astype(np.float64)
    a = np.zeros((6, 6))
    a[0::2, 0:2] = src
    a[0::2, 2] = 1.0
    a[1::2, 3:5] = src
    a[1::2, 5] = 1.0
    return np.linalg.solve(a, dst.reshape(6)).reshape(2, 3)


def affine_matrix(center, scale, rot: float, output_size, inv: bool = False) -> np.ndarray:
    """mmpose 0.x ``get_affine_transform`` (no shift): float64[2, 3] mapping original px → crop px.

    Args:
        center: float32[2] (original px). scale: float32[2]. rot: degrees.
        output_size: (w, h) of the crop in px. inv: return the crop → original map instead.
    """
    center = np.asarray(center, dtype=np.float32)
    scale_px = np.asarray(scale, dtype=np.float32) * PIXEL_STD
    src_w = scale_px[0]
    dst_w, dst_h = output_size
    rad = np.pi * rot / 180.0
    sn, cs = np.sin(rad), np.cos(rad)
    src_dir = np.array([0.0 * cs - (src_w * -0.5) * sn, 0.0 * sn + (src_w * -0.5) * cs])
    src = np.zeros((3, 2), dtype=np.float32)
    src[0] = center
    src[1] = center + src_dir
    src[2] = _third_point(src[0], src[1])
    dst = np.zeros((3, 2), dtype=np.float32)
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = np.array([dst_w * 0.5, dst_h * 0.5]) + np.array([0.0, dst_w * -0.5])
    dst[2] = _third_point(dst[0], dst[1])
    return _solve_affine(dst, src) if inv else _solve_affine(src, dst)


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2×3 affine to float[..., 2] points (``affine_transform`` vectorised)."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def crop_to_image(xy_crop: np.ndarray, center: np.ndarray, scale: np.ndarray, output_size) -> np.ndarray:
    """mmpose ``transform_preds`` (no UDP, rotation ignored), batched.

    Args:
        xy_crop: float[N, K, 2] in crop px of a crop of ``output_size`` (w, h) px
            (the 256² input, or the 64² heatmap for heatmap decoders).
        center: float32[N, 2]; scale: float32[N, 2].

    Returns:
        float64[N, K, 2] in original image px.
    """
    xy = np.asarray(xy_crop, dtype=np.float64)
    side = np.asarray(scale, dtype=np.float32) * PIXEL_STD
    out = np.asarray(output_size, dtype=np.float64)
    ratio = side / out  # float64 after promotion, as in mmpose
    ctr = np.asarray(center, dtype=np.float32)
    return xy * ratio[:, None, :] + ctr[:, None, :] - side[:, None, :] * 0.5


def image_to_crop(xy_px: np.ndarray, center: np.ndarray, scale: np.ndarray, output_size) -> np.ndarray:
    """Inverse of :func:`crop_to_image` (axis-aligned, rotation 0): float64[N, K, 2] crop px."""
    xy = np.asarray(xy_px, dtype=np.float64)
    side = np.asarray(scale, dtype=np.float32) * PIXEL_STD
    out = np.asarray(output_size, dtype=np.float64)
    ctr = np.asarray(center, dtype=np.float32)
    return (xy - ctr[:, None, :] + side[:, None, :] * 0.5) * (out / side)[:, None, :]


def warp_crop(image: np.ndarray, center, scale, size: int, rot: float = 0.0) -> np.ndarray:
    """Warp an RGB uint8[H, W, 3] image to the official square crop: ``cv2.warpAffine``, bilinear, black border."""
    import cv2  # noqa: PLC0415  (kept out of import time: the core must import fast)

    matrix = affine_matrix(center, scale, rot, (size, size))
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR)
