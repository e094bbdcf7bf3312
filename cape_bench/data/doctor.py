"""Dataset doctor: what in an MP-100-format annotation file would break or skew the official pipeline.

Backs ``cape-bench data check --ann FILE [--images DIR] [--descriptions FILE]``. It reads the raw
JSON (never pycocotools, which would crash first) and turns every problem into a
:class:`Finding` with a stable code, a severity, the file, the JSON path of the field and, where
one applies, the category and annotation id. It never raises on malformed input.

Severity follows one rule:

* **error** (``E-*``): the official pipeline (../shared/spec/official_code.md §1) would crash, or
  would silently compute something else: wrong keypoint count, duplicate or dangling ids,
  skeleton edges out of range, non-numeric or non-finite values, images missing on disk.
* **warning** (``W-*``): the pipeline runs, but the data is not what it looks like: instances
  the official loader drops, boxes it clips, keypoints outside their image or box, skeletons that
  look 1-based, keypoint names or descriptions that do not match, categories too small for an
  episode.
* **info** (``I-*``): harmless oddities worth knowing.

A file has errors exactly when :attr:`DoctorReport.has_errors` is true; the CLI exits non-zero
then (warnings alone exit 0).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cape_bench.data.geometry import clean_bbox
from cape_bench.data.mp100 import description_count_warning
from cape_bench.data.paths import ALLOW_OUTSIDE_ENV, leaves_root

ERROR, WARNING, INFO = "error", "warning", "info"
_SEVERITY_OF_PREFIX = {"E": ERROR, "W": WARNING, "I": INFO}

MAX_KPT_NUM = 100  # the official loader pads every instance to 100 keypoint rows
DEFAULT_MIN_INSTANCES = 20  # 5 shots + 15 queries: the largest official test episode
TEXT_VARIANTS = ("descriptions", "synonyms", "translated", "typo")  # keys of keypoint_descriptions.json

CODES: dict[str, str] = {
    "E-json": "file missing, unreadable, not JSON or not a JSON object",
    "E-missing-field": "required field missing",
    "E-field-type": "field of the wrong type",
    "E-non-finite": "NaN, infinite or overflowing number",
    "E-dup-image-id": "duplicate image id",
    "E-dup-annotation-id": "duplicate annotation id",
    "E-dup-category-id": "duplicate category id",
    "E-unknown-image": "annotation points at an image id that is not in the file",
    "E-unknown-category": "annotation points at a category id that is not in the file",
    "E-image-size": "image width or height is not positive",
    "E-kpt-count": "keypoints list is not 3×K long for its category",
    "E-kpt-too-many": "category has more keypoints than the official padding (100)",
    "E-skeleton-range": "skeleton edge index outside 0..K-1",
    "E-images-dir": "the --images directory does not exist",
    "E-image-missing": "image file missing under --images",
    "E-image-path": "image file_name leaves the image root (absolute path or '..')",
    "E-image-corrupt": "image file cannot be decoded",
    "W-kpt-names-missing": "category has no keypoint names (K taken from its annotations)",
    "W-kpt-name-empty": "empty keypoint name",
    "W-kpt-name-duplicate": "duplicate keypoint name",
    "W-skeleton-one-based": "skeleton looks 1-based (model code reads it as 0-based)",
    "W-skeleton-duplicate": "duplicate skeleton edge (same or reversed pair)",
    "W-skeleton-self-loop": "skeleton edge joins a keypoint to itself",
    "W-bbox-degenerate": "bbox width or height is not positive",
    "W-bbox-out-of-image": "bbox extends outside the image (the official loader clips it)",
    "W-drop-crowd": "dropped by the official loader: iscrowd != 0",
    "W-drop-no-bbox": "dropped by the official loader: no bbox",
    "W-drop-area": "dropped by the official loader: area <= 0",
    "W-drop-clean-bbox": "dropped by the official loader: clean bbox is degenerate",
    "W-drop-zero-kpts": "dropped by the official loader: keypoints all zero (max == 0)",
    "W-drop-num-kpts": "dropped by the official loader: num_keypoints == 0",
    "W-num-keypoints": "num_keypoints differs from the count of keypoints with v > 0",
    "W-visibility-value": "visibility flag outside {0, 1, 2}",
    "W-kpt-out-of-image": "visible keypoint outside its image",
    "W-kpt-out-of-bbox": "visible keypoint outside its bbox",
    "W-image-folder": "image folder does not match the category name",
    "W-image-unused": "image without annotations",
    "W-few-instances": "fewer kept instances than one episode needs",
    "W-desc-missing": "category absent from the descriptions file",
    "W-desc-name": "category name differs from the descriptions file",
    "W-desc-count": "more descriptions than keypoints: paired by position, the rest never read (official)",
    "E-desc-count": "fewer descriptions than keypoints",
    "W-desc-empty": "empty description text",
    "W-desc-duplicate": "same description text for several keypoints",
    "I-skeleton-empty": "category has no skeleton edges",
    "I-kpt-hidden-coords": "keypoints with v = 0 carry non-zero coordinates",
}

_EXAMPLES_SHOWN = 3  # examples per code in the rendered table
_MISSING = object()  # field absent
_BAD = object()  # field present but unusable
# MP-100 stores images as "<category folder>/...". COCO's person lives under human_body/.
_FOLDER_ALIASES = {"person": "human", "human": "person"}


def severity_of(code: str) -> str:
    """Severity of a finding code, read from its stable prefix (``E-``, ``W-``, ``I-``)."""
    return _SEVERITY_OF_PREFIX[code[0]]


@dataclass(frozen=True)
class Finding:
    """One problem in one file.

    Attributes:
        code: stable code, a key of :data:`CODES` (``E-kpt-count``, ``W-bbox-out-of-image``, …).
        message: what is wrong, with the offending values.
        file: the file the problem is in (annotation or descriptions file).
        path: JSON path of the field, e.g. ``annotations[12].keypoints``; empty for the whole file.
        category_id: category concerned, when one is.
        category_name: its name in the annotation file, when known.
        annotation_id: annotation concerned, when one is.
        image_id: image concerned, when one is.
    """

    code: str
    message: str
    file: str
    path: str = ""
    category_id: Any = None
    category_name: str | None = None
    annotation_id: Any = None
    image_id: Any = None

    @property
    def severity(self) -> str:
        return severity_of(self.code)


@dataclass(frozen=True)
class CategorySummary:
    """One category as the official loader sees it.

    Attributes:
        id: category id.
        name: category name (None when missing or not a string).
        supercategory: supercategory (None when absent).
        num_keypoints: K, from the keypoint names, or from the annotations when the names are missing.
        keypoint_source: ``"names"`` or ``"annotations"``: where K came from.
        skeleton_edges: number of well-formed skeleton edges.
        skeleton_base: ``"0-based"``, ``"1-based"`` or ``"empty"``.
        num_annotations: annotations of this category.
        num_kept: instances the official loader keeps (the population of its episodes).
    """

    id: Any
    name: str | None
    supercategory: str | None
    num_keypoints: int
    keypoint_source: str
    skeleton_edges: int
    skeleton_base: str
    num_annotations: int
    num_kept: int


@dataclass(frozen=True)
class Summary:
    """File-level counts.

    Attributes:
        num_images: entries of ``images``.
        num_annotations: entries of ``annotations``.
        num_categories: entries of ``categories``.
        num_kept: instances the official loader keeps, all categories.
        categories: per-category counts, in file order.
        images_dir: the image root checked, when one was given.
        num_images_missing: image files absent under ``images_dir`` (None when not checked).
    """

    num_images: int
    num_annotations: int
    num_categories: int
    num_kept: int
    categories: tuple[CategorySummary, ...]
    images_dir: str | None = None
    num_images_missing: int | None = None


@dataclass
class DoctorReport:
    """Findings and summary of one annotation file.

    Attributes:
        file: the annotation file checked.
        findings: every finding, in discovery order.
        summary: counts, or None when the file could not be read as an MP-100 object.
    """

    file: str
    findings: list[Finding] = field(default_factory=list)
    summary: Summary | None = None

    @property
    def has_errors(self) -> bool:
        return any(f.severity == ERROR for f in self.findings)

    def by_code(self, code: str) -> list[Finding]:
        """Findings with this code, in discovery order."""
        return [f for f in self.findings if f.code == code]

    def code_counts(self) -> dict[str, int]:
        """Number of findings per code."""
        return dict(Counter(f.code for f in self.findings))

    def severity_counts(self) -> dict[str, int]:
        """Number of findings per severity (all three keys always present)."""
        counts = Counter(f.severity for f in self.findings)
        return {s: counts.get(s, 0) for s in (ERROR, WARNING, INFO)}


# --------------------------------------------------------------------------------------------
# internal records
# --------------------------------------------------------------------------------------------


@dataclass
class _Cat:
    index: int
    id: Any
    name: str | None
    supercategory: str | None
    names: list | None  # keypoint names (None when missing or not a list)
    edges: list[tuple[int, int, int]]  # (position in skeleton, a, b) of well-formed edges
    k: int = 0
    k_source: str = "names"
    base: str = "empty"
    num_annotations: int = 0
    num_kept: int = 0
    folders: Counter = field(default_factory=Counter)
    folder_example: dict = field(default_factory=dict)


@dataclass
class _Img:
    index: int
    id: Any
    file_name: str | None
    width: float | None  # None when missing or invalid
    height: float | None
    num_annotations: int = 0


@dataclass
class _Sink:
    """Collects findings for one file."""

    file: str
    items: list[Finding] = field(default_factory=list)

    def add(
        self,
        code: str,
        message: str,
        path: str = "",
        *,
        cat: _Cat | None = None,
        category_id: Any = None,
        ann: Any = None,
        image: Any = None,
    ) -> None:
        if code not in CODES:  # a typo here would silently create an unfilterable code
            raise KeyError(code)
        self.items.append(
            Finding(
                code=code,
                message=message,
                file=self.file,
                path=path,
                category_id=cat.id if cat is not None else category_id,
                category_name=cat.name if cat is not None else None,
                annotation_id=ann,
                image_id=image,
            )
        )


# --------------------------------------------------------------------------------------------
# small value helpers
# --------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_float(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is NaN, infinite or too large for a float."""
    try:
        out = float(value)
    except OverflowError:  # JSON ints have no size limit
        return None
    return out if math.isfinite(out) else None


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fmt(x: float) -> str:
    return f"{x:.1f}"


