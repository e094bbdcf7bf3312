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

from cape_bench.data.doctor.check import check_annotation_file, exit_status, report_to_dict
from cape_bench.data.doctor.findings import (
    CODES,
    DEFAULT_MIN_INSTANCES,
    ERROR,
    INFO,
    MAX_KPT_NUM,
    TEXT_VARIANTS,
    WARNING,
    CategorySummary,
    DoctorReport,
    Finding,
    Summary,
    severity_of,
)
from cape_bench.data.doctor.render import render_report

__all__ = [
    "CODES",
    "DEFAULT_MIN_INSTANCES",
    "ERROR",
    "INFO",
    "MAX_KPT_NUM",
    "TEXT_VARIANTS",
    "WARNING",
    "CategorySummary",
    "DoctorReport",
    "Finding",
    "Summary",
    "check_annotation_file",
    "exit_status",
    "render_report",
    "report_to_dict",
    "severity_of",
]
