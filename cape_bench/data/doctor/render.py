"""Rendering a doctor report in the terminal (rich tables)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cape_bench.data.doctor.findings import (
    _EXAMPLES_SHOWN,
    CODES,
    ERROR,
    INFO,
    WARNING,
    DoctorReport,
    Finding,
    Summary,
    severity_of,
)

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
