"""Intra-category variation: how much a method's accuracy depends on *which* instances it is shown.

CapeNext's second motivation is intra-category variation ("a sleeping white cat vs. a standing black
cat", ../shared/spec/literature.md §1.1, §4.2). Measured from stored episodes:

* **query spread**: the standard deviation, over the query instances of a category, of per-query PCK
  (a query's PCK is the mean over the pairs where it appears);
* **support sensitivity**: for a query scored with several different support sets, the variance of
  its PCK across those sets; averaged over such queries;
* **pose dissimilarity** of a pair: the residual of the best similarity alignment (translation,
  rotation, uniform scale; no reflection) of the support keypoints onto the query keypoints, both in
  their own normalised crop frame (the official 1.25-padded square around the bbox, side = 1), using
  the keypoints visible in both; a k-shot pair takes the mean over its supports. Pairs are binned into
  per-category quartiles and PCK is read per quartile; the slope of PCK vs quartile index says how
  much a method suffers from pose change (a robust method is flat).

Per-pair PCK here is the official per-pair PCK (:func:`cape_bench.metrics.pck.pck_per_pair`) with the
pairs that have no scored keypoint left out (NaN) instead of scored 0: they say nothing about the
method. Functions are pure. Changing any rule here must bump ``cape_bench.analysis.ANALYSIS_VERSION``.
"""

from __future__ import annotations

import numpy as np

from cape_bench.data.geometry import image_to_crop
from cape_bench.metrics import pck

MIN_PROCRUSTES_POINTS = 3  # a similarity has 4 degrees of freedom: 2 points always align exactly
QUARTILES = 4


def scored_pair_pck(dist_norm: np.ndarray, alpha: float) -> np.ndarray:
    """float64[N]: per-pair PCK@alpha, NaN for a pair without a scored keypoint.

    Args:
        dist_norm: float[N, K] normalised distances, NaN where not scored.
        alpha: threshold (fraction of the bbox max side).
    """
    dist_norm = np.asarray(dist_norm)
    any_scored = (~np.isnan(dist_norm)).any(axis=1)
    return np.where(any_scored, pck.pck_per_pair(dist_norm, alpha), np.nan)


