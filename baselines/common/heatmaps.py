"""Heatmap targets and heatmap decoding of the official top-down pipeline (numpy only).

Two halves, both vectorised over any batch size and both reproducing the official float32
arithmetic bit for bit:

* **Encoding** — :func:`msra_targets` mirrors ``TopDownGenerateTargetFewShot._msra_generate_target``
  (``pomnet/datasets/pipelines/top_down_transform.py``, copied unchanged into CapeFormer,
  PoseAnything and CapeX): an un-normalised Gaussian (peak 1) pasted in a ``(6σ+1)²`` window
  around ``mu = int(joint / stride + 0.5)``. ``int()`` truncates toward zero, so a joint a few
  pixels left of the crop still lands in column 0 with weight 1 (spec §1.3). σ = 2 for POMNet /
  CapeFormer, σ = 1 for PoseAnything / CapeX.
* **Decoding** — :func:`keypoints_from_heatmaps` mirrors mmpose 0.x
  ``keypoints_from_heatmaps(post_process='default')`` (``mmpose/core/evaluation/top_down_eval.py``):
  per-map argmax, a ±0.25 px shift toward the larger neighbour away from the border, then
  ``transform_preds`` to original image pixels (spec §1.7, §2.2 step 8).

Frames: ``*_crop`` are pixels of the ``image_size`` crop, ``*_hm`` heatmap cells (crop px /
stride), ``*_px`` original image pixels.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

PIXEL_STD = 200.0


def _pair(size: int | tuple[int, int] | np.ndarray) -> tuple[int, int]:
    """``int`` or ``(w, h)`` -> ``(w, h)``."""
    arr = np.asarray(size).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 2)
    if arr.size != 2:
        raise ValueError(f"size must be an int or (w, h), got {size!r}")
    return int(arr[0]), int(arr[1])


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------


def gaussian_patch(sigma: float) -> np.ndarray:
    """The official un-normalised Gaussian window.

    Computed exactly as ``_msra_generate_target`` does (float32 grid, float32 ``exp``), so a
    pasted window is bit-identical to the official target.

    Args:
        sigma: Gaussian σ in heatmap cells; ``3σ`` must be an integer (the official slicing
            silently breaks otherwise).

    Returns:
        float32[6σ+1, 6σ+1] with value 1 at the centre.
    """
    tmp_size = sigma * 3
    if tmp_size != int(tmp_size) or sigma <= 0:
        raise ValueError(f"sigma must be positive with 3*sigma integral, got {sigma}")
    size = 2 * int(tmp_size) + 1
    x = np.arange(0, size, 1, np.float32)
    y = x[:, None]
    x0 = y0 = size // 2
    return np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2))


class MsraTargets(NamedTuple):
    """Heatmap targets of one or more instances.

    Attributes:
        target: float32[..., K, H, W] Gaussian heatmaps (zero where the weight is 0).
        target_weight: float32[..., K, 1] visibility, zeroed when the window misses the map.
    """

    target: np.ndarray
    target_weight: np.ndarray


def msra_targets(
    joints_crop: np.ndarray,
    visible: np.ndarray,
    sigma: float = 2,
    image_size: int | tuple[int, int] = 256,
    heatmap_size: int | tuple[int, int] = 64,
) -> MsraTargets:
    """MSRA Gaussian heatmap targets (``TopDownGenerateTargetFewShot``, encoding 'MSRA').

    Mirrors ``_msra_generate_target`` with ``unbiased_encoding=False`` and no joint weights,
    vectorised: every in-map cell reads the same entry of :func:`gaussian_patch` that the
    official slice assignment copies there.

    Args:
        joints_crop: float[..., K, 2+] joints, crop px (x, y, ...); extra columns are ignored.
            The official dataset keeps them in float32; pass float32 to reproduce the rounding
            of ``joint / stride + 0.5`` exactly.
        visible: float[..., K] or [..., K, 1+] visibility (official ``joints_3d_visible[:, 0]``,
            0 or 1). A joint is drawn when its weight is > 0.5.
        sigma: Gaussian σ in heatmap cells.
        image_size: crop side in px, int or (w, h).
        heatmap_size: heatmap side in cells, int or (w, h).

    Returns:
        :class:`MsraTargets` with target float32[..., K, H, W] and target_weight
        float32[..., K, 1].
    """
    joints = np.asarray(joints_crop)
    vis = np.asarray(visible, dtype=np.float32)
    if vis.ndim == joints.ndim:
        vis = vis[..., 0]
    lead = joints.shape[:-1]
    if vis.shape != lead:
        raise ValueError(f"visible shape {vis.shape} does not match joints {joints.shape}")
    img_w, img_h = _pair(image_size)
    W, H = _pair(heatmap_size)
    patch = gaussian_patch(sigma)
    tmp = int(sigma * 3)
    size = patch.shape[0]

    # Official: feat_stride = image_size / [W, H] (float64 numpy), mu = int(j / stride + 0.5).
    stride = np.array([img_w, img_h], dtype=np.float64) / np.array([W, H], dtype=np.float64)
    mu = np.trunc(joints[..., :2] / stride + 0.5).astype(np.int64)  # int() truncates toward 0
    ul = mu - tmp  # [..., K, 2]
    br = mu + tmp + 1
    outside = (ul[..., 0] >= W) | (ul[..., 1] >= H) | (br[..., 0] < 0) | (br[..., 1] < 0)
    weight = np.where(outside, np.float32(0), vis).astype(np.float32)

    # Cell c of the map takes patch entry c - ul when 0 <= c - ul < size (the pasted window).
    dx = np.arange(W)[None, :] - ul.reshape(-1, 2)[:, 0:1]  # [N, W]
    dy = np.arange(H)[None, :] - ul.reshape(-1, 2)[:, 1:2]  # [N, H]
    in_x = (dx >= 0) & (dx < size)
    in_y = (dy >= 0) & (dy < size)
    gathered = patch[np.clip(dy, 0, size - 1)[:, :, None], np.clip(dx, 0, size - 1)[:, None, :]]
    draw = (weight.reshape(-1) > 0.5)[:, None, None]
    target = np.where(in_y[:, :, None] & in_x[:, None, :] & draw, gathered, np.float32(0))
    return MsraTargets(
        target=target.reshape(*lead, H, W).astype(np.float32, copy=False),
        target_weight=weight[..., None],
    )


def support_mask(target_weights: np.ndarray) -> np.ndarray:
    """Support mask: product of the support target weights over shots (detector ``forward``).

    Args:
        target_weights: float[S, ..., K, 1] or [S, ..., K] per-shot target weights.

    Returns:
        float32 of the input shape without the leading shot axis.
    """
    return np.prod(np.asarray(target_weights, dtype=np.float32), axis=0)


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


class HeatmapPeaks(NamedTuple):
    """Result of decoding heatmaps.

    Attributes:
        coords: float32[N, K, 2] (x, y) in the frame the function documents.
        maxvals: float32[N, K, 1] heatmap maximum (the official "score").
    """

    coords: np.ndarray
    maxvals: np.ndarray


def get_max_preds(heatmaps: np.ndarray) -> HeatmapPeaks:
    """Per-map argmax (mmpose ``_get_max_preds``).

    Args:
        heatmaps: float[N, K, H, W].

    Returns:
        coords float32[N, K, 2] integer cell (x = idx % W, y = idx // W), ``-1`` where the
        maximum is ``<= 0``; maxvals float32[N, K, 1] (heatmap dtype).
    """
    hm = np.asarray(heatmaps)
    if hm.ndim != 4:
        raise ValueError(f"heatmaps must be [N, K, H, W], got shape {hm.shape}")
    N, K, _, W = hm.shape
    flat = hm.reshape(N, K, -1)
    idx = np.argmax(flat, axis=2)  # first maximum on ties, as numpy does officially
    maxvals = np.amax(flat, axis=2)[..., None]
    coords = np.stack([idx % W, idx // W], axis=-1).astype(np.float32)
    coords = np.where(maxvals > 0.0, coords, np.float32(-1)).astype(np.float32)
    return HeatmapPeaks(coords=coords, maxvals=maxvals)


def quarter_offset(heatmaps: np.ndarray, coords_hm: np.ndarray) -> np.ndarray:
    """mmpose 'default' post-processing: shift ±0.25 cell toward the larger neighbour.

    Applied only where ``1 < px < W-1 and 1 < py < H-1`` (``px, py = int(coord)``), per axis
    ``sign(h[py, px+1] - h[py, px-1]) * 0.25`` (and the same along y), in float32 like the
    official per-keypoint loop.

    Args:
        heatmaps: float[N, K, H, W].
        coords_hm: float32[N, K, 2] integer argmax cells from :func:`get_max_preds`.

    Returns:
        float32[N, K, 2] shifted coordinates, heatmap cells.
    """
    hm = np.asarray(heatmaps)
    N, K, H, W = hm.shape
    coords = np.asarray(coords_hm, dtype=np.float32)
    px = np.trunc(coords[..., 0]).astype(np.int64)
    py = np.trunc(coords[..., 1]).astype(np.int64)
    inner = (px > 1) & (px < W - 1) & (py > 1) & (py < H - 1)
    # Clip the neighbour indices so the gather is valid everywhere; border results are masked.
    pxc = np.clip(px, 1, W - 2)
    pyc = np.clip(py, 1, H - 2)
    n = np.arange(N)[:, None]
    k = np.arange(K)[None, :]
    diff = np.stack(
        [
            hm[n, k, pyc, pxc + 1] - hm[n, k, pyc, pxc - 1],
            hm[n, k, pyc + 1, pxc] - hm[n, k, pyc - 1, pxc],
        ],
        axis=-1,
    )
    shift = (np.sign(diff) * 0.25).astype(np.float32)
    return np.where(inner[..., None], coords + shift, coords).astype(np.float32)


def transform_preds(
    coords: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    output_size: int | tuple[int, int],
) -> np.ndarray:
    """Map coordinates of an ``output_size`` grid to original image pixels, batched.

    Mirrors mmpose ``transform_preds(..., use_udp=False)`` (``core/post_processing/
    post_transforms.py``) including its float32 arithmetic and operation order when given the
    float32 centre/scale the official ``decode`` builds:
    ``x_img = x * (s_x * 200 / out_w) + c_x - s_x * 200 * 0.5`` (same for y; no rotation).

    Args:
        coords: float32[N, K, 2] (x, y) in cells of the output grid.
        center: float32[N, 2] crop centre, image px.
        scale: float32[N, 2] crop scale (source side / 200).
        output_size: grid size, int or (w, h) (64 for heatmaps, 256 for crop pixels).

    Returns:
        float32[N, K, 2] coordinates, image px.
    """
    out_w, out_h = _pair(output_size)
    c = np.asarray(center, dtype=np.float32).reshape(-1, 1, 2)
    side = np.asarray(scale, dtype=np.float32).reshape(-1, 1, 2) * np.float32(PIXEL_STD)
    per_cell = side / np.array([out_w, out_h], dtype=np.float32)
    xy = np.asarray(coords, dtype=np.float32)
    return ((xy * per_cell + c) - side * np.float32(0.5)).astype(np.float32)


def keypoints_from_heatmaps(
    heatmaps: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
) -> HeatmapPeaks:
    """Decode heatmaps to original image pixels (mmpose ``keypoints_from_heatmaps``).

    Default settings of every CAPE config: ``post_process='default'``, no unbiased (DARK)
    decoding, no UDP, no flip. Centre/scale are cast to float32 first, as POMNet's
    ``TransformerHead.decode`` copies them into float32 arrays. Correct at any batch size.

    Args:
        heatmaps: float32[N, K, H, W] predicted heatmaps.
        center: float[N, 2] crop centre, image px.
        scale: float[N, 2] crop scale (source side / 200).

    Returns:
        :class:`HeatmapPeaks`: coords float32[N, K, 2] image px, maxvals float32[N, K, 1].
    """
    hm = np.asarray(heatmaps)
    peaks = get_max_preds(hm)
    coords_hm = quarter_offset(hm, peaks.coords)
    H, W = hm.shape[-2:]
    return HeatmapPeaks(transform_preds(coords_hm, center, scale, (W, H)), peaks.maxvals)


def keypoints_from_heatmaps_crop(
    heatmaps: np.ndarray,
    image_size: int | tuple[int, int] = 256,
) -> HeatmapPeaks:
    """Decode heatmaps to crop pixels (argmax + quarter offset, times the stride).

    Equals :func:`keypoints_from_heatmaps` with the crop's own centre ``image_size / 2`` and
    scale ``image_size / 200``; use :func:`keypoints_from_heatmaps` with the instance's
    centre/scale when the official float32 image-pixel rounding matters.

    Args:
        heatmaps: float32[N, K, H, W].
        image_size: crop side in px, int or (w, h).

    Returns:
        :class:`HeatmapPeaks`: coords float32[N, K, 2] crop px, maxvals float32[N, K, 1].
    """
    hm = np.asarray(heatmaps)
    peaks = get_max_preds(hm)
    coords_hm = quarter_offset(hm, peaks.coords)
    H, W = hm.shape[-2:]
    img_w, img_h = _pair(image_size)
    stride = np.array([img_w / W, img_h / H], dtype=np.float32)
    return HeatmapPeaks((coords_hm * stride).astype(np.float32), peaks.maxvals)
