"""The doctor's entry point: check one annotation file; exit status and JSON form of reports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cape_bench.data.doctor.annotations import _check_annotation
from cape_bench.data.doctor.categories import (
    _annotation_lengths,
    _check_descriptions,
    _check_folders,
    _check_keypoint_names,
    _check_skeleton,
    _index_categories,
    _set_keypoint_counts,
)
from cape_bench.data.doctor.fields import CategoryRecord, FindingSink, _load_json, _read_descriptions, _top_level_lists
from cape_bench.data.doctor.findings import DEFAULT_MIN_INSTANCES, CategorySummary, DoctorReport, Summary
from cape_bench.data.doctor.images import _check_image_files, _check_unused_images, _index_images

# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def _category_summary(cat: CategoryRecord) -> CategorySummary:
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
    sink = FindingSink(str(path))
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


def _check_category(cat: CategoryRecord, table: Mapping | None, source: str, min_instances: int, sink: FindingSink) -> None:
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
