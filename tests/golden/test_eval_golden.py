"""The official evaluation pipeline, reproduced exactly: ../shared/golden/eval_pipeline_fixture.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cape_bench.data.geometry import affine_matrix, apply_affine, bbox_center_scale, crop_to_image
from cape_bench.episodes import official_paired_samples
from cape_bench.metrics import pck


@pytest.fixture(scope="module")
def fixture(golden_dir):
    return json.loads((golden_dir / "eval_pipeline_fixture.json").read_text())


@pytest.mark.parametrize("key", ["episodes_1shot", "episodes_5shot"])
def test_episodes_bit_identical(fixture, key):
    spec = fixture[key]
    base = fixture["episodes_1shot"]
    cat2obj = {int(c): tuple(base["cat2obj"][str(c)]) for c in base["valid_class_ids"]}
    pairs = official_paired_samples(cat2obj, spec["num_shots"], spec["num_episodes"], spec["num_queries"])
    assert pairs == spec["paired_samples"]


@pytest.mark.parametrize("index", range(6))
def test_crop_geometry(fixture, index):
    crop = fixture["crops"][index]
    center, scale = bbox_center_scale(np.array(crop["bbox_xywh"]))
    np.testing.assert_array_equal(center, np.float32(crop["center"]))
    np.testing.assert_array_equal(scale, np.float32(crop["scale"]))
    trans = affine_matrix(center, scale, crop["rotation"], (256, 256))
    np.testing.assert_allclose(trans, crop["trans"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        affine_matrix(center, scale, crop["rotation"], (256, 256), inv=True), crop["inv_trans"], rtol=0, atol=1e-6
    )
    np.testing.assert_allclose(apply_affine(np.array(crop["pts_image"]), trans), crop["pts_crop"], rtol=0, atol=1e-9)
    back = crop_to_image(np.array(crop["pts_crop"])[None], center[None], scale[None], (256, 256))[0]
    np.testing.assert_allclose(back, crop["transform_preds_of_pts_crop"], rtol=0, atol=1e-9)


def _pck_inputs(fx):
    db = fx["db"]
    pred, gt, qv, sv, norm = [], [], [], [], []
    for p, pair in zip(fx["preds"], fx["paired_samples"], strict=True):
        q = db[pair[-1]]
        k = len(q["joints_3d"])
        pred.append(np.array(p["keypoints"])[:k, :2])
        gt.append(np.array(q["joints_3d"], np.float32)[:, :2])
        qv.append(np.array(q["joints_3d_visible"])[:, 0] > 0)
        sv.append([np.array(db[s]["joints_3d_visible"])[:, 0] > 0 for s in pair[:-1]])
        norm.append(max(q["bbox"][2:]))
    return np.array(pred), np.array(gt), np.array(qv), np.array(sv), np.array(norm)


def test_pck_eval_exact(fixture):
    fx = fixture["pck_eval"]
    pred, gt, qv, sv, norm = _pck_inputs(fx)
    mask = pck.keypoint_mask(qv, sv)
    scores = pck.summarize(pck.per_pair_metrics(pck.normalized_distances(pred, gt, mask, norm),
                                                pck.pixel_distances(pred, gt, mask)))
    expected = dict(fx["result"])
    assert set(expected) == set(scores)
    for name, value in expected.items():
        assert scores[name] == value, name  # bit-identical, not approximately equal


def test_pair_without_valid_keypoint_scores_zero(fixture):
    fx = fixture["pck_eval"]
    pred, gt, qv, sv, norm = _pck_inputs(fx)
    mask = pck.keypoint_mask(qv, sv)
    empty = ~mask.any(axis=1)
    assert empty.any(), "the fixture pins a pair with no valid keypoint"
    per_pair = pck.pck_per_pair(pck.normalized_distances(pred, gt, mask, norm), 0.2)
    assert np.all(per_pair[empty] == 0)
