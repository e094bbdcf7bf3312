"""Category checks: keypoint counts and names, skeletons, descriptions, image folders."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from cape_bench.data.doctor.fields import CategoryRecord, FindingSink, _id_field, _is_int, _short, _tokens
from cape_bench.data.doctor.findings import _FOLDER_ALIASES, BAD, MAX_KPT_NUM, MISSING, TEXT_VARIANTS, Finding
from cape_bench.data.mp100 import description_count_warning

# --------------------------------------------------------------------------------------------
# categories
# --------------------------------------------------------------------------------------------


def _category_names(cat: dict, path: str, sink: FindingSink, ctx: dict) -> list | None:
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


def _category_edges(cat: dict, path: str, sink: FindingSink, ctx: dict) -> list[tuple[int, int, int]]:
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


def _optional_str(obj: dict, key: str, path: str, sink: FindingSink, *, required: bool, ctx: dict) -> str | None:
    if key not in obj:
        if required:
            sink.add("E-missing-field", f"missing {key!r}", f"{path}.{key}", **ctx)
        return None
    if not isinstance(obj[key], str):
        sink.add("E-field-type", f"{key} must be a string, got {_short(obj[key])}", f"{path}.{key}", **ctx)
        return None
    return obj[key]


def _index_categories(raw: list, sink: FindingSink) -> dict[Any, CategoryRecord]:
    cats: dict[Any, CategoryRecord] = {}
    for i, cat in enumerate(raw):
        path = f"categories[{i}]"
        if not isinstance(cat, dict):
            sink.add("E-field-type", f"category must be an object, got {_short(cat)}", path)
            continue
        cid = _id_field(cat, "id", path, sink)
        if cid is MISSING or cid is BAD:
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
        cats[cid] = CategoryRecord(
            index=i,
            id=cid,
            name=_optional_str(cat, "name", path, sink, required=True, ctx=ctx),
            supercategory=_optional_str(cat, "supercategory", path, sink, required=False, ctx=ctx),
            names=_category_names(cat, path, sink, ctx),
            edges=_category_edges(cat, path, sink, ctx),
        )
    return cats


def _annotation_lengths(anns: list, cats: dict[Any, CategoryRecord]) -> dict[Any, Counter]:
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


def _set_keypoint_counts(cats: dict[Any, CategoryRecord], lengths: dict[Any, Counter], sink: FindingSink) -> None:
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


def _check_keypoint_names(cat: CategoryRecord, sink: FindingSink) -> None:
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


def _skeleton_base(cat: CategoryRecord) -> str:
    """``1-based`` only when the evidence is unambiguous: index K is used and index 0 is not."""
    if not cat.edges:
        return "empty"
    indices = [v for _, a, b in cat.edges for v in (a, b)]
    if min(indices) >= 1 and cat.k in indices:  # K is invalid 0-based, valid 1-based; 0 never used
        return "1-based"
    return "0-based"


def _check_skeleton(cat: CategoryRecord, sink: FindingSink) -> None:
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


def _check_descriptions(cat: CategoryRecord, table: Mapping, source: str, findings: list[Finding]) -> None:
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


def _check_text_variant(cat: CategoryRecord, texts: Any, path: str, add) -> None:
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


def _check_folders(cat: CategoryRecord, sink: FindingSink) -> None:
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
