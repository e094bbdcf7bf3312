"""`cape-bench train` and `[methods.<name>.train]` preset overrides: what is trained, cached and reused."""

from __future__ import annotations

import json
import re

import pytest

from baselines.common.trainer import Preset
from cape_bench.cli import main
from tests.helpers import write_tiny_config, write_tiny_mp100


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = write_tiny_mp100(tmp_path_factory.mktemp("train"), num_categories=2, instances=12, images=True,
                            image_size=72, train=True)
    return root


def _config(tmp_path, tiny, **train) -> str:
    """A bench.toml: the tiny dataset, CapeFormer's budget preset shrunk to 2 iterations of a random ResNet-18."""
    return str(write_tiny_config(tmp_path / "bench.toml", tiny, runs=tmp_path / "runs", cache=tmp_path / "cache",
                                 train=train))


def _model_dirs(tmp_path):
    return sorted((tmp_path / "cache" / "models" / "capeformer").glob("split1-budget-*"))


def test_train_then_reuse_then_retrain_on_a_changed_preset(tiny, tmp_path, capsys):
    cfg = _config(tmp_path, tiny)
    assert main(["train", "--config", cfg, "--method", "capeformer", "--split", "1"]) == 0
    out = capsys.readouterr().out
    assert "training split 1 with preset 'budget'" in out and "iterations=2" in out
    (model_dir,) = _model_dirs(tmp_path)
    meta = json.loads((model_dir / "meta.json").read_text())
    assert meta["iterations"] == 2 and meta["preset"]["input_size"] == 64 and meta["preset"]["backbone"] == "resnet18"
    assert (model_dir / "model.safetensors").is_file()
    # the trainer's own cost is a number: wall time against the bare forward + backward + step it contains
    tp = meta["throughput"]
    assert tp["steps"] == 2 and 0 < tp["compute_s"] <= tp["wall_s"] and tp["overhead"] >= 1
    assert tp["images_per_s"] == pytest.approx(2 * 2 * 2 / tp["wall_s"], rel=0.05)  # 2 steps × batch 2 × (1 + 1)
    assert "it/s" in out and "wall / compute" in out

    # the same config again: nothing is trained, the cached model is named
    assert main(["train", "--config", cfg, "--method", "capeformer", "--split", "1"]) == 0
    out = capsys.readouterr().out
    assert "training split" not in out and "reusing the model trained earlier" in out
    assert _model_dirs(tmp_path) == [model_dir]

    # `run` evaluates that very model
    assert main(["run", "--config", cfg, "--methods", "capeformer", "--name", "r", "--quiet"]) == 0
    stored = "".join(p.read_text() for p in (tmp_path / "runs" / "r").rglob("*.json"))
    assert str(model_dir / "model.safetensors") in stored

    # any preset field that changes (not only the preset's name) is a different model
    assert main(["train", "--config", cfg, "--method", "capeformer", "--split", "1", "--iterations", "3"]) == 0
    dirs = _model_dirs(tmp_path)
    assert len(dirs) == 2
    assert {json.loads((d / "meta.json").read_text())["iterations"] for d in dirs} == {2, 3}


def test_bad_preset_override_names_the_key(tiny, tmp_path, capsys):
    cfg = _config(tmp_path, tiny, iters=5)
    assert main(["train", "--config", cfg, "--method", "capeformer"]) == 2
    err = capsys.readouterr().err
    assert "methods.capeformer.train.iters" in err and "iterations" in err


def test_nothing_to_train_is_an_error(tiny, tmp_path, capsys):
    assert main(["train", "--config", _config(tmp_path, tiny), "--method", "support-copy"]) == 2
    assert "nothing to train" in capsys.readouterr().err


