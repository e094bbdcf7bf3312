"""Error analysis ("why methods fail"): hand-built cases with known answers, then a planted run end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cape_bench.analysis import (
    ANALYSIS_VERSION,
    NOT_APPLICABLE,
    NOT_COMPARABLE,
    analyze_run,
    polysemy_knob_table,
    probe_table,
)
from cape_bench.cli import main
from cape_bench.metrics import ambiguity, pck, taxonomy, variation
from cape_bench.metrics.taxonomy import GOOD, INVERSION, JITTER, MISS, SWAP

REPO = Path(__file__).resolve().parents[2]
ALPHA = 0.2


# ------------------------------------------------------------------------------------------- taxonomy
def _one_pair(pred, gt, visible=None, scored=None, norm=100.0, mirror=(1, 0, 2, 3)):
    pred = np.asarray(pred, np.float64)[None]
    gt = np.asarray(gt, np.float32)[None]
    k = gt.shape[1]
    visible = np.ones((1, k), bool) if visible is None else np.asarray(visible, bool)[None]
    scored = visible if scored is None else np.asarray(scored, bool)[None]
    return taxonomy.keypoint_errors(pred, gt, visible, scored, np.array([norm]), np.asarray(mirror), ALPHA)


# left eye, right eye, nose, tail: 60+ px apart with a 100 px normaliser (α = 20 px)
GT = [[20.0, 20.0], [80.0, 20.0], [50.0, 60.0], [50.0, 140.0]]


def test_each_label_on_its_textbook_case():
    pred = [
        [25.0, 20.0],  # 5 px from its own ground truth: good
        [20.0, 20.0],  # exactly on the left eye, its mirror partner: inversion
        [50.0, 140.0],  # nose predicted on the tail: swap
        [50.0, 170.0],  # tail 30 px = 1.5 α off, far from the rest: jitter
    ]
    errs = _one_pair(pred, GT)
    assert errs.error_type[0].tolist() == [GOOD, INVERSION, SWAP, JITTER]
    assert np.isnan(errs.target[0, 0]) and errs.target[0, 1] == 0 and errs.target[0, 2] == 3
    assert np.isnan(errs.target[0, 3])
    np.testing.assert_allclose(errs.distance[0], [0.05, 0.6, 0.8, 0.3], rtol=1e-6)
    miss = _one_pair([[20.0, 70.0], *GT[1:]], GT)  # 50 px = 2.5 α, 30+ px from every other point
    assert miss.error_type[0].tolist() == [MISS, GOOD, GOOD, GOOD]


def test_rule_order_and_edge_cases():
    # on the mirror partner AND within α of the nose: inversion wins over swap
    gt = [[20.0, 20.0], [80.0, 20.0], [85.0, 30.0], [50.0, 140.0]]
    assert _one_pair([[80.0, 20.0], *gt[1:]], gt).error_type[0, 0] == INVERSION
    # within α of its own point and of another: good wins
    assert _one_pair([[50.0, 20.0], *GT[1:]], [[40.0, 20.0], [60.0, 20.0], *GT[2:]]).error_type[0, 0] == GOOD
    # a keypoint without a partner landing on another point is a swap, never an inversion
    assert _one_pair([*GT[:2], [20.0, 20.0], GT[3]], GT).error_type[0, 2] == SWAP
    # the partner is not visible in the query: no inversion (and no swap onto it)
    errs = _one_pair([GT[0], [20.0, 20.0], *GT[2:]], GT, visible=[False, True, True, True])
    assert np.isnan(errs.error_type[0, 0]) and errs.error_type[0, 1] == MISS
    # d == α exactly is not good (strict <, float32), but is jitter
    assert _one_pair([[40.0, 20.0], *GT[1:]], GT).error_type[0, 0] == JITTER
    # unscored keypoints (support mask) and a non-positive normaliser carry no label
    errs = _one_pair(GT, GT, scored=[True, False, True, True])
    assert np.isnan(errs.error_type[0, 1]) and errs.error_type[0, 0] == GOOD
    assert np.isnan(_one_pair(GT, GT, norm=0.0).error_type).all()
    with pytest.raises(ValueError, match="mirror"):
        _one_pair(GT, GT, mirror=(1, 0, 2))


def _reference_labels(pred, gt, vis, scored, norm, mirror, alpha):
    """coco-analyze's rules written out pair by pair, keypoint by keypoint: the slow, obvious version."""
    n, k = vis.shape
    codes, targets = np.full((n, k), np.nan), np.full((n, k), np.nan)
    thr = np.float32(alpha)

    def dist(i, a, b):
        dx, dy = (pred[i, a] - gt[i, b].astype(np.float64)) / norm[i]
        return np.float32(np.sqrt(dx * dx + dy * dy))

    for i in range(n):
        for a in range(k):
            if not (scored[i, a] and vis[i, a]):
                continue
            others = [(dist(i, a, b), b) for b in range(k) if b != a and vis[i, b]]
            if dist(i, a, a) < thr:
                codes[i, a] = GOOD
            elif mirror[a] != a and vis[i, mirror[a]] and dist(i, a, mirror[a]) < thr:
                codes[i, a], targets[i, a] = INVERSION, mirror[a]
            elif others and min(others)[0] < thr:
                codes[i, a], targets[i, a] = SWAP, min(others)[1]
            elif dist(i, a, a) < 2 * thr:
                codes[i, a] = JITTER
            else:
                codes[i, a] = MISS
    return codes, targets


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_labels_match_the_pair_by_pair_reference(seed):
    rng = np.random.default_rng(seed)
    n, k = 60, 7
    mirror = np.array([1, 0, 3, 2, 4, 5, 6])
    gt = rng.uniform(0, 100, size=(n, k, 2)).astype(np.float32)
    choice = rng.choice(3, size=(n, k), p=[0.5, 0.2, 0.3])
    source = np.where(choice == 0, np.arange(k), np.where(choice == 1, mirror, rng.integers(0, k, size=(n, k))))
    sigma = rng.choice([1.0, 12.0, 30.0], size=(n, k, 1))
    pred = gt[np.arange(n)[:, None], source].astype(np.float64) + rng.normal(0, 1, size=(n, k, 2)) * sigma
    vis = rng.random((n, k)) < 0.85
    scored = vis & (rng.random((n, k)) < 0.9)
    norm = rng.uniform(60, 140, size=n)
    inputs = [pred, gt, vis, scored, norm, mirror]
    before = [a.copy() for a in inputs]
    errs = taxonomy.keypoint_errors(pred, gt, vis, scored, norm, mirror, ALPHA)
    for a, b in zip(inputs, before, strict=True):  # pure: inputs untouched
        np.testing.assert_array_equal(a, b)
    codes, targets = _reference_labels(pred, gt, vis, scored, norm, mirror, ALPHA)
    np.testing.assert_array_equal(errs.error_type, codes)
    np.testing.assert_array_equal(errs.target, targets)
    assert set(np.unique(codes[~np.isnan(codes)]).tolist()) == {GOOD, INVERSION, SWAP, JITTER, MISS}
    # "good" is exactly the official keypoint-level PCK hit, on the official distances
    official = pck.normalized_distances(pred, gt, scored & vis, norm)
    np.testing.assert_array_equal(errs.distance, official)
    np.testing.assert_array_equal(errs.error_type == GOOD, official < np.float32(ALPHA))


