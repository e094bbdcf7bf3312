"""``cape-bench profile`` and the report's Speed section.

Tiny models (random-init ResNet-18 at 32², K = 5) on one CPU thread; the numbers themselves are never asserted
against a speed target, only their bookkeeping: every sample kept, medians and IQRs computed from them, stamps on
every row, parameters / FLOPs counted right, the official-style reference re-encoding text per pair, comparisons
refused across machines.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from cape_bench import profile as P

torch = pytest.importorskip("torch")

TINY = "profile-tiny"
K = 5
TORCH_METHODS = ("capeformer", "capex")


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # stable and fast on a shared machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_preset(one_thread):
    """A ``profile-tiny`` preset (ResNet-18 at 32²) registered on the PyTorch methods for this module."""
    from baselines.common.trainer import Preset
    from cape_bench import registry

    preset = Preset(TINY, iterations=1, batch_size=2, lr=1e-4, warmup_iters=1, input_size=32, backbone="resnet18")
    classes = [registry.load_method_class(n) for n in ("capeformer", "capex", "capenext")]
    for cls in classes:
        cls.presets[TINY] = preset
    yield TINY
    for cls in classes:
        cls.presets.pop(TINY, None)


@pytest.fixture(scope="module")
def profiled(tiny_preset, tmp_path_factory) -> P.ProfileResult:
    spec = P.ProfileSpec(methods=(*TORCH_METHODS, "support-copy"), preset=tiny_preset, batch_sizes=(1, 2),
                         repeats=3, warmup=1, keypoints=K, harness=True, harness_categories=1, harness_episodes=1,
                         queries=4, reference_pairs=4, image_size=64)
    messages: list[str] = []
    result = P.profile_methods(spec, log=messages.append, workdir=tmp_path_factory.mktemp("profile"))
    assert not [m for m in messages if "[red]" in m], messages
    return result


def rows_of(result, method):
    return [r for r in result.rows if r["method"] == method]


# ------------------------------------------------------------------------------------------------ statistics


def test_summarize_is_median_and_interquartile_range():
    s = P.summarize([5.0, 1.0, 100.0, 3.0, 2.0, 4.0, 6.0])
    assert s["median"] == 4.0 and s["n"] == 7
    assert s["q25"] == 2.5 and s["q75"] == 5.5 and s["iqr"] == 3.0
    assert P.summarize([])["n"] == 0


def test_round_robin_interleaves_methods_and_rotates_the_first():
    order = list(P.round_robin(["a", "b", "c"], 4))
    assert len(order) == 12
    for r in range(4):
        assert sorted(m for rep, m in order if rep == r) == ["a", "b", "c"]
    assert [order[3 * r][1] for r in range(4)] == ["a", "b", "c", "a"]


def test_count_flops_of_a_linear_layer(one_thread):
    layer = torch.nn.Linear(8, 16)
    x = torch.randn(4, 8)
    assert P.count_flops(lambda: layer(x)) == 2 * 4 * 8 * 16


def test_count_parameters_groups_and_shared_tensors(one_thread):
    from types import SimpleNamespace

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Linear(10, 10)  # 110
            self.head = torch.nn.Linear(10, 3)  # 33

    text = SimpleNamespace(params={"w": torch.zeros(7, 5), "b": torch.zeros(5)})  # 40, a functional encoder
    image = SimpleNamespace(features=torch.nn.Linear(4, 2), proj=torch.zeros(3, 2))  # 10 + 6
    frozen = SimpleNamespace(model=Model(), preset=SimpleNamespace(freeze_backbone=True), text=text, image=image)
    out = P.count_parameters(frozen)
    assert out["params_backbone"] == 110 and out["params_text_encoder"] == 40 and out["params_image_encoder"] == 16
    assert out["params_total"] == 110 + 33 + 40 + 16
    assert out["params_trainable"] == 33 and out["params_frozen"] == out["params_total"] - 33
    shared = SimpleNamespace(model=Model(), preset=SimpleNamespace(freeze_backbone=False), text=None, image=None)
    shared.image = SimpleNamespace(features=shared.model.backbone)  # the same tensors: counted once
    out = P.count_parameters(shared)
    assert out["params_total"] == 143 and out["params_trainable"] == 143 and out["params_image_encoder"] == 0


def test_outermost_modules_are_the_entry_points_of_a_forward(one_thread):
    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)
            self.mlp = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())

        def predict(self, x):  # not forward: only its submodules are called
            return self.mlp(self.proj(x))

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Linear(4, 4)
            self.head = Head()

    model = Model()
    x = torch.randn(2, 4)
    found = [name for name, _ in P.outermost_modules(model, [lambda: model.head.predict(model.backbone(x))])]
    assert found == ["backbone", "head.proj", "head.mlp"]


def test_memory_probe_sees_an_allocation():
    probe = P.MemoryProbe("cpu")
    if not probe.resettable:
        pytest.skip("no resettable RSS high-water mark on this platform")
    import mmap

    # fresh anonymous pages (a numpy block could be served from memory earlier tests freed but the
    # allocator kept resident, which raises no high-water mark)
    block = mmap.mmap(-1, 64 * 2**20)
    probe.reset()
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    peak, work = probe.read()
    block.close()
    assert work is not None and work > 40 and peak >= work


def test_import_stays_torch_free():
    code = ("import sys, cape_bench.profile, cape_bench.report.speed; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


# ------------------------------------------------------------------------------------------------ the profile


def test_every_row_keeps_its_samples_and_statistics(profiled):
    assert len(profiled.rows) == 3 * 2
    for row in profiled.rows:
        assert row["status"] == "ok", row["status"]
        assert len(row["predict_samples_ms"]) == len(row["support_samples_ms"]) == row["repeats"] == 3
        assert row["predict_ms"] == pytest.approx(float(np.median(row["predict_samples_ms"])))
        q25, q75 = np.percentile(row["support_samples_ms"], [25, 75])
        assert row["support_iqr_ms"] == pytest.approx(q75 - q25)
        assert row["pairs_per_s"] == pytest.approx(row["batch_size"] / (row["predict_ms"] / 1e3))
        assert row["ms_per_pair"] == pytest.approx(row["predict_ms"] / row["batch_size"])
        assert row["pairs_per_s_q25"] <= row["pairs_per_s_q75"]
        assert row["keypoints"] == K and row["amp"] is False and row["amp_dtype"] == "float32"


def test_every_row_carries_the_machine_stamp(profiled):
    machine = profiled.machine
    assert machine["device"] == "cpu" and machine["torch"] == torch.__version__
    assert machine["threads"] == 1 and machine["weights"] == P.WEIGHTS_NOTE
    for row in [*profiled.rows, *profiled.harness]:
        for key in P.STAMP_KEYS:
            assert row[key] == machine[key], key
    assert any(P.WEIGHTS_NOTE in note for note in profiled.notes)


def test_parameters_flops_and_text_encoder(profiled):
    capex, capeformer, copy = (rows_of(profiled, m)[0] for m in ("capex", "capeformer", "support-copy"))
    assert capex["text_encoder"] == "all-minilm-l6-v2"
    assert capex["params_text_encoder"] == 22_565_376  # BERT 6×384 without pooler
    assert capeformer["params_text_encoder"] == 0 and capeformer["text_ms"] is None
    for row in (capex, capeformer):
        assert row["params_backbone"] > 10_000_000  # ResNet-18
        assert 0 < row["params_trainable"] <= row["params_total"]
        assert row["params_frozen"] == row["params_total"] - row["params_trainable"]
        assert row["gflops_per_pair"] > 0 and row["weights_mb"] > 4 * row["params_total"] / 2**20 * 0.99
    assert capex["params_frozen"] >= capex["params_text_encoder"]  # the text encoder is frozen
    assert capex["gflops_text"] > 0 and capex["text_ms"] > 0 and len(capex["text_samples_ms"]) == 3
    assert copy["params_total"] == 0 and copy["gflops_per_pair"] == 0
    # a method that reads the support image encodes it (backbone FLOPs); CapeX reads no support pixels
    assert capeformer["gflops_support"] > capex["gflops_support"]
    for row in profiled.rows:
        if row["method"] != "support-copy":
            assert row["peak_mem_mb"] > 0 and row["peak_work_mb"] is not None


def test_harness_overhead_and_official_style_reference(profiled):
    assert [h["method"] for h in profiled.harness] == [*TORCH_METHODS, "support-copy"]
    for h in profiled.harness:
        assert h["status"] == "ok", h["status"]
        assert h["pairs"] == 4 and h["batch_size"] == 4 and h["reference_pairs"] == 4
        for key in ("harness_pairs_per_s", "bare_pairs_per_s", "reference_pairs_per_s", "harness_over_bare",
                    "harness_over_reference"):
            assert np.isfinite(h[key]) and h[key] > 0, key
        assert h["harness_over_bare"] == pytest.approx(h["harness_pairs_per_s"] / h["bare_pairs_per_s"])
        assert len(h["bare_samples_ms"]) == 3
        parts = ("data_s", "instance_s", "support_s", "predict_s", "other_s")
        assert sum(h[k] for k in parts) == pytest.approx(h["harness_s"])  # the loop's stages + the fixed cost
        assert h["other_s"] > 0  # files, manifests, run.json: there is always some
    by = {h["method"]: h for h in profiled.harness}
    # the reference runs the text encoder on every description in every forward: K strings per pair
    assert by["capex"]["reference_text_strings"] == 4 * K
    assert by["capeformer"]["reference_text_strings"] == 0


def test_official_style_reference_reencodes_where_the_harness_caches(tiny_preset, tmp_path):
    from cape_bench.data.mp100 import load_annotation_set
    from cape_bench.episodes import build_manifest
    from cape_bench.images import CropSource

    method, _ = P.build_method("capex", preset=tiny_preset, backbone="", device="cpu", batch_size=4,
                               workdir=tmp_path, log=lambda m: None)
    root = P.write_profile_dataset(tmp_path / "data", categories=1, instances=8, keypoints=K, image_size=48)
    ann = load_annotation_set(root / "annotations" / "mp100_split1_test.json")
    manifest = build_manifest(ann, 1, num_episodes=1, num_queries=3)
    encoded_before = method.text.stats.encoded
    out = P.official_style_reference_loop(method, ann, manifest, root / "images", max_pairs=3)
    assert out["pairs"] == 3 and out["text_strings_encoded"] == 3 * K
    assert method.text.stats.encoded == encoded_before  # the cached encoder was bypassed, not used
    assert method.model.encode_text == method.text.encode  # and restored afterwards
    crops = CropSource(root / "images", method.info.input_size)
    ids = manifest.support_obj[0]
    support = ann.view(ids, crops=crops.crops([ann.instances[i] for i in ids]))
    state = method.encode_support(support)
    state = method.encode_support(support)  # the harness path: each string encoded once, then cached
    assert state.e_joint.shape[1] == K
    assert method.text.stats.encoded - encoded_before <= K


def test_amp_and_compile_paths(tiny_preset, tmp_path):
    spec = P.ProfileSpec(methods=("capex",), preset=tiny_preset, batch_sizes=(2,), repeats=1, warmup=1, keypoints=K,
                         amp=True, compile=True, compile_backend="eager", harness=False)
    result = P.profile_methods(spec, log=lambda m: None, workdir=tmp_path)
    (row,) = result.rows
    assert row["status"] == "ok", row["status"]
    assert row["amp"] is True and row["amp_dtype"] == "bfloat16" and row["compile"] is True
    assert row["compiled_modules"].split()[0] == "backbone" and "keypoint_head.transformer" in row["compiled_modules"]


def test_cuda_request_without_cuda_is_refused():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        P.profile_methods(P.ProfileSpec(methods=("support-copy",), device="cuda", harness=False))


# ---------------------------------------------------------------------------------------- files, comparison, CLI


def test_profile_files_round_trip(profiled, tmp_path):
    for name in ("p.csv", "p.json"):
        path = P.write_profile(profiled, tmp_path / name)
        back = P.read_profile(path)
        assert len(back) == len(profiled.rows) + len(profiled.harness)
        for orig, got in zip([*profiled.rows, *profiled.harness], back, strict=True):
            assert got["method"] == orig["method"] and got["batch_size"] == orig["batch_size"]
            assert got.get("predict_samples_ms", []) == pytest.approx(orig.get("predict_samples_ms", []))
            assert P.machine_key(got) == P.machine_key(orig)
    with pytest.raises(ValueError, match="not a cape-bench profile"):
        (tmp_path / "other.csv").write_text("a,b\n1,2\n")
        P.read_profile(tmp_path / "other.csv")


def test_comparison_matches_rows_and_refuses_other_machines(profiled, tmp_path):
    rows = P.read_profile(P.write_profile(profiled, tmp_path / "a.csv"))
    same = P.compare_profiles(rows, rows)
    assert len(same["rows"]) == len(profiled.rows)
    assert all(r["speedup"] == pytest.approx(1.0) and not r["distinct"] for r in same["rows"])
    faster = [dict(r, predict_samples_ms=[v / 10 for v in r.get("predict_samples_ms") or []]) for r in rows]
    cmp = P.compare_profiles(rows, faster)
    assert all(r["speedup"] == pytest.approx(10.0) and r["distinct"] for r in cmp["rows"])
    for key, value in (("threads", 7), ("torch", "0.0.1"), ("device_name", "another CPU"), ("cuda", "12.1")):
        other = [dict(r, **{key: value}) for r in rows]
        with pytest.raises(P.ProfileMismatchError, match=key):
            P.compare_profiles(rows, other)
    partial = P.compare_profiles(rows, [r for r in rows if r["method"] != "capex"])
    assert {k[0] for k in partial["only_old"]} == {"capex"}


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="cape-bench")
    P.add_profile_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_profile_writes_and_compares(tmp_path, capsys, one_thread):
    out = tmp_path / "prof.csv"
    assert _cli(["profile", "--methods", "support-copy,oracle", "--batch-sizes", "1,3", "--repeats", "2",
                 "--no-harness", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert P.WEIGHTS_NOTE in text and "support-copy" in text and "oracle" in text and "pairs/s" in text
    rows = P.read_profile(out)
    assert [(r["method"], r["batch_size"]) for r in rows] == [("support-copy", 1), ("support-copy", 3),
                                                              ("oracle", 1), ("oracle", 3)]
    assert _cli(["profile", "--compare", str(out), str(out)]) == 0
    assert "speed-up" in capsys.readouterr().out
    other = tmp_path / "other.json"
    result = P.ProfileResult(machine={}, spec={}, rows=[dict(r, threads=99) for r in rows], harness=[])
    P.write_profile(result, other)
    assert _cli(["profile", "--compare", str(out), str(other)]) == 2
    assert "different machines" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ report


class _Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: dict[str, str] = {}
        self.svgs: dict[str, int] = {}
        self._current: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self._current = dict(attrs).get("id")
            self.text[self._current] = ""
            self.svgs[self._current] = 0
        elif tag == "svg" and self._current:
            self.svgs[self._current] += 1

    def handle_endtag(self, tag):
        if tag == "section":
            self._current = None

    def handle_data(self, data):
        if self._current:
            self.text[self._current] += data


def _speed_section(html: str) -> tuple[str, int]:
    page = _Sections()
    page.feed(html)
    return page.text["speed"], page.svgs["speed"]


def test_pareto_front():
    points = [(1.0, 50.0, "fast"), (2.0, 60.0, "mid"), (3.0, 55.0, "dominated"), (4.0, 70.0, "best"),
              (1.0, 40.0, "same-speed-worse")]
    from cape_bench.report.speed import pareto_front

    assert pareto_front(points) == ["fast", "mid", "best"]


def test_report_speed_section(tmp_path, one_thread):
    from cape_bench.cli import main
    from cape_bench.report import build_report
    from tests.helpers import write_tiny_mp100

    root = write_tiny_mp100(tmp_path / "data")
    assert main(["run", "--ann-dir", str(root / "annotations"), "--methods", "support-copy,oracle", "--splits", "1",
                 "--shots", "1", "--num-episodes", "2", "--out-dir", str(tmp_path / "runs"), "--name", "t",
                 "--quiet"]) == 0
    run_dir = tmp_path / "runs" / "t"
    text, svgs = _speed_section(build_report([run_dir], tmp_path / "without.html").read_text())
    assert "No speed profile" in text
    assert f"cape-bench profile --methods support-copy,oracle --run-dir {run_dir}" in text
    assert svgs == 0
    assert _cli(["profile", "--methods", "support-copy,oracle", "--batch-sizes", "1,2", "--repeats", "2",
                 "--harness-episodes", "1", "--reference-pairs", "3", "--run-dir", str(run_dir)]) == 0
    assert (run_dir / P.PROFILE_FILE).is_file()
    text, svgs = _speed_section(build_report([run_dir], tmp_path / "with.html").read_text())
    assert P.WEIGHTS_NOTE in text and "Harness overhead" in text and "Pareto front" in text
    assert "support-copy" in text and "oracle" in text
    assert svgs == 2  # throughput against batch size, accuracy against latency
    # the oracle (PCK 100 %) is on the front whatever its speed
    front = text.split("more accurate):")[1].split(".")[0]
    assert "oracle" in front