def _numbers(values: list, path: str, sink: _Sink, **ctx: Any) -> list[float] | None:
    """Floats of a JSON number list, or None after reporting its first non-numeric or non-finite entry."""
    out = []
    for j, value in enumerate(values):
        if not _is_number(value):
            sink.add("E-field-type", f"expected a number, got {_short(value)}", f"{path}[{j}]", **ctx)
            return None
        as_float = _as_float(value)
        if as_float is None:
            sink.add("E-non-finite", f"non-finite number {_short(value)}", f"{path}[{j}]", **ctx)
            return None
        out.append(as_float)
    return out


def _number(obj: dict, key: str, path: str, sink: _Sink, *, required: bool, **ctx: Any) -> Any:
    """A finite number field as float; ``_MISSING`` when absent, ``_BAD`` after reporting a bad value."""
    if key not in obj:
        if required:
            sink.add("E-missing-field", f"missing {key!r}", f"{path}.{key}", **ctx)
        return _MISSING
    value = obj[key]
    if not _is_number(value):
        sink.add("E-field-type", f"{key} must be a number, got {_short(value)}", f"{path}.{key}", **ctx)
        return _BAD
    as_float = _as_float(value)
    if as_float is None:
        sink.add("E-non-finite", f"{key} is not finite: {_short(value)}", f"{path}.{key}", **ctx)
        return _BAD
    return as_float


