"""Scale-out: the grid as Ray tasks, and `cape-bench train` under torchrun (DistributedDataParallel on CPU, gloo).

* a local Ray cluster (2 CPUs) runs a small grid — two reference methods and a tiny trained CapeFormer — and stores
  exactly what ``--executor local`` stores (summary and every prediction);
* a worker process SIGKILLed mid-grid loses no finished cell: with ``run.cell_retries = 0`` the cell is reported
  failed and the same command then computes that cell only; with a retry it is submitted again within the run;
* a 2-process torchrun `cape-bench train` reproduces the single-process loss curve and weights (a dropout- and
  BatchNorm-free model: there the sharded global batch is exactly the single-process batch), and CapeFormer
  (frozen backbone) trains under torchrun with one checkpoint written by rank 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from baselines.common.plugin import TorchMethod
from baselines.common.trainer import EpisodeStream, Preset
from cape_bench import registry
from cape_bench.api import MethodInfo
from cape_bench.cli import main
from cape_bench.config import load_config
from cape_bench.data.mp100 import load_annotation_set
from cape_bench.runner import Runner
from tests.helpers import write_tiny_config, write_tiny_mp100

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = write_tiny_mp100(tmp_path_factory.mktemp("scale"), num_categories=2, instances=12, images=True,
                            image_size=72, train=True)
    return root


def _config(tmp_path: Path, tiny: Path, cache: Path, methods=("support-copy", "oracle"), extra: str = "") -> Path:
    return write_tiny_config(tmp_path / "bench.toml", tiny, runs=tmp_path / "runs", cache=cache, methods=methods,
                             shots=(1, 5), run_extra="report = false", extra=extra)


def _cells(run_dir: Path) -> dict[str, int]:
    """Cell record file → modification time (ns)."""
    return {str(p.relative_to(run_dir)): p.stat().st_mtime_ns for p in sorted((run_dir / "cells").glob("*/*.json"))}


def _same_results(a: Path, b: Path) -> None:
    pd.testing.assert_frame_equal(pd.read_csv(a / "summary.csv"), pd.read_csv(b / "summary.csv"))
    preds_a = sorted(p.relative_to(a) for p in (a / "predictions").glob("*/*.parquet"))
    assert preds_a == sorted(p.relative_to(b) for p in (b / "predictions").glob("*/*.parquet"))
    for rel in preds_a:
        pd.testing.assert_frame_equal(pd.read_parquet(a / rel), pd.read_parquet(b / rel))


# ---------------------------------------------------------------------------------------------- without Ray
def test_executor_keys_are_not_in_the_config_hash():
    base = load_config(None)
    moved = load_config(None, ["run.executor='ray'", "run.ray_address='auto'", "run.cpus_per_cell=4",
                               "run.gpus_per_cell=1", "run.cell_retries=3", "run.cell_resources={capex={gpus=1}}"])
    assert moved.sha256 == base.sha256 and moved.run.cell_resources == {"capex": {"gpus": 1}}
    assert load_config(None, ["run.seed=2"]).sha256 != base.sha256


def test_runner_computes_only_the_cells_it_is_given(tiny, tmp_path):
    cfg = load_config(_config(tmp_path, tiny, tmp_path / "cache"))
    run_dir = tmp_path / "runs" / "r"
    with pytest.raises(ValueError, match="not in this run's grid"):
        Runner(cfg, run_dir, show_progress=False).select([("oracle", 2, 1)])
    out = Runner(cfg, run_dir, show_progress=False).execute(cells=[("oracle", 1, 5)])
    assert [(o.method, o.split, o.shots, o.status) for o in out] == [("oracle", 1, 5, "done")]
    assert list(_cells(run_dir)) == ["cells/oracle/split1_5shot.json"]
    # a planning driver computes nothing and lists what is left
    planned = Runner(cfg, run_dir, show_progress=False).plan()
    assert [(o.method, o.shots, o.status) for o in planned] == [
        ("support-copy", 1, "pending"), ("oracle", 1, "pending"),
        ("support-copy", 5, "pending"), ("oracle", 5, "skipped (finished earlier)")]
    # a worker writes its cell into its own folder, never a run.json, and refuses data the driver did not see
    envelope = json.loads((run_dir / "run.json").read_text())
    expected = {"annotations": envelope["annotations"], "episodes": envelope["episodes"]}
    worker = Runner(cfg, tmp_path / "scratch", show_progress=False)
    (done,) = worker.execute_cells([("support-copy", 1, 1)], expected)
    assert done.status == "done" and not (tmp_path / "scratch" / "run.json").exists()
    assert (tmp_path / "scratch" / "predictions" / "support-copy" / "split1_1shot.parquet").exists()
    expected["episodes"]["split1_1shot"] = {"sha256": "0" * 64}
    (bad,) = Runner(cfg, tmp_path / "scratch2", show_progress=False).execute_cells([("oracle", 1, 1)], expected)
    assert bad.status == "failed" and "episodes split1_1shot differs on this worker" in bad.error


# ---------------------------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="the Ray executor tests need ray (pip install 'cape-bench[ray]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_grid_gives_exactly_the_local_results(ray_cluster, tiny, tmp_path, capsys):
    """2 CPUs, 6 cells; both CapeFormer cells start together: one trains, the other waits for it and reuses it."""
    cfg = _config(tmp_path, tiny, tmp_path / "cache", methods=("support-copy", "oracle", "capeformer"))
    assert main(["run", "--config", str(cfg), "--name", "ray", "--quiet", "--executor", "ray"]) == 0
    out = capsys.readouterr().out
    assert "ray: 6 cells submitted, 0 finished earlier" in out and "[6/6]" in out
    meta = json.loads((tmp_path / "runs" / "ray" / "run.json").read_text())
    assert meta["failures"] == [] and meta["config"]["run"]["executor"] == "ray"
    models = sorted((tmp_path / "cache" / "models" / "capeformer").glob("split1-*"))
    assert len(models) == 1, "the two CapeFormer cells trained two models"
    checkpoints = {json.loads((tmp_path / "runs" / "ray" / "cells" / "capeformer" / f"split1_{s}shot.json")
                              .read_text())["provenance"]["checkpoint"] for s in (1, 5)}
    assert checkpoints == {str(models[0] / "model.safetensors")}

    # the local run with the thread count of a Ray cell (Ray sets OMP_NUM_THREADS = the cell's 1 CPU): a different
    # count splits the float reductions differently (predictions then differ by ~1e-5 px, not bit for bit)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", "--config", str(cfg), "--name", "local", "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    _same_results(tmp_path / "runs" / "ray", tmp_path / "runs" / "local")
    # the same run again on Ray: everything is finished, nothing is recomputed
    before = _cells(tmp_path / "runs" / "ray")
    assert main(["run", "--config", str(cfg), "--name", "ray", "--quiet", "--executor", "ray"]) == 0
    assert _cells(tmp_path / "runs" / "ray") == before
    assert "6 cells were finished earlier and not recomputed" in capsys.readouterr().out


class CrashOnce:
    """Ground truth like ``oracle``, but the worker computing split 1 1-shot SIGKILLs itself the first time
    (once ``wait_for`` exists: another cell is finished), leaving ``marker`` behind."""

    info = MethodInfo(name="crash-once", needs_images=False, reads_query_ground_truth=True)

    def __init__(self, marker: str, wait_for: str = "") -> None:
        self.marker, self.wait_for = Path(marker), Path(wait_for) if wait_for else None
        self.cell = None

    def prepare(self, ctx) -> None:
        self.cell = (ctx.split, ctx.shots)

    def encode_support(self, support):
        return None

    def predict(self, state, queries):
        if self.cell == (1, 1) and not self.marker.exists():
            deadline = time.time() + 120
            while self.wait_for is not None and not self.wait_for.exists() and time.time() < deadline:
                time.sleep(0.05)
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return queries.keypoints_px.astype(np.float32)

    def provenance(self) -> dict:
        return {"weights": "none (returns the ground truth)"}


def _crash_config(tmp_path, tiny, marker: Path, run: str) -> Path:
    extra = (f'[methods.crash-once]\noptions = {{marker = "{marker}", '
             f'wait_for = "{tmp_path / "runs" / run / "cells" / "oracle" / "split1_1shot.json"}"}}\n')
    return _config(tmp_path, tiny, tmp_path / "cache", methods=("oracle", "crash-once", "support-copy"), extra=extra)


def test_a_killed_worker_loses_no_finished_cell(ray_cluster, tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(registry.BUILTIN_METHODS, "crash-once", f"{__name__}:CrashOnce")
    marker = tmp_path / "crashed-once"
    cfg = _crash_config(tmp_path, tiny, marker, "r")
    args = ["run", "--config", str(cfg), "--name", "r", "--quiet", "--executor", "ray"]
    run_dir = tmp_path / "runs" / "r"

    # no retry: the killed cell is reported, the five others are stored
    assert main([*args, "--set", "run.cell_retries=0"]) == 1
    out = capsys.readouterr().out
    assert marker.exists()
    assert "crash-once split 1 1-shot failed: worker died after 1 attempt(s)" in out
    failures = json.loads((run_dir / "run.json").read_text())["failures"]
    assert [(f["method"], f["split"], f["shots"]) for f in failures] == [("crash-once", 1, 1)]
    assert "worker died" in failures[0]["error"]
    finished = _cells(run_dir)
    assert len(finished) == 5 and "cells/crash-once/split1_1shot.json" not in finished
    # the same command again computes the killed cell and nothing else
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "ray: 1 cells submitted, 5 finished earlier" in out
    again = _cells(run_dir)
    assert {k: v for k, v in again.items() if k in finished} == finished and len(again) == 6

    # with a retry, the cell is submitted again within the run and the run succeeds
    marker.unlink()
    cfg2 = _crash_config(tmp_path, tiny, marker, "retried")
    assert main(["run", "--config", str(cfg2), "--name", "retried", "--quiet", "--executor", "ray"]) == 0
    out = capsys.readouterr().out
    assert "crash-once split 1 1-shot: the worker died" in out and "submitting it again (1 of 1)" in out
    messages = json.loads((tmp_path / "runs" / "retried" / "run.json").read_text())["messages"]
    assert any("submitting it again" in m for m in messages)
    # both equal a run that never crashed (marker present: computed in this process)
    assert main(["run", "--config", str(cfg2), "--name", "local", "--quiet"]) == 0
    _same_results(run_dir, tmp_path / "runs" / "local")
    _same_results(tmp_path / "runs" / "retried", tmp_path / "runs" / "local")


# ---------------------------------------------------------------------------------------------- torchrun
def test_sharded_batches_are_the_single_process_batch(tiny):
    """The shards of 2 ranks, interleaved, are exactly the single-process batch (augmentation draws included)."""
    ann = load_annotation_set(tiny / "annotations" / "mp100_split1_train.json")
    preset = Preset("t", iterations=4, batch_size=4, lr=1e-3, warmup_iters=0, input_size=32)
    full = EpisodeStream(ann, str(tiny / "images"), 1, preset, 2.0, seed=3).batch_at(5)
    shards = [EpisodeStream(ann, str(tiny / "images"), 1, preset, 2.0, seed=3).shard(r, 2).batch_at(5) for r in (0, 1)]
    for key, value in full.__dict__.items():
        if isinstance(value, np.ndarray):
            joined = np.empty_like(value)
            joined[0::2], joined[1::2] = getattr(shards[0], key), getattr(shards[1], key)
            np.testing.assert_array_equal(joined, value, err_msg=key)
    with pytest.raises(ValueError, match="does not split evenly over 3 processes"):
        EpisodeStream(ann, str(tiny / "images"), 1, preset, 2.0, seed=3).shard(0, 3)


class ToyDDPModel(nn.Module):
    """No dropout, no BatchNorm, a loss averaged over every (episode, keypoint, cell): DDP over equal shards of the
    batch then computes the single-process gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.embed = nn.Linear(2, 8)

    def training_losses(self, batch: dict) -> dict:
        feats = self.backbone(batch["img_q"])  # [B, 8, h, w]
        keys = self.embed(batch["kpts_s"][:, 0] / batch["img_q"].shape[-1])  # [B, K, 8]
        heat = torch.sigmoid(torch.einsum("bchw,bkc->bkhw", feats, keys))
        err = (heat - batch["target_q"]) ** 2 * batch["weight_q"][..., None, None]
        return {"heatmap_loss": err.mean()}


