"""``cape-bench tables``: the headline table in the layout of the CAPE papers / the CapeNext README.

Method, backbone, split 1–5, mean; one block per shots; the best value of each column in bold
(markdown ``**x**``, LaTeX ``\\textbf{x}``) when the paired test over episodes resolves its lead over the runner-up
(``paired.csv``), marked ``≈`` otherwise, and the run's paired comparisons listed under the table. CSV is plain (no
markup), one row per method and shots.
The "mean" is over every split of the block, and left empty for a method that lacks one of them.
Methods that use inputs beyond the support set are marked † with a footnote.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from cape_bench.report.formatting import DASH, is_missing
from cape_bench.report.headline import Block, _ceiling_rows, _comparisons, _leads, headline_blocks
from cape_bench.report.runs import ReportError, load_runs

FORMATS = ("md", "latex", "csv")


def render_tables(run_dirs: list[Path], fmt: str, metric: str = "PCK@0.2") -> str:
    """The headline table of one or more run directories as markdown, LaTeX or CSV text.

    Args:
        run_dirs: scored run directories; several are combined (same protocol and metric versions).
        fmt: ``"md"``, ``"latex"`` or ``"csv"``.
        metric: a ``summary.csv`` metric (``PCK@0.05`` … ``PCK@0.25``, ``mPCK``, ``AUC``, ``NME``, ``EPE``).

    Raises:
        ReportError: unknown format or metric, or runs that cannot be combined.
    """
    if fmt not in FORMATS:
        raise ReportError(f"unknown table format {fmt!r}; choose from {', '.join(FORMATS)}")
    runs = load_runs(run_dirs, tables=("summary.csv", "ceiling.csv"))
    blocks = headline_blocks(runs, metric, with_intervals=False)
    # the protocol ceiling (what a perfect method scores under the official averaging) is a PCK property
    ceilings = {b.shots: _ceiling_rows(runs, b) for b in blocks} if metric.startswith("PCK") else {}
    if fmt == "csv":
        return _csv(blocks, ceilings)
    import pandas as pd  # noqa: PLC0415

    paired = {}
    for r in runs:
        file = Path(r.path) / "paired.csv"
        if file.is_file():
            frame = pd.read_csv(file)
            paired[r.label] = frame[frame["metric"] == metric]  # only the metric tested; other metrics: bold as is
    render = _markdown if fmt == "md" else _latex
    leads = {block.shots: _leads(block, paired) for block in blocks}
    parts = [render(block, ceilings.get(block.shots, []), leads[block.shots]) for block in blocks]
    comparisons = [c for c in _comparisons(runs) if metric == "PCK@0.2"]
    if comparisons:
        lines = [f"{c['where']}: {c['text']}" for c in comparisons]
        parts.append("\n".join(f"- {line}" for line in lines) if fmt == "md"
                     else "\n".join(f"% {_tex(line)}" for line in lines))
    if any(lead is False for block_leads in leads.values() for lead in block_leads.values()):
        parts.append("≈ best in its column, but not resolved from the runner-up (paired test over episodes)"
                     if fmt == "md" else "% $\\approx$ best in its column, but not resolved from the runner-up")
    flagged = {}
    for block in blocks:
        for row in block.rows:
            if row.extra_inputs:
                flagged[row.label] = ", ".join(row.extra_inputs)
    if flagged:
        note = "; ".join(f"{label}: {what}" for label, what in flagged.items())
        parts.append(f"† uses input beyond the support set: {note}" if fmt == "md"
                     else f"% $^\\dagger$ uses input beyond the support set: {_tex(note)}")
    if metric == "mPCK":  # name the threshold set next to every mPCK: papers average different ones
        from cape_bench.metrics.pck import mpck_definition  # noqa: PLC0415

        sets = {tuple(r.meta.get("config", {}).get("protocol", {}).get("pck_thresholds", ())) for r in runs}
        text = "; ".join(f"{mpck_definition(s)}" for s in sorted(sets) if s)
        parts.append(text if fmt == "md" else f"% {text}")
    if any(row.reference for block in blocks for row in block.rows):
        parts.append("‡ reads the query's ground truth: a reference for the pipeline, never ranked" if fmt == "md"
                     else "% $^\\ddagger$ reads the query's ground truth: a reference for the pipeline, never ranked")
    return "\n\n".join(parts) + "\n"


def _title(block: Block) -> str:
    unit = f" ({block.metric.unit})" if block.metric.unit else ""
    return f"{block.metric.name}{unit}, {block.shots}-shot"


def _number(value, digits: int = 2) -> str:
    return "" if is_missing(value) else f"{value:.{digits}f}"


def _ceiling_values(ceiling: dict, digits: int = 2) -> list[str]:
    return [_number(cell["value"], digits) or DASH for cell in ceiling["cells"]]


def _mark(block: Block, row, col, text: str, leads: dict, bold, tie) -> str:
    if not block.is_best(row, col):
        return text
    return tie(text) if leads.get(col) is False else bold(text)


def _markdown(block: Block, ceilings: list[dict], leads: dict | None = None) -> str:
    leads = leads or {}
    head = ["Method", "Backbone", *[f"Split {s}" for s in block.splits], "Mean"]
    lines = [f"**{_title(block)}**", "", "| " + " | ".join(head) + " |",
             "|" + "|".join([":---", ":---"] + ["---:"] * (len(head) - 2)) + "|"]
    for row in block.rows:
        cells = [row.label + (" †" if row.extra_inputs else "") + (" ‡" if row.reference else ""), row.backbone]
        for col in block.columns:
            text = _number(row.value(col)) or DASH
            cells.append(_mark(block, row, col, text, leads, lambda t: f"**{t}**", lambda t: f"{t}≈"))
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    for ceiling in ceilings:
        lines.append("| *" + ceiling["label"] + "* | | " + " | ".join(f"*{v}*" for v in _ceiling_values(ceiling)) + " |")
    return "\n".join(lines)


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "—": "---"}


def _tex(text: str) -> str:
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in text)


def _latex(block: Block, ceilings: list[dict], leads: dict | None = None) -> str:
    leads = leads or {}
    ncols = len(block.columns)
    lines = [
        f"% {_title(block)} (cape-bench); needs \\usepackage{{booktabs}}",
        "\\begin{tabular}{ll" + "r" * ncols + "}",
        "\\toprule",
        " & ".join(["Method", "Backbone", *[f"Split {s}" for s in block.splits], "Mean"]) + " \\\\",
        "\\midrule",
    ]
    for row in block.rows:
        cells = [_tex(row.label) + ("$^\\dagger$" if row.extra_inputs else "") + ("$^\\ddagger$" if row.reference
                                                                              else ""), _tex(row.backbone)]
        for col in block.columns:
            text = _number(row.value(col)) or "---"
            cells.append(_mark(block, row, col, text, leads, lambda t: f"\\textbf{{{t}}}", lambda t: f"{t}$\\approx$"))
        lines.append(" & ".join(cells) + " \\\\")
    if ceilings:
        lines.append("\\midrule")
    for ceiling in ceilings:
        lines.append(" & ".join([f"\\emph{{{_tex(ceiling['label'])}}}", "",
                                 *[f"\\emph{{{v}}}" for v in _ceiling_values(ceiling)]]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines)


def _csv(blocks: list[Block], ceilings: dict[int, list[dict]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    max_splits = sorted({s for b in blocks for s in b.splits})
    writer.writerow(["metric", "shots", "method", "backbone", "extra_inputs",
                     *[f"split{s}" for s in max_splits], "mean"])
    for block in blocks:
        for row in block.rows:
            writer.writerow([block.metric.name, block.shots, row.label, row.backbone, "; ".join(row.extra_inputs),
                             *[_number(row.values.get(s), 4) for s in max_splits], _number(row.mean, 4)])
        for ceiling in ceilings.get(block.shots, []):
            by_split = dict(zip(block.splits, ceiling["cells"][:-1], strict=True))
            writer.writerow([block.metric.name, block.shots, f"({ceiling['label']})", "", "",
                             *[_number(by_split[s]["value"], 4) if s in by_split else "" for s in max_splits],
                             _number(ceiling["cells"][-1]["value"], 4)])
    return buf.getvalue()
