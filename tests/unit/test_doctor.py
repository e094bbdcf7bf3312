"""Tests of the dataset doctor (cape_bench.data.doctor).

Each finding code is provoked by one small mutation of a clean two-instance file written to
``tmp_path``; the expected *set* of codes is exact, so a check that stops firing, fires twice for
different reasons or cascades unexpectedly fails. The real MP-100 files pin the inconsistencies
they actually contain.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from cape_bench.data.doctor import (
    CODES,
    DEFAULT_MIN_INSTANCES,
    check_annotation_file,
    exit_status,
    render_report,
    report_to_dict,
    severity_of,
)

# --------------------------------------------------------------------------------------------
# a clean file: 2 images, 1 category with 3 keypoints, 2 instances fully inside box and image
# --------------------------------------------------------------------------------------------


def clean_data() -> dict:
    return {
        "images": [
            {"id": 1, "file_name": "thing/a.jpg", "width": 100, "height": 80},
            {"id": 2, "file_name": "thing/b.jpg", "width": 100, "height": 80},
        ],
        "annotations": [
            {
                "id": 10,
                "image_id": 1,
                "category_id": 1,
                "keypoints": [20, 20, 2, 40, 30, 2, 60, 40, 1],
                "num_keypoints": 3,
                "bbox": [10, 10, 60, 50],
                "area": 3000,
                "iscrowd": 0,
            },
            {
                "id": 11,
                "image_id": 2,
                "category_id": 1,
                "keypoints": [20, 20, 2, 40, 30, 2, 0, 0, 0],
                "num_keypoints": 2,
                "bbox": [10, 10, 60, 50],
                "area": 3000,
                "iscrowd": 0,
            },
        ],
        "categories": [
            {
                "id": 1,
                "name": "thing",
                "supercategory": "object",
                "keypoints": ["head", "body", "tail"],
                "skeleton": [[0, 1], [1, 2]],
            },
        ],
    }


def clean_descriptions() -> dict:
    return {
        "categories": {
            "1": {
                "name": "thing",
                "supercategory": "object",
                "descriptions": ["the head", "the body", "the tail"],
                "synonyms": ["head", "torso", "tail end"],
            }
        }
    }


def write(tmp_path: Path, data, name: str = "ann.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def run(tmp_path: Path, data, *, descriptions=None, min_instances: int = 2, images_dir=None):
    desc_path = write(tmp_path, descriptions, "desc.json") if descriptions is not None else None
    return check_annotation_file(
        write(tmp_path, data), images_dir=images_dir, descriptions=desc_path, min_instances=min_instances
    )


def codes(report) -> set[str]:
    return {f.code for f in report.findings}


# --------------------------------------------------------------------------------------------
# mutations: (id, mutate(data), expected codes, (code, path, annotation_id, category_id) to pin)
# --------------------------------------------------------------------------------------------


def _set(path: str, value):
    """A mutation setting ``data[...]`` at a dotted path of keys/indices (``annotations.0.bbox``)."""

    def mutate(data):
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        target = data
        for p in parents:
            target = target[p]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value

    return mutate


def _append(key: str, item):
    def mutate(data):
        data[key].append(item)

    return mutate


_DELETE = object()
_ANN0, _ANN1 = "annotations[0]", "annotations[1]"

CASES = [
    # --- errors
    (
        "missing-categories",
        _set("categories", _DELETE),
        {"E-missing-field", "E-unknown-category"},
        ("E-missing-field", "categories", None, None),
    ),
    (
        "images-not-list",
        _set("images", {}),
        {"E-field-type", "E-unknown-image", "W-few-instances"},
        ("E-field-type", "images", None, None),
    ),
    (
        "kpt-count",
        _set("annotations.1.keypoints", [20, 20, 2, 40, 30, 2]),
        {"E-kpt-count"},
        ("E-kpt-count", f"{_ANN1}.keypoints", 11, 1),
    ),
    (
        "kpt-string",
        _set("annotations.0.keypoints.4", "x"),
        {"E-field-type", "W-few-instances"},
        ("E-field-type", f"{_ANN0}.keypoints[4]", 10, 1),
    ),
    (
        "bbox-string",
        _set("annotations.0.bbox", "oops"),
        {"E-field-type", "W-few-instances"},
        ("E-field-type", f"{_ANN0}.bbox", 10, 1),
    ),
    (
        "bbox-bool",
        _set("annotations.0.bbox.2", True),
        {"E-field-type", "W-few-instances"},
        ("E-field-type", f"{_ANN0}.bbox[2]", 10, 1),
    ),
    (
        "kpt-nan",
        _set("annotations.0.keypoints.0", float("nan")),
        {"E-non-finite", "W-few-instances"},
        ("E-non-finite", f"{_ANN0}.keypoints[0]", 10, 1),
    ),
    (
        "bbox-inf",
        _set("annotations.0.bbox.3", float("inf")),
        {"E-non-finite", "W-few-instances"},
        ("E-non-finite", f"{_ANN0}.bbox[3]", 10, 1),
    ),
    (
        "area-huge-int",
        _set("annotations.0.area", 10**400),
        {"E-non-finite", "W-few-instances"},
        ("E-non-finite", f"{_ANN0}.area", 10, 1),
    ),
    (
        "width-string",
        _set("images.1.width", "100"),
        {"E-field-type", "W-few-instances"},
        ("E-field-type", "images[1].width", None, None),
    ),
    (
        "dup-annotation-id",
        _set("annotations.1.id", 10),
        {"E-dup-annotation-id"},
        ("E-dup-annotation-id", f"{_ANN1}.id", 10, 1),
    ),
    (
        "dup-image-id",
        _append("images", {"id": 1, "file_name": "thing/c.jpg", "width": 9, "height": 9}),
        {"E-dup-image-id"},
        ("E-dup-image-id", "images[2].id", None, None),
    ),
    (
        "dup-category-id",
        _append("categories", {"id": 1, "name": "other", "keypoints": [], "skeleton": []}),
        {"E-dup-category-id"},
        ("E-dup-category-id", "categories[1].id", None, 1),
    ),
    (
        "unknown-image",
        _set("annotations.1.image_id", 99),
        {"E-unknown-image", "W-image-unused", "W-few-instances"},
        ("E-unknown-image", f"{_ANN1}.image_id", 11, 1),
    ),
    (
        "unknown-category",
        _set("annotations.1.category_id", 7),
        {"E-unknown-category", "W-few-instances"},
        ("E-unknown-category", f"{_ANN1}.category_id", 11, 7),
    ),
    (
        "string-category-id",
        _set("annotations.1.category_id", "1"),
        {"E-unknown-category", "E-field-type", "W-few-instances"},
        ("E-field-type", f"{_ANN1}.category_id", 11, "1"),
    ),
    (
        "image-size-zero",
        _set("images.1.width", 0),
        {"E-image-size", "W-few-instances"},
        ("E-image-size", "images[1].width", None, None),
    ),
    (
        "skeleton-range",
        _set("categories.0.skeleton", [[0, 1], [1, 3]]),
        {"E-skeleton-range"},
        ("E-skeleton-range", "categories[0].skeleton[1]", None, 1),
    ),
    (
        "skeleton-negative",
        _set("categories.0.skeleton", [[-1, 0], [1, 2]]),
        {"E-skeleton-range"},
        ("E-skeleton-range", "categories[0].skeleton[0]", None, 1),
    ),
    (
        "skeleton-edge-shape",
        _set("categories.0.skeleton", [[0, 1, 2], [1, 2]]),
        {"E-field-type"},
        ("E-field-type", "categories[0].skeleton[0]", None, 1),
    ),
    (
        "no-iscrowd",
        _set("annotations.0.iscrowd", _DELETE),
        {"E-missing-field", "W-few-instances"},
        ("E-missing-field", f"{_ANN0}.iscrowd", 10, 1),
    ),
    (
        "no-file-name",
        _set("images.0.file_name", _DELETE),
        {"E-missing-field"},
        ("E-missing-field", "images[0].file_name", None, None),
    ),
    (
        "no-skeleton",
        _set("categories.0.skeleton", _DELETE),
        {"E-missing-field", "I-skeleton-empty"},
        ("E-missing-field", "categories[0].skeleton", None, 1),
    ),
    (
        "no-keypoints",
        _set("annotations.0.keypoints", _DELETE),
        {"E-missing-field", "W-few-instances"},
        ("E-missing-field", f"{_ANN0}.keypoints", 10, 1),
    ),
    (
        "annotation-not-object",
        _set("annotations.1", [1, 2]),
        {"E-field-type", "W-image-unused", "W-few-instances"},
        ("E-field-type", _ANN1, None, None),
    ),
    # --- warnings: names and skeleton
    (
        "names-missing",
        _set("categories.0.keypoints", []),
        {"W-kpt-names-missing"},
        ("W-kpt-names-missing", "categories[0].keypoints", None, 1),
    ),
    (
        "name-empty",
        _set("categories.0.keypoints", ["head", " ", "tail"]),
        {"W-kpt-name-empty"},
        ("W-kpt-name-empty", "categories[0].keypoints[1]", None, 1),
    ),
    (
        "name-duplicate",
        _set("categories.0.keypoints", ["head", "head", "tail"]),
        {"W-kpt-name-duplicate"},
        ("W-kpt-name-duplicate", "categories[0].keypoints[0]", None, 1),
    ),
    (
        "skeleton-one-based",
        _set("categories.0.skeleton", [[1, 2], [2, 3]]),
        {"W-skeleton-one-based"},
        ("W-skeleton-one-based", "categories[0].skeleton", None, 1),
    ),
    (
        "skeleton-duplicate",
        _set("categories.0.skeleton", [[0, 1], [1, 2], [2, 1]]),
        {"W-skeleton-duplicate"},
        ("W-skeleton-duplicate", "categories[0].skeleton[2]", None, 1),
    ),
    (
        "skeleton-self-loop",
        _set("categories.0.skeleton", [[0, 1], [1, 1]]),
        {"W-skeleton-self-loop"},
        ("W-skeleton-self-loop", "categories[0].skeleton[1]", None, 1),
    ),
    (
        "skeleton-empty",
        _set("categories.0.skeleton", []),
        {"I-skeleton-empty"},
        ("I-skeleton-empty", "categories[0].skeleton", None, 1),
    ),
    # --- warnings: boxes and what the official loader drops
    (
        "bbox-degenerate",
        _set("annotations.0.bbox", [70, 60, -60, -50]),
        {"W-bbox-degenerate", "W-drop-clean-bbox", "W-few-instances"},
        ("W-bbox-degenerate", f"{_ANN0}.bbox", 10, 1),
    ),
    (
        "bbox-out-of-image",
        _set("annotations.0.bbox", [-5, 10, 70, 50]),
        {"W-bbox-out-of-image"},
        ("W-bbox-out-of-image", f"{_ANN0}.bbox", 10, 1),
    ),
    (
        "drop-crowd",
        _set("annotations.0.iscrowd", 1),
        {"W-drop-crowd", "W-few-instances"},
        ("W-drop-crowd", _ANN0, 10, 1),
    ),
    (
        "drop-no-bbox",
        _set("annotations.0.bbox", _DELETE),
        {"W-drop-no-bbox", "W-few-instances"},
        ("W-drop-no-bbox", _ANN0, 10, 1),
    ),
    ("drop-area", _set("annotations.0.area", 0), {"W-drop-area", "W-few-instances"}, ("W-drop-area", _ANN0, 10, 1)),
    # a 1-px-wide box: clean x2 = x1 + max(0, w - 1) = x1, so the loader drops it
    (
        "drop-clean-bbox",
        _set("annotations.0.bbox", [20, 10, 1, 50]),
        {"W-drop-clean-bbox", "W-kpt-out-of-bbox", "W-few-instances"},
        ("W-drop-clean-bbox", _ANN0, 10, 1),
    ),
    (
        "drop-zero-kpts",
        _set("annotations.1.keypoints", [0] * 9),
        {"W-drop-zero-kpts", "W-num-keypoints", "W-few-instances"},
        ("W-drop-zero-kpts", _ANN1, 11, 1),
    ),
    (
        "drop-num-kpts",
        _set("annotations.1.num_keypoints", 0),
        {"W-drop-num-kpts", "W-num-keypoints", "W-few-instances"},
        ("W-drop-num-kpts", _ANN1, 11, 1),
    ),
    # --- warnings: keypoint values
    (
        "num-keypoints",
        _set("annotations.0.num_keypoints", 2),
        {"W-num-keypoints"},
        ("W-num-keypoints", f"{_ANN0}.num_keypoints", 10, 1),
    ),
    (
        "visibility-value",
        _set("annotations.0.keypoints.8", 3),
        {"W-visibility-value"},
        ("W-visibility-value", f"{_ANN0}.keypoints", 10, 1),
    ),
    (
        "kpt-out-of-image",
        _set("annotations.0.keypoints.0", -3),
        {"W-kpt-out-of-image", "W-kpt-out-of-bbox"},
        ("W-kpt-out-of-image", f"{_ANN0}.keypoints", 10, 1),
    ),
    (
        "kpt-out-of-bbox",
        _set("annotations.0.keypoints.6", 75),
        {"W-kpt-out-of-bbox"},
        ("W-kpt-out-of-bbox", f"{_ANN0}.keypoints", 10, 1),
    ),
    (
        "hidden-coords",
        _set("annotations.1.keypoints.6", 5),
        {"I-kpt-hidden-coords"},
        ("I-kpt-hidden-coords", f"{_ANN1}.keypoints", 11, 1),
    ),
    # --- warnings: images and categories
    (
        "image-folder",
        _set("images.0.file_name", "other/a.jpg"),
        {"W-image-folder"},
        ("W-image-folder", "categories[0]", None, 1),
    ),
    (
        "image-unused",
        _append("images", {"id": 3, "file_name": "thing/c.jpg", "width": 9, "height": 9}),
        {"W-image-unused"},
        ("W-image-unused", "images[2]", None, None),
    ),
]


@pytest.mark.parametrize(("mutate", "expected", "pin"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_finding_is_reported_with_its_location(tmp_path, mutate, expected, pin):
    data = clean_data()
    mutate(data)
    report = run(tmp_path, data)
    assert codes(report) == expected, [(f.code, f.path, f.message) for f in report.findings]
    code, path, ann_id, cat_id = pin
    matches = [f for f in report.by_code(code) if f.path == path]
    assert matches, [(f.code, f.path) for f in report.findings]
    assert matches[0].annotation_id == ann_id
    assert matches[0].category_id == cat_id
    assert matches[0].file == str(tmp_path / "ann.json")
    assert report.has_errors == any(c.startswith("E-") for c in expected)


def test_clean_file_has_no_findings(tmp_path):
    report = run(tmp_path, clean_data(), descriptions=clean_descriptions())
    assert report.findings == []
    assert not report.has_errors
    s = report.summary
    assert (s.num_images, s.num_annotations, s.num_categories, s.num_kept) == (2, 2, 1, 2)
    (cat,) = s.categories
    assert (cat.id, cat.name, cat.supercategory, cat.num_keypoints, cat.keypoint_source) == (
        1,
        "thing",
        "object",
        3,
        "names",
    )
    assert (cat.skeleton_edges, cat.skeleton_base, cat.num_annotations, cat.num_kept) == (2, "0-based", 2, 2)


def test_keypoints_on_the_image_border_are_inside(tmp_path):
    data = clean_data()
    data["annotations"][0].update(bbox=[0, 0, 100, 80], keypoints=[0, 0, 2, 100, 80, 2, 100, 0, 1])
    assert run(tmp_path, data).findings == []


@pytest.mark.parametrize("text", ["{not json", "", "\xff\xfe"])
def test_unreadable_json_is_one_error(tmp_path, text):
    path = tmp_path / "ann.json"
    path.write_bytes(text.encode("latin-1"))
    report = check_annotation_file(path)
    assert [(f.code, f.file) for f in report.findings] == [("E-json", str(path))]
    assert report.summary is None and report.has_errors


def test_missing_file_and_non_object_top_level(tmp_path):
    assert codes(check_annotation_file(tmp_path / "absent.json")) == {"E-json"}
    report = run(tmp_path, [1, 2, 3])
    assert codes(report) == {"E-json"} and "list" in report.findings[0].message


def test_names_missing_takes_k_from_annotations(tmp_path):
    data = clean_data()
    data["categories"][0]["keypoints"] = []
    report = run(tmp_path, data, descriptions=clean_descriptions())
    assert codes(report) == {"W-kpt-names-missing"}
    (cat,) = report.summary.categories
    assert (cat.num_keypoints, cat.keypoint_source) == (3, "annotations")


def test_one_based_skeleton_is_not_also_out_of_range(tmp_path):
    data = clean_data()
    data["categories"][0]["skeleton"] = [[1, 2], [2, 3], [3, 4]]  # 4 is out of range even 1-based
    report = run(tmp_path, data)
    assert report.summary.categories[0].skeleton_base == "1-based"
    assert [f.path for f in report.by_code("E-skeleton-range")] == ["categories[0].skeleton[2]"]
    assert codes(report) == {"W-skeleton-one-based", "E-skeleton-range"}


def test_too_many_keypoints(tmp_path):
    data = clean_data()
    data["categories"][0].update(keypoints=[f"k{i}" for i in range(101)], skeleton=[[0, 1]])
    for ann in data["annotations"]:
        ann.update(keypoints=[30, 30, 2] * 101, num_keypoints=101)
    assert codes(run(tmp_path, data)) == {"E-kpt-too-many"}


def test_drop_reasons_follow_the_loader_order(tmp_path):
    data = clean_data()
    # area <= 0 is checked before the keypoints, so only one drop finding is reported
    data["annotations"][0].update(area=0, keypoints=[0] * 9, num_keypoints=0)
    report = run(tmp_path, data)
    drops = [f.code for f in report.findings if f.code.startswith("W-drop-")]
    assert drops == ["W-drop-area"]


def test_few_instances_uses_kept_count(tmp_path):
    report = run(tmp_path, clean_data(), min_instances=3)
    (finding,) = report.findings
    assert finding.code == "W-few-instances" and "2 kept" in finding.message
    assert DEFAULT_MIN_INSTANCES == 20
    assert codes(check_annotation_file(write(tmp_path, clean_data()))) == {"W-few-instances"}


def test_person_under_human_folder_is_not_a_folder_mismatch(tmp_path):
    data = clean_data()
    data["categories"][0].update(name="person", supercategory="person")
    for img in data["images"]:
        img["file_name"] = "human_body/" + img["file_name"].split("/")[1]
    assert run(tmp_path, data).findings == []


# --------------------------------------------------------------------------------------------
# descriptions file
# --------------------------------------------------------------------------------------------

DESC_CASES = [
    ("missing", lambda d: d["categories"].pop("1"), "W-desc-missing", 'categories["1"]'),
    ("name", lambda d: d["categories"]["1"].update(name="Thing"), "W-desc-name", 'categories["1"].name'),
    (
        "count",
        lambda d: d["categories"]["1"]["descriptions"].append("extra"),
        "W-desc-count",
        'categories["1"].descriptions',
    ),
    (
        "count-short",
        lambda d: d["categories"]["1"]["descriptions"].pop(),
        "E-desc-count",
        'categories["1"].descriptions',
    ),
    (
        "empty",
        lambda d: d["categories"]["1"]["synonyms"].__setitem__(1, ""),
        "W-desc-empty",
        'categories["1"].synonyms[1]',
    ),
    (
        "duplicate",
        lambda d: d["categories"]["1"]["descriptions"].__setitem__(1, "the head"),
        "W-desc-duplicate",
        'categories["1"].descriptions',
    ),
    (
        "not-strings",
        lambda d: d["categories"]["1"].update(descriptions=[1, 2, 3]),
        "E-field-type",
        'categories["1"].descriptions',
    ),
]


@pytest.mark.parametrize(("mutate", "code", "path"), [c[1:] for c in DESC_CASES], ids=[c[0] for c in DESC_CASES])
def test_descriptions_findings_name_the_descriptions_file(tmp_path, mutate, code, path):
    desc = clean_descriptions()
    mutate(desc)
    report = run(tmp_path, clean_data(), descriptions=desc)
    (finding,) = report.findings
    assert (finding.code, finding.path, finding.category_id, finding.category_name) == (code, path, 1, "thing")
    assert finding.file == str(tmp_path / "desc.json")


def test_descriptions_as_mapping_and_unreadable_descriptions(tmp_path):
    ann = write(tmp_path, clean_data())
    assert check_annotation_file(ann, descriptions=clean_descriptions()["categories"], min_instances=2).findings == []
    int_keyed = {1: clean_descriptions()["categories"]["1"]}
    assert check_annotation_file(ann, descriptions=int_keyed, min_instances=2).findings == []
    bad = write(tmp_path, "nope", "desc.json")
    report = check_annotation_file(ann, descriptions=bad, min_instances=2)
    assert [(f.code, f.file) for f in report.findings] == [("E-json", str(bad))]


# --------------------------------------------------------------------------------------------
# images directory
# --------------------------------------------------------------------------------------------


def _write_jpeg(path: Path) -> None:
    from PIL import Image

    Image.new("RGB", (4, 4), (90, 90, 90)).save(path)


def test_missing_image_files(tmp_path):
    root = tmp_path / "images"
    (root / "thing").mkdir(parents=True)
    _write_jpeg(root / "thing" / "a.jpg")
    report = run(tmp_path, clean_data(), images_dir=root)
    (finding,) = report.findings
    assert (finding.code, finding.path, finding.image_id) == ("E-image-missing", "images[1].file_name", 2)
    assert report.summary.num_images_missing == 1 and report.has_errors
    _write_jpeg(root / "thing" / "b.jpg")
    report = run(tmp_path, clean_data(), images_dir=root)
    assert report.findings == [] and report.summary.num_images_missing == 0


def test_corrupt_images_and_paths_outside_the_root_are_errors(tmp_path):
    root = tmp_path / "images"
    (root / "thing").mkdir(parents=True)
    _write_jpeg(root / "thing" / "a.jpg")
    (root / "thing" / "b.jpg").write_bytes(b"not a jpeg")
    report = run(tmp_path, clean_data(), images_dir=root)
    (finding,) = report.findings
    assert (finding.code, finding.path, finding.image_id) == ("E-image-corrupt", "images[1].file_name", 2)
    data = clean_data()
    data["images"][0]["file_name"] = "../../etc/passwd"
    data["images"][1]["file_name"] = "/etc/hosts"
    report = run(tmp_path, data)
    assert [(f.code, f.path) for f in report.by_code("E-image-path")] == [
        ("E-image-path", "images[0].file_name"), ("E-image-path", "images[1].file_name")]
    assert report.has_errors


def test_missing_images_dir(tmp_path):
    report = run(tmp_path, clean_data(), images_dir=tmp_path / "nowhere")
    assert codes(report) == {"E-images-dir"} and report.summary.num_images_missing is None


# --------------------------------------------------------------------------------------------
# the code table, output forms
# --------------------------------------------------------------------------------------------


def test_every_code_is_exercised_and_has_a_severity_prefix():
    exercised = {code for case in CASES for code in case[2]} | {c[2] for c in DESC_CASES}
    exercised |= {"E-json", "E-kpt-too-many", "E-image-missing", "E-images-dir", "E-image-corrupt", "E-image-path"}
    assert exercised == set(CODES)
    assert {severity_of(c) for c in CODES} == {"error", "warning", "info"}


def test_report_to_dict_is_json_and_exit_status(tmp_path):
    data = clean_data()
    data["annotations"][1]["keypoints"] = [1, 2]
    bad = run(tmp_path, data)
    out = json.loads(json.dumps(report_to_dict(bad)))
    assert out["ok"] is False and out["code_counts"] == {"E-kpt-count": 1}
    assert out["severity_counts"] == {"error": 1, "warning": 0, "info": 0}
    assert out["findings"][0]["severity"] == "error" and out["findings"][0]["annotation_id"] == 11
    assert out["summary"]["categories"][0]["num_kept"] == 2
    warn_only = run(tmp_path, clean_data(), min_instances=5)
    assert exit_status([warn_only]) == 0
    assert exit_status([warn_only, bad]) == 1
    assert exit_status([]) == 0


def test_render_groups_by_code_with_first_examples(tmp_path):
    data = clean_data()
    for i in range(5):  # five unused images: three examples shown, "2 more"
        data["images"].append({"id": 100 + i, "file_name": f"thing/x{i}.jpg", "width": 9, "height": 9})
    data["annotations"][1]["keypoints"] = [1, 2]
    console = Console(record=True, width=200, file=io.StringIO())
    render_report(run(tmp_path, data), console)
    text = console.export_text()
    assert "W-image-unused" in text and "… and 2 more" in text and "thing/x0.jpg" in text
    assert "E-kpt-count" in text and "ann 11" in text and "annotations[1].keypoints" in text
    assert "FAIL" in text and "1 error(s), 5 warning(s)" in text
    assert "7 images · 2 annotations · 1 categories" in text and "thing" in text
    console = Console(record=True, width=200, file=io.StringIO())
    render_report(run(tmp_path, clean_data()), console, show_categories=False)
    assert "supercategory" not in console.export_text()


def test_render_unreadable_file(tmp_path):
    console = Console(record=True, width=120, file=io.StringIO())
    render_report(check_annotation_file(tmp_path / "absent.json"), console)
    text = console.export_text()
    assert "E-json" in text and "file not found" in text and "FAIL" in text


# --------------------------------------------------------------------------------------------
# robustness: arbitrary JSON in every slot never crashes the doctor
# --------------------------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.sampled_from([10**400, -(10**400)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
_ANN_KEYS = ["id", "image_id", "category_id", "keypoints", "num_keypoints", "bbox", "area", "iscrowd"]
_IMG_KEYS = ["id", "file_name", "width", "height"]
_CAT_KEYS = ["id", "name", "supercategory", "keypoints", "skeleton"]


def _entries(keys):
    small_ids = st.integers(0, 2)
    value = st.one_of(
        small_ids,
        _json,
        st.lists(st.integers(-2, 120), max_size=10),
        st.lists(st.lists(st.integers(-1, 3), min_size=2, max_size=2), max_size=3),
    )
    entry = st.dictionaries(st.sampled_from(keys), value, max_size=len(keys))
    return st.lists(st.one_of(entry, _json), max_size=4)


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    images=_entries(_IMG_KEYS),
    annotations=_entries(_ANN_KEYS),
    categories=_entries(_CAT_KEYS),
    desc=st.one_of(st.none(), _json),
)
def test_arbitrary_content_never_crashes(tmp_path, images, annotations, categories, desc):
    data = {"images": images, "annotations": annotations, "categories": categories}
    path = tmp_path / "fuzz.json"
    path.write_text(json.dumps(data))
    descriptions = {"categories": desc} if desc is not None else None
    report = check_annotation_file(path, descriptions=descriptions, images_dir=tmp_path)
    assert all(f.code in CODES for f in report.findings)
    json.dumps(report_to_dict(report), default=repr)
    render_report(report, Console(file=io.StringIO(), width=100))


def _paths(value, prefix=()):
    """Every key/index path inside a JSON value (containers included)."""
    out = [prefix] if prefix else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        out += _paths(child, (*prefix, key))
    return out


_CLEAN_PATHS = _paths(clean_data())
_perturbation = st.tuples(
    st.sampled_from(_CLEAN_PATHS), st.one_of(st.just(_DELETE), _json, st.integers(-200, 200), st.just(0))
)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(perturbations=st.lists(_perturbation, min_size=1, max_size=3))
def test_perturbed_clean_file_never_crashes(tmp_path, perturbations):
    # garbage in one or a few places of an otherwise valid file reaches the deep checks
    data = clean_data()
    for path, value in perturbations:
        _apply(data, path, value)
    report = check_annotation_file(write(tmp_path, data), descriptions=clean_descriptions(), min_instances=2)
    assert all(f.code in CODES for f in report.findings)
    json.dumps(report_to_dict(report), default=repr)
    render_report(report, Console(file=io.StringIO(), width=100))


def _apply(data, path, value) -> None:
    """Set or delete ``data[path]``; a path an earlier perturbation destroyed is skipped."""
    target = data
    try:
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    except (KeyError, IndexError, TypeError):
        pass


# --------------------------------------------------------------------------------------------
# the real MP-100 test files
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_reports(mp100_ann_dir, shared_dir):
    descriptions = json.loads((shared_dir / "mp100" / "keypoint_descriptions.json").read_text())
    return {
        split: check_annotation_file(mp100_ann_dir / f"mp100_split{split}_test.json", descriptions=descriptions)
        for split in range(1, 6)
    }


def _ids(report, code):
    return sorted(f.annotation_id for f in report.by_code(code))


def test_real_splits_load_without_errors(real_reports):
    for split, report in real_reports.items():
        s = report.summary
        assert (s.num_annotations, s.num_categories) == (2000, 20), split
        assert not report.has_errors, (split, [f for f in report.findings if f.severity == "error"][:3])
        assert all(c.num_annotations == 100 for c in s.categories)
        assert all(c.skeleton_base == "0-based" for c in s.categories)
    assert [r.summary.num_images for r in real_reports.values()] == [1933, 1961, 1926, 1916, 1960]
    assert [r.summary.num_kept for r in real_reports.values()] == [2000, 2000, 2000, 2000, 1998]


def test_real_face_categories_have_no_keypoint_names(real_reports):
    for split, cat_id, k in ((4, 40, 68), (5, 18, 19)):
        (finding,) = real_reports[split].by_code("W-kpt-names-missing")
        assert (finding.category_id, finding.category_name) == (cat_id, "face")
        cat = next(c for c in real_reports[split].summary.categories if c.id == cat_id)
        assert (cat.num_keypoints, cat.keypoint_source) == (k, "annotations")


def test_real_split5_face_is_filed_under_amur_tiger_with_two_inverted_boxes(real_reports):
    report = real_reports[5]
    (folder,) = report.by_code("W-image-folder")
    assert folder.category_id == 18 and "amur_tiger_body/" in folder.message
    assert "100 of its 100 annotations" in folder.message
    dropped = [1800000000001530, 1800000000019879]
    assert _ids(report, "W-drop-clean-bbox") == dropped
    assert _ids(report, "W-bbox-degenerate") == dropped
    face = next(c for c in report.summary.categories if c.id == 18)
    assert (face.num_annotations, face.num_kept) == (100, 98)
    out_of_image = report.by_code("W-kpt-out-of-image")
    assert len(out_of_image) == 13 and {f.category_id for f in out_of_image} == {18}


def test_real_fly_descriptions_have_one_text_too_many(real_reports):
    findings = real_reports[3].by_code("W-desc-count")
    assert sorted(f.path for f in findings) == sorted(
        f'categories["66"].{v}' for v in ("descriptions", "synonyms", "translated", "typo")
    )
    assert all(f.category_name == "fly" and "33 texts for K=32" in f.message for f in findings)
    assert not any(r.by_code("W-desc-count") for s, r in real_reports.items() if s != 3)


def test_real_duplicate_skeleton_edges(real_reports):
    (swivel,) = real_reports[1].by_code("W-skeleton-duplicate")
    # [10, 9] after [9, 10]
    assert (swivel.category_name, swivel.path) == ("swivelchair", "categories[16].skeleton[13]")
    (chair,) = real_reports[2].by_code("W-skeleton-duplicate")
    assert (chair.category_name, chair.path) == ("chair", "categories[14].skeleton[8]")  # [6, 7] twice


def test_real_keypoints_outside_their_image(real_reports):
    assert _ids(real_reports[1], "W-kpt-out-of-image") == [8400000001000380, 8400000001001109]  # bed
    assert _ids(real_reports[3], "W-kpt-out-of-image") == [4900000001001796]  # sofa
    assert _ids(real_reports[4], "W-kpt-out-of-image") == [9200000000007617, 9200000000007937]  # macaque
    assert {f.category_name for f in real_reports[4].by_code("W-kpt-out-of-image")} == {"macaque"}


def test_real_counts_of_boxes_and_keypoints_outside(real_reports):
    counts = {s: r.code_counts() for s, r in real_reports.items()}
    assert [counts[s].get("W-bbox-out-of-image", 0) for s in range(1, 6)] == [4, 7, 5, 5, 5]
    assert [counts[s].get("W-kpt-out-of-bbox", 0) for s in range(1, 6)] == [3, 10, 5, 9, 16]
    assert _ids(real_reports[5], "I-kpt-hidden-coords") == [3200000000039006, 5100000000040072]  # car, suv


def test_real_duplicate_descriptions(real_reports):
    dup = {
        (f.category_name, f.path.rsplit(".", 1)[1])
        for r in real_reports.values()
        for f in r.by_code("W-desc-duplicate")
    }
    assert ("fly", "descriptions") not in dup
    assert {
        ("swivelchair", "descriptions"),
        ("face", "descriptions"),
        ("sling_dress", "descriptions"),
        ("long_sleeved_dress", "typo"),
    } <= dup


def test_loader_drops_exactly_what_the_doctor_reports(tmp_path):
    """One drop-rule implementation (cape_bench.data.drop_rules): loader and doctor agree, rule by rule."""
    from cape_bench.data.mp100 import load_annotation_set  # noqa: PLC0415

    data = clean_data()
    base = data["annotations"][0]
    cases = {  # annotation id → the one rule it breaks
        20: {"bbox": [200, 10, 60, 50]},  # clean bbox empty (outside the 100 × 80 image)
        21: {"area": 0},
        22: {"keypoints": [0] * 9},
        23: {"num_keypoints": 0},
        24: {"iscrowd": 1},
    }
    for ann_id, change in cases.items():
        data["annotations"].append({**base, "id": ann_id, **change})
    path = tmp_path / "drops.json"
    path.write_text(json.dumps(data))
    report = check_annotation_file(path)
    doctor_drops = sorted(f.annotation_id for f in report.findings if f.code.startswith("W-drop-"))
    loaded = load_annotation_set(path)
    kept = sorted(inst.ann_id for inst in loaded.instances)
    dropped_or_unseen = sorted(set(a["id"] for a in data["annotations"]) - set(kept))
    assert doctor_drops == dropped_or_unseen == sorted(cases)
    assert {a for a, _ in loaded.dropped} == set(cases) - {24}  # crowd: getAnnIds never returns it
