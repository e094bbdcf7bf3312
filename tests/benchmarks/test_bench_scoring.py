"""Scoring one full split (60,000 pairs, every metric): vectorised vs the official per-pair loop.

Run with ``python -m pytest tests/benchmarks --benchmark-only``; the equality of the two is also
checked in the ordinary test run (on fewer pairs).
"""

from __future__ import annotations

import numpy as np
import pytest

from cape_bench.metrics import pck
from tests import official_loop


def synthetic_split(n_pairs: int, seed: int = 0):
    """Pairs shaped like MP-100: K from 5 to 68 per category, 20 categories, ~15 % invisible."""
    rng = np.random.default_rng(seed)
    ks = rng.integers(5, 69, size=20)
    cat = np.repeat(np.arange(20), -(-n_pairs // 20))[:n_pairs]
    kmax = int(ks.max())
    gt = rng.uniform(0, 500, size=(n_pairs, kmax, 2)).astype(np.float32)
    side = rng.uniform(80, 400, size=n_pairs)
    pred = gt + rng.normal(0, 0.15, size=(n_pairs, kmax, 2)) * side[:, None, None]
    real = np.arange(kmax)[None, :] < ks[cat][:, None]
    mask = real & (rng.random((n_pairs, kmax)) > 0.15)
    mask[: max(1, n_pairs // 500)] = False  # a few pairs with no valid keypoint
    return pred, gt, mask, side, ks[cat]


def vectorised(pred, gt, mask, side):
    return pck.summarize(pck.per_pair_metrics(pck.normalized_distances(pred, gt, mask, side),
                                              pck.pixel_distances(pred, gt, mask)))


def official(pred, gt, mask, side, k):
    return official_loop.report_metric([p[:n] for p, n in zip(pred, k)], [g[:n] for g, n in zip(gt, k)],
                                       [m[:n] for m, n in zip(mask, k)], list(side))


@pytest.mark.benchmark(group="score-split")
def test_bench_vectorised_full_split(benchmark):
    pred, gt, mask, side, _ = synthetic_split(60_000)
    benchmark(vectorised, pred, gt, mask, side)


@pytest.mark.benchmark(group="score-split")
def test_bench_official_loop_full_split(benchmark):
    pred, gt, mask, side, k = synthetic_split(60_000)
    benchmark.pedantic(official, args=(pred, gt, mask, side, k), rounds=1, iterations=1)
