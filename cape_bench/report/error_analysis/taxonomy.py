"""The error taxonomy: stacked bars per method and per supercategory, and the per-category table."""

from __future__ import annotations

import math
from collections import Counter

from cape_bench.report import figures
from cape_bench.report.error_analysis.loading import ERROR_COLORS, ERROR_ORDER, _mean, _num, _pct, _pd


# --------------------------------------------------------------------------------------------- taxonomy
def _taxonomy_rows(ebm, order: list[str], colors: dict[str, str]) -> list[dict]:
    pd = _pd()
    means = _mean(ebm, ["label", "shots"], list(ERROR_ORDER))
    scored = ebm.groupby(["label", "shots"])["scored"].sum()
    splits = ebm.groupby(["label", "shots"])["split"].nunique()
    means["rank"] = pd.Categorical(means["label"], categories=order, ordered=True)
    rows = []
    for rec in means.sort_values(["shots", "rank"], kind="stable").itertuples(index=False):
        key = (rec.label, rec.shots)
        rows.append({"label": rec.label, "shots": int(rec.shots), "color": colors.get(rec.label, "#888"),
                     "rates": {t: _pct(getattr(rec, t)) for t in ERROR_ORDER},
                     "scored": int(scored[key]), "splits": int(splits[key])})
    return rows


def _bar_segments(ax, y, rates: dict, height: float = 0.72, text: bool = True, fontsize: float = 7.5) -> None:
    left = 0.0
    for t in ERROR_ORDER:
        width = rates.get(t) or 0.0
        if width <= 0:
            continue
        ax.barh(y, width, left=left, height=height, color=ERROR_COLORS[t], edgecolor="white", linewidth=0.4)
        if text and width >= 7:
            ax.text(left + width / 2, y, f"{width:.0f}", ha="center", va="center", fontsize=fontsize,
                    color="white" if t in ("good", "inversion", "miss") else "#222")
        left += width


def _legend(fig, height_in: float) -> None:
    from matplotlib.patches import Patch  # noqa: PLC0415

    handles = [Patch(facecolor=ERROR_COLORS[t], label=t) for t in ERROR_ORDER]
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), frameon=False,
               bbox_to_anchor=(0.5, 1.0 + 0.32 / height_in), fontsize=8.5)


def _method_figure(rows: list[dict]):
    plt = figures.pyplot()
    n = len(rows)
    height = 0.34 * n + 0.9
    fig, ax = plt.subplots(figsize=(9.0, height))
    for y, row in enumerate(rows):
        _bar_segments(ax, y, row["rates"])
    ax.set_yticks(range(n))
    ax.set_yticklabels([f"{r['label']} · {r['shots']}-shot" for r in rows], fontsize=8.5)
    for tick, row in zip(ax.get_yticklabels(), rows, strict=True):
        tick.set_color(row["color"])
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of scored keypoints (%), mean over splits")
    ax.grid(axis="y", visible=False)
    _legend(fig, height)
    fig.tight_layout()
    return figures.svg(fig, "error taxonomy per method")


def _supercategory_figure(esc, labels: list[str], shots_list: list[int], colors: dict[str, str]):
    """One panel per (method, shots), a stacked bar per supercategory, sorted by the mean good rate."""
    means = _mean(esc, ["label", "shots", "supercategory"], list(ERROR_ORDER))
    panels = [(label, shots) for shots in shots_list for label in labels
              if not means[(means["label"] == label) & (means["shots"] == shots)].empty]
    if not panels:
        return None
    order = (means.groupby("supercategory")["good"].mean().sort_values(ascending=False).index.tolist())
    n = len(order)
    one_row = len(panels) <= 6
    ncols = len(panels) if one_row else len(labels)
    nrows = 1 if one_row else len(shots_list)
    plt = figures.pyplot()
    panel_h = 0.19 * n + 0.6
    width = min(2.6, 12.0 / ncols) * ncols + 1.8
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, panel_h * nrows + 0.5), sharey=True, squeeze=False)
    for ax in axes.ravel():
        ax.set_visible(False)
    for i, (label, shots) in enumerate(panels):
        ax = axes[0][i] if one_row else axes[shots_list.index(shots)][labels.index(label)]
        ax.set_visible(True)
        block = means[(means["label"] == label) & (means["shots"] == shots)].set_index("supercategory")
        for y, sc in enumerate(order):
            if sc in block.index:
                rates = {t: _pct(block.at[sc, t]) for t in ERROR_ORDER}
                _bar_segments(ax, y, rates, height=0.78, text=ncols <= 3, fontsize=6.5)
        ax.set_title(f"{label} · {shots}-shot", fontsize=8.5, color=colors.get(label, "#333"))
        ax.set_xlim(0, 100)
        ax.set_xticks([0, 50, 100])
        ax.grid(axis="y", visible=False)
        ax.tick_params(axis="x", labelsize=7)
    for row in axes:
        row[0].set_visible(True)
        row[0].set_yticks(range(n))
        row[0].set_yticklabels(order, fontsize=7.5)
        row[0].set_ylim(n - 0.5, -0.5)
    fig.supxlabel("share of scored keypoints (%), mean over splits", fontsize=8.5)
    _legend(fig, panel_h * nrows + 0.5)
    fig.tight_layout()
    return figures.svg(fig, "error taxonomy per supercategory")


def _category_table(ebc, var, labels: list[str], colors: dict[str, str]) -> list[dict]:
    """One row per (category, method, shots): the five rates, per-pair PCK, spread and pose slope."""
    pd = _pd()
    keys = ["label", "shots", "split", "category_id"]
    ebc = ebc[ebc["label"].isin(labels)]
    merged = ebc[keys + ["category", "supercategory", "scored", *ERROR_ORDER]]
    if var is not None and not var.empty:
        extra = var[keys + ["pck", "query_pck_std", "support_var", "pose_slope"]]
        merged = merged.merge(extra, on=keys, how="left")
    else:
        merged = merged.assign(pck=float("nan"), query_pck_std=float("nan"), support_var=float("nan"),
                               pose_slope=float("nan"))
    merged["rank"] = pd.Categorical(merged["label"], categories=labels, ordered=True)
    merged = merged.sort_values(["split", "category", "rank", "shots"], kind="stable")
    names = Counter(zip(merged["category"], merged["split"], strict=True))
    repeated = Counter(name for name, _ in names)
    rows = []
    for rec in merged.itertuples(index=False):
        name = str(rec.category)
        if repeated[name] > 1:  # a name present in several splits (only in toy data) gets its split
            name = f"{name} (split {rec.split})"
        sv = _num(rec.support_var)
        rows.append({
            "split": int(rec.split), "category": name,
            "supercategory": "" if str(rec.supercategory) == "nan" else str(rec.supercategory),
            "label": rec.label, "m": labels.index(rec.label), "shots": int(rec.shots),
            "scored": int(rec.scored), "rates": {t: _pct(getattr(rec, t)) for t in ERROR_ORDER},
            "pck": _pct(rec.pck), "query_std": _pct(rec.query_pck_std),
            "support_spread": None if sv is None else math.sqrt(max(sv, 0.0)) * 100,
            "pose_slope": _pct(rec.pose_slope),
        })
    return rows
