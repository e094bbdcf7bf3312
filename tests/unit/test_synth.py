"""CAPE-Synth: determinism, MP-100 schema, split structure, polysemy, knobs and calibration.

One small dataset (20 categories × 20 instances of 64 px) is generated once per module; knob
tests render single instances in memory.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cape_bench.data.doctor import check_annotation_file
from cape_bench.data.geometry import bbox_center_scale, clean_bbox
from cape_bench.data.mp100 import load_annotation_set
from cape_bench.synth import Knobs, catalog, generate, plan_categories, plan_splits, show
from cape_bench.synth.instance import OCCLUDED, OUT_OF_FRAME, render_instance
from cape_bench.synth.templates import polysemous_flags

SMALL = dict(seed=3, num_categories=20, instances_per_category=20, image_size=64, progress=False)
SUBSETS = ("train", "val", "test")


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "ds"
    generate(root, workers=1, **SMALL)
    return root


def _load(root: Path, split: int, subset: str) -> dict:
    return json.loads((root / "annotations" / f"mp100_split{split}_{subset}.json").read_text())


# ------------------------------------------------------------------------------------------------
# determinism
# ------------------------------------------------------------------------------------------------


TINY = dict(num_categories=10, instances_per_category=3, image_size=48, progress=False)


def test_same_seed_gives_byte_identical_output(tmp_path):
    generate(tmp_path / "a", seed=5, workers=1, **TINY)
    generate(tmp_path / "b", seed=5, workers=1, **TINY)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    generate(tmp_path / "c", seed=6, workers=1, **TINY)
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


@pytest.mark.slow
def test_output_does_not_depend_on_worker_count(tmp_path):
    generate(tmp_path / "w1", seed=5, workers=1, **TINY)
    generate(tmp_path / "w2", seed=5, workers=2, **TINY)
    assert _digest(tmp_path / "w1") == _digest(tmp_path / "w2")


def test_refuses_to_mix_with_an_existing_dataset(small, tmp_path):
    with pytest.raises(FileExistsError):
        generate(small, workers=1, **SMALL)
    target = tmp_path / "t"
    generate(target, seed=1, num_categories=10, instances_per_category=2, image_size=48, progress=False)
    generate(target, seed=1, num_categories=10, instances_per_category=1, image_size=48, progress=False,
             overwrite=True)
    assert len(list((target / "images").rglob("*.jpg"))) == 10


# ------------------------------------------------------------------------------------------------
# schema
# ------------------------------------------------------------------------------------------------


def test_dataset_doctor_finds_nothing(small):
    for split in range(1, 6):
        for subset in SUBSETS:
            report = check_annotation_file(small / "annotations" / f"mp100_split{split}_{subset}.json",
                                           images_dir=small / "images")
            assert report.findings == [], (split, subset, report.code_counts())


def test_mp100_schema_by_hand(small):
    size = SMALL["image_size"]
    seen_images = set()
    for split in range(1, 6):
        for subset in SUBSETS:
            data = _load(small, split, subset)
            assert set(data) == {"info", "images", "annotations", "categories"}
            cats = data["categories"]
            assert [c["id"] for c in cats] == sorted(c["id"] for c in cats)
            k_of = {}
            for c in cats:
                assert set(c) == {"supercategory", "id", "name", "keypoints", "skeleton"}
                k = len(c["keypoints"])
                assert 5 <= k <= 40 and all(isinstance(t, str) and t for t in c["keypoints"])
                assert len(set(c["keypoints"])) == k  # descriptions tell keypoints apart
                assert all(0 <= a < k and 0 <= b < k and a != b for a, b in c["skeleton"])
                k_of[c["id"]] = k
            imgs = {i["id"]: i for i in data["images"]}
            assert len(imgs) == len(data["images"])
            order = []
            for a in data["annotations"]:
                img = imgs[a["image_id"]]
                assert (img["width"], img["height"]) == (size, size)
                name = next(c["name"] for c in cats if c["id"] == a["category_id"])
                folder, stem = img["file_name"].split("/")
                assert folder == name and stem.endswith(".jpg")
                order.append((a["category_id"], int(stem[:-4])))
                kp = np.array(a["keypoints"], float).reshape(-1, 3)
                assert len(kp) == k_of[a["category_id"]]
                assert set(kp[:, 2]) <= {0, 1, 2}
                assert a["num_keypoints"] == int((kp[:, 2] > 0).sum()) > 0
                assert np.all(kp[kp[:, 2] == 0, :2] == 0)
                x, y, w, h = a["bbox"]
                assert x >= 0 and y >= 0 and x + w <= size and y + h <= size
                assert clean_bbox(a["bbox"], size, size) is not None
                vis = kp[kp[:, 2] > 0, :2]
                assert np.all((vis >= [x, y]) & (vis <= [x + w - 1, y + h - 1]))  # inside the clean box
                assert a["area"] > 0 and a["iscrowd"] == 0
                assert {"pose", "appearance_id", "hidden", "rotation", "flipped"} <= set(a["synth"])
                seen_images.add(img["file_name"])
            assert order == sorted(order)  # category id order, then instance index
            assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"])
    # every image file exists and is a JPEG of the declared size
    files = sorted((small / "images").rglob("*.jpg"))
    assert {str(p.relative_to(small / "images")) for p in files} == seen_images
    with Image.open(files[0]) as im:
        assert im.format == "JPEG" and im.size == (size, size)


def test_the_harness_loader_reads_it_and_keeps_every_instance(small):
    aset = load_annotation_set(small / "annotations" / "mp100_split1_test.json")
    assert aset.dropped == ()
    assert all(len(objs) == SMALL["instances_per_category"] for objs in aset.cat2obj.values())
    assert "pose" in aset.instances[0].extra.get("synth", {})


# ------------------------------------------------------------------------------------------------
# splits
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [20, 100])
def test_split_structure_matches_mp100(n):
    plans = plan_categories(n, seed=0, polysemy=0.5)
    splits = plan_splits(plans, seed=0)
    everything = {p.id for p in plans}
    super_of = {p.id: p.template.supercategory for p in plans}
    tests = []
    for k in range(1, 6):
        sp = splits[k]
        assert (len(sp.train), len(sp.val), len(sp.test)) == (n * 7 // 10, n // 10, n // 5)
        assert set(sp.train) | set(sp.val) | set(sp.test) == everything
        assert not (set(sp.train) & set(sp.val) or set(sp.train) & set(sp.test) or set(sp.val) & set(sp.test))
        assert len({super_of[c] for c in sp.test}) >= min(4, n // 5)  # tests mix families
        tests.append(set(sp.test))
    assert set().union(*tests) == everything and sum(map(len, tests)) == n  # disjoint cover
    assert plan_splits(plans, seed=0) == splits
    assert plan_splits(plans, seed=1) != splits


def test_split_files_follow_the_plan(small):
    plans = plan_categories(SMALL["num_categories"], SMALL["seed"], Knobs().polysemy)
    splits = plan_splits(plans, SMALL["seed"])
    for k in range(1, 6):
        for subset in SUBSETS:
            data = _load(small, k, subset)
            assert tuple(c["id"] for c in data["categories"]) == splits[k].subset(subset)
            assert data["info"]["knobs"] == Knobs().to_dict()
            assert (data["info"]["split"], data["info"]["subset"]) == (k, subset)


# ------------------------------------------------------------------------------------------------
# catalogue and polysemy
# ------------------------------------------------------------------------------------------------


def test_catalogue_families_and_symmetry():
    cats = catalog()
    assert len(cats) == 100 and len({t.name for t in cats}) == 100
    supers = Counter(t.supercategory for t in cats)
    assert len(supers) >= 8 and min(supers.values()) >= 5
    with_pairs = set()
    for t in cats:
        for poly in (False, True):
            names = t.descriptions(poly)
            assert 5 <= len(names) <= 40 and len(set(names)) == len(names), t.name
        names = set(t.descriptions(False))
        if any(n.replace("left", "right") in names for n in names if "left" in n):
            with_pairs.add(t.supercategory)
    assert len(with_pairs) >= 8  # left/right inversions are possible errors almost everywhere
    # the first ten categories already span every family (small datasets stay varied)
    assert len({t.supercategory for t in cats[:10]}) == len(supers)


def _shared_across_supercategories(polysemy: float, seed: int = 0) -> dict[str, set[str]]:
    plans = plan_categories(100, seed, polysemy)
    where: dict[str, set[str]] = {}
    for p in plans:
        for text in p.template.descriptions(p.polysemous):
            where.setdefault(text, set()).add(p.template.supercategory)
    return {t: s for t, s in where.items() if len(s) >= 2}


def test_polysemous_descriptions_cross_supercategories():
    shared = _shared_across_supercategories(Knobs().polysemy)
    assert len(shared) >= 10
    legs = shared.get("left front leg", set())
    assert "furniture" in legs and ({"quadruped", "insect"} & legs)
    # the knob controls it: more sharing as polysemy grows, none of the generic words at 0
    counts = [sum(len(s) for s in _shared_across_supercategories(p).values()) for p in (0.0, 0.5, 1.0)]
    assert counts[0] < counts[1] < counts[2]
    assert "left front leg" not in _shared_across_supercategories(0.0)
    assert {"quadruped", "furniture", "insect"} <= _shared_across_supercategories(1.0)["left front leg"]


def test_polysemous_sets_grow_with_the_knob():
    cats = catalog()
    low, high = polysemous_flags(cats, 0.3, 0), polysemous_flags(cats, 0.7, 0)
    assert all(h for lo_, h in zip(low, high) if lo_) and sum(high) > sum(low)


# ------------------------------------------------------------------------------------------------
# knobs (in memory)
# ------------------------------------------------------------------------------------------------


def _instances(knobs: Knobs, category: str, n: int = 12, size: int = 96, seed: int = 0):
    plan = next(p for p in plan_categories(100, seed, knobs.polysemy) if p.template.name == category)
    return plan, [render_instance(plan, i, seed=seed, image_size=size, knobs=knobs) for i in range(n)]


def _normalised(inst) -> np.ndarray:
    """float[K, 2] keypoints in the official crop frame, in crop sides (NaN where not labelled)."""
    kp = inst.keypoints.copy()
    c, s = bbox_center_scale(np.array(clean_bbox(inst.bbox, 1e9, 1e9)))
    rel = (kp[:, :2] - c) / (s * 200.0)  # scale is in units of 200 px
    rel[kp[:, 2] == 0] = np.nan
    return rel


def test_variation_zero_freezes_shape_and_default_varies_it():
    still = Knobs(variation=0.0, truncation=0.0, occlusion=0.0)
    for name in ("horse_body", "dining_chair", "locust"):
        plan, insts = _instances(still, name)
        rel = np.stack([_normalised(i) for i in insts])
        assert np.nanmax(np.nanstd(rel, axis=0)) < 0.02, name
        for i in insts:
            assert i.synth["rotation"] == 0 and not i.synth["flipped"]
            assert set(i.synth["proportions"].values()) == {1.0}
            assert i.synth["yaw"] == plan.template.family.view.yaw
        _, moving = _instances(Knobs(truncation=0.0, occlusion=0.0), name)
        rel = np.stack([_normalised(i) for i in moving])
        assert np.nanmean(np.nanstd(rel, axis=0)) > 0.05, name


def test_knobs_leave_everything_else_alone():
    base = Knobs(occlusion=0.0, truncation=0.0, clutter=0.0)
    _, ref = _instances(base, "sofa", n=8)
    _, cluttered = _instances(base.replace(clutter=8.0), "sofa", n=8)
    _, occluded = _instances(base.replace(occlusion=1.0), "sofa", n=8)
    assert all(i.synth["clutter"] == 0 for i in ref)
    assert np.mean([i.synth["clutter"] for i in cluttered]) > 4
    for a, b, c in zip(ref, cluttered, occluded):
        assert np.array_equal(a.keypoints, b.keypoints) and a.bbox == b.bbox  # same object
        assert a.jpeg != b.jpeg  # different background
        kept = c.keypoints[:, 2] > 0
        assert np.array_equal(a.keypoints[kept], c.keypoints[kept])
    assert all(not i.synth["occluder"] and (i.keypoints[:, 2] > 0).all() for i in ref)
    hidden = [set(i.synth["hidden"]) for i in occluded]
    assert sum(str(OCCLUDED) in h for h in hidden) >= 5
    assert all((i.keypoints[:, 2] > 0).mean() >= 0.5 for i in occluded)


def test_truncation_pushes_keypoints_out_of_frame():
    _, insts = _instances(Knobs(truncation=1.0, occlusion=0.0), "giraffe_body", n=10, size=64)
    out = [i for i in insts if str(OUT_OF_FRAME) in i.synth["hidden"]]
    assert len(out) >= 5
    for i in out:
        x, y, w, h = i.bbox
        assert x == 0 or y == 0 or x + w == 64 or y + h == 64  # the object touches the border


def test_appearance_and_scale_knobs():
    plan, same = _instances(Knobs(appearance=0.0), "cat_body", n=10)
    assert {i.synth["appearance_id"] for i in same} == {plan.appearance_id}
    _, mixed = _instances(Knobs(appearance=1.0), "cat_body", n=10)
    assert len({i.synth["appearance_id"] for i in mixed}) >= 5
    for lo, hi in ((0.3, 0.35), (0.85, 0.9)):
        _, insts = _instances(Knobs(scale=(lo, hi), truncation=0.0, rotation=0.0), "table", n=6, size=128)
        side = np.array([max(i.bbox[2], i.bbox[3]) / 128 for i in insts])
        assert np.all((side > lo - 0.06) & (side < hi + 0.04)), (lo, side)


def test_knob_validation():
    with pytest.raises(ValueError):
        Knobs(polysemy=1.5)
    with pytest.raises(ValueError):
        Knobs(scale=(0.9, 0.5))
    with pytest.raises(KeyError):
        Knobs.from_dict({"colour": 1})
    assert Knobs.from_dict(Knobs().to_dict()) == Knobs()


# ------------------------------------------------------------------------------------------------
# difficulty
# ------------------------------------------------------------------------------------------------


def support_copy_pck(path: Path, shots: int = 1, episodes: int = 50, queries: int = 15, thr: float = 0.2) -> float:
    """Support-copy PCK@thr with the official episodes (random.seed(1), categories in file order).

    x_q = c_q + (s_q / s_s)(x_s − c_s) in the official crop frame; mask = query visible AND
    visible in every support; a pair without a valid keypoint scores 0.
    """
    aset = load_annotation_set(path)
    random.seed(1)
    scores = []
    for cid, objs in aset.cat2obj.items():
        for _ in range(episodes):
            picked = random.sample(list(objs), shots + queries)
            sup = [aset.instances[i] for i in picked[:shots]]
            rel = np.mean([(s.keypoints_px - s.center_px) / s.scale for s in sup], axis=0)
            sup_vis = np.all([s.visible for s in sup], axis=0)
            for i in picked[shots:]:
                q = aset.instances[i]
                pred = q.center_px + q.scale * rel
                mask = q.visible & sup_vis
                norm = max(q.bbox_px[2], q.bbox_px[3])
                d = np.linalg.norm(pred - q.keypoints_px, axis=1) / norm
                scores.append(float((d[mask] < thr).mean()) if mask.any() else 0.0)
    return float(np.mean(scores))


def test_support_copy_is_clearly_imperfect(small):
    pck = np.mean([support_copy_pck(small / "annotations" / f"mp100_split{k}_test.json") for k in range(1, 6)])
    assert 0.3 < pck < 0.7


@pytest.mark.slow
def test_support_copy_is_perfect_without_variation(tmp_path):
    generate(tmp_path / "still", seed=0, num_categories=10, instances_per_category=16, image_size=96,
             knobs=Knobs(variation=0.0, occlusion=0.0, truncation=0.0), workers=1, progress=False)
    pck = support_copy_pck(tmp_path / "still" / "annotations" / "mp100_split1_train.json", episodes=5,
                           queries=10)
    assert pck > 0.97


def test_keypoint_colour_does_not_reveal_identity():
    """A nearest-centroid classifier on the pixel colour under a keypoint cannot name it."""
    for name in ("dog_body", "swivelchair", "short_sleeved_shirt"):
        _, insts = _instances(Knobs(occlusion=0.0), name, n=16)
        colours, labels = [], []
        for inst in insts:
            img = np.asarray(Image.open(io.BytesIO(inst.jpeg)).convert("RGB"), np.float64)
            for j, (x, y, v) in enumerate(inst.keypoints):
                if v == 2:
                    colours.append(img[int(round(y)), int(round(x))])
                    labels.append(j)
        colours, labels = np.array(colours), np.array(labels)
        half = len(colours) // 2
        ids = np.unique(labels[:half])
        centroids = np.array([colours[:half][labels[:half] == j].mean(axis=0) for j in ids])
        guess = ids[np.argmin(((colours[half:, None] - centroids[None]) ** 2).sum(-1), axis=1)]
        assert (guess == labels[half:]).mean() < 0.35, name


# ------------------------------------------------------------------------------------------------
# picture and hygiene
# ------------------------------------------------------------------------------------------------


def test_show_draws_a_sheet(small, tmp_path):
    out = show(small / "annotations" / "mp100_split1_train.json", small / "images", tmp_path / "sheet.png",
               per_supercategory=3, cell=96)
    with Image.open(out) as im:
        supers = {c["supercategory"] for c in _load(small, 1, "train")["categories"]}
        assert im.size[1] == len(supers) * (96 + 18) and im.size[0] > 3 * 96
        assert np.asarray(im).std() > 20


def test_synth_does_not_import_torch():
    code = "import sys, cape_bench.synth; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