def test_counts_and_rates():
    codes = np.array([[0, 1, np.nan], [2, 4, 4]], np.float32)
    counts = taxonomy.error_counts(codes, axis=None)
    assert counts.tolist() == [1, 1, 1, 0, 2]
    np.testing.assert_allclose(taxonomy.error_rates(counts), [0.2, 0.2, 0.2, 0.0, 0.4])
    per_kpt = taxonomy.error_counts(codes, axis=0)
    assert per_kpt.shape == (3, 5) and per_kpt[2].tolist() == [0, 0, 0, 0, 1]
    assert np.isnan(taxonomy.error_rates(np.zeros(5, np.int64))).all()


# ------------------------------------------------------------------------------------------- ambiguity
def test_text_normalisation_and_mirror_pairs():
    assert ambiguity.normalize_description("Left_Front  Paw of the Dog!") == "left front paw of dog"
    horse = ["left eye", "right eye", "nose", "left front paw", "right front paw"]
    assert ambiguity.mirror_map(horse).tolist() == [1, 0, 2, 4, 3]
    face = ["top left side of the left eye", "bottom right side of the left eye",
            "bottom left side of the right eye", "top right side of the right eye", "nose tip"]
    assert ambiguity.mirror_map(face).tolist() == [3, 2, 1, 0, 4]
    # repeated names: which "left sleeve" mirrors which is not in the text
    assert ambiguity.mirror_map(["left sleeve", "left sleeve", "right sleeve", "right sleeve", "left cuff",
                                 "right_cuff"]).tolist() == [0, 1, 2, 3, 5, 4]
    assert ambiguity.mirror_map(["left sleeve", "left sleeve", "right sleeve"]).tolist() == [0, 1, 2]
    assert ambiguity.mirror_map(["0", "1", "2"]).tolist() == [0, 1, 2]
    assert ambiguity.mirror_map(["a", "b", "c", "d"], flip_pairs=[(0, 3)]).tolist() == [3, 1, 2, 0]
    assert ambiguity.duplicate_name_flags(["left sleeve", "Left  sleeve", "collar", "7", "7"]).tolist() == [
        True, True, False, False, False]


