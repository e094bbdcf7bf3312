"""The doctor's internal records, field readers that turn bad values into findings, and file loading."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cape_bench.data.doctor.findings import BAD, CODES, MISSING, Finding

# --------------------------------------------------------------------------------------------
# internal records
# --------------------------------------------------------------------------------------------


@dataclass
class CategoryRecord:
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
class ImageRecord:
    index: int
    id: Any
    file_name: str | None
    width: float | None  # None when missing or invalid
    height: float | None
    num_annotations: int = 0


@dataclass
class FindingSink:
    """Collects findings for one file."""

    file: str
    items: list[Finding] = field(default_factory=list)

    def add(
        self,
        code: str,
        message: str,
        path: str = "",
        *,
        cat: CategoryRecord | None = None,
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


def _numbers(values: list, path: str, sink: FindingSink, **ctx: Any) -> list[float] | None:
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


def _number(obj: dict, key: str, path: str, sink: FindingSink, *, required: bool, **ctx: Any) -> Any:
    """A finite number field as float; ``MISSING`` when absent, ``BAD`` after reporting a bad value."""
    if key not in obj:
        if required:
            sink.add("E-missing-field", f"missing {key!r}", f"{path}.{key}", **ctx)
        return MISSING
    value = obj[key]
    if not _is_number(value):
        sink.add("E-field-type", f"{key} must be a number, got {_short(value)}", f"{path}.{key}", **ctx)
        return BAD
    as_float = _as_float(value)
    if as_float is None:
        sink.add("E-non-finite", f"{key} is not finite: {_short(value)}", f"{path}.{key}", **ctx)
        return BAD
    return as_float


def _id_field(obj: dict, key: str, path: str, sink: FindingSink, **ctx: Any) -> Any:
    """An id or reference field; non-integer ids are reported but still usable for matching."""
    if key not in obj:
        sink.add("E-missing-field", f"missing {key!r}", f"{path}.{key}", **ctx)
        return MISSING
    value = obj[key]
    if isinstance(value, (list, dict)):  # unhashable: cannot index or match anything
        sink.add("E-field-type", f"{key} must be an integer, got {_short(value)}", f"{path}.{key}", **ctx)
        return BAD
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


def _top_level_lists(data: Any, sink: FindingSink) -> dict[str, list] | None:
    """The three COCO lists (an absent or mistyped one becomes empty after a finding)."""
    if not isinstance(data, dict):
        sink.add("E-json", f"top level must be a JSON object, got {type(data).__name__}")
        return None
    out = {}
    for key in ("images", "annotations", "categories"):
        value = data.get(key, MISSING)
        if value is MISSING:
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
