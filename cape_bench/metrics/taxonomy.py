"""Per-keypoint error taxonomy: coco-analyze's good / inversion / swap / jitter / miss, carried over to CAPE.

Ronchi & Perona (ICCV'17, ``matteorr/coco-analyze``) label every keypoint of a matched detection by the
ground-truth point its prediction is closest to. MP-100 crops hold one instance, so "swap" becomes
confusion with *another keypoint of the same instance*, and OKS is replaced by the PCK-normalised
distance ``d = ‖pred − gt‖ / max(w, h)`` of :func:`cape_bench.metrics.pck.normalized_distances`
(../shared/spec/literature.md §4.1; aesthetics guide G9). With threshold α, the first rule that holds
gives the label of a scored keypoint ``k``:

1. **good**: ``d_k < α`` (exactly the keypoint-level PCK@α hit);
2. **inversion**: the prediction lies within α of the ground truth of ``k``'s left/right mirror
   partner ``σ(k)`` (when ``k`` has one and ``σ(k)`` is visible in the query);
3. **swap**: it lies within α of the ground truth of any other keypoint visible in the query;
4. **jitter**: ``α ≤ d_k < 2α``;
5. **miss**: anything else.

Every comparison uses the float32 distances and the strict ``<`` of the official PCK, so the
"good" count of a cell equals its keypoint-level PCK@α hit count. Caveat: at α = 0.2 of the bbox side,
neighbours in dense layouts (finger joints, facial landmarks) lie within α of each other, so there a
"swap" often means "landed on a neighbour" rather than a semantic confusion; a smaller α separates the
two. Functions are pure: inputs are
never modified. Changing any rule here must bump ``cape_bench.analysis.ANALYSIS_VERSION``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cape_bench.metrics import pck

ERROR_TYPES = ("good", "inversion", "swap", "jitter", "miss")
GOOD, INVERSION, SWAP, JITTER, MISS = range(len(ERROR_TYPES))
DEFAULT_ALPHA = 0.2


@dataclass(frozen=True)
class KeypointErrors:
    """Labels of one batch of pairs of one category.

    Attributes:
        error_type: float32[N, K]: index into :data:`ERROR_TYPES` (0 good … 4 miss), NaN where the
            keypoint is not scored.
        target: float32[N, K]: the keypoint whose ground truth the prediction landed on (the mirror
            partner for an inversion, the nearest other keypoint for a swap), NaN for every other label.
        distance: float32[N, K]: the official normalised distance ``d`` of each keypoint to its own ground
            truth (:func:`cape_bench.metrics.pck.normalized_distances`), NaN where not scored.
    """

    error_type: np.ndarray
    target: np.ndarray
    distance: np.ndarray


def keypoint_errors(
    pred_px: np.ndarray,
    gt_px: np.ndarray,
    query_visible: np.ndarray,
    scored: np.ndarray,
    norm_px: np.ndarray,
    mirror: np.ndarray,
    alpha: float = DEFAULT_ALPHA,
) -> KeypointErrors:
    """Label every scored keypoint good / inversion / swap / jitter / miss (rules in the module docstring).

    Every distance compared with α is :func:`cape_bench.metrics.pck.normalized_distances`; the nearest
    other keypoint of a swap candidate is first located by squared pixel distance (the normaliser is
    constant within a pair, so the order is the same) and only its distance is then computed, so the
    cost is O(N·K + M·K) for M keypoints that are neither good nor inverted, not O(N·K²).

    Args:
        pred_px: float[N, K, 2] predictions (original image px), N pairs of one category.
        gt_px: float[N, K, 2] query ground truth (original image px).
        query_visible: bool[N, K]: keypoints visible in the query; only these can be the target of an
            inversion or a swap.
        scored: bool[N, K]: the keypoints to label (the official mask: visible in the query and in every
            support).
        norm_px: float[N] the query's clean-bbox max side (px); a pair with a normaliser ≤ 0 is unscored.
        mirror: int[K] left/right partner of each keypoint, ``mirror[k] == k`` when it has none
            (see :func:`cape_bench.metrics.ambiguity.mirror_map`).
        alpha: threshold on the normalised distance (fraction of the bbox max side).

    Returns:
        :class:`KeypointErrors` with float32[N, K] ``error_type`` and ``target``.
    """
    pred = np.asarray(pred_px, np.float64)
    gt = np.asarray(gt_px)
    vis = np.asarray(query_visible, bool)
    norm = np.asarray(norm_px, np.float64)
    mirror = np.asarray(mirror, np.int64)
    n, k = vis.shape
    if mirror.shape != (k,):
        raise ValueError(f"mirror has shape {mirror.shape}, expected ({k},)")
    if np.any((mirror < 0) | (mirror >= k)):
        raise ValueError("mirror holds an index outside 0..K-1")
    thr = np.float32(alpha)
    d_self = pck.normalized_distances(pred, gt, np.asarray(scored, bool) & vis, norm)
    scored = ~np.isnan(d_self)
    good = d_self < thr
    inversion = np.zeros((n, k), bool)
    swap = np.zeros((n, k), bool)
    target = np.full((n, k), np.nan, np.float32)

    # inversion: only keypoints that are scored, not good, and have a partner visible in the query
    rows, cols = np.nonzero(scored & ~good & (mirror != np.arange(k))[None, :])
    partner = mirror[cols]
    d_inv = pck.normalized_distances(
        pred[rows, cols][:, None, :], gt[rows, partner][:, None, :], vis[rows, partner][:, None], norm[rows]
    )[:, 0]
    hit = d_inv < thr
    inversion[rows[hit], cols[hit]] = True
    target[rows[hit], cols[hit]] = partner[hit]

    # swap: the nearest other keypoint visible in the query, for what is neither good nor inverted
    rows, cols = np.nonzero(scored & ~good & ~inversion)
    if len(rows) and k > 1:
        m = np.arange(len(rows))
        d2 = gt[rows, :, 0].astype(np.float64)  # [M, K] squared px distances, computed in place
        d2 -= pred[rows, cols, 0][:, None]
        d2 *= d2
        dy = gt[rows, :, 1].astype(np.float64)
        dy -= pred[rows, cols, 1][:, None]
        dy *= dy
        d2 += dy
        np.copyto(d2, np.inf, where=~vis[rows])
        d2[m, cols] = np.inf  # not itself
        j = np.argmin(d2, axis=1)
        exists = np.isfinite(d2[m, j])
        d_other = pck.normalized_distances(
            pred[rows, cols][:, None, :], gt[rows, j][:, None, :], exists[:, None], norm[rows]
        )[:, 0]
        hit = d_other < thr
        swap[rows[hit], cols[hit]] = True
        target[rows[hit], cols[hit]] = j[hit]
    jitter = scored & ~good & ~inversion & ~swap & (d_self < 2 * thr)
    code = np.select([good, inversion, swap, jitter], [GOOD, INVERSION, SWAP, JITTER], MISS).astype(np.float32)
    return KeypointErrors(
        error_type=np.where(scored, code, np.float32(np.nan)),
        target=target,
        distance=d_self,
    )


def error_counts(error_type: np.ndarray, axis: int | tuple[int, ...] | None = 0) -> np.ndarray:
    """Count each label: int64[..., 5] in :data:`ERROR_TYPES` order, NaN (unscored) entries ignored.

    Args:
        error_type: float[...] codes from :func:`keypoint_errors`.
        axis: axes to sum over (``None``: all).

    Returns:
        int64 array of the remaining shape with a trailing axis of 5; its sum is the scored count.
    """
    codes = np.asarray(error_type)
    return np.stack([np.sum(codes == t, axis=axis) for t in range(len(ERROR_TYPES))], axis=-1).astype(np.int64)


def error_rates(counts: np.ndarray) -> np.ndarray:
    """float64[..., 5]: each label's share of the scored keypoints; NaN where none is scored.

    Args:
        counts: int[..., 5] from :func:`error_counts` (or sums of them).
    """
    counts = np.asarray(counts, np.float64)
    total = counts.sum(axis=-1, keepdims=True)
    return np.divide(counts, total, out=np.full(counts.shape, np.nan), where=total > 0)
