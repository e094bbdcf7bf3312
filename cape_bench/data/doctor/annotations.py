"""Annotation checks: references, keypoint and bbox values, the official drop rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cape_bench.data.doctor.fields import (
    CategoryRecord,
    FindingSink,
    ImageRecord,
    _fmt,
    _id_field,
    _number,
    _numbers,
    _short,
)
from cape_bench.data.doctor.findings import BAD, MISSING
from cape_bench.data.drop_rules import official_drop

# --------------------------------------------------------------------------------------------
# annotations
# --------------------------------------------------------------------------------------------


@dataclass
class AnnotationRecord:
    """The validated fields of one annotation (``None``: absent; ``BAD``: present but unusable)."""

    id: Any
    img: ImageRecord | None
    cat: CategoryRecord | None
    keypoints: list[float] | None | object
    bbox: list[float] | None | object
    area: float | None | object
    num_keypoints: float | None | object
    iscrowd: float | None | object


def _keypoints_field(ann: dict, path: str, sink: FindingSink, ctx: dict) -> Any:
    if "keypoints" not in ann:
        sink.add("E-missing-field", "missing 'keypoints'", f"{path}.keypoints", **ctx)
        return BAD
    kpts = ann["keypoints"]
    if not isinstance(kpts, list):
        sink.add("E-field-type", f"keypoints must be a list of numbers, got {_short(kpts)}", f"{path}.keypoints", **ctx)
        return BAD
    values = _numbers(kpts, f"{path}.keypoints", sink, **ctx)
    return BAD if values is None else values


def _bbox_field(ann: dict, path: str, sink: FindingSink, ctx: dict) -> Any:
    if "bbox" not in ann:
        return None  # legal: the official loader just drops the instance
    box = ann["bbox"]
    if not isinstance(box, list) or len(box) != 4:
        sink.add("E-field-type", f"bbox must be [x, y, w, h], got {_short(box)}", f"{path}.bbox", **ctx)
        return BAD
    values = _numbers(box, f"{path}.bbox", sink, **ctx)
    return BAD if values is None else values


def _optional_number(ann: dict, key: str, path: str, sink: FindingSink, ctx: dict) -> Any:
    value = _number(ann, key, path, sink, required=False, **ctx)
    return None if value is MISSING else value


_UNKNOWN_REFERENCE = {"image_id": ("E-unknown-image", "an image"), "category_id": ("E-unknown-category", "a category")}


def _reference(ann: dict, key: str, table: dict, path: str, sink: FindingSink, ctx: dict) -> Any:
    """The image or category an annotation points at, or None (reported) when it points nowhere."""
    ref = _id_field(ann, key, path, sink, **ctx)
    if ref is MISSING or ref is BAD:
        return None
    if ref not in table:
        code, what = _UNKNOWN_REFERENCE[key]
        sink.add(code, f"{key} {_short(ref)} is not the id of {what} in this file", f"{path}.{key}", **ctx)
        return None
    return table[ref]


def _parse_annotation(i: int, ann: dict, imgs: dict, cats: dict, seen: dict, sink: FindingSink) -> AnnotationRecord:
    path = f"annotations[{i}]"
    aid = _id_field(ann, "id", path, sink)
    aid = None if aid is MISSING or aid is BAD else aid
    raw_cid = ann.get("category_id")
    ctx = {"ann": aid, "category_id": None if isinstance(raw_cid, (list, dict)) else raw_cid}
    if aid is not None:
        if aid in seen:
            sink.add(
                "E-dup-annotation-id",
                f"annotation id {aid} already used by annotations[{seen[aid]}]",
                f"{path}.id",
                **ctx,
            )
        else:
            seen[aid] = i
    img = _reference(ann, "image_id", imgs, path, sink, ctx)
    cat = _reference(ann, "category_id", cats, path, sink, ctx)
    if cat is not None:
        ctx = {"ann": aid, "cat": cat}
    iscrowd = _number(ann, "iscrowd", path, sink, required=True, **ctx)  # getAnnIds(iscrowd=False) reads it
    return AnnotationRecord(
        id=aid,
        img=img,
        cat=cat,
        keypoints=_keypoints_field(ann, path, sink, ctx),
        bbox=_bbox_field(ann, path, sink, ctx),
        area=_optional_number(ann, "area", path, sink, ctx),
        num_keypoints=_optional_number(ann, "num_keypoints", path, sink, ctx),
        iscrowd=BAD if iscrowd is MISSING else iscrowd,
    )


def _drop_reason(a: AnnotationRecord) -> tuple[str, str] | None:
    """Why the official loader skips a (valid) annotation (:func:`cape_bench.data.drop_rules.official_drop`)."""
    return official_drop(iscrowd=a.iscrowd, bbox=a.bbox, area=a.area, width=a.img.width, height=a.img.height,
                         keypoints=a.keypoints, num_keypoints=a.num_keypoints)


def _triples(values: list[float]) -> list[tuple[float, float, float]]:
    return [(values[j], values[j + 1], values[j + 2]) for j in range(0, len(values) - 2, 3)]


def _points_text(points: list[tuple[int, float, float]]) -> str:
    shown = ", ".join(f"#{j} ({_fmt(x)}, {_fmt(y)})" for j, x, y in points[:3])
    return shown + (f" and {len(points) - 3} more" if len(points) > 3 else "")


def _check_keypoint_values(a: AnnotationRecord, path: str, sink: FindingSink, ctx: dict) -> None:
    kpts = _triples(a.keypoints)
    bad_v = sorted({v for _, _, v in kpts if v not in (0, 1, 2)})
    if bad_v:
        sink.add(
            "W-visibility-value",
            f"visibility flags {bad_v[:5]} outside {{0, 1, 2}} (the loader treats v > 0 as visible)",
            f"{path}.keypoints",
            **ctx,
        )
    visible = sum(1 for _, _, v in kpts if v > 0)
    if a.num_keypoints not in (None, BAD) and a.num_keypoints != visible:
        sink.add(
            "W-num-keypoints",
            f"num_keypoints={a.num_keypoints:g} but {visible} keypoints have v > 0",
            f"{path}.num_keypoints",
            **ctx,
        )
    hidden = [j for j, (x, y, v) in enumerate(kpts) if v == 0 and (x != 0 or y != 0)]
    if hidden:
        sink.add(
            "I-kpt-hidden-coords",
            f"{len(hidden)} keypoint(s) with v=0 carry coordinates, e.g. #{hidden[0]}",
            f"{path}.keypoints",
            **ctx,
        )
    img = a.img
    if img is not None and img.width is not None and img.height is not None:
        outside = [
            (j, x, y)
            for j, (x, y, v) in enumerate(kpts)
            if v > 0 and not (0 <= x <= img.width and 0 <= y <= img.height)
        ]
        if outside:
            sink.add(
                "W-kpt-out-of-image",
                f"{len(outside)} visible keypoint(s) outside the {img.width:g}x"
                f"{img.height:g} image: {_points_text(outside)}",
                f"{path}.keypoints",
                **ctx,
            )
    if isinstance(a.bbox, list) and a.bbox[2] > 0 and a.bbox[3] > 0:
        x0, y0, w, h = a.bbox
        outside = [
            (j, x, y) for j, (x, y, v) in enumerate(kpts) if v > 0 and not (x0 <= x <= x0 + w and y0 <= y <= y0 + h)
        ]
        if outside:
            box = ", ".join(_fmt(v) for v in a.bbox)
            sink.add(
                "W-kpt-out-of-bbox",
                f"{len(outside)} visible keypoint(s) outside bbox [{box}]: {_points_text(outside)}",
                f"{path}.keypoints",
                **ctx,
            )


def _check_bbox_values(a: AnnotationRecord, path: str, sink: FindingSink, ctx: dict) -> None:
    x, y, w, h = a.bbox
    if w <= 0 or h <= 0:
        sink.add(
            "W-bbox-degenerate", f"bbox [{', '.join(_fmt(v) for v in a.bbox)}] has w or h <= 0", f"{path}.bbox", **ctx
        )
        return
    img = a.img
    if img is None or img.width is None or img.height is None:
        return
    if x < 0 or y < 0 or x + w > img.width or y + h > img.height:
        sink.add(
            "W-bbox-out-of-image",
            f"bbox x {_fmt(x)}..{_fmt(x + w)}, y {_fmt(y)}..{_fmt(y + h)} exceeds the {img.width:g}x"
            f"{img.height:g} image (clipped by the official loader)",
            f"{path}.bbox",
            **ctx,
        )


def _check_annotation(i: int, ann: Any, imgs: dict, cats: dict, seen: dict, sink: FindingSink) -> None:
    """Validate one annotation, update its category's and image's counts."""
    path = f"annotations[{i}]"
    if not isinstance(ann, dict):
        sink.add("E-field-type", f"annotation must be an object, got {_short(ann)}", path)
        return
    a = _parse_annotation(i, ann, imgs, cats, seen, sink)
    ctx = {"ann": a.id, "cat": a.cat} if a.cat is not None else {"ann": a.id, "category_id": ann.get("category_id")}
    if a.img is not None:
        a.img.num_annotations += 1
        ctx["image"] = a.img.id
    if a.cat is not None:
        a.cat.num_annotations += 1
        if a.img is not None and a.img.file_name and "/" in a.img.file_name:
            folder = a.img.file_name.split("/", 1)[0]
            a.cat.folders[folder] += 1
            a.cat.folder_example.setdefault(folder, a.img.file_name)
    kpts_ok = isinstance(a.keypoints, list)
    if kpts_ok and a.cat is not None and len(a.keypoints) != 3 * a.cat.k:
        sink.add(
            "E-kpt-count",
            f"{len(a.keypoints)} values, expected 3×K = {3 * a.cat.k} for category {a.cat.name!r}",
            f"{path}.keypoints",
            **ctx,
        )
    elif kpts_ok and not a.keypoints:  # max([]) raises in the official loader
        sink.add("E-kpt-count", "empty keypoints list", f"{path}.keypoints", **ctx)
    if kpts_ok and len(a.keypoints) % 3 == 0:
        _check_keypoint_values(a, path, sink, ctx)
    if isinstance(a.bbox, list):
        _check_bbox_values(a, path, sink, ctx)
    if _loadable(a):
        reason = _drop_reason(a)
        if reason is None:
            a.cat.num_kept += 1
        else:
            sink.add(reason[0], reason[1], path, **ctx)


def _loadable(a: AnnotationRecord) -> bool:
    """Whether the official loader would reach this annotation's filters without crashing."""
    fields_ok = all(v is not BAD for v in (a.keypoints, a.bbox, a.area, a.num_keypoints, a.iscrowd))
    return (
        fields_ok
        and a.img is not None
        and a.img.width is not None
        and a.img.height is not None
        and a.cat is not None
        and bool(a.keypoints)
    )
