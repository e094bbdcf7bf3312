"""Properties of the PCK family on hand-built and random arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cape_bench.metrics import pck


def _random_case(seed: int, n: int = 12, k: int = 9):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0, 300, size=(n, k, 2)).astype(np.float32)
    pred = gt + rng.normal(0, 30, size=(n, k, 2))
    mask = rng.random((n, k)) > 0.2
    norm = rng.uniform(50, 200, size=n)
    return pred, gt, mask, norm


def test_hand_built_strict_threshold():
    gt = np.zeros((1, 3, 2), np.float32)
    pred = np.array([[[0.0, 0.0], [20.0, 0.0], [10.0, 0.0]]])  # d = 0, 0.2 (not < 0.2), 0.1
    d = pck.normalized_distances(pred, gt, np.ones((1, 3), bool), np.array([100.0]))
    np.testing.assert_allclose(d, [[0.0, 0.2, 0.1]], rtol=1e-6)
    assert pck.pck_per_pair(d, 0.2)[0] == 2 / 3
    assert pck.pck_per_pair(d, 0.25)[0] == 1.0


def test_masked_keypoints_are_nan_and_ignored():
    gt = np.zeros((1, 2, 2), np.float32)
    pred = np.array([[[0.0, 0.0], [1000.0, 0.0]]])
    d = pck.normalized_distances(pred, gt, np.array([[True, False]]), np.array([100.0]))
    assert np.isnan(d[0, 1])
    assert pck.pck_per_pair(d, 0.2)[0] == 1.0


def test_support_mask_is_all_shots():
    q = np.array([[True, True, True]])
    s = np.array([[[True, True, False], [True, False, True]]])
    assert pck.keypoint_mask(q, s).tolist() == [[True, False, False]]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), shift=st.floats(-1e3, 1e3), factor=st.floats(0.25, 8.0))
def test_translation_and_scale_invariance(seed, shift, factor):
    pred, gt, mask, norm = _random_case(seed)
    base = pck.pck_per_pair(pck.normalized_distances(pred, gt, mask, norm), 0.2)
    moved = pck.pck_per_pair(
        pck.normalized_distances(pred * factor + shift, gt.astype(np.float64) * factor + shift, mask, norm * factor),
        0.2,
    )
    # float32 storage of distances may flip a keypoint sitting within rounding of the threshold
    assert np.mean(np.abs(base - moved)) < 0.02


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_monotone_in_threshold_and_inputs_unchanged(seed):
    pred, gt, mask, norm = _random_case(seed)
    copies = [a.copy() for a in (pred, gt, mask, norm)]
    d = pck.normalized_distances(pred, gt, mask, norm)
    values = [pck.pck_per_pair(d, t).mean() for t in (0.05, 0.1, 0.15, 0.2, 0.25, 0.5)]
    assert values == sorted(values)
    for before, after in zip(copies, (pred, gt, mask, norm), strict=True):
        np.testing.assert_array_equal(before, after)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_pair_order_does_not_matter(seed):
    pred, gt, mask, norm = _random_case(seed)
    perm = np.random.default_rng(seed).permutation(len(pred))
    a = pck.summarize(pck.per_pair_metrics(pck.normalized_distances(pred, gt, mask, norm), pck.pixel_distances(pred, gt, mask)))
    b = pck.summarize(
        pck.per_pair_metrics(
            pck.normalized_distances(pred[perm], gt[perm], mask[perm], norm[perm]),
            pck.pixel_distances(pred[perm], gt[perm], mask[perm]),
        )
    )
    for name in a:
        assert abs(a[name] - b[name]) < 1e-5, name


def test_streaming_equals_one_shot():
    pred, gt, mask, norm = _random_case(3, n=40)
    d = pck.normalized_distances(pred, gt, mask, norm)
    whole = pck.pck_per_pair(d, 0.2)
    parts = np.concatenate([pck.pck_per_pair(d[i : i + 7], 0.2) for i in range(0, 40, 7)])
    np.testing.assert_array_equal(whole, parts)


def test_bootstrap_interval_contains_mean_and_shrinks_with_data():
    rng = np.random.default_rng(0)
    values = rng.random(3000)
    groups = np.repeat(np.arange(200), 15)
    lo, hi = pck.bootstrap_ci(values, groups, reps=500)
    assert lo < values.mean() < hi
    lo2, hi2 = pck.bootstrap_ci(values[:300], groups[:300], reps=500)
    assert hi2 - lo2 > hi - lo


def test_kendall_tau_by_hand():
    from cape_bench.metrics.ranking import inverted_pairs, kendall_tau

    published = {"capex": 92.8, "capenext": 92.4, "graphcape": 91.2, "capeformer": 89.5, "pomnet": 84.2}
    assert kendall_tau(published, published) == 1.0
    assert kendall_tau(published, {k: -v for k, v in published.items()}) == -1.0
    # one adjacent swap among 5: 9 concordant, 1 discordant of 10 pairs
    swapped = {**published, "capex": 92.0}
    assert kendall_tau(swapped, published) == pytest.approx(0.8)
    assert inverted_pairs(swapped, published) == [("capenext", "capex")]
    # τ-b with a tie on one side: 2 concordant, 0 discordant, 1 tie → 2 / √(3 · 2)
    assert kendall_tau({"a": 3, "b": 2, "c": 2}, {"a": 3, "b": 2, "c": 1}) == pytest.approx(2 / 6 ** 0.5)
    assert math.isnan(kendall_tau({"a": 1}, {"a": 2}))
    assert kendall_tau({"a": 1, "b": 2, "x": 9}, {"a": 1, "b": 2}) == 1.0  # only common keys count


def test_official_scores_are_the_papers_headline_configurations():
    from cape_bench.report.published import official_scores

    assert official_scores(1, 1) == {"pomnet": 84.23, "capeformer": 89.45, "graphcape": 91.19, "capex": 92.79,
                                     "capenext": 92.44}
