"""PCK against the threshold (0.05 … 0.25) per method: one SVG panel per shots, mean over the splits run."""

from __future__ import annotations

from cape_bench.report import figures
from cape_bench.report.runs import RunData, method_rows


def _threshold(metric: str) -> float | None:
    if metric.startswith("PCK@"):
        try:
            return float(metric[4:])
        except ValueError:
            return None
    return None


def build(runs: list[RunData], colors: dict[str, str]) -> dict:
    """Context of ``thresholds.html.j2``."""
    curves: dict[int, dict[str, list[tuple[float, float]]]] = {}
    splits_of: dict[int, set[int]] = {}
    for run, method, label in method_rows(runs):
        s = run.tables["summary.csv"]
        s = s[s["method"] == method]
        for shots, block in s.groupby("shots"):
            points = []
            for metric, group in block.groupby("metric"):
                thr = _threshold(str(metric))
                if thr is not None:
                    points.append((thr, float(group["value"].mean()) * 100))
                    splits_of.setdefault(int(shots), set()).update(int(v) for v in group["split"])
            if points:
                curves.setdefault(int(shots), {})[label] = sorted(points)
    thresholds = sorted({t for c in curves.values() for pts in c.values() for t, _ in pts})
    table = []
    for shots in sorted(curves):
        for label, pts in curves[shots].items():
            by_thr = dict(pts)
            table.append({"shots": shots, "label": label, "color": colors.get(label, "#888"),
                          "points": [by_thr.get(t) for t in thresholds]})
    return {
        "figure": _figure(curves, colors) if curves else None,
        "thresholds": thresholds,
        "table": table,
        "splits": {shots: sorted(v) for shots, v in splits_of.items()},
    }


def _figure(curves, colors):
    plt = figures.pyplot()
    shots_list = sorted(curves)
    fig, axes = plt.subplots(1, len(shots_list), figsize=(4.2 * len(shots_list), 3.2), sharey=True, squeeze=False)
    for ax, shots in zip(axes[0], shots_list, strict=True):
        for label, pts in curves[shots].items():
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", markersize=3.5, linewidth=1.6, color=colors.get(label, "#888"), label=label)
        ax.set_title(f"{shots}-shot", fontsize=10)
        ax.set_xlabel("threshold (fraction of the bbox max side)")
        ax.set_xticks(sorted({x for pts in curves[shots].values() for x, _ in pts}))
        ax.set_ylim(0, 101)
    axes[0][0].set_ylabel("PCK (%), mean over splits")
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5), frameon=False,
               bbox_to_anchor=(0.5, 1.08))
    fig.tight_layout()
    return figures.svg(fig, "PCK against the threshold per method")
