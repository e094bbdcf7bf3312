"""Loading MP-100 files the official way, episodes as data, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cape_bench.data.mp100 import AnnotationError, load_annotation_set, load_descriptions
from cape_bench.episodes import build_manifest

# sha256 of the canonical episode text (comma-joined annotation ids, supports first, one line per pair)
# of the real mp100_split1_test.json with the official sampler; the sampler itself is pinned
# bit-for-bit against the official code by test_eval_golden.py.
SPLIT1_TEST_DIGESTS = {
    1: "1f2ebc895e46d554fce11bde5fabf930f0ad155ff03523645775f79d0e94fef6",
    5: "7989d98a327d38747567f1766c453a645f0a4a559b21babb60d9514c48ac135c",
}


@pytest.fixture(scope="module")
def split1(mp100_ann_dir):
    return load_annotation_set(mp100_ann_dir / "mp100_split1_test.json")


def test_official_database_order_and_counts(split1, mp100_ann_dir):
    data = json.loads((mp100_ann_dir / "mp100_split1_test.json").read_text())
    assert list(split1.categories) == [c["id"] for c in data["categories"]]
    assert len(split1.instances) + len(split1.dropped) == len(data["annotations"])
    assert all(len(v) >= 16 for v in split1.cat2obj.values())
    # obj ids follow image order, then annotation order within an image
    order = {img["id"]: i for i, img in enumerate(data["images"])}
    keys = [order[i.image_id] for i in split1.instances]
    assert keys == sorted(keys)


def test_clean_bbox_and_crop_frame(split1):
    inst = split1.instances[0]
    x, y, w, h = inst.bbox_px
    np.testing.assert_allclose(inst.center_px, [x + w / 2, y + h / 2], rtol=1e-6)
    assert inst.scale[0] == inst.scale[1] == pytest.approx(max(w, h) / 200 * 1.25, rel=1e-6)
    assert inst.keypoints_px.dtype == np.float32


@pytest.mark.parametrize("shots", [1, 5])
def test_episode_digest(split1, shots):
    manifest = build_manifest(split1, shots)
    assert len(manifest) == 20 * 200 * 15
    assert manifest.official
    assert manifest.sha256 == SPLIT1_TEST_DIGESTS[shots]
    text = manifest.canonical_text()
    assert not text.endswith("\n") and text.count("\n") == len(manifest) - 1
    assert len(text.split("\n")[0].split(",")) == shots + 1


def test_descriptions_file(shared_dir, mp100_ann_dir):
    desc = load_descriptions(shared_dir / "mp100" / "keypoint_descriptions.json", "typo")
    ann = load_annotation_set(mp100_ann_dir / "mp100_split1_test.json", descriptions=desc)
    for cat in ann.categories.values():
        assert cat.descriptions == desc[cat.id]
        assert len(cat.descriptions) == cat.num_keypoints


def test_empty_keypoint_names_take_k_from_annotations(mp100_ann_dir):
    # MP-100's 300W face (category 40, split 4) lists no keypoint names; the official loader reads K from
    # the annotations and so do we
    ann = load_annotation_set(mp100_ann_dir / "mp100_split4_test.json", categories=[40])
    assert ann.categories[40].num_keypoints == 68


def test_category_restriction(tiny_mp100):
    ann = load_annotation_set(tiny_mp100 / "annotations" / "mp100_split1_test.json", categories=["thing_2"])
    assert list(ann.categories) == [2]
    assert {i.category_id for i in ann.instances} == {2}


def _mutate(tiny_mp100, fn):
    path = tiny_mp100 / "annotations" / "mp100_split1_test.json"
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))
    return path


def test_malformed_json_names_the_file(tiny_mp100):
    path = tiny_mp100 / "annotations" / "mp100_split1_test.json"
    path.write_text('{"images": [')
    with pytest.raises(AnnotationError, match=r"mp100_split1_test\.json.*not valid JSON"):
        load_annotation_set(path)


def test_wrong_keypoint_count_names_field_and_annotation(tiny_mp100):
    path = _mutate(tiny_mp100, lambda d: d["annotations"][3].__setitem__("keypoints", [1, 2, 2]))
    aid = json.loads(path.read_text())["annotations"][3]["id"]
    with pytest.raises(AnnotationError, match=rf"annotations\[3\]\.keypoints.*annotation {aid}"):
        load_annotation_set(path)


@pytest.mark.parametrize(
    ("mutation", "field"),
    [
        (lambda d: d["annotations"][0].__setitem__("category_id", 999), r"annotations\[0\]\.category_id"),
        (lambda d: d["annotations"][1].__setitem__("image_id", -5), r"annotations\[1\]\.image_id"),
        (lambda d: d["annotations"][2].__setitem__("id", d["annotations"][0]["id"]), r"annotations\[2\]\.id"),
        (lambda d: d.pop("categories"), r"categories"),
        (lambda d: d["annotations"][0]["keypoints"].__setitem__(0, "x"), r"annotations\[0\]\.keypoints"),
    ],
)
def test_inconsistent_annotations_are_named(tiny_mp100, mutation, field):
    path = _mutate(tiny_mp100, mutation)
    with pytest.raises(AnnotationError, match=field):
        load_annotation_set(path)


def test_descriptions_count_mismatch(tiny_mp100):
    with pytest.raises(AnnotationError, match=r"descriptions file gives 2 texts for 4 keypoints"):
        load_annotation_set(tiny_mp100 / "annotations" / "mp100_split1_test.json", descriptions={1: ("a", "b")})


def test_more_descriptions_than_keypoints_pair_by_position_as_officially(tiny_mp100, tmp_path):
    ann_file = tiny_mp100 / "annotations" / "mp100_split1_test.json"
    k = len(json.loads(ann_file.read_text())["categories"][0]["keypoints"])
    texts = [f"text {j}" for j in range(k)]
    desc = tmp_path / "descriptions.json"
    desc.write_text(json.dumps({"categories": {"1": {"descriptions": texts[:2] + ["stray"] + texts[2:]}}}))
    ann = load_annotation_set(ann_file, descriptions=load_descriptions(desc))
    assert ann.categories[1].descriptions == tuple(texts[:2] + ["stray"] + texts[2 : k - 1])  # official: first K
    (warning,) = ann.warnings
    assert warning.startswith(f"{desc}: category 1 (thing_1) has {k + 1} texts for K={k} keypoints")
    assert repr([texts[-1]]) in warning and "never read" in warning
    fixed = load_annotation_set(ann_file, descriptions=load_descriptions(desc, drop={"1": [2]}))
    assert fixed.categories[1].descriptions == tuple(texts) and not fixed.warnings
    with pytest.raises(AnnotationError, match=r"dataset\.description_drop\.1: index out of range"):
        load_descriptions(desc, drop={"1": [99]})
    with pytest.raises(AnnotationError, match=r"dataset\.description_drop\.7: category 7 has no entry"):
        load_descriptions(desc, drop={"7": [0]})


def test_real_fly_descriptions_warn_and_suggest_the_realignment(shared_dir):
    desc = shared_dir / "mp100" / "keypoint_descriptions.json"
    ann = load_annotation_set(shared_dir / "mp100" / "annotations" / "mp100_split3_test.json",
                              descriptions=load_descriptions(desc))
    (warning,) = ann.warnings
    assert "category 66 (fly) has 33 texts for K=32 keypoints" in warning and "['right wing'] is never read" in warning
    assert "entry 6 'front right leg'" in warning and "dataset.description_drop = {66 = [6]}" in warning
    fly = load_annotation_set(shared_dir / "mp100" / "annotations" / "mp100_split3_test.json",
                              descriptions=load_descriptions(desc, drop={66: [6]})).categories[66]
    assert fly.descriptions[6] == "start point of the front right leg" and fly.descriptions[-1] == "right wing"