def _id_field(obj: dict, key: str, path: str, sink: _Sink, **ctx: Any) -> Any:
    """An id or reference field; non-integer ids are reported but still usable for matching."""
    if key not in obj:
        sink.add("E-missing-field", f"missing {key!r}", f"{path}.{key}", **ctx)
        return _MISSING
    value = obj[key]
    if isinstance(value, (list, dict)):  # unhashable: cannot index or match anything
        sink.add("E-field-type", f"{key} must be an integer, got {_short(value)}", f"{path}.{key}", **ctx)
        return _BAD
    if not _is_int(value):
        sink.add("E-field-type", f"{key} must be an integer, got {_short(value)}", f"{path}.{key}", **ctx)
    return value


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def _load_json(path: Path) -> tuple[Any, str | None]:
    """Parsed JSON, or ``(None, reason)`` when the file cannot be read as JSON."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, "file not found"
    except (OSError, UnicodeDecodeError) as err:
        return None, f"cannot read file: {err}"
    try:
        return json.loads(text), None
    except (ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        return None, f"not valid JSON: {err}"


def _top_level_lists(data: Any, sink: _Sink) -> dict[str, list] | None:
    """The three COCO lists (an absent or mistyped one becomes empty after a finding)."""
    if not isinstance(data, dict):
        sink.add("E-json", f"top level must be a JSON object, got {type(data).__name__}")
        return None
    out = {}
    for key in ("images", "annotations", "categories"):
        value = data.get(key, _MISSING)
        if value is _MISSING:
            sink.add("E-missing-field", f"missing top-level key {key!r}", key)
            value = []
        elif not isinstance(value, list):
            sink.add("E-field-type", f"{key} must be a list, got {type(value).__name__}", key)
            value = []
        out[key] = value
    return out


def _read_descriptions(descriptions: str | Path | Mapping, findings: list[Finding]) -> tuple[Mapping | None, str]:
    """Category-id-keyed table of a descriptions file, and the name findings about it carry.

    Accepts ``{"categories": {id: {...}}}`` (``keypoint_descriptions.json``) or ``{id: {...}}``.
    """
    if isinstance(descriptions, Mapping):
        data, source = descriptions, "<descriptions>"
    else:
        source = str(descriptions)
        data, reason = _load_json(Path(descriptions))
        if reason is not None:
            findings.append(Finding("E-json", f"descriptions: {reason}", source))
            return None, source
    table = data.get("categories", data) if isinstance(data, Mapping) else None
    if not isinstance(table, Mapping):
        findings.append(Finding("E-json", "descriptions must be an object keyed by category id", source))
        return None, source
    return table, source


# --------------------------------------------------------------------------------------------
# categories
# --------------------------------------------------------------------------------------------


def _category_names(cat: dict, path: str, sink: _Sink, ctx: dict) -> list | None:
    if "keypoints" not in cat:
        sink.add("E-missing-field", "missing 'keypoints' (keypoint names)", f"{path}.keypoints", **ctx)
        return None
    names = cat["keypoints"]
    if not isinstance(names, list):
        sink.add("E-field-type", f"keypoints must be a list of names, got {_short(names)}", f"{path}.keypoints", **ctx)
        return None
    for j, name in enumerate(names):
        if not isinstance(name, str):
            sink.add(
                "E-field-type", f"keypoint name must be a string, got {_short(name)}", f"{path}.keypoints[{j}]", **ctx
            )
    return names


def _category_edges(cat: dict, path: str, sink: _Sink, ctx: dict) -> list[tuple[int, int, int]]:
    # PoseAnything/CapeX read coco.cats[cat]['skeleton'] unconditionally
    if "skeleton" not in cat:
        sink.add("E-missing-field", "missing 'skeleton'", f"{path}.skeleton", **ctx)
        return []
    skeleton = cat["skeleton"]
    if not isinstance(skeleton, list):
        sink.add(
            "E-field-type",
            f"skeleton must be a list of [a, b] pairs, got {_short(skeleton)}",
            f"{path}.skeleton",
            **ctx,
        )
        return []
    edges = []
    for j, edge in enumerate(skeleton):
        if isinstance(edge, list) and len(edge) == 2 and all(_is_int(v) for v in edge):
            edges.append((j, edge[0], edge[1]))
        else:
            sink.add(
                "E-field-type",
                f"skeleton edge must be a pair of integers, got {_short(edge)}",
                f"{path}.skeleton[{j}]",
                **ctx,
            )
    return edges


def _optional_str(obj: dict, key: str, path: str, sink: _Sink, *, required: bool, ctx: dict) -> str | None:
    if key not in obj:
        if required:
            sink.add("E-missing-field", f"missing {key!r}", f"{path}.{key}", **ctx)
        return None
    if not isinstance(obj[key], str):
        sink.add("E-field-type", f"{key} must be a string, got {_short(obj[key])}", f"{path}.{key}", **ctx)
        return None
    return obj[key]


def _index_categories(raw: list, sink: _Sink) -> dict[Any, _Cat]:
    cats: dict[Any, _Cat] = {}
    for i, cat in enumerate(raw):
        path = f"categories[{i}]"
        if not isinstance(cat, dict):
            sink.add("E-field-type", f"category must be an object, got {_short(cat)}", path)
            continue
        cid = _id_field(cat, "id", path, sink)
        if cid is _MISSING or cid is _BAD:
            continue
        ctx = {"category_id": cid}
        if cid in cats:
            # the official test set iterates getCatIds(): the category would be evaluated twice
            sink.add(
                "E-dup-category-id",
                f"category id {cid} already used by categories[{cats[cid].index}]",
                f"{path}.id",
                **ctx,
            )
            continue
        cats[cid] = _Cat(
            index=i,
            id=cid,
            name=_optional_str(cat, "name", path, sink, required=True, ctx=ctx),
            supercategory=_optional_str(cat, "supercategory", path, sink, required=False, ctx=ctx),
            names=_category_names(cat, path, sink, ctx),
            edges=_category_edges(cat, path, sink, ctx),
        )
    return cats


def _annotation_lengths(anns: list, cats: dict[Any, _Cat]) -> dict[Any, Counter]:
    """Per category, how many annotations carry each keypoint count (len(keypoints) / 3)."""
    lengths: dict[Any, Counter] = {cid: Counter() for cid in cats}
    for ann in anns:
        if not isinstance(ann, dict):
            continue
        cid, kpts = ann.get("category_id"), ann.get("keypoints")
        if isinstance(cid, (list, dict)) or cid not in cats or not isinstance(kpts, list):
            continue
        if kpts and len(kpts) % 3 == 0:
            lengths[cid][len(kpts) // 3] += 1
    return lengths


def _set_keypoint_counts(cats: dict[Any, _Cat], lengths: dict[Any, Counter], sink: _Sink) -> None:
    """K per category: the names when there are any, else what the annotations carry.

    The official loader takes K from each annotation (``len(keypoints) / 3``), never from the
    names, so an empty name list does not break it; a name list that disagrees with the
    annotations does break every method that pads or describes keypoints by name.
    """
    for cat in cats.values():
        if cat.names:
            cat.k, cat.k_source = len(cat.names), "names"
            continue
        common = lengths[cat.id].most_common(1)
        cat.k, cat.k_source = (common[0][0], "annotations") if common else (0, "names")
        if cat.names is not None and common:
            sink.add(
                "W-kpt-names-missing",
                f"category {cat.name!r} lists no keypoint names; its annotations carry {cat.k} keypoints "
                f"(K={cat.k} taken from them, as the official loader does; text methods need --descriptions)",
                f"categories[{cat.index}].keypoints",
                cat=cat,
            )


def _check_keypoint_names(cat: _Cat, sink: _Sink) -> None:
    path = f"categories[{cat.index}].keypoints"
    if cat.k > MAX_KPT_NUM:
        sink.add(
            "E-kpt-too-many", f"K={cat.k} exceeds the official padding of {MAX_KPT_NUM} keypoint rows", path, cat=cat
        )
    names = [n for n in (cat.names or []) if isinstance(n, str)]
    empty = [j for j, n in enumerate(cat.names or []) if isinstance(n, str) and not n.strip()]
    if empty:
        sink.add(
            "W-kpt-name-empty",
            f"{len(empty)} empty keypoint name(s) at index {empty[:10]}",
            f"{path}[{empty[0]}]",
            cat=cat,
        )
    duplicated = sorted(n for n, c in Counter(n for n in names if n.strip()).items() if c > 1)
    if duplicated:
        first = next(j for j, n in enumerate(cat.names) if n == duplicated[0])
        sink.add(
            "W-kpt-name-duplicate",
            f"keypoint names used more than once: {duplicated[:10]}",
            f"{path}[{first}]",
            cat=cat,
        )


def _skeleton_base(cat: _Cat) -> str:
    """``1-based`` only when the evidence is unambiguous: index K is used and index 0 is not."""
    if not cat.edges:
        return "empty"
    indices = [v for _, a, b in cat.edges for v in (a, b)]
    if min(indices) >= 1 and cat.k in indices:  # K is invalid 0-based, valid 1-based; 0 never used
        return "1-based"
    return "0-based"


def _check_skeleton(cat: _Cat, sink: _Sink) -> None:
    path = f"categories[{cat.index}].skeleton"
    cat.base = _skeleton_base(cat)
    if cat.base == "empty":
        sink.add(
            "I-skeleton-empty",
            f"category {cat.name!r} has no skeleton edges (graph methods see no edges)",
            path,
            cat=cat,
        )
        return
    offset = 1 if cat.base == "1-based" else 0
    if offset:
        sink.add(
            "W-skeleton-one-based",
            f"edges use indices 1..{cat.k} and never 0: looks 1-based; PoseAnything/CapeX read edges as "
            f"0-based and would silently shift every edge by one",
            path,
            cat=cat,
        )
    seen: dict[tuple[int, int], int] = {}
    for j, a, b in cat.edges:
        if not (offset <= a < cat.k + offset and offset <= b < cat.k + offset):
            sink.add(
                "E-skeleton-range",
                f"edge [{a}, {b}] outside {offset}..{cat.k - 1 + offset} (K={cat.k})",
                f"{path}[{j}]",
                cat=cat,
            )
        if a == b:
            sink.add("W-skeleton-self-loop", f"edge [{a}, {b}] joins keypoint {a} to itself", f"{path}[{j}]", cat=cat)
        key = (min(a, b), max(a, b))
        if key in seen:
            sink.add(
                "W-skeleton-duplicate",
                f"edge [{a}, {b}] repeats edge {seen[key]} of the skeleton",
                f"{path}[{j}]",
                cat=cat,
            )
        else:
            seen[key] = j


def _check_descriptions(cat: _Cat, table: Mapping, source: str, findings: list[Finding]) -> None:
    """Compare a category with its entry in the descriptions file (keyed by the category id as a string)."""

    def add(code: str, message: str, path: str) -> None:
        findings.append(Finding(code, message, source, path, category_id=cat.id, category_name=cat.name))

    key = str(cat.id)
    entry = table.get(key, table.get(cat.id))  # JSON keys are strings; a Python mapping may use ints
    if entry is None:
        add(
            "W-desc-missing",
            f"no entry for category {cat.id} ({cat.name!r}): text methods fall back to the keypoint names",
            f'categories["{key}"]',
        )
        return
    if not isinstance(entry, Mapping):
        add("E-field-type", f"entry must be an object, got {_short(entry)}", f'categories["{key}"]')
        return
    if "name" in entry and entry["name"] != cat.name:
        add(
            "W-desc-name",
            f"descriptions file names category {cat.id} {entry['name']!r}, the annotation file {cat.name!r}",
            f'categories["{key}"].name',
        )
    for variant in TEXT_VARIANTS:
        if variant in entry:
            _check_text_variant(cat, entry[variant], f'categories["{key}"].{variant}', add)


def _check_text_variant(cat: _Cat, texts: Any, path: str, add) -> None:
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        add("E-field-type", f"expected a list of strings, got {_short(texts)}", path)
        return
    if len(texts) > cat.k:  # the run warns the same way (cape_bench.data.mp100.description_count_warning)
        add("W-desc-count", description_count_warning(path, cat.id, cat.name, texts, cat.k), path)
    elif len(texts) < cat.k:  # the run refuses it, as the official loader fails on it
        add("E-desc-count", f"{len(texts)} texts for K={cat.k} keypoints: a text method has no text for the last "
                            f"{cat.k - len(texts)} keypoint(s) (the official loader fails on this too)", path)
    empty = [j for j, t in enumerate(texts) if not t.strip()]
    if empty:
        add("W-desc-empty", f"{len(empty)} empty text(s) at index {empty[:10]}", f"{path}[{empty[0]}]")
    duplicated = sorted(t for t, c in Counter(t for t in texts if t.strip()).items() if c > 1)
    if duplicated:
        add(
            "W-desc-duplicate",
            f"{len(duplicated)} text(s) given to several keypoints, which a text-only "
            f"method cannot tell apart: {_short(duplicated, 120)}",
            path,
        )


def _check_folders(cat: _Cat, sink: _Sink) -> None:
    """Flag image folders that share no word with the category name or supercategory.

    MP-100 lays images out as ``<category folder>/...``; a category whose images come from an
    unrelated folder has mixed-up file names (and then usually wrong image sizes too).
    """
    words = _tokens(cat.name or "") | _tokens(cat.supercategory or "")
    words |= {_FOLDER_ALIASES[w] for w in words if w in _FOLDER_ALIASES}
    if not words:
        return
    total = sum(cat.folders.values())
    for folder, count in cat.folders.items():
        if folder and not (_tokens(folder) & words):
            sink.add(
                "W-image-folder",
                f"{count} of its {total} annotations have their image under {folder + '/'!r}, unrelated to "
                f"category {cat.name!r} ({cat.supercategory}); e.g. {cat.folder_example[folder]}",
                f"categories[{cat.index}]",
                cat=cat,
            )


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------


def _image_size(img: dict, key: str, path: str, sink: _Sink, ctx: dict) -> float | None:
    value = _number(img, key, path, sink, required=True, **ctx)
    if value is _MISSING or value is _BAD:
        return None
    if value <= 0:
        sink.add("E-image-size", f"{key} must be positive, got {value:g}", f"{path}.{key}", **ctx)
        return None
    return value


def _index_images(raw: list, sink: _Sink) -> dict[Any, _Img]:
    imgs: dict[Any, _Img] = {}
    for i, img in enumerate(raw):
        path = f"images[{i}]"
        if not isinstance(img, dict):
            sink.add("E-field-type", f"image must be an object, got {_short(img)}", path)
            continue
        iid = _id_field(img, "id", path, sink)
        if iid is _MISSING or iid is _BAD:
            continue
        ctx = {"image": iid}
        if iid in imgs:
            sink.add("E-dup-image-id", f"image id {iid} already used by images[{imgs[iid].index}]", f"{path}.id", **ctx)
            continue
        file_name = _optional_str(img, "file_name", path, sink, required=True, ctx=ctx)
        if isinstance(file_name, str) and leaves_root(file_name):
            sink.add("E-image-path", f"file_name {file_name!r} leaves the image root (absolute or '..'): run "
                                     f"refuses it unless {ALLOW_OUTSIDE_ENV}=1", f"{path}.file_name", **ctx)
        imgs[iid] = _Img(
            index=i,
            id=iid,
            file_name=file_name,
            width=_image_size(img, "width", path, sink, ctx),
            height=_image_size(img, "height", path, sink, ctx),
        )
    return imgs


def _check_unused_images(imgs: dict[Any, _Img], sink: _Sink) -> None:
    for img in imgs.values():
        if img.num_annotations == 0:
            sink.add(
                "W-image-unused", f"image {img.file_name!r} has no annotation", f"images[{img.index}]", image=img.id
            )


def _check_image_files(imgs: dict[Any, _Img], images_dir: Path, sink: _Sink) -> int | None:
    """Report image files absent under ``images_dir``; returns how many are missing."""
    if not images_dir.is_dir():
        sink.add("E-images-dir", f"images directory {str(images_dir)!r} does not exist")
        return None
    missing = 0
    for img in imgs.values():
        if img.file_name is None:
            continue
        file = images_dir / img.file_name
        if not file.is_file():
            missing += 1
            sink.add(
                "E-image-missing",
                f"{img.file_name} not found under {images_dir}",
                f"images[{img.index}].file_name",
                image=img.id,
            )
        elif not _decodes(file):
            sink.add("E-image-corrupt", f"{img.file_name} under {images_dir} cannot be decoded as an image",
                     f"images[{img.index}].file_name", image=img.id)
    return missing


def _decodes(file: Path) -> bool:
    """True when ``file`` opens as an image (header and size; the pixels are not decoded)."""
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    try:
        with Image.open(file) as im:
            im.verify()
        return True
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return False


# --------------------------------------------------------------------------------------------
# annotations
# --------------------------------------------------------------------------------------------


@dataclass
class _Ann:
    """The validated fields of one annotation (``None``: absent; ``_BAD``: present but unusable)."""

    id: Any
    img: _Img | None
    cat: _Cat | None
    keypoints: list[float] | None | object
    bbox: list[float] | None | object
    area: float | None | object
    num_keypoints: float | None | object
    iscrowd: float | None | object


def _keypoints_field(ann: dict, path: str, sink: _Sink, ctx: dict) -> Any:
    if "keypoints" not in ann:
        sink.add("E-missing-field", "missing 'keypoints'", f"{path}.keypoints", **ctx)
        return _BAD
    kpts = ann["keypoints"]
    if not isinstance(kpts, list):
        sink.add("E-field-type", f"keypoints must be a list of numbers, got {_short(kpts)}", f"{path}.keypoints", **ctx)
        return _BAD
    values = _numbers(kpts, f"{path}.keypoints", sink, **ctx)
    return _BAD if values is None else values


def _bbox_field(ann: dict, path: str, sink: _Sink, ctx: dict) -> Any:
    if "bbox" not in ann:
        return None  # legal: the official loader just drops the instance
    box = ann["bbox"]
    if not isinstance(box, list) or len(box) != 4:
        sink.add("E-field-type", f"bbox must be [x, y, w, h], got {_short(box)}", f"{path}.bbox", **ctx)
        return _BAD
    values = _numbers(box, f"{path}.bbox", sink, **ctx)
    return _BAD if values is None else values


def _optional_number(ann: dict, key: str, path: str, sink: _Sink, ctx: dict) -> Any:
    value = _number(ann, key, path, sink, required=False, **ctx)
    return None if value is _MISSING else value


_UNKNOWN_REFERENCE = {"image_id": ("E-unknown-image", "an image"), "category_id": ("E-unknown-category", "a category")}


def _reference(ann: dict, key: str, table: dict, path: str, sink: _Sink, ctx: dict) -> Any:
    """The image or category an annotation points at, or None (reported) when it points nowhere."""
    ref = _id_field(ann, key, path, sink, **ctx)
    if ref is _MISSING or ref is _BAD:
        return None
    if ref not in table:
        code, what = _UNKNOWN_REFERENCE[key]
        sink.add(code, f"{key} {_short(ref)} is not the id of {what} in this file", f"{path}.{key}", **ctx)
        return None
    return table[ref]


def _parse_annotation(i: int, ann: dict, imgs: dict, cats: dict, seen: dict, sink: _Sink) -> _Ann:
    path = f"annotations[{i}]"
    aid = _id_field(ann, "id", path, sink)
    aid = None if aid is _MISSING or aid is _BAD else aid
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
    return _Ann(
        id=aid,
        img=img,
        cat=cat,
        keypoints=_keypoints_field(ann, path, sink, ctx),
        bbox=_bbox_field(ann, path, sink, ctx),
        area=_optional_number(ann, "area", path, sink, ctx),
        num_keypoints=_optional_number(ann, "num_keypoints", path, sink, ctx),
        iscrowd=_BAD if iscrowd is _MISSING else iscrowd,
    )


def _drop_reason(a: _Ann) -> tuple[str, str] | None:
    """Why the official loader skips a (valid) annotation, in the loader's own order, or None.

    ``getAnnIds(iscrowd=False)`` first, then the bbox sanitiser, then the keypoint filters of
    ``_load_coco_keypoint_annotation_kernel``.
    """
    if a.iscrowd != 0:
        return "W-drop-crowd", f"iscrowd={a.iscrowd:g}: getAnnIds(iscrowd=False) never returns it"
    if a.bbox is None:
        return "W-drop-no-bbox", "no bbox"
    if a.area is not None and a.area <= 0:
        return "W-drop-area", f"area={a.area:g} <= 0"
    if clean_bbox(a.bbox, a.img.width, a.img.height) is None:
        box = ", ".join(_fmt(v) for v in a.bbox)
        return "W-drop-clean-bbox", (
            f"clean bbox of [{box}] in the {a.img.width:g}x{a.img.height:g} image is empty (x2 <= x1 or y2 <= y1)"
        )
    if max(a.keypoints) == 0:
        return "W-drop-zero-kpts", "keypoints are all zero (max == 0)"
    if a.num_keypoints == 0:
        return "W-drop-num-kpts", "num_keypoints == 0"
    return None


def _triples(values: list[float]) -> list[tuple[float, float, float]]:
    return [(values[j], values[j + 1], values[j + 2]) for j in range(0, len(values) - 2, 3)]


def _points_text(points: list[tuple[int, float, float]]) -> str:
    shown = ", ".join(f"#{j} ({_fmt(x)}, {_fmt(y)})" for j, x, y in points[:3])
    return shown + (f" and {len(points) - 3} more" if len(points) > 3 else "")


def _check_keypoint_values(a: _Ann, path: str, sink: _Sink, ctx: dict) -> None:
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
    if a.num_keypoints not in (None, _BAD) and a.num_keypoints != visible:
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


def _check_bbox_values(a: _Ann, path: str, sink: _Sink, ctx: dict) -> None:
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


def _check_annotation(i: int, ann: Any, imgs: dict, cats: dict, seen: dict, sink: _Sink) -> None:
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


def _loadable(a: _Ann) -> bool:
    """Whether the official loader would reach this annotation's filters without crashing."""
    fields_ok = all(v is not _BAD for v in (a.keypoints, a.bbox, a.area, a.num_keypoints, a.iscrowd))
    return (
        fields_ok
        and a.img is not None
        and a.img.width is not None
        and a.img.height is not None
        and a.cat is not None
        and bool(a.keypoints)
    )


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def _category_summary(cat: _Cat) -> CategorySummary:
    return CategorySummary(
        id=cat.id,
        name=cat.name,
        supercategory=cat.supercategory,
        num_keypoints=cat.k,
        keypoint_source=cat.k_source,
        skeleton_edges=len(cat.edges),
        skeleton_base=cat.base,
        num_annotations=cat.num_annotations,
        num_kept=cat.num_kept,
    )