def crop_frame(xy_px: np.ndarray, center_px: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """float64[N, K, 2]: keypoints in the normalised crop frame (the official crop square mapped to [0, 1]²).

    Args:
        xy_px: float[N, K, 2] original image px. center_px: float[N, 2]. scale: float[N, 2] (official
            ``scale``: padded box side / 200).
    """
    return image_to_crop(xy_px, center_px, scale, (1.0, 1.0))


def procrustes_distance(
    source: np.ndarray, target: np.ndarray, mask: np.ndarray, min_points: int = MIN_PROCRUSTES_POINTS
) -> np.ndarray:
    """float64[N]: RMS residual after the best similarity map of ``source`` onto ``target``.

    Solves ``min over s>0, rotation R, translation t of mean_k ‖s R x_k + t − y_k‖²`` over the masked
    keypoints, in closed form with complex numbers (z = centred x, w = centred y):
    ``residual = Σ|w|² − |Σ z̄ w|² / Σ|z|²``. Reflections are not allowed, so a mirrored pose is far.
    The result is in the units of ``target``.

    Args:
        source: float[N, K, 2]; target: float[N, K, 2]; mask: bool[N, K] keypoints to use.
        min_points: fewer masked points than this give NaN (default 3; 2 points always align).

    Returns:
        float64[N]; NaN where there are too few points or the source points all coincide.
    """
    x = np.asarray(source, np.float64)
    y = np.asarray(target, np.float64)
    m = np.asarray(mask, bool) & np.isfinite(x).all(-1) & np.isfinite(y).all(-1)
    w = m.astype(np.float64)
    count = w.sum(axis=1)
    safe = np.maximum(count, 1.0)
    x0, x1 = np.where(m, x[..., 0], 0.0), np.where(m, x[..., 1], 0.0)
    y0, y1 = np.where(m, y[..., 0], 0.0), np.where(m, y[..., 1], 0.0)
    x0 = (x0 - (x0.sum(axis=1) / safe)[:, None]) * w  # centred; zero outside the mask
    x1 = (x1 - (x1.sum(axis=1) / safe)[:, None]) * w
    y0 = (y0 - (y0.sum(axis=1) / safe)[:, None]) * w
    y1 = (y1 - (y1.sum(axis=1) / safe)[:, None]) * w
    zz = np.sum(x0 * x0 + x1 * x1, axis=1)
    ww = np.sum(y0 * y0 + y1 * y1, axis=1)
    re = np.sum(x0 * y0 + x1 * y1, axis=1)  # Σ z̄ w, z = x0 + i x1, w = y0 + i y1
    im = np.sum(x0 * y1 - x1 * y0, axis=1)
    ok = (count >= min_points) & (zz > 1e-12 * (zz + ww))
    residual = ww - (re * re + im * im) / np.where(ok, zz, 1.0)
    rms = np.sqrt(np.maximum(residual, 0.0) / safe)
    return np.where(ok, rms, np.nan)


def pose_dissimilarity(
    support_xy: np.ndarray, support_visible: np.ndarray, query_xy: np.ndarray, query_visible: np.ndarray
) -> np.ndarray:
    """float64[N]: mean over the supports of :func:`procrustes_distance` (support → query).

    Args:
        support_xy: float[N, S, K, 2] support keypoints in their normalised crop frames.
        support_visible: bool[N, S, K].
        query_xy: float[N, K, 2] query keypoints in its normalised crop frame.
        query_visible: bool[N, K].

    Returns:
        float64[N]; a support with too few keypoints visible in both is left out; NaN when all are.
    """
    sx = np.asarray(support_xy, np.float64)
    n, s, k, _ = sx.shape
    qx = np.broadcast_to(np.asarray(query_xy, np.float64)[:, None], sx.shape).reshape(n * s, k, 2)
    mask = np.asarray(support_visible, bool) & np.asarray(query_visible, bool)[:, None, :]
    per_support = procrustes_distance(sx.reshape(n * s, k, 2), qx, mask.reshape(n * s, k)).reshape(n, s)
    valid = ~np.isnan(per_support)
    total = np.where(valid, per_support, 0.0).sum(axis=1)
    return np.where(valid.any(axis=1), total / np.maximum(valid.sum(axis=1), 1), np.nan)


def quantile_bins(values: np.ndarray, groups: np.ndarray, n_bins: int = QUARTILES) -> np.ndarray:
    """float64[N]: the per-group quantile bin (1..n_bins) of each value; NaN where the value is NaN.

    The bin is ``ceil(n_bins × r)`` where ``r`` is the value's mid-rank within its group divided by the
    group size, so tied values always share a bin (a 0/1 factor lands in two bins, not four).

    Args:
        values: float[N]. groups: int[N] (e.g. category ids): bins are formed within each group.
    """
    import pandas as pd  # noqa: PLC0415

    v = pd.Series(np.asarray(values, np.float64))
    r = v.groupby(np.asarray(groups)).rank(method="average", pct=True).to_numpy()
    return np.where(np.isnan(r), np.nan, np.clip(np.ceil(r * n_bins), 1, n_bins))


def bin_means(bins: np.ndarray, y: np.ndarray, n_bins: int = QUARTILES) -> tuple[np.ndarray, np.ndarray]:
    """Mean and count of ``y`` in each bin 1..n_bins (NaN ``bins`` or ``y`` left out).

    Returns:
        (float64[n_bins] means, NaN for an empty bin; int64[n_bins] counts).
    """
    b = np.asarray(bins, np.float64)
    y = np.asarray(y, np.float64)
    ok = ~np.isnan(b) & ~np.isnan(y)
    idx = b[ok].astype(np.int64) - 1
    counts = np.bincount(idx, minlength=n_bins)[:n_bins]
    sums = np.bincount(idx, weights=y[ok], minlength=n_bins)[:n_bins]
    return np.divide(sums, counts, out=np.full(n_bins, np.nan), where=counts > 0), counts


def trend_slope(means: np.ndarray) -> float:
    """Least-squares slope of per-bin means against the bin index (1, 2, …); empty (NaN) bins skipped.

    Units: change of the mean per bin step (PCK per quartile). NaN with fewer than two non-empty bins.
    """
    m = np.asarray(means, np.float64)
    x = np.arange(1, len(m) + 1, dtype=np.float64)
    ok = ~np.isnan(m)
    if ok.sum() < 2:
        return float("nan")
    xc = x[ok] - x[ok].mean()
    return float(np.sum(xc * (m[ok] - m[ok].mean())) / np.sum(xc * xc))


def query_spread(pair_pck: np.ndarray, query: np.ndarray) -> tuple[float, int]:
    """Standard deviation (ddof = 1) over queries of per-query PCK, and the number of queries.

    Args:
        pair_pck: float[N] per-pair PCK of one category (NaN pairs left out).
        query: int[N] query annotation id of each pair.

    Returns:
        (std, number of queries); std is NaN with fewer than two queries.
    """
    v = np.asarray(pair_pck, np.float64)
    ok = ~np.isnan(v)
    _, inv = np.unique(np.asarray(query)[ok], return_inverse=True)
    if len(inv) == 0:
        return float("nan"), 0
    per_query = np.bincount(inv, weights=v[ok]) / np.bincount(inv)
    std = float(np.std(per_query, ddof=1)) if len(per_query) > 1 else float("nan")
    return std, len(per_query)


def support_sensitivity(pair_pck: np.ndarray, query: np.ndarray, support_set: np.ndarray) -> tuple[float, int]:
    """Mean over queries of the variance (ddof = 1) of their PCK across distinct support sets.

    Pairs with the same query and the same support set are averaged first (one condition); a query
    counts when it was scored with at least two different support sets.

    Args:
        pair_pck: float[N] per-pair PCK of one category (NaN pairs left out).
        query: int[N] query annotation id. support_set: int[N] id of the (unordered) support set.

    Returns:
        (mean variance, number of queries it averages); NaN and 0 when no query has two support sets.
    """
    v = np.asarray(pair_pck, np.float64)
    ok = ~np.isnan(v)
    if not ok.any():
        return float("nan"), 0
    _, q = np.unique(np.asarray(query)[ok], return_inverse=True)
    _, s = np.unique(np.asarray(support_set)[ok], return_inverse=True)
    q, s = q.reshape(-1), s.reshape(-1)
    cond, cond_inv = np.unique(q * (s.max() + 1) + s, return_inverse=True)
    cond_inv = cond_inv.reshape(-1)
    cond_mean = np.bincount(cond_inv, weights=v[ok]) / np.bincount(cond_inv)
    cond_query = cond // (s.max() + 1)  # dense query index of each condition
    n_sets = np.bincount(cond_query)
    mean_q = np.bincount(cond_query, weights=cond_mean) / np.maximum(n_sets, 1)
    ss = np.bincount(cond_query, weights=(cond_mean - mean_q[cond_query]) ** 2)
    multi = n_sets >= 2
    if not multi.any():
        return float("nan"), 0
    return float(np.mean(ss[multi] / (n_sets[multi] - 1))), int(multi.sum())


def factor_difference(query_values: np.ndarray, support_values: np.ndarray, *, categorical: bool) -> np.ndarray:
    """float64[N]: how far a pair's supports are from its query on one per-instance factor.

    Numeric factors give the mean over supports of ``|query − support|``; categorical ones (ids,
    texture names, flags) the share of supports whose value differs. Supports lacking the value are
    left out; NaN when the query or every support lacks it.

    Args:
        query_values: float[N] the query's value (categorical factors: integer codes), NaN when missing.
        support_values: float[N, S] the supports' values, NaN when missing.
        categorical: compare for equality instead of subtracting.
    """
    q = np.asarray(query_values, np.float64)[:, None]
    s = np.asarray(support_values, np.float64)
    ok = ~np.isnan(s) & ~np.isnan(q)
    diff = (s != q).astype(np.float64) if categorical else np.abs(s - q)
    count = ok.sum(axis=1)
    total = np.where(ok, diff, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)
