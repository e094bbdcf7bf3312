"""Does CapeNext fix what it claims? The report's answer, from what ``score`` stored (no model runs).

CapeNext (arXiv 2511.13102) claims two fixes over CapeX's static keypoint-text embeddings: its class-text token
resolves **polysemy-induced cross-category ambiguity** ("leg" of a chair vs of a dog) and its query-image token
adds **intra-category discriminability** (instances that differ in pose or appearance). Per run and cell this
section reads:

* whether the two text methods learned at all: each against the ``text-prior`` floor (``summary.csv``); below the
  floor + 10 PCK points the answer is "not measurable" and nothing else is read;
* claim 1: CapeNext − CapeX on polysemous and on unique keypoints (``analysis/ambiguity.csv``), the paired
  CapeNext − no-class-text ablation and CapeNext − wrong-class probe (``paired.csv``);
* claim 2: the paired CapeNext − no-query-image ablation, and CapeNext's and CapeX's PCK slope over support–query
  pose dissimilarity (``analysis/variation_by_category.csv``, ``pose_slope``, mean over categories).

Ablations and probes are recognised by what the run's config declares (``[methods.<label>] method = "capenext"``
with ``use_category_text = false``, ``use_query_image = false`` or ``wrong_class_name = true``), never by label.
A difference is "resolved" only where the paired test over episodes resolves it (``paired.csv``).
"""

from __future__ import annotations

from pathlib import Path

from cape_bench.report.formatting import percent_text
from cape_bench.report.runs import RunData

FLOOR = "text-prior"
MARGIN = 0.10  # PCK@0.2 points a text method must clear its floor by
METRIC = "PCK@0.2"
#: variant roles → the option a ``capenext`` variant sets to take that role
ROLES = {"no_class_text": ("use_category_text", False), "no_query_image": ("use_query_image", False),
         "wrong_class": ("wrong_class_name", True)}


def _pd():
    import pandas as pd  # noqa: PLC0415

    return pd


def variant_roles(meta: dict) -> dict[str, str]:
    """role → the label of the ``capenext`` variant the run's config declares for it."""
    out = {}
    for label, entry in ((meta.get("config") or {}).get("methods") or {}).items():
        if entry.get("method") != "capenext":
            continue
        options = entry.get("options") or {}
        for role, (key, value) in ROLES.items():
            if options.get(key, None) is value and role not in out:
                out[role] = label
    return out


def _paired(paired, a: str, b: str, split: int, shots: int) -> dict | None:
    if paired is None:
        return None
    rows = paired[(paired["method_a"] == a) & (paired["method_b"] == b) & (paired["split"] == split)
                  & (paired["shots"] == shots) & (paired["metric"] == METRIC)]
    if not len(rows):
        return None
    r = rows.iloc[0]
    return {"text": f"{r['delta'] * 100:+.1f} [{r['ci95_low'] * 100:+.1f}, {r['ci95_high'] * 100:+.1f}], "
                    f"p = {r['p_value']:.2g}", "resolved": bool(r["resolved"]), "delta": float(r["delta"])}


def _cell(run: RunData, split: int, shots: int, pck, paired, amb, var, roles) -> dict:
    def value(method):
        return pck.get((method, split, shots))

    floor = value(FLOOR)
    learned = {m: value(m) for m in ("capenext", "capex")}
    if floor is None:
        return {"split": split, "shots": shots, "measurable": False,
                "why": f"no {FLOOR} floor in this run: add it to run.methods to read the claims"}
    low = [m for m, v in learned.items() if v is not None and v < floor + MARGIN]
    if low:
        return {"split": split, "shots": shots, "measurable": False,
                "why": f"not measurable: {', '.join(low)} below {FLOOR} + {MARGIN * 100:.0f} PCK points "
                       f"({', '.join(f'{m} {percent_text(learned[m])}' for m in low)}, {FLOOR} {percent_text(floor)}): a method that "
                       "did not learn says nothing about its tokens"}
    out = {"split": split, "shots": shots, "measurable": True, "pck": {m: percent_text(v) for m, v in learned.items()},
           "floor": percent_text(floor), "overall": _paired(paired, "capenext", "capex", split, shots)}
    if amb is not None:
        rows = amb[(amb["split"] == split) & (amb["shots"] == shots)].set_index("method")
        if {"capenext", "capex"} <= set(rows.index):
            out["polysemy"] = {
                kind: {"capenext": percent_text(rows.loc["capenext", f"pck_{kind}"]), "capex": percent_text(rows.loc["capex", f"pck_{kind}"]),
                       "delta": f"{(rows.loc['capenext', f'pck_{kind}'] - rows.loc['capex', f'pck_{kind}']) * 100:+.1f}"}
                for kind in ("polysemous", "unique")}
    ran = {m for m, s, k in pck if (s, k) == (split, shots)}
    out["ablations"] = [
        {"role": role, "label": roles[role], "paired": _paired(paired, "capenext", roles[role], split, shots)}
        for role in ("no_class_text", "wrong_class", "no_query_image") if roles.get(role) in ran]
    out["not_run"] = sorted(label for role, label in roles.items() if label not in ran)
    if var is not None:
        rows = var[(var["split"] == split) & (var["shots"] == shots)]
        slopes = rows.groupby("method")["pose_slope"].mean()
        out["pose_slope"] = {m: f"{slopes[m] * 100:+.1f}" for m in ("capenext", "capex") if m in slopes}
    return out


def build(runs: list[RunData], colors: dict[str, str]) -> dict:
    """Context of ``capenext_claims.html.j2``: per run, per cell with both text methods, the evidence."""
    pd = _pd()
    blocks = []
    for run in runs:
        summary = run.tables.get("summary.csv")
        if summary is None or not {"capenext", "capex"} <= set(summary["method"]):
            continue
        pck = summary[summary["metric"] == METRIC].set_index(["method", "split", "shots"])["value"].to_dict()
        root = Path(run.path)
        paired = pd.read_csv(root / "paired.csv") if (root / "paired.csv").is_file() else None
        amb_file, var_file = root / "analysis" / "ambiguity.csv", root / "analysis" / "variation_by_category.csv"
        amb = pd.read_csv(amb_file) if amb_file.is_file() else None
        var = pd.read_csv(var_file) if var_file.is_file() else None
        roles = variant_roles(run.meta)
        cells = sorted({(int(s), int(k)) for m, s, k in pck if m == "capenext"})
        blocks.append({"label": run.label, "roles": roles,
                       "cells": [_cell(run, s, k, pck, paired, amb, var, roles) for s, k in cells]})
    return {"blocks": blocks, "floor": FLOOR, "margin": f"{MARGIN * 100:.0f}", "metric": METRIC}