def check_annotation_file(
    path: str | Path,
    images_dir: str | Path | None = None,
    descriptions: str | Path | Mapping | None = None,
    min_instances: int = DEFAULT_MIN_INSTANCES,
) -> DoctorReport:
    """Check one MP-100-format (COCO keypoint) annotation file. Never raises on bad input.

    Args:
        path: the annotation JSON.
        images_dir: image root; when given, every ``file_name`` must exist under it.
        descriptions: keypoint-descriptions file (format of ``mp100/keypoint_descriptions.json``),
            or its parsed content; when given, each category is compared with its entry.
        min_instances: kept instances a category needs (shots + queries of one episode; 20 =
            5 shots + 15 queries).

    Returns:
        The report; ``report.has_errors`` decides the CLI's exit status.
    """
    path = Path(path)
    sink = _Sink(str(path))
    report = DoctorReport(file=str(path), findings=sink.items)
    data, reason = _load_json(path)
    if reason is not None:
        sink.add("E-json", reason)
        return report
    lists = _top_level_lists(data, sink)
    if lists is None:
        return report
    cats = _index_categories(lists["categories"], sink)
    imgs = _index_images(lists["images"], sink)
    _set_keypoint_counts(cats, _annotation_lengths(lists["annotations"], cats), sink)
    seen: dict[Any, int] = {}
    for i, ann in enumerate(lists["annotations"]):
        _check_annotation(i, ann, imgs, cats, seen, sink)
    table, source = _read_descriptions(descriptions, sink.items) if descriptions is not None else (None, "")
    for cat in cats.values():
        _check_category(cat, table, source, min_instances, sink)
    _check_unused_images(imgs, sink)
    missing = _check_image_files(imgs, Path(images_dir), sink) if images_dir is not None else None
    report.summary = Summary(
        num_images=len(lists["images"]),
        num_annotations=len(lists["annotations"]),
        num_categories=len(lists["categories"]),
        num_kept=sum(c.num_kept for c in cats.values()),
        categories=tuple(_category_summary(c) for c in cats.values()),
        images_dir=None if images_dir is None else str(images_dir),
        num_images_missing=missing,
    )
    return report


