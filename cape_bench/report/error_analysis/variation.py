"""Spread and sensitivity: per-category spread, PCK against pose dissimilarity, CAPE-Synth factor trends."""

from __future__ import annotations

import math

from cape_bench.report import figures
from cape_bench.report.error_analysis.loading import _MAX_TREND_PANELS, CELL, _mean, _pct, _pd


# --------------------------------------------------------------------------------------------- variation
def _spread_rows(var, labels: list[str], colors: dict[str, str]) -> list[dict]:
    pd = _pd()
    var = var[var["label"].isin(labels)]
    if var.empty:
        return []
    rows = []
    var = var.assign(rank=pd.Categorical(var["label"], categories=labels, ordered=True))
    for (_, shots), block in var.groupby(["rank", "shots"], sort=True, observed=True):
        label = str(block["label"].iloc[0])
        sv = block["support_var"]
        top = block.loc[sv.idxmax()] if sv.notna().any() else None
        steep = block.loc[block["pose_slope"].idxmin()] if block["pose_slope"].notna().any() else None
        rows.append({
            "label": label, "shots": int(shots), "color": colors.get(label, "#888"), "categories": len(block),
            "pck": _pct(block["pck"].mean()), "query_std": _pct(block["query_pck_std"].mean()),
            "support_spread": None if not sv.notna().any() else math.sqrt(max(float(sv.mean()), 0.0)) * 100,
            "pose_slope": _pct(block["pose_slope"].mean()),
            "negative_slopes": int((block["pose_slope"] < 0).sum()),
            "slopes": int(block["pose_slope"].notna().sum()),
            "most_sensitive": None if top is None else {"category": str(top["category"]),
                                                        "spread": math.sqrt(max(float(top["support_var"]), 0)) * 100},
            "steepest": None if steep is None else {"category": str(steep["category"]),
                                                    "slope": _pct(steep["pose_slope"])},
        })
    rows.sort(key=lambda r: (r["shots"], labels.index(r["label"])))
    return rows


def _quartiles(pq, labels: list[str], shots_list: list[int], colors: dict[str, str]) -> dict | None:
    """PCK per pose-dissimilarity quartile: mean over categories, with the middle half of categories as a band."""
    pq = pq[pq["label"].isin(labels)]
    if pq.empty:
        return None
    per_cat = _mean(pq, ["label", "shots", "split", "category_id", "quartile"], ["pck", "dissimilarity_min",
                                                                                   "dissimilarity_max"])
    stats = per_cat.groupby(["label", "shots", "quartile"])["pck"]
    mean, q25, q75 = stats.mean(), stats.quantile(0.25), stats.quantile(0.75)
    curves: dict[int, dict[str, list]] = {}
    table = []
    for shots in shots_list:
        for label in labels:
            if (label, shots) not in mean.index.droplevel(2):
                continue
            qs = sorted(int(q) for q in mean.loc[(label, shots)].index)
            curves.setdefault(shots, {})[label] = [(q, mean[(label, shots, q)] * 100, q25[(label, shots, q)] * 100,
                                                    q75[(label, shots, q)] * 100) for q in qs]
            values = {q: mean[(label, shots, q)] * 100 for q in qs}
            table.append({"label": label, "shots": shots, "color": colors.get(label, "#888"),
                          "quartiles": [values.get(q) for q in range(1, 5)],
                          "drop": (values[4] - values[1]) if 1 in values and 4 in values else None})
    ranges = per_cat.groupby("quartile")[["dissimilarity_min", "dissimilarity_max"]].median()
    return {"figure": _quartile_figure(curves, colors), "table": table,
            "ranges": [{"q": int(q), "lo": float(r.dissimilarity_min), "hi": float(r.dissimilarity_max)}
                       for q, r in ranges.iterrows()]}