def test_polysemy_needs_another_supercategory():
    cats = {
        1: {"supercategory": "animal", "descriptions": ["left eye", "tail", "12"]},
        2: {"supercategory": "vehicle", "descriptions": ["Left_Eye", "wheel"]},
        3: {"supercategory": "animal", "descriptions": ["tail"]},
    }
    flags = ambiguity.polysemy_flags(cats)
    assert flags[1][:2].tolist() == [1.0, 0.0] and np.isnan(flags[1][2])  # "tail" only among animals
    assert flags[2].tolist() == [1.0, 0.0]
    # the rest of the dataset counts even when it was not evaluated
    more = {9: {"supercategory": "furniture", "descriptions": ["wheel"]}}
    assert ambiguity.polysemy_flags(cats, more)[2].tolist() == [1.0, 1.0]
    assert set(ambiguity.polysemy_flags(cats, more)) == {1, 2, 3}


def test_same_name_swaps_and_polysemy_summary():
    codes = np.array([[SWAP, SWAP, GOOD, np.nan]], np.float32)
    target = np.array([[1, 3, np.nan, np.nan]], np.float32)
    same = ambiguity.same_name_target(codes, target, np.array([0, 0, 1, 2]))
    assert same[0, :2].tolist() == [1.0, 0.0] and np.isnan(same[0, 2:]).all()
    counts = np.array([[6, 1, 2, 0, 1], [9, 0, 0, 1, 0], [5, 0, 5, 0, 0]])  # polysemous, unique, unnamed
    out = ambiguity.polysemy_summary(counts, np.array([1.0, 0.0, np.nan]))
    assert out["n_polysemous"] == 10 and out["n_unique"] == 10
    assert out["pck_polysemous"] == pytest.approx(0.6) and out["pck_unique"] == pytest.approx(0.9)
    assert out["pck_gap"] == pytest.approx(0.3) and out["swap_rate_polysemous"] == pytest.approx(0.2)
    assert out["inversion_rate_polysemous"] == pytest.approx(0.1) and out["swap_rate_unique"] == 0
    assert np.isnan(ambiguity.polysemy_summary(counts[:1], np.array([1.0]))["pck_unique"])


def test_probe_delta_is_probe_minus_regular():
    reg = pd.DataFrame({"method": ["a", "a", "b"], "split": 1, "shots": 1, "metric": ["PCK@0.2", "NME", "PCK@0.2"],
                        "value": [0.8, 0.1, 0.5]})
    prb = pd.DataFrame({"method": ["a", "a"], "split": 1, "shots": 1, "metric": ["PCK@0.2", "NME"],
                        "value": [0.7, 0.2]})
    before = reg.copy()
    out = ambiguity.probe_delta(reg, prb, ["PCK@0.2"])
    assert out[["method", "regular", "probe"]].values.tolist() == [["a", 0.8, 0.7]]
    assert out["delta"].iloc[0] == pytest.approx(-0.1)
    pd.testing.assert_frame_equal(reg, before)


# ------------------------------------------------------------------------------------------- variation
def _similarity(points, angle, scale, shift):
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return points @ rot.T * scale + shift


def _lstsq_similarity_rms(x, y):
    """Independent reference: similarity (a, b, tx, ty) fitted by linear least squares."""
    a = np.zeros((2 * len(x), 4))
    a[0::2] = np.c_[x[:, 0], -x[:, 1], np.ones(len(x)), np.zeros(len(x))]
    a[1::2] = np.c_[x[:, 1], x[:, 0], np.zeros(len(x)), np.ones(len(x))]
    params, *_ = np.linalg.lstsq(a, y.reshape(-1), rcond=None)
    return np.sqrt(np.mean(np.sum((a @ params - y.reshape(-1)).reshape(-1, 2) ** 2, axis=1)))