def _check_category(cat: _Cat, table: Mapping | None, source: str, min_instances: int, sink: _Sink) -> None:
    _check_keypoint_names(cat, sink)
    _check_skeleton(cat, sink)
    if table is not None:
        _check_descriptions(cat, table, source, sink.items)
    if cat.num_kept < min_instances:
        sink.add(
            "W-few-instances",
            f"{cat.num_kept} kept instances (of {cat.num_annotations} annotations) < "
            f"{min_instances} = shots + queries: episodes cannot be drawn",
            f"categories[{cat.index}]",
            cat=cat,
        )
    _check_folders(cat, sink)


def exit_status(reports: list[DoctorReport]) -> int:
    """Process exit status for ``data check``: 1 when any report has an error, else 0."""
    return 1 if any(r.has_errors for r in reports) else 0


def report_to_dict(report: DoctorReport) -> dict:
    """JSON-ready form of a report (for ``--json``)."""
    return {
        "file": report.file,
        "ok": not report.has_errors,
        "severity_counts": report.severity_counts(),
        "code_counts": report.code_counts(),
        "summary": None if report.summary is None else asdict(report.summary),
        "findings": [{**asdict(f), "severity": f.severity} for f in report.findings],
    }


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------

_SEVERITY_STYLE = {ERROR: "bold red", WARNING: "yellow", INFO: "cyan"}
_SEVERITY_ORDER = {ERROR: 0, WARNING: 1, INFO: 2}


