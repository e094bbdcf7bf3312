"""Every registered method honours the contract on a tiny episode (timm's list_models-style test).

Shapes, finiteness, keypoints in original image pixels, and batch > 1 equal to batch 1. PyTorch
methods are trained for two iterations of a tiny preset (random-init ResNet-18 at 64²) on a tiny
dataset with images.
"""

from __future__ import annotations


import numpy as np
import pytest

from cape_bench import registry
from cape_bench.api import Method, RunContext
from cape_bench.data.geometry import image_to_crop
from cape_bench.data.mp100 import load_annotation_set
from cape_bench.images import CropSource
from tests.helpers import write_tiny_mp100

METHODS = sorted(registry.BUILTIN_METHODS)


@pytest.fixture(scope="module")
def tiny_with_images(tmp_path_factory):
    root = write_tiny_mp100(tmp_path_factory.mktemp("contract"), num_categories=2, instances=18, images=True,
                            image_size=80, train=True)
    return root


def _instantiate(name, monkeypatch):
    cls = registry.load_method_class(name)
    presets = getattr(cls, "presets", None)
    if presets is None:
        return cls()
    from baselines.common.trainer import Preset

    monkeypatch.setitem(presets, "contract-tiny", Preset("contract-tiny", iterations=2, batch_size=2, lr=1e-4,
                                                         warmup_iters=1, input_size=64, backbone="resnet18",
                                                         log_every=1))
    return cls(preset="contract-tiny", backbone_weights="random")


@pytest.mark.parametrize("name", METHODS)
def test_method_contract(name, tiny_with_images, tmp_path, monkeypatch):
    method = _instantiate(name, monkeypatch)
    assert isinstance(method, Method)
    ann = load_annotation_set(tiny_with_images / "annotations" / "mp100_split1_test.json")
    ctx = RunContext(dataset="mp100", split=1, shots=1, ann_dir=str(tiny_with_images / "annotations"),
                     image_root=str(tiny_with_images / "images"), cache_dir=str(tmp_path / "cache"), options={},
                     seed=1, log=lambda m: None)
    method.prepare(ctx)
    objs = ann.cat2obj[2]
    crops = CropSource(tiny_with_images / "images", method.info.input_size) if method.info.needs_images else None

    def view(ids, gt):
        rows = [ann.instances[i] for i in ids]
        return ann.view(ids, with_ground_truth=gt, crops=crops.crops(rows) if crops else None)

    support = view(objs[:1], True)
    queries = view(objs[1:5], method.info.reads_query_ground_truth)
    state = method.encode_support(support)
    pred = np.asarray(method.predict(state, queries))
    k = ann.categories[2].num_keypoints
    assert pred.shape == (4, k, 2)
    assert np.all(np.isfinite(pred))
    # original image pixels: back in the crop frame, predictions land near the crop, not in [0, 1]
    in_crop = image_to_crop(pred, queries.center_px, queries.scale, (64, 64)) / 64
    assert np.all(np.abs(in_crop - 0.5) < 3), "predictions are not in original image pixels"
    if method.info.needs_images:
        assert pred.max() > 2, "predictions look normalised, not in pixels"
    one_by_one = np.concatenate([np.asarray(method.predict(state, view(objs[i : i + 1],
                                 method.info.reads_query_ground_truth))) for i in range(1, 5)])
    np.testing.assert_allclose(pred, one_by_one, atol=1e-3)
    prov = method.provenance()
    assert isinstance(prov, dict)
