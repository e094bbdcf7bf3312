"""Per-keypoint results for each category: which keypoints each method misses, with their descriptions."""

from __future__ import annotations

from cape_bench.report.categories import category_key, collect
from cape_bench.report.runs import RunData, method_rows

MISS_BELOW = 50.0  # PCK@0.2 (%) under which a keypoint counts as missed in the summaries


def level(value: float | None) -> str:
    """CSS class of a PCK cell: q0 (< 25 %) … q4 (≥ 90 %)."""
    if value is None:
        return ""
    for i, bound in enumerate((25.0, 50.0, 75.0, 90.0)):
        if value < bound:
            return f"q{i}"
    return "q4"


def build(runs: list[RunData], colors: dict[str, str]) -> dict:
    """Context of ``keypoints.html.j2``: one collapsible table per category."""
    columns, categories, _ = collect(runs)
    values: dict[tuple[int, int], dict[int, dict[tuple[str, int], tuple[float, int]]]] = {}
    for shots in sorted({s for _, s in columns}):
        for run, method, label in method_rows(runs):
            pk = run.tables["per_keypoint.csv"]
            sel = pk[(pk["method"] == method) & (pk["shots"] == shots)].rename(columns={"PCK@0.2": "pck"})
            for rec in sel.itertuples(index=False):
                key = category_key(rec.split, rec.category_id)
                values.setdefault(key, {}).setdefault(int(rec.kpt), {})[(label, shots)] = (
                    float(rec.pck) * 100, int(rec.scored))
    meta_of = {}
    for r in runs:
        for cid, info in r.categories.items():
            meta_of.setdefault(cid, info)
    blocks = []
    keys = sorted(categories, key=lambda k: (categories[k]["split"], categories[k]["name"]))
    for key in keys:
        cat = categories[key]
        info = meta_of.get(cat["id"], {})
        names = list(info.get("keypoint_names") or [])
        descs = list(info.get("descriptions") or [])
        kv = values.get(key, {})
        n_kpt = max([len(names), *(k + 1 for k in kv)]) if (names or kv) else 0
        rows = []
        for k in range(n_kpt):
            name = names[k] if k < len(names) else str(k)
            desc = descs[k] if k < len(descs) else ""
            cells = []
            for col in columns:
                v = kv.get(k, {}).get(col)
                cells.append({"value": v[0] if v else None, "scored": v[1] if v else 0,
                              "level": level(v[0] if v else None)})
            rows.append({"k": k, "name": name, "description": desc if desc != name.replace("_", " ") else "",
                         "cells": cells})
        missed, any_missed = _summary(columns, rows)
        blocks.append({"label": cat["label"], "supercategory": cat["supercategory"], "split": cat["split"],
                       "num_kpts": n_kpt, "rows": rows, "missed": missed, "any_missed": any_missed,
                       "has_descriptions": any(row["description"] for row in rows)})
    return {
        "columns": [{"label": label, "shots": shots, "color": colors.get(label, "#888")} for label, shots in columns],
        "blocks": blocks,
        "miss_below": MISS_BELOW,
    }


def _summary(columns, rows) -> tuple[list[dict], bool]:
    """The summary line of a category, at its smallest shots: per method how many keypoints it misses (PCK under
    :data:`MISS_BELOW`) and its worst keypoint; and whether any method misses one."""
    if not columns or not rows:
        return [], False
    shots = min(s for _, s in columns)
    missed = []
    for i, (label, s) in enumerate(columns):
        if s != shots:
            continue
        scored = [(row["cells"][i]["value"], _kpt_label(row)) for row in rows
                  if row["cells"][i]["value"] is not None]
        count = sum(v < MISS_BELOW for v, _ in scored)
        worst = min(scored, key=lambda item: item[0]) if count else None
        missed.append({"label": label, "shots": shots, "count": count, "of": len(scored),
                       "worst": f"{worst[1]} {worst[0]:.0f} %" if worst else ""})
    return missed, any(m["count"] for m in missed)


def _kpt_label(row: dict) -> str:
    """A keypoint as the summary names it: its description or name; ``keypoint 4`` for bare index names."""
    text = row["description"] or row["name"]
    return f"keypoint {text}" if text.isdigit() else text