def _example_text(f: Finding) -> str:
    where = []
    if f.category_id is not None:
        where.append(f"cat {f.category_id}" + (f" {f.category_name}" if f.category_name else ""))
    if f.annotation_id is not None:
        where.append(f"ann {f.annotation_id}")
    elif f.image_id is not None:
        where.append(f"img {f.image_id}")
    if f.path:
        where.append(f.path)
    return (" · ".join(where) + ": " if where else "") + f.message


def _grouped(findings: list[Finding]) -> list[tuple[str, list[Finding]]]:
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        groups.setdefault(f.code, []).append(f)
    return sorted(groups.items(), key=lambda item: (_SEVERITY_ORDER[severity_of(item[0])], item[0]))


def _category_table(summary: Summary) -> Table:
    table = Table(title="categories", title_justify="left", show_edge=False, pad_edge=False)
    for column in ("id", "name", "supercategory", "K", "skeleton", "annotations", "kept"):
        table.add_column(column, justify="right" if column in ("id", "K", "annotations", "kept") else "left")
    for c in summary.categories:
        k = f"{c.num_keypoints}" + ("*" if c.keypoint_source == "annotations" else "")
        table.add_row(  # names come from the file: Text, never markup ("bed[/bold]")
            str(c.id),
            Text(str(c.name)),
            Text(str(c.supercategory or "")),
            k,
            f"{c.skeleton_edges} ({c.skeleton_base})",
            str(c.num_annotations),
            str(c.num_kept),
        )
    return table


