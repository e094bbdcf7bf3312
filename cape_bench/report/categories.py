"""Per-category results: a sortable table (category × method/shots PCK@0.2) and a plot of every category.

The best and worst categories of each column are highlighted in the table; in the plot (one panel per
shots, categories sorted by their mean over methods) the best and worst categories are shaded.
"""

from __future__ import annotations

from collections import Counter

from cape_bench.report import figures
from cape_bench.report.runs import RunData, method_rows


def highlight_count(n: int) -> int:
    """How many best / worst categories a column highlights: 3 of many, 1 of a few, none of two or fewer."""
    if n >= 12:
        return 3
    return 1 if n >= 3 else 0


def category_key(split: int, cid: int) -> tuple[int, int]:
    return (int(split), int(cid))


def collect(runs: list[RunData]):
    """(columns, categories, values): columns ``[(label, shots)]``; categories ``{(split, id): info}``;
    values ``{(split, id): {(label, shots): PCK@0.2 in %}}``."""
    columns: list[tuple[str, int]] = []
    categories: dict[tuple[int, int], dict] = {}
    values: dict[tuple[int, int], dict[tuple[str, int], float]] = {}
    shots_all = sorted({int(s) for r in runs for s in r.tables["per_category.csv"]["shots"].unique()})
    for shots in shots_all:
        for run, method, label in method_rows(runs):
            pc = run.tables["per_category.csv"]
            sel = pc[(pc["method"] == method) & (pc["shots"] == shots) & (pc["metric"] == "PCK@0.2")]
            if sel.empty:
                continue
            columns.append((label, shots))
            for rec in sel.itertuples(index=False):
                key = category_key(rec.split, rec.category_id)
                info = run.categories.get(int(rec.category_id), {})
                categories.setdefault(key, {
                    "split": int(rec.split), "id": int(rec.category_id), "name": str(rec.category),
                    "supercategory": str(rec.supercategory) if str(rec.supercategory) != "nan" else "",
                    "instances": info.get("instances"),
                })
                values.setdefault(key, {})[(label, shots)] = float(rec.value) * 100
    names = Counter(c["name"] for c in categories.values())
    for c in categories.values():  # a name present in several splits (only in toy data) gets its split
        c["label"] = c["name"] if names[c["name"]] == 1 else f"{c['name']} (split {c['split']})"
    return columns, categories, values


def build(runs: list[RunData], colors: dict[str, str]) -> dict:
    """Context of ``categories.html.j2``."""
    columns, categories, values = collect(runs)
    keys = sorted(categories, key=lambda k: (categories[k]["split"], categories[k]["name"]))
    marks: dict[tuple, dict] = {}
    k = highlight_count(len(keys))
    for col in columns:
        ranked = sorted((values[key][col], key) for key in keys if col in values[key])
        if not k or len(ranked) < 3:
            continue
        low, high = ranked[0][0], ranked[-1][0]
        # ties with the k-th value are marked too, unless that floods the column (e.g. an oracle at 100 % everywhere)
        worst = [key for v, key in ranked if v <= ranked[k - 1][0] and v < high]
        best = [key for v, key in ranked if v >= ranked[-k][0] and v > low]
        for side, keys_ in (("worst", worst), ("best", best)):
            if len(keys_) <= 2 * k:
                for key in keys_:
                    marks.setdefault(key, {})[col] = side
    rows = []
    for key in keys:
        c = categories[key]
        cells = []
        for col in columns:
            v = values[key].get(col)
            cells.append({"value": v, "mark": marks.get(key, {}).get(col, "")})
        rows.append({**c, "cells": cells})
    return {
        "columns": [{"label": label, "shots": shots, "color": colors.get(label, "#888")} for label, shots in columns],
        "rows": rows,
        "highlight": k,
        "figure": _figure(columns, categories, values, colors) if keys and columns else None,
        "count": len(keys),
    }


def _figure(columns, categories, values, colors):
    plt = figures.pyplot()
    shots_list = sorted({s for _, s in columns})
    n = len(categories)
    height = max(2.2, 0.16 * n + 1.0)
    fig, axes = plt.subplots(1, len(shots_list), figsize=(4.6 * len(shots_list) + 1.6, height), squeeze=False)
    k = highlight_count(n)
    for ax, shots in zip(axes[0], shots_list, strict=True):
        cols = [c for c in columns if c[1] == shots]

        def mean_of(key, cols=cols):
            vs = [values[key][c] for c in cols if c in values[key]]
            return sum(vs) / len(vs) if vs else -1.0

        order = sorted(categories, key=mean_of, reverse=True)  # best at the top
        ys = range(len(order))
        if k:
            for y in list(ys)[:k]:
                ax.axhspan(y - 0.5, y + 0.5, color="#2ca02c", alpha=0.12, linewidth=0)
            for y in list(ys)[-k:]:
                ax.axhspan(y - 0.5, y + 0.5, color="#d62728", alpha=0.12, linewidth=0)
        for label, s in cols:
            xs = [values[key].get((label, s)) for key in order]
            pts = [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None]
            if pts:
                px, py = zip(*pts, strict=True)
                ax.scatter(px, py, s=14, color=colors.get(label, "#888"), label=label, zorder=3,
                           edgecolors="white", linewidths=0.4)
        ax.set_yticks(list(ys))
        ax.set_yticklabels([categories[key]["label"] for key in order], fontsize=7)
        for i, tick in enumerate(ax.get_yticklabels()):
            if k and i < k:
                tick.set_color("#1a7a1a")
                tick.set_fontweight("bold")
            elif k and i >= len(order) - k:
                tick.set_color("#b01c1c")
                tick.set_fontweight("bold")
        ax.set_ylim(len(order) - 0.5, -0.5)
        ax.set_xlim(-2, 102)
        ax.set_xlabel("PCK@0.2 (%)")
        ax.set_title(f"{shots}-shot (sorted by the mean over methods)", fontsize=9)
        ax.grid(axis="y", visible=False)
        ax.xaxis.set_ticks_position("both")
        ax.tick_params(axis="x", labeltop=n > 30)
    handles, labels = [], []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5), frameon=False,
               bbox_to_anchor=(0.5, 1.0 + 0.35 / height))
    fig.tight_layout()
    return figures.svg(fig, "PCK@0.2 of every category")
