"""Hot paths of an evaluation: episode building, cropping, crop → image decoding, and each PyTorch method's forward.

Run and keep the results to compare run to run::

    python -m pytest tests/benchmarks --benchmark-only --benchmark-enable --benchmark-autosave
    python -m pytest-benchmark compare            # or: pytest-benchmark compare 0001 0002

In the ordinary test run (``--benchmark-disable`` from pyproject) each cheap body runs once as a smoke test; the
method forwards (which build models) are skipped unless benchmarks are enabled. Scoring has its own file
(``test_bench_scoring.py``). Model timings here are random-init weights at a tiny size (speed only); the full
per-method latency / throughput profile is ``cape-bench profile``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cape_bench.data.geometry import bbox_center_scale, crop_to_image, warp_crop
from cape_bench.data.mp100 import AnnotationSet, Instance
from cape_bench.episodes import QUERIES_PER_EPISODE, TEST_EPISODES, build_manifest

# ------------------------------------------------------------------------------------------------ data


def synthetic_annotation_set(num_categories: int = 20, seed: int = 0) -> AnnotationSet:
    """An instance database shaped like one MP-100 test split: 20 categories of 100–400 instances, K 5–68."""
    rng = np.random.default_rng(seed)
    instances: list[Instance] = []
    cat2obj: dict[int, tuple[int, ...]] = {}
    for c in range(num_categories):
        cid = c + 1
        k = int(rng.integers(5, 69))
        ids = []
        for _ in range(int(rng.integers(100, 401))):
            obj = len(instances)
            ids.append(obj)
            instances.append(Instance(
                obj_id=obj, ann_id=100_000 + obj, image_id=obj, category_id=cid, image_file=f"{cid}/{obj}.jpg",
                bbox_px=(10.0, 10.0, 100.0, 80.0), center_px=np.array([60.0, 50.0], np.float32),
                scale=np.array([0.625, 0.625], np.float32), keypoints_px=np.zeros((k, 2), np.float32),
                visible=np.ones(k, bool)))
        cat2obj[cid] = tuple(ids)
    return AnnotationSet(path=Path("synthetic_split_test.json"), sha256="0" * 64, info={}, categories={},
                         instances=tuple(instances), cat2obj=cat2obj, dropped=())


@pytest.fixture(scope="module")
def split_db() -> AnnotationSet:
    return synthetic_annotation_set()


@pytest.mark.benchmark(group="episodes")
@pytest.mark.parametrize("shots", [1, 5])
def test_bench_build_manifest_full_split(benchmark, split_db, shots):
    manifest = benchmark(build_manifest, split_db, shots)
    assert len(manifest) == 20 * TEST_EPISODES * QUERIES_PER_EPISODE
    assert manifest.support_obj.shape == (len(manifest), shots)


@pytest.fixture(scope="module")
def photo():
    """A 480×640 RGB image (MP-100-sized) and the official crop frame of a box in it."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    center, scale = bbox_center_scale(np.array([120.0, 90.0, 260.0, 200.0]))
    return img, center, scale


@pytest.mark.benchmark(group="crop")
@pytest.mark.parametrize("size", [128, 256])
def test_bench_warp_crop(benchmark, photo, size):
    img, center, scale = photo
    crop = benchmark(warp_crop, img, center, scale, size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8


@pytest.mark.benchmark(group="decode")
@pytest.mark.parametrize("pairs", [QUERIES_PER_EPISODE, 20 * TEST_EPISODES * QUERIES_PER_EPISODE],
                         ids=["episode", "split"])
def test_bench_crop_to_image(benchmark, pairs):
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 256, size=(pairs, 17, 2))
    center = rng.uniform(100, 300, size=(pairs, 2)).astype(np.float32)
    scale = rng.uniform(0.5, 2.0, size=(pairs, 2)).astype(np.float32)
    out = benchmark(crop_to_image, xy, center, scale, (256, 256))
    assert out.shape == (pairs, 17, 2) and np.all(np.isfinite(out))


# ------------------------------------------------------------------------------------------------ method forwards


def _torch_methods() -> list[str]:
    try:
        from cape_bench.profile import default_methods

        return default_methods()
    except ImportError:  # torch not installed: no PyTorch method to time
        return []


@pytest.fixture(scope="module")
def tiny_methods(tmp_path_factory):
    """Builds each method once at ResNet-18 / 64² with random-init weights (``bench-tiny`` preset)."""
    torch = pytest.importorskip("torch")
    from baselines.common.trainer import Preset
    from cape_bench import profile as profiling, registry

    preset = Preset("bench-tiny", iterations=1, batch_size=4, lr=1e-4, warmup_iters=1, input_size=64,
                    backbone="resnet18")
    workdir = tmp_path_factory.mktemp("bench-methods")
    patched, built = [], {}

    def get(name: str):
        if name not in built:
            cls = registry.load_method_class(name)
            cls.presets["bench-tiny"] = preset
            patched.append(cls)
            method, _ = profiling.build_method(name, preset="bench-tiny", backbone="", device="cpu", batch_size=4,
                                               workdir=workdir, log=lambda m: None)
            inputs = profiling.SyntheticInputs(profiling.synthetic_category(17), method.info.input_size,
                                               method.info.needs_images, 4)
            with torch.inference_mode():
                state = method.encode_support(inputs.support())
            built[name] = (method, inputs, state)
        return built[name]

    yield get
    for cls in patched:
        cls.presets.pop("bench-tiny", None)


@pytest.mark.benchmark(group="method-forward")
@pytest.mark.parametrize("name", _torch_methods())
def test_bench_method_forward(benchmark, tiny_methods, name):
    if not benchmark.enabled:
        pytest.skip("builds a model: runs with --benchmark-enable (the contract tests cover correctness)")
    method, inputs, state = tiny_methods(name)
    reads_gt = method.info.reads_query_ground_truth

    def fresh_queries():  # new annotation ids every round: no per-instance cache serves a timed call
        return (state, inputs.queries(4, ground_truth=reads_gt)), {}

    out = benchmark.pedantic(method.predict, setup=fresh_queries, rounds=10, warmup_rounds=1)
    assert np.asarray(out).shape == (4, 17, 2)
