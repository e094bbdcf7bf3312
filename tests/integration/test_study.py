"""``cape-bench study``: one CAPE-Synth knob swept, a run per value, a summary read from what the runs stored."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from cape_bench.cli import main
from cape_bench.study import FLOOR, MEASURABLE_MARGIN, verdict


def _config(tmp_path) -> str:
    path = tmp_path / "bench.toml"
    path.write_text(f"""
[run]
out_dir = "{tmp_path / 'runs'}"
report = false
[protocol]
splits = [1]
shots = [1]
num_episodes = 3
num_queries = 5
[synth]
cache_dir = "{tmp_path / 'cache'}"
num_categories = 10
instances_per_category = 20
""")
    return str(path)


@pytest.mark.slow
def test_study_runs_each_value_summarises_and_resumes(tmp_path, capsys):
    cfg = _config(tmp_path)
    args = ["study", "--config", cfg, "--knob", "polysemy", "--values", "0,1", "--methods", "support-copy,oracle",
            "--quiet"]
    assert main(args) == 0
    root = tmp_path / "runs" / "study-polysemy"
    plan = json.loads((root / "study.json").read_text())
    assert plan["knob"] == "polysemy" and plan["values"] == [0.0, 1.0] and len(plan["runs"]) == 2
    for value, run in zip(plan["values"], plan["runs"], strict=True):
        meta = json.loads((Path(run) / "run.json").read_text())
        assert meta["config"]["synth"]["knobs"] == {"polysemy": value}  # each run its own variant
        assert FLOOR in meta["config"]["run"]["methods"]  # the floor is always added
    study = pd.read_csv(root / "study.csv")
    assert set(study["method"]) == {"support-copy", "oracle"} and set(study["value"]) == {0.0, 1.0}
    assert {"pck_polysemous", "pck_unique", "floor_pck", "measurable"} <= set(study.columns)
    # measurable = clears the floor by the margin, per row
    expected = study["pck"] >= study["floor_pck"] + MEASURABLE_MARGIN
    assert (study["measurable"] == expected).all()
    assert (study.loc[study["method"] == "oracle", "measurable"]).all()
    pose = pd.read_csv(root / "pose.csv")
    assert set(pose["quartile"]) <= {1, 2, 3, 4} and (pose["pck"].between(0, 1)).all()
    html = (root / "study.html").read_text()
    assert "<svg" in html and "Study: polysemy" in html and "not measurable" in html
    out = capsys.readouterr().out
    assert "polysemy = 0: not measurable: support-copy" in out

    # the same command again resumes: every cell was finished earlier
    assert main(args) == 0
    assert out.count("finished earlier") == 0 and capsys.readouterr().out.count("finished earlier") == 2

    # the same name with other values is refused, naming the file
    assert main([*args[:6], "0,0.5", *args[7:]]) == 2
    assert "study.json" in capsys.readouterr().err


def test_study_refuses_what_it_cannot_sweep(tmp_path, capsys):
    cfg = _config(tmp_path)
    base = ["study", "--config", cfg, "--methods", "support-copy"]
    assert main([*base, "--knob", "colour", "--values", "0,1"]) == 2
    assert "not a CAPE-Synth knob" in capsys.readouterr().err
    assert main([*base, "--knob", "polysemy", "--values", "1"]) == 2
    assert "at least two distinct values" in capsys.readouterr().err
    assert main([*base, "--knob", "variation", "--values=-1,1"]) == 2
    assert "variation" in capsys.readouterr().err
    assert main([*base, "--knob", "polysemy", "--values", "0,1", "--set", 'dataset.name="mp100"',
                 "--set", 'dataset.ann_dir="/x"']) == 2
    assert "CAPE-Synth" in capsys.readouterr().err


def test_verdict_reads_paired_comparisons_and_says_unresolved():
    study = pd.DataFrame([{"value": 0.5, "method": "capex", "measurable": True},
                          {"value": 0.5, "method": "capenext", "measurable": True},
                          {"value": 1.0, "method": "capex", "measurable": False}])
    gaps = pd.DataFrame([{"value": 0.5, "method_b": "capex", "delta": 0.012, "ci95_low": -0.004, "ci95_high": 0.03,
                          "p_value": 0.21, "resolved": False}])
    lines = verdict(study, gaps)
    assert lines[0].startswith("0.5: capenext − capex: +1.2 [-0.4, +3.0], p = 0.21 (unresolved)")
    assert lines[1] == f"1: not measurable: capex below {FLOOR} + 10 PCK points"