def test_procrustes_distance_known_answers():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(6, 2))
    copy = _similarity(x, 1.1, 0.37, [0.2, -0.4])  # rotated, shrunk, shifted copy: distance 0
    noisy = copy + rng.normal(0, 0.02, size=copy.shape)
    mirrored = x * [-1, 1]  # a reflection is not a similarity: far
    src = np.stack([x, x, x])
    dst = np.stack([copy, noisy, mirrored])
    d = variation.procrustes_distance(src, dst, np.ones((3, 6), bool))
    assert d[0] == pytest.approx(0, abs=1e-12)
    assert d[1] == pytest.approx(_lstsq_similarity_rms(x, noisy), rel=1e-9)
    assert d[2] == pytest.approx(_lstsq_similarity_rms(x, mirrored), rel=1e-9) and d[2] > 0.1
    # masked-out points do not count; fewer than 3 points or a collapsed source give NaN
    garbage = dst.copy()
    garbage[:, 5] = 1e6
    mask = np.ones((3, 6), bool)
    mask[:, 5] = False
    np.testing.assert_allclose(variation.procrustes_distance(src, garbage, mask),
                               [0, _lstsq_similarity_rms(x[:5], noisy[:5]), _lstsq_similarity_rms(x[:5], mirrored[:5])],
                               atol=1e-12)
    two = np.zeros((1, 6), bool)
    two[0, :2] = True
    assert np.isnan(variation.procrustes_distance(x[None], noisy[None], two)[0])
    assert np.isnan(variation.procrustes_distance(np.zeros((1, 6, 2)), noisy[None], np.ones((1, 6), bool))[0])


def test_pose_dissimilarity_averages_supports_and_is_scale_free():
    rng = np.random.default_rng(1)
    q = rng.uniform(0.2, 0.8, size=(5, 2))
    far = q + rng.normal(0, 0.05, size=q.shape)
    sup = np.stack([_similarity(q, 0.3, 2.0, [1, 1]), far])[None]  # [1, S=2, K, 2]
    vis = np.ones((1, 2, 5), bool)
    d = variation.pose_dissimilarity(sup, vis, q[None], np.ones((1, 5), bool))
    expected = variation.procrustes_distance(far[None], q[None], np.ones((1, 5), bool))[0] / 2
    assert d[0] == pytest.approx(expected)
    vis[0, 1, 2:] = False  # second support shares only 2 points with the query: left out
    assert variation.pose_dissimilarity(sup, vis, q[None], np.ones((1, 5), bool))[0] == pytest.approx(0, abs=1e-12)
    # crop frame: the box centre is (0.5, 0.5) and a box scaled ×3 around it gives the same coordinates
    center, scale = np.array([[50.0, 40.0]], np.float32), np.array([[0.5, 0.5]], np.float32)
    pts = np.array([[[50.0, 40.0], [75.0, 40.0]]])
    np.testing.assert_allclose(variation.crop_frame(pts, center, scale), [[[0.5, 0.5], [0.75, 0.5]]])
    np.testing.assert_allclose(variation.crop_frame(center[:, None] + (pts - center[:, None]) * 3, center, scale * 3),
                               [[[0.5, 0.5], [0.75, 0.5]]], atol=1e-6)


def test_quartiles_slopes_and_spreads():
    groups = np.array([1] * 8 + [2] * 4)
    values = np.r_[np.arange(8.0)[::-1], [10.0, np.nan, 30.0, 40.0]]
    bins = variation.quantile_bins(values, groups)
    assert bins[:8].tolist() == [4, 4, 3, 3, 2, 2, 1, 1]
    assert bins[8] == 2 and np.isnan(bins[9]) and bins[10:].tolist() == [3, 4]
    ties = variation.quantile_bins(np.array([0, 0, 0, 0, 0, 0, 1, 1.0]), np.zeros(8))
    assert ties.tolist() == [2] * 6 + [4, 4]  # a 0/1 factor fills two bins, never splits a tie
    means, counts = variation.bin_means(bins[:8], np.array([0.1, 0.1, 0.4, 0.4, 0.7, 0.7, 1.0, 1.0]))
    np.testing.assert_allclose(means, [1.0, 0.7, 0.4, 0.1])
    assert counts.tolist() == [2, 2, 2, 2]
    assert variation.trend_slope(means) == pytest.approx(-0.3)
    assert variation.trend_slope([0.5, np.nan, 0.5, 0.5]) == 0.0
    assert np.isnan(variation.trend_slope([np.nan, 0.5, np.nan, np.nan]))
    # query spread: per-query means 1.0 and 0.5 (query 7 is seen twice)
    pair_pck = np.array([1.0, 0.25, 0.75, np.nan])
    std, n = variation.query_spread(pair_pck, np.array([3, 7, 7, 9]))
    assert n == 2 and std == pytest.approx(np.std([1.0, 0.5], ddof=1))
    # support sensitivity: query 1 with sets A (twice: averaged to 0.5) and B (1.0); query 2 only set A
    v = np.array([0.25, 0.75, 1.0, 0.4, 0.9])
    var, n = variation.support_sensitivity(v, np.array([1, 1, 1, 2, 2]), np.array([5, 5, 6, 5, 5]))
    assert n == 1 and var == pytest.approx(np.var([0.5, 1.0], ddof=1))
    var, n = variation.support_sensitivity(v[3:], np.array([2, 2]), np.array([5, 5]))
    assert np.isnan(var) and n == 0
    d = np.array([[0.1, np.nan], [np.nan, np.nan], [0.3, 0.1]], np.float32)
    out = variation.scored_pair_pck(d, ALPHA)
    assert out[0] == 1.0 and np.isnan(out[1]) and out[2] == 0.5


