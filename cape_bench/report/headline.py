"""The headline table in the papers' layout: methods × split 1–5 + mean, one block per shots.

Shared by the HTML report (with the bootstrap interval, the protocol-ceiling row and the published
numbers) and by ``cape-bench tables`` (markdown / LaTeX / CSV).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from cape_bench.report.formatting import is_missing, mean_if_complete
from cape_bench.report.published import load_published, matching_rows
from cape_bench.report.runs import (
    ReportError,
    RunData,
    backbone_of,
    comparability,
    extra_inputs_of,
    method_rows,
    reads_ground_truth_of,
    text_encoder_of,
)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    scale: float  # stored value × scale = shown value
    unit: str
    higher_is_better: bool


def metric_spec(metric: str) -> MetricSpec:
    """How a ``summary.csv`` metric is shown: PCK/mPCK/AUC in %, NME as a fraction, EPE in px."""
    if metric.startswith("PCK@") or metric in ("mPCK", "AUC"):
        return MetricSpec(metric, 100.0, "%", True)
    if metric == "NME":
        return MetricSpec(metric, 1.0, "", False)
    if metric == "EPE":
        return MetricSpec(metric, 1.0, "px", False)
    return MetricSpec(metric, 1.0, "", True)


@dataclass
class Row:
    """One method row of one shots block (values already scaled for display)."""

    label: str
    method: str
    run: RunData
    backbone: str
    extra_inputs: list[str]
    values: dict[int, float | None]
    ci: dict[int, tuple[float, float] | None] = field(default_factory=dict)
    reference: bool = False  # reads the query ground truth (oracle): shown, never the best

    @property
    def mean(self) -> float | None:
        return mean_if_complete(list(self.values.values()))

    def value(self, col) -> float | None:
        return self.mean if col == "mean" else self.values.get(col)


@dataclass
class Block:
    shots: int
    splits: list[int]
    rows: list[Row]
    metric: MetricSpec

    @property
    def columns(self) -> list:
        return [*self.splits, "mean"]

    def best(self, col) -> float | None:
        """The best value of a column among the method rows (None with fewer than two values)."""
        values = [r.value(col) for r in self.rows if not r.reference and not is_missing(r.value(col))]
        if len(values) < 2:
            return None
        return max(values) if self.metric.higher_is_better else min(values)

    def is_best(self, row: Row, col) -> bool:
        best = self.best(col)
        value = row.value(col)
        return (best is not None and not row.reference and not is_missing(value) and math.isclose(value, best, rel_tol=0, abs_tol=1e-9))


def headline_blocks(runs: list[RunData], metric: str = "PCK@0.2", with_intervals: bool = True) -> list[Block]:
    """One :class:`Block` per shots over all runs (rows: every method of every run, in run order)."""
    spec = metric_spec(metric)
    available = sorted({m for r in runs for m in r.tables["summary.csv"]["metric"].unique()})
    if metric not in available:
        raise ReportError(f"metric {metric!r} is not in the runs' summary.csv; available: {', '.join(available)}")
    lookup: dict[tuple, float] = {}
    intervals: dict[tuple, tuple[float, float]] = {}
    shots_splits: dict[int, set[int]] = {}
    for r in runs:
        summary = r.tables["summary.csv"]
        for rec in summary[summary["metric"] == metric].itertuples(index=False):
            lookup[(r.label, rec.method, int(rec.split), int(rec.shots))] = float(rec.value) * spec.scale
            shots_splits.setdefault(int(rec.shots), set()).add(int(rec.split))
        if with_intervals and "intervals.csv" in r.tables:
            ints = r.tables["intervals.csv"]
            for rec in ints[ints["metric"] == metric].itertuples(index=False):
                intervals[(r.label, rec.method, int(rec.split), int(rec.shots))] = (
                    float(rec.ci95_low) * spec.scale, float(rec.ci95_high) * spec.scale)
    blocks = []
    for shots in sorted(shots_splits):
        splits = sorted(shots_splits[shots])
        rows = []
        for run, method, label in method_rows(runs):
            keys = {s: (run.label, method, s, shots) for s in splits}
            if not any(k in lookup for k in keys.values()):
                continue
            rows.append(Row(
                label=label, method=method, run=run, backbone=backbone_of(run, method),
                extra_inputs=extra_inputs_of(run, method),
                reference=reads_ground_truth_of(run, method),
                values={s: lookup.get(k) for s, k in keys.items()},
                ci={s: intervals.get(k) for s, k in keys.items()},
            ))
        blocks.append(Block(shots=shots, splits=splits, rows=rows, metric=spec))
    return blocks


# ---------------------------------------------------------------------------------------------- HTML section


def build(runs: list[RunData], colors: dict[str, str]) -> dict:
    """Context of ``headline.html.j2``."""
    published = load_published()
    dataset = runs[0].dataset
    comparable = {r.label: comparability(r.meta) for r in runs}
    blocks = []
    no_published: list[str] = []
    import pandas as pd  # noqa: PLC0415

    paired = {r.label: pd.read_csv(r.path / "paired.csv") for r in runs if (Path(r.path) / "paired.csv").is_file()}
    for block in headline_blocks(runs, "PCK@0.2"):
        leads = _leads(block, paired)
        rows = [_method_row(block, row, leads) for row in block.rows]
        ceilings = _ceiling_rows(runs, block)
        pub_rows = []
        if dataset == "mp100":
            for row in block.rows:
                if row.backbone == "—":
                    continue
                matches = matching_rows(published, row.method, row.backbone,
                                        text_encoder_of(row.run, row.method), block.shots)
                if not matches:
                    no_published.append(f"{row.label} ({row.backbone}, {block.shots}-shot)")
                for prow in matches:
                    pub_rows.append(_published_rows(block, row, prow, comparable[row.run.label][0]))
        blocks.append({"shots": block.shots, "columns": [f"split {s}" for s in block.splits] + ["mean"],
                       "rows": rows, "ceilings": ceilings, "published": pub_rows})
    flagged = [(r.display[m], ", ".join(extra_inputs_of(r, m))) for r in runs for m in r.methods()
               if extra_inputs_of(r, m)]
    notes = []
    if dataset != "mp100":
        notes.append(comparability(runs[0].meta)[1].replace("so no comparison is made",
                                                            "so none are shown and no comparison is made"))
    else:
        for label, (ok, why) in comparable.items():
            if not ok:
                notes.append(f"{label}: {why}.")
    no_backbone = sorted({r.display[m] for r in runs for m in r.methods() if backbone_of(r, m) == "—"})
    return {
        "comparisons": _comparisons(runs),
        "blocks": blocks,
        "flagged": flagged,
        "references": sorted({r.display[m] for r in runs for m in r.methods() if reads_ground_truth_of(r, m)}),
        "notes": notes,
        "no_published": no_published if dataset == "mp100" else [],
        "no_backbone": no_backbone,
        "colors": colors,
        "sources": sorted({p["source"] for b in blocks for p in b["published"]}),
    }


def _cell(value, best=False, ci=None, tie=False) -> dict:
    return {"value": value, "best": best and not tie, "tie": best and tie, "ci": ci}


def _leads(block: Block, paired: dict[str, object]) -> dict:
    """Column → whether the best row's lead over the runner-up is resolved by the paired test over episodes
    (False: unresolved; None: unknown — rows of different runs, or no ``paired.csv``); "mean": resolved in every
    split (unknown if any split is). The same rule as the terminal table (:func:`cape_bench.tables.print_headline`)."""
    from cape_bench.comparisons import is_resolved  # noqa: PLC0415

    leads = {}
    for col in block.splits:
        ranked = sorted((r for r in block.rows if not r.reference and not is_missing(r.value(col))),
                        key=lambda r: r.value(col), reverse=block.metric.higher_is_better)
        if len(ranked) < 2 or ranked[0].run is not ranked[1].run:
            leads[col] = None
            continue
        leads[col] = is_resolved(paired.get(ranked[0].run.label), ranked[0].method, ranked[1].method, col, block.shots)
    if leads:
        leads["mean"] = None if any(v is None for v in leads.values()) else all(leads.values())
    return leads


def _method_row(block: Block, row: Row, leads: dict | None = None) -> dict:
    leads = leads or {}
    cells = [_cell(row.values[s], block.is_best(row, s), row.ci.get(s), leads.get(s) is False) for s in block.splits]
    cells.append(_cell(row.mean, block.is_best(row, "mean"), tie=leads.get("mean") is False))
    return {"label": row.label, "method": row.method, "dagger": bool(row.extra_inputs), "backbone": row.backbone,
            "reference": row.reference, "cells": cells}


def _ceiling_rows(runs: list[RunData], block: Block) -> list[dict]:
    """The protocol ceiling per split (oracle under the official averaging); one row, or one per run if they differ."""
    per_run = []
    for r in runs:
        c = r.tables["ceiling.csv"]
        c = c[c["shots"] == block.shots]
        values = {int(s): float(v) * 100 for s, v in zip(c["split"], c["ceiling"], strict=True)}
        if values:
            per_run.append((r.label, [values.get(s) for s in block.splits]))
    distinct = {tuple(v) for _, v in per_run}
    if len(distinct) <= 1:
        per_run = per_run[:1]
        labels = ["protocol ceiling"]
    else:
        labels = [f"protocol ceiling ({label})" for label, _ in per_run]
    out = []
    for label, (_, values) in zip(labels, per_run, strict=True):
        out.append({"label": label, "cells": [_cell(v) for v in values] + [_cell(mean_if_complete(values))]})
    return out


def _published_rows(block: Block, row: Row, prow, comparable: bool) -> dict:
    pub = [prow.pck.get(s) for s in block.splits]
    pub_mean = mean_if_complete(pub)
    delta = None
    if comparable:
        diffs = [None if is_missing(a) or is_missing(b) else a - b
                 for a, b in zip([row.values[s] for s in block.splits], pub, strict=True)]
        mean_delta = None if is_missing(row.mean) or is_missing(pub_mean) else row.mean - pub_mean
        delta = [_cell(d) for d in diffs] + [_cell(mean_delta)]
    return {
        "label": prow.method,
        "for_row": row.label,
        "backbone": prow.backbone,
        "cells": [_cell(v) for v in pub] + [_cell(pub_mean)],
        "delta": delta,
        "source": prow.source,
    }


def _comparisons(runs: list[RunData]) -> list[dict]:
    """The paired comparisons each run is read for (``paired.csv`` written by ``score``; absent in older runs)."""
    import pandas as pd  # noqa: PLC0415

    from cape_bench.comparisons import comparison_pairs, describe_row, variant_bases  # noqa: PLC0415

    out = []
    for run in runs:
        file = run.path / "paired.csv"
        if not file.exists():
            continue
        paired = pd.read_csv(file)
        for a, b in comparison_pairs(run.methods(), variant_bases(run.meta.get("config", {}))):
            for _, row in paired[(paired["method_a"] == a) & (paired["method_b"] == b)].iterrows():
                out.append({"where": f"{run.label}: split {row['split']}, {row['shots']}-shot",
                            "text": describe_row(row), "resolved": bool(row["resolved"])})
    return out