class ToyDDPMethod(TorchMethod):
    info = MethodInfo(name="toy-ddp", needs_images=True)
    presets = {"quick": Preset("quick", iterations=4, batch_size=4, lr=0.05, warmup_iters=0, input_size=32,
                               backbone="toy-conv", log_every=1)}

    def build_model(self) -> nn.Module:
        return ToyDDPModel()


def test_a_second_trainer_waits_for_the_first_and_loads_its_model(tiny, tmp_path):
    """Two cells of one trained method on two workers: the folder's lock makes the second one load the first's model."""
    import fcntl
    import threading

    from safetensors.torch import save_file

    from baselines.common.trainer import train

    ann = load_annotation_set(tiny / "annotations" / "mp100_split1_train.json")
    preset = ToyDDPMethod.presets["quick"]
    stream = EpisodeStream(ann, str(tiny / "images"), 1, preset, 2.0, seed=1)
    out_dir = tmp_path / "model"
    out_dir.mkdir()
    trained = {k: torch.full_like(v, 0.5) for k, v in ToyDDPModel().state_dict().items()}
    messages: list[str] = []
    model = ToyDDPModel()
    with open(out_dir / ".train.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # "another process" is training this model
        second = threading.Thread(target=lambda: train(model, stream, preset, out_dir, meta={"seed": 1},
                                                       log=messages.append, console=None))
        second.start()
        deadline = time.time() + 30
        while not any("waiting for it" in m for m in messages) and time.time() < deadline:
            time.sleep(0.02)
        assert second.is_alive() and any("another process is training this model" in m for m in messages)
        save_file(trained, str(out_dir / "model.safetensors"))
        (out_dir / "meta.json").write_text(json.dumps({"history": [], "iterations": 4}))
        fcntl.flock(held, fcntl.LOCK_UN)
    second.join(timeout=30)
    assert not second.is_alive()
    assert any("trained by another process meanwhile" in m for m in messages)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, trained[key])


