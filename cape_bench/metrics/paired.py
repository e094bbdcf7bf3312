"""Paired comparison of two methods scored on the same pairs: ΔPCK with a paired bootstrap interval and a test.

Both methods' per-pair scores come from the same episode manifest (same supports, same queries), so their difference
is paired. The episode is the unit, as in :func:`cape_bench.metrics.pck.bootstrap_ci`: the pairs of an episode share
its support set and are not independent. The interval resamples episodes (the same draw for both methods); the test
is the Wilcoxon signed-rank test on the per-episode mean differences (``scipy.stats.wilcoxon``, two-sided). A
difference is *resolved* when the interval excludes 0 and p < α; otherwise the data cannot tell the two apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedResult:
    """Δ = mean(a) − mean(b) over the pairs, in the scores' units (PCK: a fraction)."""

    delta: float
    ci95_low: float
    ci95_high: float
    p_value: float
    episodes: int
    alpha: float = 0.05

    @property
    def resolved(self) -> bool:
        return bool(self.p_value < self.alpha and (self.ci95_low > 0 or self.ci95_high < 0))


def paired_comparison(a: np.ndarray, b: np.ndarray, episode: np.ndarray, *, reps: int = 1000, seed: int = 0,
                      level: float = 0.95, alpha: float = 0.05) -> PairedResult:
    """Compare per-pair scores ``a`` and ``b`` (float[P], the same pairs in the same order; episode ids int[P])."""
    from scipy import stats  # noqa: PLC0415

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.shape != np.shape(episode):
        raise ValueError(f"paired scores need equal shapes, got {a.shape}, {b.shape} and episodes {np.shape(episode)}")
    if not len(a):
        return PairedResult(float("nan"), float("nan"), float("nan"), float("nan"), 0, alpha)
    _, inverse = np.unique(episode, return_inverse=True)
    diff_sums = np.bincount(inverse, weights=a - b)
    counts = np.bincount(inverse).astype(np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(counts), size=(reps, len(counts)))
    boot = diff_sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    lo, hi = np.quantile(boot, [(1 - level) / 2, 1 - (1 - level) / 2])
    per_episode = diff_sums / counts
    if np.all(per_episode == 0):
        p = 1.0
    else:
        p = float(stats.wilcoxon(per_episode, zero_method="wilcox", alternative="two-sided").pvalue)
    return PairedResult(float(np.mean(a - b)), float(lo), float(hi), p, len(counts), alpha)


def describe(a_label: str, b_label: str, result: PairedResult, scale: float = 100.0, unit: str = "points") -> str:
    """``capenext vs capex: +0.43 [-1.20, +2.05] points, p = 0.61 (Wilcoxon, 400 episodes): unresolved``."""
    verdict = "resolved" if result.resolved else "unresolved: the data cannot tell them apart"
    return (f"{a_label} vs {b_label}: {scale * result.delta:+.2f} [{scale * result.ci95_low:+.2f}, "
            f"{scale * result.ci95_high:+.2f}] {unit}, {_p(result.p_value)} (Wilcoxon, {result.episodes} "
            f"episodes): {verdict}")


def _p(p: float) -> str:
    return "p n/a" if np.isnan(p) else (f"p = {p:.2g}" if p >= 1e-4 else "p < 1e-4")
