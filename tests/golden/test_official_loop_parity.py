"""The vectorised metrics give the official per-pair loop's numbers (bit for bit on PCK/AUC)."""

from __future__ import annotations

import pytest

from tests.benchmarks.test_bench_scoring import official, synthetic_split, vectorised


@pytest.mark.parametrize("seed", [0])
def test_vectorised_equals_official_loop(seed):
    pred, gt, mask, side, k = synthetic_split(600, seed)
    fast = vectorised(pred, gt, mask, side)
    slow = official(pred, gt, mask, side, k)
    assert set(fast) == set(slow)
    for name, value in slow.items():
        if name in ("NME", "EPE"):  # float32 sums: summation order differs, values agree to float32 precision
            assert fast[name] == pytest.approx(float(value), rel=1e-5), name
        else:
            assert fast[name] == float(value), name