LAUNCHER = """
import sys
sys.path.insert(0, {repo!r})
from cape_bench import registry
registry.BUILTIN_METHODS["toy-ddp"] = "{module}:ToyDDPMethod"
from cape_bench.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def _torchrun(*args: str, nproc: int | None, cwd: Path) -> subprocess.CompletedProcess:
    launch = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"] if nproc else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *launch, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=env)


def _model_dir(cache: Path, method: str) -> Path:
    (folder,) = sorted((cache / "models" / method).glob("split1-*"))
    return folder


def test_torchrun_two_processes_reproduce_one(tiny, tmp_path):
    """`cape-bench train` under torchrun, 2 gloo processes vs 1 process: the same loss curve and the same weights."""
    from safetensors.torch import load_file

    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER.format(repo=str(REPO), module=__name__))
    runs = {}
    for label, nproc in (("one", None), ("two", 2)):
        (tmp_path / label).mkdir()
        cfg = _config(tmp_path / label, tiny, tmp_path / label / "cache")
        done = _torchrun(str(launcher), "train", "--config", str(cfg), "--method", "toy-ddp", nproc=nproc, cwd=REPO)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[label] = (done, _model_dir(tmp_path / label / "cache", "toy-ddp"))
    (one, dir_one), (two, dir_two) = runs["one"], runs["two"]
    meta_one = json.loads((dir_one / "meta.json").read_text())
    meta_two = json.loads((dir_two / "meta.json").read_text())
    assert dir_one.name == dir_two.name  # the same model identity: the process count is not part of it
    assert meta_two["distributed"] == {"world_size": 2, "backend": "gloo"} and "distributed" not in meta_one
    curve_one = [h["heatmap_loss"] for h in meta_one["history"]]
    curve_two = [h["heatmap_loss"] for h in meta_two["history"]]
    assert len(curve_one) == 4 and curve_one[0] != curve_one[-1]  # it learns: the curve moves
    np.testing.assert_allclose(curve_two, curve_one, rtol=1e-5)
    w_one, w_two = load_file(str(dir_one / "model.safetensors")), load_file(str(dir_two / "model.safetensors"))
    assert w_one.keys() == w_two.keys()
    for key in w_one:
        torch.testing.assert_close(w_two[key], w_one[key], rtol=1e-5, atol=1e-6)
    # rank 0 alone wrote and spoke
    assert sorted(p.name for p in dir_two.iterdir()) == [".train.lock", "meta.json", "model.safetensors"]
    assert two.stdout.count("checkpoint:") == 1 and "DistributedDataParallel: 2 processes" in two.stdout


def test_torchrun_trains_capeformer_with_one_checkpoint(tiny, tmp_path):
    """The real entry point, unchanged: `python -m torch.distributed.run ... -m cape_bench train --method capeformer`.

    Frozen backbone (BatchNorm in eval); CapeFormer's transformer dropout draws different masks for a shard than
    for the whole batch, so its losses are not compared with a single-process run here (the toy model above is).
    """
    extra = ('[methods.capeformer-frozen]\nmethod = "capeformer"\noptions = {backbone_weights = "random"}\n'
             'train = {iterations = 2, batch_size = 4, input_size = 64, backbone = "resnet18", '
             'freeze_backbone = true, log_every = 1}\n')
    cfg = _config(tmp_path, tiny, tmp_path / "cache", extra=extra)
    done = _torchrun("-m", "cape_bench", "train", "--config", str(cfg), "--method", "capeformer-frozen", nproc=2,
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = _model_dir(tmp_path / "cache", "capeformer")
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["distributed"]["world_size"] == 2 and len(meta["history"]) == 2
    assert all(np.isfinite(h["heatmap_loss"]) for h in meta["history"])
    assert not (folder / "train_state.pt").exists() and done.stdout.count("checkpoint:") == 1
