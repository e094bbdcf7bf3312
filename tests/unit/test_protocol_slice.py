"""The default job's protocol slice: how it is described, and `run --protocol official` undoing it."""

from __future__ import annotations

from pathlib import Path

from cape_bench.cli import build_parser
from cape_bench.cli.run import run_overrides
from cape_bench.config import load_config

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_slice_says_it_is_not_the_official_protocol():
    proto = load_config(REPO / "bench.toml").protocol
    assert not proto.is_official
    text = proto.describe()
    assert "split 1, 1-shot, 20 episodes × 15 queries per category" in text and "NOT the official protocol" in text


def test_protocol_official_restores_the_whole_grid_and_flags_still_narrow_it():
    parser = build_parser()
    cfg = load_config(REPO / "bench.toml", run_overrides(parser.parse_args(["run", "--protocol", "official"])))
    assert cfg.protocol.is_official and cfg.protocol.describe().endswith("the official protocol")
    assert (cfg.protocol.splits, cfg.protocol.shots, cfg.protocol.num_episodes) == ((1, 2, 3, 4, 5), (1, 5), 0)
    narrowed = load_config(REPO / "bench.toml", run_overrides(
        parser.parse_args(["run", "--protocol", "official", "--splits", "2", "--shots", "5"])))
    assert (narrowed.protocol.splits, narrowed.protocol.shots, narrowed.protocol.num_episodes) == ((2,), (5,), 0)
    assert not narrowed.protocol.is_official
    assert "splits 1, 2, 3, 4, 5, 1/5-shot" in cfg.protocol.describe()