def test_preset_overrides_are_type_checked():
    base = Preset("quick", iterations=10, batch_size=2, lr=1e-4, warmup_iters=1, milestones=(8,))
    changed = base.with_overrides({"iterations": 20, "lr": 1, "milestones": [15], "grad_clip": 1.0,
                                   "freeze_backbone": True})
    assert (changed.iterations, changed.lr, changed.milestones, changed.grad_clip, changed.freeze_backbone) == (
        20, 1.0, (15,), 1.0, True)
    assert changed.name == "quick"
    for bad in ({"iterations": 2.5}, {"iterations": True}, {"lr": "fast"}, {"freeze_backbone": 1},
                {"milestones": 3}, {"name": "other"}):
        with pytest.raises(ValueError, match="train\\."):
            base.with_overrides(bad)


@pytest.mark.parametrize("name", ["pomnet", "capeformer", "graphcape", "capex", "capenext"])
def test_head_sizes_reach_the_model_and_bad_ones_name_the_key(name):
    from cape_bench import registry

    cls = registry.load_method_class(name)
    width = "embed_dims" if name == "pomnet" else "d_model"
    sizes = {width: 64, "dim_feedforward" if name != "pomnet" else "feedforward_channels": 128, "dropout": 0.0}
    if name != "pomnet":
        sizes["similarity_proj_dim"] = 64
    method = cls(train={"head": sizes})
    config = _official_config(method)
    if method.info.reads_text:
        config = method.sized_head(config)
    assert all(getattr(config, k) == v for k, v in sizes.items())
    # merged into the budget preset's own sizes; part of the preset, so of the trained-model digest
    assert method.preset.head == {**cls.presets["budget"].head, **sizes}
    with pytest.raises(ValueError, match=f"methods.{name}.train.head.widht: not a field"):
        cls(train={"head": {"widht": 3}}).sized_head(config)
    with pytest.raises(ValueError, match=f"methods.{name}.train.head.{width}: expected an integer"):
        cls(train={"head": {width: 64.5}}).sized_head(config)
    with pytest.raises(ValueError, match="expected a table of numbers"):
        cls(train={"head": {width: "wide"}})


def _official_config(method):
    """The head configuration the method builds (text methods: CapeX's, which needs no loaded encoder here)."""
    from baselines.capex.model import CapeXConfig

    return CapeXConfig() if method.info.reads_text else method.head_config(64)


@pytest.mark.parametrize("name", ["pomnet", "capeformer", "graphcape", "capex", "capenext"])
def test_every_trainable_method_takes_preset_overrides(name):
    from cape_bench import registry

    method = registry.load_method_class(name)(train={"iterations": 3, "lr": 2e-4})
    assert (method.preset.iterations, method.preset.lr, method.preset.name) == (3, 2e-4, "budget")
    assert method.trainable


def test_run_trains_its_models_ahead_two_at_a_time_and_the_cells_reuse_them(tiny, tmp_path, capsys):
    """`run.train_jobs = 2`: the job's two models train in two processes first; its cells only load them."""
    from tests.helpers import TINY_TRAIN, toml_value

    variant = toml_value({**TINY_TRAIN, "iterations": 3})
    cfg = write_tiny_config(tmp_path / "bench.toml", tiny, runs=tmp_path / "runs", cache=tmp_path / "cache",
                            methods=("capeformer", "capeformer-longer", "support-copy"), run_extra="train_jobs = 2",
                            extra=f'[methods.capeformer-longer]\nmethod = "capeformer"\ntrain = {variant}\n'
                                  'options = {backbone_weights = "random"}\n')
    assert main(["run", "--config", str(cfg), "--name", "ahead", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "job: 3 cells; 2 models to train first, 5 iterations in all: capeformer, capeformer-longer" in out
    assert re.search(r"training 2 models ahead, 2 at a time on \d+ threads? each", out)
    assert "capeformer: split 1 trained in" in out and "capeformer-longer: split 1 trained in" in out
    assert out.count("reusing the model trained earlier") == 2  # the cells trained nothing themselves
    assert "job: 3/3 cells in" in out
    assert len(_model_dirs(tmp_path)) == 2
    # the same run again: nothing to train, nothing recomputed
    assert main(["run", "--config", str(cfg), "--name", "ahead", "--quiet"]) == 0
    assert "3 cells were finished earlier" in capsys.readouterr().out
