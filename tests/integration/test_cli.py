"""The front door: --help, config, registry errors, runs, resume, bad input."""

from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cape_bench import registry
from cape_bench.api import MethodInfo
from cape_bench.cli import main
from cape_bench.config import ConfigError, load_config
from cape_bench.runner import Runner

REPO = Path(__file__).resolve().parents[2]


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)


def test_help_does_not_import_torch():
    code = (
        "import sys, contextlib, io\n"
        "from cape_bench.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    for argv in (['--help'], ['run', '--help'], ['ls', 'methods']):\n"
        "        try:\n            main(argv)\n        except SystemExit:\n            pass\n"
        "heavy = [m for m in ('torch', 'timm', 'torchvision', 'matplotlib', 'pandas') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = _fresh_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_bench_toml_is_valid_and_strict(tmp_path):
    cfg = load_config(REPO / "bench.toml")
    # the shipped job: the five CAPE methods beside the floors, on a CPU slice of the protocol
    assert (cfg.protocol.splits, cfg.protocol.shots, cfg.protocol.num_episodes) == ((1,), (1,), 20)
    assert {"capenext", "capex", "graphcape", "capeformer", "pomnet", "support-copy", "text-prior"} <= set(
        cfg.run.methods)
    bad = tmp_path / "bench.toml"
    bad.write_text((REPO / "bench.toml").read_text().replace("num_queries = 15", "num_querys = 15"))
    with pytest.raises(ConfigError, match=r"unknown config key 'protocol\.num_querys'"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"protocol\.shots\[0\]: expected int"):
        load_config(None, ["protocol.shots=['one']"])
    assert load_config(None, ["protocol.shots=[1]", "methods.x.preset=official"]).method("x").preset == "official"


def test_unknown_method_did_you_mean(capsys):
    with pytest.raises(registry.UnknownMethodError, match="Did you mean support-copy"):
        registry.resolve("suport-copy")
    assert main(["run", "--methods", "orcale", "--ann-dir", "/nonexistent"]) == 2
    assert "Did you mean oracle" in capsys.readouterr().err


def test_ls_methods_names_where_they_live(capsys):
    assert main(["ls", "methods"]) == 0
    out = capsys.readouterr().out
    assert "support-copy  cape_bench.methods.reference:SupportCopy  [built-in]" in out


def _run_tiny(tiny, tmp_path, *extra):
    return main(["run", "--ann-dir", str(tiny / "annotations"), "--splits", "1", "--shots", "1",
                 "--num-episodes", "3", "--out-dir", str(tmp_path / "runs"), "--name", "r", "--quiet",
                 "--set", "run.report=false", *extra])


def test_run_score_roundtrip_on_tiny(tiny_mp100, tmp_path, capsys):
    assert _run_tiny(tiny_mp100, tmp_path, "--methods", "support-copy,oracle") == 0
    out = capsys.readouterr().out
    assert "not comparable with published" in out
    run_dir = tmp_path / "runs" / "r"
    summary = pd.read_csv(run_dir / "summary.csv")
    assert list(summary.columns) == ["method", "split", "shots", "metric", "value"]
    val = summary.set_index(["method", "metric"])["value"]
    assert val[("oracle", "PCK@0.2")] == 1.0
    assert 0 < val[("support-copy", "PCK@0.2")] < 1
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["episodes"]["split1_1shot"]["pairs"] == 3 * 3 * 15
    assert len(meta["config_sha256"]) == 64 and meta["official_protocol"] is False
    # score recomputes the same numbers from the stored predictions alone
    (run_dir / "summary.csv").unlink()
    assert main(["score", str(run_dir)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(run_dir / "summary.csv"), summary)


def test_methods_needing_images_get_one_clear_error(tiny_mp100, tmp_path, monkeypatch, capsys):
    class NeedsPixels:
        info = MethodInfo(name="needs-pixels", needs_images=True)

        def prepare(self, ctx): ...
        def encode_support(self, support): ...
        def predict(self, state, queries): ...
        def provenance(self): return {}

    monkeypatch.setitem(registry.BUILTIN_METHODS, "needs-pixels", f"{__name__}:_NEEDS_PIXELS")
    monkeypatch.setattr(sys.modules[__name__], "_NEEDS_PIXELS", NeedsPixels, raising=False)
    (tiny_mp100 / "images").mkdir(exist_ok=True)
    code = _run_tiny(tiny_mp100, tmp_path, "--methods", "support-copy,needs-pixels", "--images",
                     str(tiny_mp100 / "images"))
    assert code == 1
    out = capsys.readouterr().out
    import re

    found = re.search(r"needs images: (\d+) of (\d+) files are missing under \S+: ((?:thing_\d+/\d+\.png, ){4}thing_\d+/\d+\.png) … and (\d+) more", out)
    assert found, out
    missing, referenced, _, more = found.groups()
    assert missing == referenced and int(more) == int(missing) - 5
    # the other method's cell is kept
    assert (tmp_path / "runs" / "r" / "predictions" / "support-copy" / "split1_1shot.parquet").exists()


class _NaNMethod:
    info = MethodInfo(name="nan", needs_images=False)

    def prepare(self, ctx): ...
    def encode_support(self, support): return None
    def predict(self, state, queries):
        out = np.zeros((len(queries), queries.category.num_keypoints, 2), np.float32)
        out[-1, 0, 0] = np.nan
        return out
    def provenance(self): return {}


def test_nan_output_is_named_and_finished_cells_survive(tiny_mp100, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(registry.BUILTIN_METHODS, "nan", f"{__name__}:_NaNMethod")
    assert _run_tiny(tiny_mp100, tmp_path, "--methods", "oracle,nan") == 1
    out = capsys.readouterr().out
    assert "non-finite prediction for query annotation" in out
    summary = pd.read_csv(tmp_path / "runs" / "r" / "summary.csv")
    assert set(summary["method"]) == {"oracle"}


def test_resume_after_killed_run(mp100_ann_dir, tmp_path):
    """SIGKILL a real run once its first cell is stored; the rerun skips finished cells and matches a clean run."""
    args = [sys.executable, "-m", "cape_bench", "run", "--ann-dir", str(mp100_ann_dir), "--methods",
            "support-copy", "--splits", "1,2", "--shots", "1", "--num-episodes", "40", "--quiet",
            "--out-dir", str(tmp_path), "--set", "run.report=false"]
    proc = subprocess.Popen([*args, "--name", "killed"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first_cell = tmp_path / "killed" / "cells" / "support-copy" / "split1_1shot.json"
    deadline = time.time() + 120
    while not first_cell.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert first_cell.exists(), proc.stderr.read().decode() if proc.poll() is not None else "timeout"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stamp = first_cell.stat().st_mtime_ns
    resumed = subprocess.run([*args, "--name", "killed"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert first_cell.stat().st_mtime_ns == stamp, "a finished cell was recomputed"
    clean = subprocess.run([*args, "--name", "clean"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "killed" / "summary.csv"),
                                  pd.read_csv(tmp_path / "clean" / "summary.csv"))


def test_resume_refuses_a_different_config(tiny_mp100, tmp_path):
    assert _run_tiny(tiny_mp100, tmp_path, "--methods", "oracle") == 0
    with pytest.raises(RuntimeError, match="different config"):
        Runner(
            load_config(None, ["dataset.name='mp100'", f"dataset.ann_dir='{tiny_mp100 / 'annotations'}'",
                               "protocol.splits=[1]", "protocol.shots=[5]"]),
            tmp_path / "runs" / "r",
        ).execute()


@pytest.mark.parametrize(("override", "message"), [
    ("protocol.shots=[0]", r"protocol\.shots: \[0\]; each shot count must be at least 1"),
    ("protocol.shots=[-1]", r"protocol\.shots: \[-1\]"),
    ("protocol.splits=[6]", r"protocol\.splits: \[6\]; MP-100 splits are 1\.\.5"),
    ("protocol.num_episodes=-3", r"protocol\.num_episodes: -3"),
    ("protocol.num_queries=0", r"protocol\.num_queries: 0; at least 1 query"),
    ("protocol.pck_thresholds=[0.1, 1.5]", r"protocol\.pck_thresholds: .*distinct values in \(0, 1\]"),
    ("protocol.pck_thresholds=[0.1]", r"must include 0\.2"),
    ('run.device="tpu"', r"run\.device: 'tpu' is not a device here"),
    ('run.executor="slurm"', r"run\.executor: 'slurm'"),
    ('run.name="../../x"', r"run\.name: '\.\./\.\./x' must be a plain folder name"),
    ('dataset.text_variant="typos"', r"dataset\.text_variant: 'typos'; use one of regular"),
    ('dataset.subset="train"', r"dataset\.subset: 'train'"),
])
def test_protocol_and_run_values_are_range_checked(override, message, capsys):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
    assert main(["run", "--set", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]


def test_pck_thresholds_change_what_score_writes(tmp_path, tiny_mp100):
    args = ["run", "--dataset", "mp100", "--ann-dir", str(tiny_mp100 / "annotations"), "--methods", "support-copy",
            "--splits", "1", "--shots", "1", "--num-episodes", "2", "--out-dir", str(tmp_path / "runs"),
            "--set", "run.report=false"]
    assert main([*args, "--name", "five"]) == 0
    assert main([*args, "--name", "two", "--set", "protocol.pck_thresholds=[0.1, 0.2]"]) == 0
    five = pd.read_csv(tmp_path / "runs" / "five" / "summary.csv").set_index("metric")["value"]
    two = pd.read_csv(tmp_path / "runs" / "two" / "summary.csv").set_index("metric")["value"]
    assert {"PCK@0.05", "PCK@0.15", "PCK@0.25"} <= set(five.index)
    assert {m for m in two.index if m.startswith("PCK@")} == {"PCK@0.1", "PCK@0.2"}
    assert two["mPCK"] == pytest.approx((two["PCK@0.1"] + two["PCK@0.2"]) / 2)
    assert two["PCK@0.2"] == five["PCK@0.2"]
    assert two["mPCK"] != pytest.approx(five["mPCK"])
    # `score` on the stored predictions reads the run's own thresholds again
    assert main(["score", str(tmp_path / "runs" / "two")]) == 0
    again = pd.read_csv(tmp_path / "runs" / "two" / "summary.csv").set_index("metric")["value"]
    assert {m for m in again.index if m.startswith("PCK@")} == {"PCK@0.1", "PCK@0.2"}


def test_ls_backbones_and_text_encoders_say_where_genuine_weights_are(capsys):
    pytest.importorskip("torch")
    pytest.importorskip("timm")
    from baselines.common import backbones, text_encoders

    rows = {r["name"]: r for r in backbones.catalog()}
    assert set(rows) == set(backbones.available_backbones())
    for name, row in rows.items():
        found = backbones.find_genuine_weights(name)
        assert row["genuine weights here"].startswith("yes: " if found else "no (random init only)")
    assert "CapeFormer" in rows["resnet50"]["official use"]
    encoders = {r["name"]: r for r in text_encoders.catalog()}
    assert set(encoders) == {"gte-base-en-v1.5", "clip-vit-b32", "all-minilm-l6-v2", "mobilenetv2-imagenet"}
    minilm = text_encoders.find_transformer_weights("all-minilm-l6-v2")[0]
    assert encoders["all-minilm-l6-v2"]["genuine weights here"].startswith(f"yes: {minilm}" if minilm else "no; ")
    assert "CapeX" in encoders["gte-base-en-v1.5"]["official use"]
    for what in ("backbones", "text-encoders"):
        assert main(["ls", what]) == 0
    out = capsys.readouterr().out
    assert "mobilenetv2_s16" in out and "clip-vit-b32" in out


def test_episodes_takes_the_protocol_from_the_file_name_and_writes_only_when_asked(tmp_path, tiny_mp100, capsys,
                                                                                 monkeypatch):
    import shutil

    ann = tiny_mp100 / "annotations"
    val = ann / "mp100_split1_val.json"
    shutil.copy(ann / "mp100_split1_test.json", val)
    monkeypatch.chdir(tmp_path)
    assert main(["episodes", "--ann", str(val), "--shots", "1"]) == 0
    out = capsys.readouterr().out
    assert "val protocol (from the file name): 100 episodes" in out
    assert main(["episodes", "--ann", str(val), "--shots", "1", "--subset", "test"]) == 0
    assert "test protocol (--subset): 200 episodes" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.csv"))  # nothing written into the current folder
    assert main(["episodes", "--ann", str(ann / "mp100_split1_test.json"), "--shots", "1", "--out", "m.csv"]) == 0
    assert (tmp_path / "m.csv").is_file()
    assert main(["episodes", "--ann", str(val), "--shots", "0"]) == 2


def test_real_descriptions_file_runs_every_real_test_split(tmp_path, mp100_ann_dir, shared_dir):
    """CapeX's own keypoint_descriptions.json (fly: 33 texts for 32 keypoints) stops no run; the warning is kept."""
    out = tmp_path / "runs"
    args = ["run", "--dataset", "mp100", "--ann-dir", str(mp100_ann_dir), "--methods", "support-copy",
            "--descriptions", str(shared_dir / "mp100" / "keypoint_descriptions.json"), "--splits", "1-5",
            "--shots", "1", "--num-episodes", "1", "--out-dir", str(out), "--name", "real", "--set", "run.report=false"]
    assert main(args) == 0
    record = json.loads((out / "real" / "run.json").read_text())
    assert not record["failures"]
    assert sum("category 66 (fly) has 33 texts for K=32 keypoints" in m for m in record["messages"]) == 1
    summary = pd.read_csv(out / "real" / "summary.csv")
    assert sorted(summary[summary.metric == "PCK@0.2"]["split"]) == [1, 2, 3, 4, 5]


def _corrupt_copy(tiny: Path, mutate) -> Path:
    f = tiny / "annotations" / "mp100_split1_test.json"
    data = json.loads(f.read_text())
    mutate(data)
    f.write_text(json.dumps(data))
    return tiny / "annotations"


def _zero_keypoints(d):
    d["categories"][0]["keypoints"] = []
    for a in d["annotations"]:
        if a["category_id"] == 1:
            a["keypoints"], a["num_keypoints"] = [], 0


@pytest.mark.parametrize(("mutate", "field"), [
    (_zero_keypoints, r"categories\[0\]\.keypoints: category 1 \(thing_1\) has no keypoints"),
    (lambda d: d["annotations"][0].__setitem__("area", "big"), r"annotations\[0\]\.area: expected a finite number"),
    (lambda d: d["images"][0].__setitem__("width", "wide"), r"images\[0\]\.width: expected a finite number"),
    (lambda d: d["annotations"][0].__setitem__("bbox", [float("nan"), 1, 10, 10]),
     r"annotations\[0\]\.bbox: expected \[x, y, w, h\] finite numbers"),
])
def test_bad_annotation_values_fail_their_cells_with_one_line(tmp_path, tiny_mp100, mutate, field, capsys):
    ann_dir = _corrupt_copy(tiny_mp100, mutate)
    args = ["run", "--dataset", "mp100", "--ann-dir", str(ann_dir), "--methods", "support-copy", "--splits", "1",
            "--shots", "1", "--num-episodes", "2", "--out-dir", str(tmp_path / "runs"), "--name", "r",
            "--set", "run.report=false"]
    assert main(args) == 1
    err = capsys.readouterr()
    assert "Traceback" not in err.out + err.err
    (failure,) = json.loads((tmp_path / "runs" / "r" / "run.json").read_text())["failures"]
    assert failure["method"] == "support-copy" and str(ann_dir / "mp100_split1_test.json") in failure["error"]
    assert re.search(field, failure["error"]), failure["error"]


def test_a_category_too_small_for_5_shot_fails_only_the_5_shot_cell(tmp_path, tiny_mp100):
    def keep_17(d):  # 1-shot needs 1 + 15 instances, 5-shot 5 + 15
        ones = [a for a in d["annotations"] if a["category_id"] == 1][:17]
        d["annotations"] = [a for a in d["annotations"] if a["category_id"] != 1] + ones
    ann_dir = _corrupt_copy(tiny_mp100, keep_17)
    args = ["run", "--dataset", "mp100", "--ann-dir", str(ann_dir), "--methods", "support-copy,oracle",
            "--splits", "1", "--shots", "1,5", "--num-episodes", "2", "--out-dir", str(tmp_path / "runs"),
            "--name", "r", "--set", "run.report=false"]
    assert main(args) == 1
    record = json.loads((tmp_path / "runs" / "r" / "run.json").read_text())
    assert sorted((f["method"], f["shots"]) for f in record["failures"]) == [("oracle", 5), ("support-copy", 5)]
    assert all("category 1 has 17 instances; an episode needs 5 + 15" in f["error"] for f in record["failures"])
    summary = pd.read_csv(tmp_path / "runs" / "r" / "summary.csv")
    assert set(summary["shots"]) == {1} and set(summary["method"]) == {"support-copy", "oracle"}


def test_markup_in_a_category_name_is_printed_as_text(tmp_path, tiny_mp100, capsys):
    ann_dir = _corrupt_copy(tiny_mp100, lambda d: d["categories"][0].__setitem__("name", "bed[/bold]"))
    (ann_dir / "mp100_split1_test.json").write_text((ann_dir / "mp100_split1_test.json").read_text())
    args = ["run", "--dataset", "mp100", "--ann-dir", str(ann_dir), "--methods", "support-copy", "--splits", "1",
            "--shots", "1", "--num-episodes", "2", "--out-dir", str(tmp_path / "runs"), "--name", "r"]
    assert main(args) == 0
    assert main(["data", "check", "--ann", str(ann_dir / "mp100_split1_test.json")]) in (0, 1)
    assert "Traceback" not in capsys.readouterr().err


def test_image_paths_may_not_leave_the_image_root(tmp_path, monkeypatch):
    from cape_bench.images import UnsafeImagePathError, check_images, image_path

    assert image_path(tmp_path, "cat/1.jpg") == tmp_path / "cat" / "1.jpg"
    for bad in ("../secret.jpg", "cat/../../x.jpg", "/etc/hosts"):
        with pytest.raises(UnsafeImagePathError, match=re.escape(repr(bad)) + " leaves the image root"):
            image_path(tmp_path, bad)
        with pytest.raises(UnsafeImagePathError):
            check_images(tmp_path, [bad], needed_by="capex")
    monkeypatch.setenv("CAPE_BENCH_ALLOW_OUTSIDE_IMAGE_ROOT", "1")
    assert image_path(tmp_path, "../x.jpg") == tmp_path / ".." / "x.jpg"


def test_checkpoint_for_a_method_not_in_the_run_is_refused(capsys):
    assert main(["run", "--methods", "support-copy", "--checkpoint", "capex=/nowhere.safetensors"]) == 2
    assert "'capex' is not among the methods of this run" in capsys.readouterr().err


def _tiny_run_args(tiny: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--dataset", "mp100", "--ann-dir", str(tiny / "annotations"), "--splits", "1", "--shots", "1",
            "--num-episodes", "2", "--out-dir", str(out), "--name", "r", "--set", "run.report=false", *extra]


def test_a_run_name_whose_first_start_failed_takes_the_corrected_command(tmp_path, tiny_mp100, capsys):
    out = tmp_path / "runs"
    # a typo'd first command: its cells fail (unknown category), the run directory holds no finished cell
    assert main(_tiny_run_args(tiny_mp100, out, "--methods", "support-copy", "--set",
                               'dataset.categories=["no_such_thing"]')) == 1
    assert main(_tiny_run_args(tiny_mp100, out, "--methods", "support-copy")) == 0
    assert "no cell of the earlier run there had finished" in capsys.readouterr().out
    # with finished cells, another config is a one-line error naming what changed
    assert main(_tiny_run_args(tiny_mp100, out, "--methods", "support-copy", "--set", "protocol.num_queries=3")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds finished cells of a run with a different config (changed: protocol.num_queries)" in err[0]


def test_an_annotation_file_edited_between_runs_is_refused_on_resume(tmp_path, tiny_mp100, capsys):
    out = tmp_path / "runs"
    assert main(_tiny_run_args(tiny_mp100, out, "--methods", "support-copy")) == 0
    f = tiny_mp100 / "annotations" / "mp100_split1_test.json"
    data = json.loads(f.read_text())
    data["annotations"][0]["keypoints"][0] += 1.0
    f.write_text(json.dumps(data))
    assert main(_tiny_run_args(tiny_mp100, out, "--methods", "support-copy")) == 2
    assert "changed since the finished cells of split 1" in capsys.readouterr().err


def test_a_retried_cell_that_succeeds_is_no_longer_a_failure(tmp_path, tiny_mp100):
    out = tmp_path / "runs"
    base = _tiny_run_args(tiny_mp100, out, "--methods", "support-copy,oracle")
    assert main(base) == 0
    record = json.loads((out / "r" / "run.json").read_text())
    record["failures"] = [{"method": "oracle", "split": 1, "shots": 1, "error": "earlier failure"}]
    (out / "r" / "run.json").write_text(json.dumps(record))
    (out / "r" / "cells" / "oracle").rename(tmp_path / "moved")  # the cell is not finished any more
    assert main(base) == 0
    assert json.loads((out / "r" / "run.json").read_text())["failures"] == []


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_damaged_prediction_table_is_named_by_score_and_recomputed_by_run(tmp_path, tiny_mp100, damage, capsys):
    out = tmp_path / "runs"
    args = _tiny_run_args(tiny_mp100, out, "--methods", "support-copy,oracle")
    assert main(args) == 0
    table = out / "r" / "predictions" / "oracle" / "split1_1shot.parquet"
    good = table.read_bytes()
    if damage == "truncate":
        table.write_bytes(good[: len(good) // 2])
    else:
        table.unlink()
    capsys.readouterr()
    assert main(["score", str(out / "r")]) == 1
    err = capsys.readouterr().err
    assert "oracle split 1 1-shot not scored" in err and str(table) in err and "Traceback" not in err
    assert set(pd.read_csv(out / "r" / "summary.csv")["method"]) == {"support-copy"}
    assert main(args) == 0  # the same command recomputes exactly the damaged cell
    assert "1 cells were finished earlier and not recomputed" in capsys.readouterr().out
    assert set(pd.read_csv(out / "r" / "summary.csv")["method"]) == {"support-copy", "oracle"}


def test_run_outputs_are_shareable_and_the_report_lives_in_the_run_directory(tmp_path, tiny_mp100):
    old = os.umask(0o022)
    try:
        for out in ("a", "b"):  # equal run names in two out-dirs: two reports
            args = _tiny_run_args(tiny_mp100, tmp_path / out, "--methods", "support-copy")
            assert main([a for a in args if a not in ("--set", "run.report=false")]) == 0
    finally:
        os.umask(old)
    for out in ("a", "b"):
        run = tmp_path / out / "r"
        assert (run / "report.html").is_file()
        for f in (run / "run.json", run / "summary.csv", run / "report.html",
                  run / "predictions" / "support-copy" / "split1_1shot.parquet"):
            assert f.stat().st_mode & 0o777 == 0o644, f


def test_a_full_disk_fails_the_cell_it_hits_and_is_one_line_elsewhere(tmp_path, tiny_mp100, monkeypatch, capsys):
    import errno

    from cape_bench import runner as runner_module

    real_write_frame = runner_module.write_frame

    def full_for_oracle(path, frame):
        if "predictions" in str(path) and "oracle" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_write_frame(path, frame)

    monkeypatch.setattr(runner_module, "write_frame", full_for_oracle)
    out = tmp_path / "runs"
    assert main(_tiny_run_args(tiny_mp100, out, "--methods", "support-copy,oracle")) == 1
    record = json.loads((out / "r" / "run.json").read_text())
    (failure,) = record["failures"]
    assert failure["method"] == "oracle" and "No space left on device" in failure["error"]
    assert set(pd.read_csv(out / "r" / "summary.csv")["method"]) == {"support-copy"}

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(runner_module, "write_json", full)
    capsys.readouterr()
    assert main(_tiny_run_args(tiny_mp100, tmp_path / "other", "--methods", "support-copy")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("run.json: No space left on device") and "Traceback" not in err[0]
