"""MP-100-format annotation files → the official instance database.

Mirrors ``TestPoseDataset._get_db`` / ``_load_coco_keypoint_annotation_kernel`` of the official
repositories (../shared/spec/official_code.md §1.1): images in ``coco.getImgIds()`` order,
annotations in ``getAnnIds(imgIds=img, iscrowd=False)`` order, instances dropped when they have no
bbox, ``area <= 0``, a degenerate clean bbox, all-zero keypoints or ``num_keypoints == 0``;
visibility is ``v > 0``; the crop frame is the 1.25-padded square around the clean bbox.
The position of an instance in :attr:`AnnotationSet.instances` is the official ``obj_id``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cape_bench.api import Category, InstanceView
from cape_bench.data.drop_rules import official_drop
from cape_bench.data.geometry import bbox_center_scale, clean_bbox

TEXT_VARIANTS = ("regular", "synonyms", "translated", "typo")
# keypoint_descriptions.json names the regular variant "descriptions"
_VARIANT_KEY = {"regular": "descriptions", "synonyms": "synonyms", "translated": "translated", "typo": "typo"}


class AnnotationError(ValueError):
    """An annotation or descriptions file that cannot be used; the message names the file and field."""


@dataclass(frozen=True)
class Instance:
    """One kept instance (official ``db`` record).

    Attributes:
        obj_id: position in the official database (index into ``AnnotationSet.instances``).
        ann_id, image_id, category_id: COCO ids.
        image_file: ``file_name`` relative to the image root.
        bbox_px: the clean bbox ``[x, y, w, h]`` (original px; PCK normaliser = max(w, h)).
        center_px: float32[2]; scale: float32[2] (official crop frame).
        keypoints_px: float32[K, 2] (original px, as the official float32 ``joints_3d``).
        visible: bool[K] (COCO v > 0).
        extra: keys beyond the MP-100 schema (e.g. CAPE-Synth's per-instance metadata).
    """

    obj_id: int
    ann_id: int
    image_id: int
    category_id: int
    image_file: str
    bbox_px: tuple[float, float, float, float]
    center_px: np.ndarray = field(repr=False)
    scale: np.ndarray = field(repr=False)
    keypoints_px: np.ndarray = field(repr=False)
    visible: np.ndarray = field(repr=False)
    extra: dict = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class AnnotationSet:
    """The official instance database of one annotation file.

    Attributes:
        path: the annotation file. sha256: its digest (recorded in run.json).
        info: the file's ``info`` block. categories: by id, in file order.
        instances: kept instances in official order. cat2obj: category id → obj ids (file order).
        dropped: ``(ann_id, reason)`` for every annotation the official loader skips.
        warnings: what the loader did with questionable input that the official code accepts (e.g. a
            descriptions list longer than the category's keypoints), one message each.
    """

    path: Path
    sha256: str
    info: dict
    categories: dict[int, Category]
    instances: tuple[Instance, ...]
    cat2obj: dict[int, tuple[int, ...]]
    dropped: tuple[tuple[int, str], ...]
    warnings: tuple[str, ...] = ()

    def view(self, obj_ids, *, with_ground_truth: bool = True, crops: np.ndarray | None = None) -> InstanceView:
        """Stack instances of one category into the :class:`InstanceView` a method receives."""
        rows = [self.instances[i] for i in obj_ids]
        cats = {r.category_id for r in rows}
        if len(cats) != 1:
            raise ValueError(f"an InstanceView holds one category, got {sorted(cats)}")
        return InstanceView(
            category=self.categories[rows[0].category_id],
            ann_ids=np.array([r.ann_id for r in rows], dtype=np.int64),
            image_files=tuple(r.image_file for r in rows),
            bbox_px=np.array([r.bbox_px for r in rows], dtype=np.float64),
            center_px=np.stack([r.center_px for r in rows]),
            scale=np.stack([r.scale for r in rows]),
            crops=crops,
            keypoints_px=np.stack([r.keypoints_px for r in rows]) if with_ground_truth else None,
            visible=np.stack([r.visible for r in rows]) if with_ground_truth else None,
        )


def _fail(path: Path, field_: str, message: str) -> AnnotationError:
    return AnnotationError(f"{path}: {field_}: {message}")


class Descriptions(dict):
    """category id → keypoint texts, remembering the file they came from (for messages)."""

    def __init__(self, texts: dict[int, tuple[str, ...]], source: str) -> None:
        super().__init__(texts)
        self.source = source


def load_descriptions(path: str | Path, variant: str = "regular",
                      drop: Mapping[Any, Any] | None = None) -> Descriptions:
    """Read a keypoint-descriptions file (format of ``mp100/keypoint_descriptions.json``).

    Args:
        path: the file.
        variant: regular | synonyms | translated | typo.
        drop: category id → indices of entries to remove before the texts are paired with the keypoints by
            position (``dataset.description_drop``; e.g. ``{66: [6]}`` realigns MP-100's fly, whose list carries
            a stray "front right leg" at index 6).

    Returns:
        category id → the description strings of ``variant``.
    """
    path = Path(path)
    if variant not in TEXT_VARIANTS:
        raise AnnotationError(f"{path}: text variant {variant!r} is not one of {', '.join(TEXT_VARIANTS)}")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise _fail(path, "<file>", f"cannot read descriptions: {err}") from err
    cats = data.get("categories") if isinstance(data, dict) else None
    if not isinstance(cats, dict):
        raise _fail(path, "categories", "expected an object keyed by category id")
    out: dict[int, tuple[str, ...]] = {}
    key = _VARIANT_KEY[variant]
    for cat_id, entry in cats.items():
        texts = entry.get(key) if isinstance(entry, dict) else None
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise _fail(path, f"categories.{cat_id}.{key}", "expected a list of strings")
        out[int(cat_id)] = tuple(texts)
    for cat_id, indices in (drop or {}).items():
        where = f"dataset.description_drop.{cat_id}"
        try:
            cid, gone = int(cat_id), {int(j) for j in indices}
        except (TypeError, ValueError):
            raise _fail(path, where, f"expected a category id and a list of indices, got {indices!r}") from None
        if cid not in out:
            raise _fail(path, where, f"category {cid} has no entry in the descriptions file")
        if any(not 0 <= j < len(out[cid]) for j in gone):
            raise _fail(path, where, f"index out of range for its {len(out[cid])} texts: {sorted(gone)}")
        out[cid] = tuple(t for j, t in enumerate(out[cid]) if j not in gone)
    return Descriptions(out, str(path))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_schema(path: Path, data) -> dict[int, int]:
    """Fail early, naming the field, on what would crash or silently mislead the official loader.

    Returns:
        category id → K. A category whose ``keypoints`` list is empty takes K from its first
        annotation, as the official loader does (it never reads the names; MP-100's 300W face,
        category 40, ships with an empty list and 68 keypoints per annotation).
    """
    if not isinstance(data, dict):
        raise _fail(path, "<root>", "expected a JSON object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise _fail(path, key, "missing or not a list")
    kpt_count = {}
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not isinstance(cat.get("id"), int):
            raise _fail(path, f"categories[{i}].id", "missing or not an integer")
        if not isinstance(cat.get("keypoints"), list):
            raise _fail(path, f"categories[{i}].keypoints", f"missing or not a list (category {cat['id']})")
        if cat["id"] in kpt_count:
            raise _fail(path, f"categories[{i}].id", f"duplicate category id {cat['id']}")
        kpt_count[cat["id"]] = len(cat["keypoints"])
    image_ids = set()
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or "id" not in img:
            raise _fail(path, f"images[{i}].id", "missing")
        for key in ("file_name", "width", "height"):
            if key not in img:
                raise _fail(path, f"images[{i}].{key}", f"missing (image {img['id']})")
        for key in ("width", "height"):
            if not _is_number(img[key]):
                raise _fail(path, f"images[{i}].{key}", f"expected a finite number, got {img[key]!r} (image {img['id']})")
        if img["id"] in image_ids:
            raise _fail(path, f"images[{i}].id", f"duplicate image id {img['id']}")
        image_ids.add(img["id"])
    for ann in data["annotations"]:
        cid = ann.get("category_id") if isinstance(ann, dict) else None
        if kpt_count.get(cid) == 0 and isinstance(ann.get("keypoints"), list):
            kpt_count[cid] = len(ann["keypoints"]) // 3
    for i, cat in enumerate(data["categories"]):
        if kpt_count[cat["id"]] == 0:
            raise _fail(path, f"categories[{i}].keypoints", f"category {cat['id']} ({cat.get('name')}) has no keypoints: "
                                                           "an empty name list and no keypoints in its annotations")
    ann_ids = set()
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "id" not in ann:
            raise _fail(path, f"annotations[{i}].id", "missing")
        aid = ann["id"]
        if aid in ann_ids:
            raise _fail(path, f"annotations[{i}].id", f"duplicate annotation id {aid}")
        ann_ids.add(aid)
        if ann.get("image_id") not in image_ids:
            raise _fail(path, f"annotations[{i}].image_id", f"unknown image {ann.get('image_id')} (annotation {aid})")
        cid = ann.get("category_id")
        if cid not in kpt_count:
            raise _fail(path, f"annotations[{i}].category_id", f"unknown category {cid} (annotation {aid})")
        kpts = ann.get("keypoints")
        if kpts is not None:
            if not isinstance(kpts, list) or len(kpts) != 3 * kpt_count[cid]:
                n = len(kpts) if isinstance(kpts, list) else type(kpts).__name__
                raise _fail(
                    path,
                    f"annotations[{i}].keypoints",
                    f"expected 3×{kpt_count[cid]} numbers for category {cid}, got {n} (annotation {aid})",
                )
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in kpts):
                raise _fail(path, f"annotations[{i}].keypoints", f"non-numeric or non-finite value (annotation {aid})")
        if "bbox" in ann:
            box = ann["bbox"]
            if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)):
                raise _fail(path, f"annotations[{i}].bbox", f"expected [x, y, w, h] finite numbers (annotation {aid})")
        if "area" in ann and not _is_number(ann["area"]):
            raise _fail(path, f"annotations[{i}].area", f"expected a finite number, got {ann['area']!r} (annotation {aid})")
        if "iscrowd" not in ann:
            # pycocotools' getAnnIds(iscrowd=False) reads ann['iscrowd'] and would raise KeyError
            raise _fail(path, f"annotations[{i}].iscrowd", f"missing (annotation {aid})")
    return kpt_count


def load_annotation_set(
    path: str | Path,
    *,
    descriptions: dict[int, tuple[str, ...]] | None = None,
    categories: list[int] | list[str] | None = None,
) -> AnnotationSet:
    """Load one MP-100-format file into the official instance database.

    Args:
        path: ``mp100_split{k}_{train,val,test}.json``.
        descriptions: category id → K keypoint texts (from :func:`load_descriptions`); categories it
            lacks fall back to the file's ``keypoints`` names with ``_`` → space (CapeX's rule).
        categories: restrict to these category ids or names (order stays the file's).

    Raises:
        AnnotationError: naming the file and field, for malformed or inconsistent input.
    """
    from pycocotools.coco import COCO  # noqa: PLC0415

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise AnnotationError(f"{path}: annotation file not found") from err
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _fail(path, "<file>", f"not valid JSON: {err}") from err
    kpt_count = _check_schema(path, data)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
        coco.createIndex()

    wanted = None
    if categories:
        by_name = {c["name"]: c["id"] for c in data["categories"]}
        wanted = set()
        for c in categories:
            if isinstance(c, str) and not c.isdigit():
                if c not in by_name:
                    raise AnnotationError(f"{path}: unknown category name {c!r}")
                wanted.add(by_name[c])
            else:
                wanted.add(int(c))

    cats: dict[int, Category] = {}
    warnings: list[str] = []
    for i, cat_id in enumerate(coco.getCatIds()):
        if wanted is not None and cat_id not in wanted:
            continue
        c = coco.cats[cat_id]
        # an empty name list (MP-100's 300W face) gets index names, as K comes from the annotations
        names = tuple(str(n) for n in c["keypoints"]) or tuple(str(k) for k in range(kpt_count[cat_id]))
        texts = descriptions.get(cat_id) if descriptions else None
        if texts is None:
            texts = tuple(n.replace("_", " ") for n in names)
        elif len(texts) < len(names):
            raise AnnotationError(
                f"{path}: categories[{i}] ({c.get('name')}, id {cat_id}): descriptions file gives "
                f"{len(texts)} texts for {len(names)} keypoints (the official loader fails on this too)"
            )
        elif len(texts) > len(names):
            warnings.append(description_count_warning(
                getattr(descriptions, "source", "descriptions file"), cat_id, str(c.get("name")), texts, len(names)))
            texts = texts[: len(names)]
        skeleton = np.asarray(c.get("skeleton") or [], dtype=np.int64).reshape(-1, 2)
        cats[cat_id] = Category(
            id=cat_id,
            name=str(c.get("name", cat_id)),
            supercategory=str(c.get("supercategory", "")),
            keypoint_names=names,
            descriptions=tuple(texts),
            skeleton=skeleton,
        )

    instances: list[Instance] = []
    cat2obj: dict[int, list[int]] = {cid: [] for cid in cats}
    dropped: list[tuple[int, str]] = []
    for img_id in coco.getImgIds():
        img = coco.imgs[img_id]
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=False)):
            cid = ann["category_id"]
            if cid not in cats:
                continue
            reason = _drop_reason(ann, img)
            if reason:
                dropped.append((ann["id"], reason))
                continue
            box = clean_bbox(ann["bbox"], img["width"], img["height"])
            kpts = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
            center, scale = bbox_center_scale(np.asarray(box))
            obj_id = len(instances)
            instances.append(
                Instance(
                    obj_id=obj_id,
                    ann_id=int(ann["id"]),
                    image_id=int(img_id),
                    category_id=int(cid),
                    image_file=str(img["file_name"]),
                    bbox_px=tuple(float(v) for v in box),
                    center_px=center,
                    scale=scale,
                    keypoints_px=kpts[:, :2].astype(np.float32),
                    visible=kpts[:, 2] > 0,
                    extra={k: v for k, v in ann.items() if k not in _COCO_KEYS},
                )
            )
            cat2obj[cid].append(obj_id)
    return AnnotationSet(
        path=path,
        sha256=_sha256(path),
        info=data.get("info") or {},
        categories=cats,
        instances=tuple(instances),
        cat2obj={k: tuple(v) for k, v in cat2obj.items()},
        dropped=tuple(dropped),
        warnings=tuple(warnings),
    )


def description_count_warning(source: str, cat_id: int, name: str, texts: Sequence[str], k: int) -> str:
    """The message for a category whose descriptions outnumber its keypoints (MP-100's fly: 33 for 32).

    The official CapeX loader (``extract_text_features``: ``description[mask[:len(description)] == 1]``) pairs
    texts with keypoints by position and never reads the entries past K; cape-bench does the same and says so.
    """
    lowered = [t.lower() for t in texts]
    stray = [j for j, t in enumerate(lowered) if any(j != m and t in other for m, other in enumerate(lowered))]
    hint = (f"; entry {stray[0]} {texts[stray[0]]!r} reads like a stray copy of a longer text: "
            f"dataset.description_drop = {{{cat_id} = [{stray[0]}]}} realigns the list") if stray else ""
    return (f"{source}: category {cat_id} ({name}) has {len(texts)} texts for K={k} keypoints: paired by position as "
            f"the official CapeX loader does, so {list(texts[k:])!r} is never read and any stray entry before it "
            f"shifts every later keypoint's text{hint}")


_COCO_KEYS = {"id", "image_id", "category_id", "keypoints", "num_keypoints", "bbox", "area", "iscrowd", "segmentation"}


def _drop_reason(ann: dict, img: dict) -> str | None:
    """Why the official loader skips this annotation (:func:`cape_bench.data.drop_rules.official_drop`), or None."""
    if "keypoints" not in ann:
        return "no keypoints"
    drop = official_drop(iscrowd=ann.get("iscrowd", 0), bbox=ann.get("bbox"), area=ann.get("area"),
                         width=img["width"], height=img["height"], keypoints=ann["keypoints"],
                         num_keypoints=ann.get("num_keypoints"))
    return drop.reason if drop else None


def split_file(ann_dir: str | Path, split: int, subset: str = "test") -> Path:
    """``ann_dir/mp100_split{split}_{subset}.json``."""
    return Path(ann_dir) / f"mp100_split{split}_{subset}.json"
