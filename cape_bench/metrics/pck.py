"""PCK, mPCK, NME, AUC and EPE with official parity, vectorised over pairs.

Mirrors ``TestBaseDataset._report_metric`` (test_base_dataset.py) and mmpose 0.x
``keypoint_pck_accuracy`` / ``keypoint_nme`` / ``keypoint_auc`` / ``keypoint_epe``
(../shared/spec/official_code.md §1.6), which loop over pairs one at a time:

* d = ‖pred − gt‖₂ / max(w, h) of the query's *clean* bbox, computed in float64 and stored in
  float32 (mmpose keeps distances in a float32 array; the threshold is compared in float32);
* a keypoint counts when query *and every support* mark it visible;
* correct iff ``d < thr`` (strict);
* a pair's score is the mean over its valid keypoints, and **a pair without a valid keypoint
  scores 0** (it is not skipped);
* a split's score is the plain mean over all pairs.

Every function is pure: inputs are never modified. Arrays are ``[N, K]`` with NaN where a
keypoint is not scored, so any threshold can be recomputed later from stored distances.
"""

from __future__ import annotations

import numpy as np

METRIC_VERSION = "pck-1"  # bump when any definition below changes meaning
PCK_THRESHOLDS = (0.05, 0.10, 0.15, 0.20, 0.25)
AUC_STEPS = 20


def pck_name(thr: float) -> str:
    """Metric name as the official log prints it: ``PCK@0.2``, ``PCK@0.05``."""
    return f"PCK@{thr:g}"


def keypoint_mask(query_visible: np.ndarray, support_visible: np.ndarray) -> np.ndarray:
    """bool[N, K]: query visible AND visible in every support.

    Args:
        query_visible: bool[N, K]; support_visible: bool[N, S, K].
    """
    return np.asarray(query_visible, bool) & np.all(np.asarray(support_visible, bool), axis=1)


def pixel_distances(pred_px: np.ndarray, gt_px: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """float32[N, K] Euclidean error in original px, NaN where ``mask`` is False."""
    diff = np.asarray(pred_px, np.float64) - np.asarray(gt_px, np.float64)
    dist = np.sqrt(np.sum(diff * diff, axis=-1)).astype(np.float32)
    return np.where(mask, dist, np.float32(np.nan))


def normalized_distances(
    pred_px: np.ndarray, gt_px: np.ndarray, mask: np.ndarray, norm_px: np.ndarray
) -> np.ndarray:
    """float32[N, K] error divided by the per-pair normaliser; NaN where not scored.

    Args:
        pred_px, gt_px: float[N, K, 2] (original px). mask: bool[N, K].
        norm_px: float[N] clean-bbox max side (original px). A normaliser ≤ 0 makes the
            whole pair unscored, as mmpose's ``_calc_distances`` does.
    """
    norm = np.asarray(norm_px, np.float64)
    diff = (np.asarray(pred_px, np.float64) - np.asarray(gt_px, np.float64)) / np.where(norm > 0, norm, 1e6)[
        :, None, None
    ]
    dist = np.sqrt(np.sum(diff * diff, axis=-1)).astype(np.float32)
    return np.where(np.asarray(mask, bool) & (norm > 0)[:, None], dist, np.float32(np.nan))


def pck_per_pair(dist_norm: np.ndarray, thr: float) -> np.ndarray:
    """float64[N]: fraction of scored keypoints with ``d < thr``; 0 for a pair with none."""
    valid = ~np.isnan(dist_norm)
    hits = (np.where(valid, dist_norm, np.inf) < np.float32(thr)).sum(axis=1)
    count = valid.sum(axis=1)
    return np.where(count > 0, hits / np.maximum(count, 1), 0.0)


def mean_per_pair(dist: np.ndarray) -> np.ndarray:
    """float32[N]: mean of the scored entries (NME with normalised distances, EPE with px); 0 when none.

    mmpose sums a float32 array and divides by ``max(1, count)``, which stays float32; the
    official split number is then a float32 mean too (see :func:`summarize`).
    """
    valid = ~np.isnan(dist)
    total = np.where(valid, dist, np.float32(0)).sum(axis=1, dtype=np.float32)
    return (total / np.maximum(valid.sum(axis=1), 1).astype(np.float32)).astype(np.float32)


def auc_per_pair(dist_norm: np.ndarray, steps: int = AUC_STEPS) -> np.ndarray:
    """float64[N]: mmpose ``keypoint_auc``: mean PCK over thresholds ``i / steps``, i = 0..steps-1."""
    auc = np.zeros(dist_norm.shape[0])
    for i in range(steps):
        auc += 1.0 / steps * pck_per_pair(dist_norm, 1.0 * i / steps)
    return auc


def per_pair_metrics(dist_norm: np.ndarray, dist_px: np.ndarray, thresholds=PCK_THRESHOLDS) -> dict[str, np.ndarray]:
    """Every official metric for every pair: name → float64[N]."""
    out = {pck_name(t): pck_per_pair(dist_norm, t) for t in thresholds}
    out["mPCK"] = np.mean([out[pck_name(t)] for t in thresholds], axis=0)
    out["NME"] = mean_per_pair(dist_norm)
    out["AUC"] = auc_per_pair(dist_norm)
    out["EPE"] = mean_per_pair(dist_px)
    return out


def summarize(per_pair: dict[str, np.ndarray]) -> dict[str, float]:
    """The split-level numbers: the plain mean over pairs of each per-pair metric.

    The mean keeps each metric's dtype (float32 for NME/EPE), as ``np.mean`` does in the official
    code, and mPCK is the official running sum of the split-level PCKs divided by their number
    (not the mean of per-pair mPCK, which differs in the last bits).
    """
    out = {name: float(np.mean(v)) if len(v) else float("nan") for name, v in per_pair.items()}
    pcks = [name for name in per_pair if name.startswith("PCK@")]
    if "mPCK" in out and pcks:
        total = 0
        for name in pcks:
            total += np.mean(per_pair[name])
        out["mPCK"] = float(total / len(pcks))
    return out


HIGHER_IS_BETTER = {"mPCK": True, "NME": False, "AUC": True, "EPE": False}


def mpck_definition(thresholds) -> str:
    """What an mPCK means, to print beside it: papers differ (EdgeCape's paper averages PCK@{0.05…0.20}, its
    released config five thresholds; CapeFormer's code PCK@{0.05…0.25})."""
    return "mPCK = mean of PCK@{" + ", ".join(f"{t:g}" for t in sorted(thresholds)) + "}"


def thresholds_in(metrics) -> list[float]:
    """The PCK thresholds among metric names (``PCK@0.1`` → 0.1): the set a stored mPCK averages."""
    return sorted(float(m.split("@", 1)[1]) for m in set(metrics) if str(m).startswith("PCK@"))


def higher_is_better(metric: str) -> bool:
    return HIGHER_IS_BETTER.get(metric, metric.startswith("PCK"))


def bootstrap_ci(
    values: np.ndarray, groups: np.ndarray, *, reps: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(values)``, resampling whole groups (episodes).

    Pairs of one episode share their support, so they are not independent: the episode is the
    resampling unit. Args: values float[N] per-pair scores; groups int[N] episode ids.
    """
    values = np.asarray(values, np.float64)
    if len(values) == 0:
        return float("nan"), float("nan")
    _, inverse = np.unique(groups, return_inverse=True)
    sums = np.bincount(inverse, weights=values)
    counts = np.bincount(inverse).astype(np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(sums), size=(reps, len(sums)))
    means = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    alpha = (1.0 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)