def test_factor_difference():
    q = np.array([10.0, 0.0, np.nan])
    s = np.array([[7.0, 14.0], [1.0, np.nan], [1.0, 2.0]])
    np.testing.assert_allclose(variation.factor_difference(q, s, categorical=False), [3.5, 1.0, np.nan])
    np.testing.assert_allclose(variation.factor_difference(np.array([2.0, 1.0, 3.0]),
                                                           np.array([[2.0, 5.0], [1.0, 1.0], [np.nan, np.nan]]),
                                                           categorical=True), [0.5, 0.0, np.nan])


# ------------------------------------------------------------------------------------------- end to end
# Category 1 (named with left/right) gets planted errors; categories 2 and 3 share "left leg" across
# supercategories. Keypoints are ≥ 0.4 of the bbox side apart, so each planted error has one label.
TEMPLATES = {
    1: ("animal", ["left_eye", "right_eye", "nose", "tail"], [[-1, -0.5], [1, -0.5], [0, 0.6], [0, 1.6]]),
    2: ("furniture", ["left leg", "right leg", "seat", "back"], [[-1, 1], [1, 1], [0, 0], [0, -1.5]]),
    3: ("insect", ["left leg", "right leg", "head", "body", "wing"], [[-1, 1], [1, 1], [0, -1.5], [0, 0], [1.2, -0.8]]),
}
ALWAYS_VISIBLE = {1: [0, 1, 3], 2: [1, 2, 3], 3: [0, 1, 2, 3, 4]}