def _quartile_figure(curves, colors):
    plt = figures.pyplot()
    shots_list = sorted(curves)
    fig, axes = plt.subplots(1, len(shots_list), figsize=(4.3 * len(shots_list), 3.1), sharey=True, squeeze=False)
    for ax, shots in zip(axes[0], shots_list, strict=True):
        for label, pts in curves[shots].items():
            xs, ys, lo, hi = zip(*pts, strict=True)
            color = colors.get(label, "#888")
            ax.fill_between(xs, lo, hi, color=color, alpha=0.13, linewidth=0)
            ax.plot(xs, ys, marker="o", markersize=3.5, linewidth=1.6, color=color, label=label)
        ax.set_title(f"{shots}-shot", fontsize=10)
        ax.set_xticks([1, 2, 3, 4])
        ax.set_xticklabels(["Q1\nmost similar", "Q2", "Q3", "Q4\nleast similar"], fontsize=8)
        ax.set_xlim(0.8, 4.2)
        ax.set_ylim(0, 101)
        ax.set_xlabel("support–query pose dissimilarity (per-category quartile)", fontsize=8.5)
    axes[0][0].set_ylabel("PCK@0.2 (%)")
    handles, labels = [], []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5), frameon=False,
               bbox_to_anchor=(0.5, 1.08))
    fig.tight_layout()
    return figures.svg(fig, "PCK against support-query pose dissimilarity")


def _trends(trends, labels: list[str], shots_list: list[int], colors: dict[str, str]) -> dict | None:
    """CAPE-Synth factor trends (``synth:*`` factors of trends.csv): small multiples plus a slope table."""
    from cape_bench.analysis import SYNTH_PREFIX  # noqa: PLC0415

    tr = trends[trends["label"].isin(labels) & trends["factor"].astype(str).str.startswith(SYNTH_PREFIX)]
    if tr.empty:
        return None
    tr = tr.assign(factor=tr["factor"].str[len(SYNTH_PREFIX):])
    bins = _mean(tr, ["factor", "label", "shots", "bin"], ["pck", "factor_min", "factor_max"])
    slopes = _mean(tr.drop_duplicates(["factor", *CELL, "label"]), ["factor", "label", "shots"], ["slope"])
    columns = [(label, shots) for shots in shots_list for label in labels
               if not slopes[(slopes["label"] == label) & (slopes["shots"] == shots)].empty]
    table = []
    for factor, block in slopes.groupby("factor"):
        values = {(r.label, int(r.shots)): _pct(r.slope) for r in block.itertuples(index=False)}
        cells = [values.get(c) for c in columns]
        present = [abs(v) for v in cells if v is not None]
        table.append({"factor": factor, "cells": cells, "max_abs": max(present) if present else 0.0})
    table.sort(key=lambda r: -r["max_abs"])
    top_level = [r["factor"] for r in table if "." not in r["factor"]]
    shown = sorted(top_level[:_MAX_TREND_PANELS])
    figure = _trend_figure(bins, shown, labels, shots_list, colors) if shown else None
    return {"figure": figure, "shown": shown, "table": table,
            "columns": [{"label": lab, "shots": s, "color": colors.get(lab, "#888")} for lab, s in columns],
            "count": len(table), "nested": len(table) - len(top_level)}


def _trend_figure(bins, factors: list[str], labels: list[str], shots_list: list[int], colors: dict[str, str]):
    plt = figures.pyplot()
    ncols = min(5, len(factors))
    nrows = math.ceil(len(factors) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.55 * ncols, 2.2 * nrows + 0.4), sharey=True, squeeze=False)
    styles = ["-", "--", ":", "-."]
    for ax in axes.ravel()[len(factors):]:
        ax.set_visible(False)
    for ax, factor in zip(axes.ravel(), factors, strict=False):
        block = bins[bins["factor"] == factor]
        for label in labels:
            for i, shots in enumerate(shots_list):
                line = block[(block["label"] == label) & (block["shots"] == shots)].sort_values("bin")
                if line.empty:
                    continue
                ax.plot(line["bin"], line["pck"] * 100, marker="o", markersize=3, linewidth=1.3,
                        linestyle=styles[i % len(styles)], color=colors.get(label, "#888"),
                        label=f"{label} · {shots}-shot")
        ax.set_title(factor, fontsize=8.5)
        ax.set_xticks([1, 2, 3, 4])
        ax.set_xlim(0.7, 4.3)
        ax.set_ylim(0, 101)
        ax.tick_params(labelsize=7)
    for row in axes:
        row[0].set_ylabel("PCK@0.2 (%)", fontsize=8)
    fig.supxlabel("support–query difference (quantile bin within each category; 1 = most alike)", fontsize=8.5)
    handles, names = [], []
    for ax in axes.ravel():
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in names:
                handles.append(h)
                names.append(lab)
    height = 2.2 * nrows + 0.4
    fig.legend(handles, names, loc="upper center", ncol=min(len(names), 4), frameon=False,
               bbox_to_anchor=(0.5, 1.0 + 0.35 / height), fontsize=8)
    fig.tight_layout()
    return figures.svg(fig, "PCK against CAPE-Synth factors")
