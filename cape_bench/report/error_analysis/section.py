"""The context of the error-analysis section (``templates/error_analysis.html.j2``)."""

from __future__ import annotations

from cape_bench.report.error_analysis.loading import ERROR_COLORS, ERROR_ORDER, _pd, load_analysis, perfect_labels
from cape_bench.report.error_analysis.polysemy import _knob_table, _polysemy_rows
from cape_bench.report.error_analysis.probes import _probes
from cape_bench.report.error_analysis.taxonomy import (
    _category_table,
    _method_figure,
    _supercategory_figure,
    _taxonomy_rows,
)
from cape_bench.report.error_analysis.variation import _quartiles, _spread_rows, _trends
from cape_bench.report.runs import RunData, method_rows


# --------------------------------------------------------------------------------------------- section
def build(runs: list[RunData], colors: dict[str, str]) -> dict:
    """Context of ``error_analysis.html.j2``."""
    from cape_bench.analysis import ANALYSIS_VERSION  # noqa: PLC0415

    tables, missing, versions = load_analysis(runs)
    stale = [{"run": run, "versions": sorted(v)} for run, v in versions.items() if v - {ANALYSIS_VERSION}]
    context = {
        "missing": missing, "stale": stale, "current_version": ANALYSIS_VERSION, "has_analysis": False,
        "probes": _probes(runs), "knob": _knob_table(runs),
        "error_order": [{"name": t, "color": ERROR_COLORS[t]} for t in ERROR_ORDER], "method_classes": [],
    }
    ebm = tables.get("errors_by_method.csv")
    if ebm is None or ebm.empty:
        return context
    order = [label for _, _, label in method_rows(runs)]
    perfect = perfect_labels(ebm)
    labels = [lab for lab in order if lab not in perfect and lab in set(ebm["label"])]
    shots_list = sorted(int(s) for s in ebm["shots"].unique())
    alphas = sorted({float(a) for t in tables.values() if "alpha" in t.columns for a in t["alpha"].dropna()})
    method_rows_ = _taxonomy_rows(ebm, order, colors)
    notes = []
    if "notes.csv" in tables:
        for rec in tables["notes.csv"].itertuples(index=False):
            text = f"{rec.table}: {rec.note}"
            notes.append(f"{rec.run} · {text}" if len(runs) > 1 else text)
    empty = _pd().DataFrame()
    esc = tables.get("errors_by_supercategory.csv", empty)
    ebc = tables.get("errors_by_category.csv", empty)
    var = tables.get("variation_by_category.csv", empty)
    amb = tables.get("ambiguity.csv", empty)
    pq = tables.get("pose_quartiles.csv", empty)
    trends = tables.get("trends.csv", empty)
    context.update({
        "has_analysis": True,
        "alpha": alphas[0] if len(alphas) == 1 else None,
        "alphas": alphas,
        "perfect": perfect,
        "labels": labels,
        "notes": notes,
        "method_rows": method_rows_,
        "method_figure": _method_figure(method_rows_) if method_rows_ else None,
        "supercategory_figure": (_supercategory_figure(esc, labels, shots_list, colors)
                                 if labels and not esc.empty else None),
        "supercategories": int(esc["supercategory"].nunique()) if not esc.empty else 0,
        "category_rows": _category_table(ebc, var if not var.empty else None, labels, colors)
        if labels and not ebc.empty else [],
        "categories": int(ebc[["split", "category_id"]].drop_duplicates().shape[0]) if not ebc.empty else 0,
        "polysemy": _polysemy_rows(amb, labels, colors) if not amb.empty else [],
        "spread": _spread_rows(var, labels, colors) if not var.empty else [],
        "quartiles": _quartiles(pq, labels, shots_list, colors) if labels and not pq.empty else None,
        "trends": _trends(trends, labels, shots_list, colors) if labels and not trends.empty else None,
        "method_classes": [colors.get(label, "#888") for label in labels],  # .m<i> of the per-category table
    })
    return context