def _write_dataset(root: Path, *, synth: bool, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    cats, anns, imgs = [], [], []
    for cid, (supercat, names, template) in TEMPLATES.items():
        cats.append({"id": cid, "name": f"thing_{cid}", "supercategory": supercat, "keypoints": names, "skeleton": []})
        for i in range(20):
            image_id = cid * 1000 + i
            pts = _similarity(np.asarray(template, float), rng.uniform(-0.3, 0.3), rng.uniform(14, 22),
                              rng.uniform(40, 60, size=2))
            vis = np.where(rng.random(len(names)) < 0.8, 2, 0)
            vis[ALWAYS_VISIBLE[cid]] = 2
            x0, y0 = pts.min(0) - 3
            x1, y1 = pts.max(0) + 3
            kp = np.c_[np.where(vis[:, None] > 0, pts, 0), vis]
            imgs.append({"id": image_id, "file_name": f"{cid}/{i}.png", "width": 100, "height": 100})
            ann = {"id": image_id * 10, "image_id": image_id, "category_id": cid, "iscrowd": 0,
                   "keypoints": [round(float(v), 3) for v in kp.ravel()], "num_keypoints": int((vis > 0).sum()),
                   "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "area": float((x1 - x0) * (y1 - y0))}
            if synth:
                ann["synth"] = {"yaw": round(float(rng.uniform(-30, 30)), 1), "appearance_id": int(rng.integers(3)),
                                "texture": str(rng.choice(["stripes", "dots"])), "flipped": bool(rng.random() < 0.3),
                                "pose": {"neck": round(float(rng.uniform(-20, 20)))}, "hidden": "0" * len(names),
                                "hidden_xy": []}
            anns.append(ann)
    ann_dir = root / "annotations"
    ann_dir.mkdir(parents=True)
    data = {"info": {"description": "analysis test set"}, "images": imgs, "annotations": anns, "categories": cats}
    (ann_dir / "mp100_split1_test.json").write_text(json.dumps(data))
    return ann_dir


def _run(ann_dir: Path, out: Path, name: str, shots: str) -> Path:
    assert main(["run", "--dataset", "mp100", "--ann-dir", str(ann_dir), "--splits", "1", "--shots", shots,
                 "--num-episodes", "3", "--methods", "support-copy,oracle", "--out-dir", str(out), "--name", name,
                 "--set", "run.report=false", "--quiet"]) == 0
    return out / name


def _plant(run_dir: Path) -> pd.DataFrame:
    """A method 'planted': oracle's predictions with one known error per keypoint of category 1 and 2."""
    frame = pd.read_parquet(run_dir / "predictions/oracle/split1_1shot.parquet")
    pred = frame.copy()
    norm = pred["norm_px"]

    def at(cid, kpt):
        return (pred["category_id"] == cid) & (pred["kpt"] == kpt)

    gt = frame.set_index(["pair", "kpt"])[["gt_x", "gt_y"]]
    for src, dst in ((0, 1), (2, 3)):  # left eye on the right eye: inversion; nose on the tail: swap
        rows = at(1, src)
        target = gt.loc[list(zip(pred.loc[rows, "pair"], [dst] * rows.sum(), strict=True))].to_numpy()
        pred.loc[rows, ["pred_x", "pred_y"]] = target
    # the tail points away from the body (+y in the template): 1.5 α further out is a jitter;
    # the back of category 2 points to -y: 3 α further out is a miss. Direction: from the centroid.
    for cid, kpt, times in ((1, 3, 1.5), (2, 3, 3.0)):
        rows = at(cid, kpt)
        pairs = pred.loc[rows, "pair"]
        seen = frame[(frame["category_id"] == cid) & frame["visible_query"]]
        centre = seen.groupby("pair")[["gt_x", "gt_y"]].mean().loc[pairs].to_numpy()
        own = pred.loc[rows, ["gt_x", "gt_y"]].to_numpy(np.float64)
        direction = (own - centre) / np.linalg.norm(own - centre, axis=1, keepdims=True)
        pred.loc[rows, ["pred_x", "pred_y"]] = own + direction * (times * ALPHA * norm[rows].to_numpy()[:, None])
    (run_dir / "predictions/planted").mkdir()
    pred.to_parquet(run_dir / "predictions/planted/split1_1shot.parquet", index=False)
    record = json.loads((run_dir / "cells/oracle/split1_1shot.json").read_text())
    (run_dir / "cells/planted").mkdir()
    (run_dir / "cells/planted/split1_1shot.json").write_text(json.dumps({**record, "method": "planted"}))
    return frame


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("analysis")
    synth_run = _run(_write_dataset(base / "synth", synth=True), base / "runs", "synth", "1,5")
    oracle_frame = _plant(synth_run)
    assert main(["score", str(synth_run)]) == 0  # official per-keypoint PCK of the planted method too
    plain_run = _run(_write_dataset(base / "plain", synth=False), base / "runs", "plain", "1")
    tables = analyze_run(synth_run)
    return {"base": base, "synth": synth_run, "plain": plain_run, "tables": tables, "oracle_frame": oracle_frame}


def test_tables_are_written_versioned_and_documented(runs):
    tables = runs["tables"]
    expected = {"errors_by_method.csv", "errors_by_supercategory.csv", "errors_by_category.csv",
                "errors_by_keypoint.csv", "ambiguity.csv", "variation_by_category.csv", "pose_quartiles.csv",
                "trends.csv", "notes.csv"}
    assert set(tables) == expected
    doc = __import__("cape_bench.analysis", fromlist=["x"]).__doc__
    for name, table in tables.items():
        on_disk = pd.read_csv(runs["synth"] / "analysis" / name)
        assert list(on_disk.columns) == list(table.columns) and len(on_disk) == len(table)
        assert (on_disk["analysis_version"] == ANALYSIS_VERSION).all()
        assert f"``{name}``" in doc
        for col in table.columns:
            if col not in ("analysis_version", "alpha", "method", "split", "shots", "note", "table"):
                assert col in doc or col in taxonomy.ERROR_TYPES, f"{name}: column {col} is not documented"
    rates = tables["errors_by_category.csv"][list(taxonomy.ERROR_TYPES)].sum(axis=1)
    np.testing.assert_allclose(rates, 1.0)


def test_planted_errors_get_their_labels(runs):
    kp = runs["tables"]["errors_by_keypoint.csv"]
    planted = kp[kp["method"] == "planted"].set_index(["category_id", "kpt"])
    assert planted.loc[(1, 0), "inversion"] == 1.0 and planted.loc[(1, 0), "mirror_kpt"] == 1
    assert planted.loc[(1, 2), "swap"] == 1.0 and pd.isna(planted.loc[(1, 2), "mirror_kpt"])
    assert planted.loc[(1, 3), "jitter"] == 1.0
    assert planted.loc[(2, 3), "miss"] == 1.0
    others = planted.drop([(1, 0), (1, 2), (1, 3), (2, 3)])
    assert (others["good"] == 1.0).all()
    # scored counts are the official ones (query and support visible)
    f = runs["oracle_frame"]
    scored = (f["visible_query"] & f["visible_support"]).groupby([f["category_id"], f["kpt"]]).sum()
    scored.index = scored.index.set_levels([lvl.astype(np.int64) for lvl in scored.index.levels])
    assert planted["scored"].tolist() == scored.loc[planted.index].tolist()
    # "left leg" names a furniture part (category 2) and an insect part (category 3)
    assert planted.loc[(2, 0), "polysemous"] == 1.0 and planted.loc[(2, 2), "polysemous"] == 0.0


def test_good_rate_is_the_official_keypoint_pck(runs):
    kp = runs["tables"]["errors_by_keypoint.csv"]
    official = pd.read_csv(runs["synth"] / "per_keypoint.csv")
    merged = kp.merge(official, on=["method", "split", "shots", "category_id", "kpt"], suffixes=("", "_official"))
    assert len(merged) == len(official[official["method"].isin(kp["method"])])
    assert (merged["scored"] == merged["scored_official"]).all()
    np.testing.assert_allclose(merged["good"], merged["PCK@0.2"], atol=1e-12)


def test_oracle_is_flat_and_support_copy_is_not(runs):
    var = runs["tables"]["variation_by_category.csv"]
    oracle = var[var["method"] == "oracle"]
    assert (oracle["pck"] == 1.0).all() and (oracle["query_pck_std"] == 0).all()
    assert (oracle["support_var"].dropna() == 0).all() and (oracle["n_multi_support_queries"] > 0).any()
    assert (oracle["pose_slope"] == 0).all()
    quart = runs["tables"]["pose_quartiles.csv"]
    assert set(quart["quartile"]) == {1, 2, 3, 4}
    assert (quart.groupby(["method", "shots", "category_id"])["n_pairs"].sum() == 45).all()  # 3 episodes × 15
    sc = quart[quart["method"] == "support-copy"]
    assert (sc["dissimilarity_min"] <= sc["dissimilarity_max"]).all() and (sc["dissimilarity_min"] >= 0).all()


def test_ambiguity_row_per_cell(runs):
    amb = runs["tables"]["ambiguity.csv"].set_index(["method", "shots"])
    row = amb.loc[("planted", 1)]
    kp = runs["tables"]["errors_by_keypoint.csv"]
    planted = kp[kp["method"] == "planted"]
    poly = planted[planted["polysemous"] == 1]
    assert row["n_polysemous"] == poly["scored"].sum()
    assert row["pck_polysemous"] == pytest.approx((poly["good"] * poly["scored"]).sum() / poly["scored"].sum())
    assert row["pck_gap"] == pytest.approx(row["pck_unique"] - row["pck_polysemous"])
    assert row["same_name_swap_share"] == 0.0  # nose → tail: different names
    assert amb.loc[("oracle", 1), "pck_gap"] == 0.0


def test_synth_factors_become_trends_and_plain_data_gets_a_note(runs):
    trends = runs["tables"]["trends.csv"]
    factors = set(trends["factor"])
    assert {"pose_dissimilarity", "synth:yaw", "synth:appearance_id", "synth:texture", "synth:flipped",
            "synth:pose.neck"} <= factors
    assert not any(f in factors for f in ("synth:hidden", "synth:hidden_xy"))
    assert trends["bin"].between(1, 4).all()
    # categorical fields (ids, names, flags) are compared for equality: a 1-shot pair either matches or not
    cat_1shot = trends[trends["factor"].isin(["synth:appearance_id", "synth:texture", "synth:flipped"])
                       & (trends["shots"] == 1)]
    assert set(cat_1shot["factor_min"]) | set(cat_1shot["factor_max"]) <= {0.0, 1.0}
    five = trends.loc[(trends["factor"] == "synth:appearance_id") & (trends["shots"] == 5), "factor_max"] * 5
    np.testing.assert_allclose(five, np.round(five))  # a share of 5 supports
    assert five.max() <= 5
    one = trends[(trends["method"] == "support-copy") & (trends["shots"] == 1) & (trends["factor"] == "synth:yaw")]
    assert one["n_pairs"].sum() == 3 * 45 and one["slope"].nunique() == 1
    assert runs["tables"]["notes.csv"].empty
    plain = analyze_run(runs["plain"], write=False)
    assert set(plain["trends.csv"]["factor"]) == {"pose_dissimilarity"}
    assert plain["notes.csv"]["note"].str.contains("no per-instance generator metadata").any()


def test_unnamed_keypoints_get_no_mirror_and_no_polysemy_group(runs):
    bare = _copy(runs["plain"], runs["base"] / "bare")
    cats = json.loads((bare / "categories/split1.json").read_text())
    cats["2"]["descriptions"] = ["0", "1", "2", "3"]  # MP-100 files often name keypoints by index
    (bare / "categories/split1.json").write_text(json.dumps(cats))
    tables = analyze_run(bare, write=False)
    kp = tables["errors_by_keypoint.csv"]
    two = kp[kp["category_id"] == 2]
    assert two["mirror_kpt"].isna().all() and two["polysemous"].isna().all()
    assert kp.loc[kp["category_id"] == 1, "mirror_kpt"].notna().sum() > 0
    assert tables["notes.csv"]["note"].str.contains("1 of 3 categories have no named keypoints.*thing_2").any()


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        node = data
        *parents, last = key.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    path.write_text(json.dumps(data))


def test_probe_table_says_not_applicable_for_text_free_methods(runs):
    probe = _copy(runs["plain"], runs["base"] / "probe")
    summary = pd.read_csv(probe / "summary.csv")
    hit = (summary["method"] == "support-copy") & (summary["metric"] == "PCK@0.2")
    summary.loc[hit, "value"] -= 0.125
    summary.to_csv(probe / "summary.csv", index=False)
    _edit_json(probe / "run.json", dataset__text_variant="typo")
    table = probe_table(runs["plain"], probe).set_index("method")
    assert table.loc["oracle", "status"] == NOT_APPLICABLE and pd.isna(table.loc["oracle", "delta"])
    assert table.loc["support-copy", "status"] == NOT_APPLICABLE  # support-copy does not read text either
    _edit_json(probe / "cells/support-copy/split1_1shot.json", info__reads_text=True)
    table = probe_table(runs["plain"], probe).set_index("method")
    assert table.loc["support-copy", "status"] == "ok"
    assert table.loc["support-copy", "delta"] == pytest.approx(-0.125)
    assert table.loc["support-copy", "probe_text_variant"] == "typo"
    assert (table["analysis_version"] == ANALYSIS_VERSION).all()
    _edit_json(probe / "cells/support-copy/split1_1shot.json", episodes_sha256="0" * 64)
    assert probe_table(runs["plain"], probe).set_index("method").loc["support-copy", "status"] == NOT_COMPARABLE
    # a run without summary.csv is summarised from its predictions, to the same numbers
    unscored = _copy(runs["plain"], runs["base"] / "unscored")
    (unscored / "summary.csv").unlink()
    table = probe_table(unscored, runs["plain"])
    np.testing.assert_allclose(table["regular"], table["probe"], rtol=0, atol=1e-12)
    assert len(table) == 2


def test_polysemy_knob_table_reads_the_knob_wherever_it_is(runs):
    low = _copy(runs["plain"], runs["base"] / "knob_low")
    high = _copy(runs["plain"], runs["base"] / "knob_high")
    _edit_json(low / "run.json", dataset__generated={"seed": 0, "knobs": {"polysemy": 0.25}})
    # high: the knob only in the annotation file's info, as CAPE-Synth writes it
    ann = json.loads(Path(json.loads((high / "run.json").read_text())["annotations"]["split1"]["file"]).read_text())
    ann["info"]["knobs"] = {"polysemy": 0.75, "flip": 0.4}
    ann_path = runs["base"] / "knob_high_ann.json"
    ann_path.write_text(json.dumps(ann))
    _edit_json(high / "run.json", annotations__split1__file=str(ann_path))
    # at high polysemy, support-copy is replaced by perfect predictions: slope = (1 − pck_low) / 0.5
    preds = high / "predictions"
    shutil.copy(preds / "oracle/split1_1shot.parquet", preds / "support-copy/split1_1shot.parquet")
    table = polysemy_knob_table([high, low])
    assert table["value"].tolist() == [0.25, 0.75, 0.25, 0.75]  # sorted by method, then knob value
    sc = table[table["method"] == "support-copy"]
    assert sc["pck"].iloc[1] == 1.0 and sc["pck"].iloc[0] < 1.0
    assert sc["slope"].iloc[0] == pytest.approx((1.0 - sc["pck"].iloc[0]) / 0.5)
    assert (table[table["method"] == "oracle"]["slope"] == 0).all()
    official = pd.read_csv(low / "summary.csv").set_index(["method", "metric"])["value"]
    assert sc["pck"].iloc[0] == pytest.approx(official[("support-copy", "PCK@0.2")])
    with pytest.raises(ValueError, match="polysemy"):
        polysemy_knob_table([runs["plain"]])


def test_analysis_does_not_import_torch():
    code = "import sys, cape_bench.analysis; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
