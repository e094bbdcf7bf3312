"""Paired comparisons (cape_bench.metrics.paired) against scipy and by construction."""

from __future__ import annotations

import numpy as np
import pytest

stats = pytest.importorskip("scipy.stats")

from cape_bench.metrics.paired import describe, paired_comparison  # noqa: E402


def _pairs(n_episodes=40, per=15, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    episode = np.repeat(np.arange(n_episodes), per)
    base = rng.random(n_episodes)[episode]
    a = (rng.random(len(episode)) < 0.5 + 0.3 * base).astype(float)
    b = (rng.random(len(episode)) < 0.5 + 0.3 * base - shift).astype(float)
    return a, b, episode


def test_p_value_is_scipys_wilcoxon_on_per_episode_differences():
    a, b, episode = _pairs(shift=0.1)
    r = paired_comparison(a, b, episode)
    per_episode = (a - b).reshape(40, 15).mean(axis=1)
    assert r.p_value == pytest.approx(stats.wilcoxon(per_episode).pvalue, rel=1e-12)
    assert r.delta == pytest.approx(a.mean() - b.mean()) and r.episodes == 40


def test_interval_covers_delta_and_a_clear_gap_is_resolved():
    a, b, episode = _pairs(shift=0.25, seed=1)
    r = paired_comparison(a, b, episode)
    assert r.ci95_low < r.delta < r.ci95_high and r.ci95_low > 0 and r.resolved
    swapped = paired_comparison(b, a, episode)
    assert swapped.delta == pytest.approx(-r.delta) and swapped.p_value == pytest.approx(r.p_value)


def test_no_difference_is_unresolved():
    a, _, episode = _pairs(seed=2)
    same = paired_comparison(a, a.copy(), episode)
    assert same.delta == 0 and same.p_value == 1.0 and not same.resolved
    noisy = paired_comparison(*_pairs(shift=0.0, seed=3))
    assert not noisy.resolved and noisy.ci95_low < 0 < noisy.ci95_high
    assert "unresolved" in describe("x", "y", noisy)


def test_shapes_must_match():
    with pytest.raises(ValueError, match="equal shapes"):
        paired_comparison(np.zeros(3), np.zeros(4), np.zeros(3))


def test_an_unresolved_best_is_not_bold_and_the_comparisons_are_printed():
    import pandas as pd
    from rich.console import Console

    from cape_bench.comparisons import comparison_pairs
    from cape_bench.tables import print_headline

    summary = pd.DataFrame([("capenext", 1, 1, "PCK@0.2", 0.62), ("capex", 1, 1, "PCK@0.2", 0.61),
                            ("support-copy", 1, 1, "PCK@0.2", 0.50)], columns=["method", "split", "shots", "metric", "value"])
    paired = pd.DataFrame([
        ("capenext", "capex", 1, 1, "PCK@0.2", 0.01, -0.01, 0.03, 0.4, "w", 400, False),
        ("capenext", "support-copy", 1, 1, "PCK@0.2", 0.12, 0.10, 0.14, 1e-9, "w", 400, True),
    ], columns=["method_a", "method_b", "split", "shots", "metric", "delta", "ci95_low", "ci95_high", "p_value", "test",
                "episodes", "resolved"])
    console = Console(record=True, width=200)
    print_headline(console, summary, paired=paired)
    text = console.export_text()
    assert "62.00≈" in text and "not resolved from the runner-up" in text
    assert "capenext vs capex: +1.00 [-1.00, +3.00] points, p = 0.4" in text and "unresolved" in text
    assert "capenext vs support-copy: +12.00" in text
    assert comparison_pairs(["capenext", "capex", "capenext-wrong-class", "text-prior"],
                            {"capenext-wrong-class": "capenext"}) == [
        ("capenext", "capex"), ("capenext-wrong-class", "capenext"), ("capenext", "text-prior"), ("capex", "text-prior")]


def test_every_mpck_shown_names_its_threshold_set(tmp_path):
    import pandas as pd
    from rich.console import Console

    from cape_bench.metrics.pck import mpck_definition, thresholds_in
    from cape_bench.tables import print_headline

    assert mpck_definition([0.2, 0.1]) == "mPCK = mean of PCK@{0.1, 0.2}"
    summary = pd.DataFrame([("a", 1, 1, m, 0.5) for m in ("PCK@0.1", "PCK@0.2", "mPCK")],
                           columns=["method", "split", "shots", "metric", "value"])
    assert thresholds_in(summary["metric"]) == [0.1, 0.2]
    console = Console(record=True, width=200)
    print_headline(console, summary, metric="mPCK")
    text = console.export_text()
    assert "mPCK (%), 1-shot" in text and "mPCK = mean of PCK@{0.1, 0.2}" in text