def _findings_table(findings: list[Finding]) -> Table:
    table = Table(title="findings", title_justify="left", show_edge=False, pad_edge=False, show_lines=True)
    table.add_column("severity")
    table.add_column("code")
    table.add_column("n", justify="right")
    table.add_column("what / first examples", ratio=1)
    for code, group in _grouped(findings):
        severity = severity_of(code)
        body = Text(CODES[code], style="bold")
        for f in group[:_EXAMPLES_SHOWN]:
            body.append("\n  " + _example_text(f))  # Text, not markup: messages contain brackets
        if len(group) > _EXAMPLES_SHOWN:
            body.append(f"\n  … and {len(group) - _EXAMPLES_SHOWN} more", style="dim")
        table.add_row(Text(severity, style=_SEVERITY_STYLE[severity]), code, str(len(group)), body)
    return table


def render_report(report: DoctorReport, console: Console | None = None, show_categories: bool = True) -> None:
    """Print a report: header counts, per-category table, findings grouped by code with first examples.

    Args:
        report: from :func:`check_annotation_file`.
        console: a ``rich.console.Console``; a new one on stdout when None.
        show_categories: print the per-category table (one row per category).
    """
    console = console or Console()
    console.print(Text(report.file, style="bold"))
    s = report.summary
    if s is not None:
        line = (
            f"{s.num_images} images · {s.num_annotations} annotations · {s.num_categories} categories · "
            f"{s.num_kept} instances kept by the official loader"
        )
        if s.images_dir is not None and s.num_images_missing is not None:
            line += f" · {s.num_images_missing} image files missing under {s.images_dir}"
        console.print(Text(line))
        if s.categories and show_categories:
            console.print(_category_table(s))
            if any(c.keypoint_source == "annotations" for c in s.categories):
                console.print(
                    Text("  * K taken from the annotations (the category lists no keypoint names)", style="dim")
                )
    if report.findings:
        console.print(_findings_table(report.findings))
    counts = report.severity_counts()
    verdict = Text("FAIL", style="bold red") if report.has_errors else Text("OK", style="bold green")
    console.print(
        Text.assemble(verdict, f"  {counts[ERROR]} error(s), {counts[WARNING]} warning(s), {counts[INFO]} info")
    )
