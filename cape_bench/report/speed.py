"""Speed: latency table, throughput against batch size, and accuracy against latency (Pareto front).

Read from ``RUN_DIR/profile.csv`` (or ``profile.json``), written by ``cape-bench profile --run-dir RUN_DIR`` (or
copied there), and from the run's own PCK@0.2 (``summary.csv``). A profile is measured with random-init weights
(speed only); the accuracy on the scatter is the run's. A run without a profile gets a one-line note saying how to
produce one. Each run's profile is shown on its own: profiles of different machines are never put on one chart.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cape_bench.profile.files import read_profile
from cape_bench.profile.render import fmt, stamp_line
from cape_bench.profile.spec import PROFILE_FILE, WEIGHTS_NOTE
from cape_bench.report import figures
from cape_bench.report.runs import RunData

METRIC = "PCK@0.2"
PROFILE_NAMES = (PROFILE_FILE, "profile.json")


def profile_path(run_dir: Path) -> Path | None:
    """The profile file of a run directory, or None."""
    for name in PROFILE_NAMES:
        if (Path(run_dir) / name).is_file():
            return Path(run_dir) / name
    return None


def accuracy(run: RunData, metric: str = METRIC) -> dict[str, dict[str, Any]]:
    """Stored method → ``{"value": mean over splits in %, "shots": the fewest shots run, "splits": n}``."""
    out: dict[str, dict[str, Any]] = {}
    summary = run.tables.get("summary.csv")
    if summary is None or summary.empty:
        return out
    sel = summary[summary["metric"] == metric]
    for method in sel["method"].unique():
        rows = sel[sel["method"] == method]
        shots = int(rows["shots"].min())
        values = rows[rows["shots"] == shots]["value"].astype(float)
        values = values[~values.isna()]
        if len(values):
            out[str(method)] = {"value": float(values.mean()) * 100, "shots": shots, "splits": int(len(values))}
    return out


def pareto_front(points: list[tuple[float, float, str]]) -> list[str]:
    """Labels of the points no other point beats: (latency, accuracy, label) with lower latency and higher
    accuracy better; a point is dominated when another is at least as good on both and better on one."""
    front = []
    for x, y, label in points:
        dominated = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for x2, y2, _ in points)
        if not dominated:
            front.append(label)
    return front


def _num(value) -> float | None:
    if value is None:
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _millions(value) -> str:
    value = _num(value)
    return "—" if value is None else f"{value / 1e6:.2f}"


def _run_block(run: RunData, colors: dict[str, str]) -> dict[str, Any]:
    path = profile_path(run.path)
    command = f"cape-bench profile --methods {','.join(run.methods()) or 'METHODS'} --run-dir {run.path}"
    if path is None:
        return {"label": run.label, "present": False, "command": command}
    rows_all = read_profile(path)
    latency = [r for r in rows_all if r.get("kind", "model") == "model"]
    harness = [r for r in rows_all if r.get("kind") == "harness"]
    stored = set(run.methods())

    def label_of(method: str) -> str:
        return run.display.get(method, method)

    def color_of(method: str) -> str:
        return colors.get(label_of(method), "#888888")

    rows = []
    for r in latency:
        ok = r.get("status", "ok") == "ok"
        rows.append({
            "method": label_of(r["method"]), "color": color_of(r["method"]), "in_run": r["method"] in stored,
            "backbone": r.get("backbone") or "—", "batch": int(r["batch_size"]), "ok": ok,
            "status": r.get("status", "ok"),
            "support": fmt(r.get("support_ms")), "support_iqr": fmt(r.get("support_iqr_ms"), 2),
            "predict": fmt(r.get("predict_ms")), "predict_iqr": fmt(r.get("predict_iqr_ms"), 2),
            "ms_per_pair": fmt(r.get("ms_per_pair")), "pairs_per_s": fmt(r.get("pairs_per_s")),
            "pairs_per_s_v": _num(r.get("pairs_per_s")),
            "peak": fmt(r.get("peak_mem_mb"), 4), "peak_work": fmt(r.get("peak_work_mb")),
            "params_total": _millions(r.get("params_total")), "params_trainable": _millions(r.get("params_trainable")),
            "params_frozen": _millions(r.get("params_frozen")), "gflops": fmt(r.get("gflops_per_pair")),
            "text_ms": fmt(r.get("text_ms")), "samples": len(r.get("predict_samples_ms") or []),
        })
    first = latency[0] if latency else (harness[0] if harness else {})
    settings = {
        "preset": first.get("preset", "?"), "amp": first.get("amp_dtype") if first.get("amp") else "off",
        "compile": "on" if first.get("compile") else "off", "keypoints": first.get("keypoints"),
        "shots": first.get("shots"), "repeats": first.get("repeats"), "warmup": first.get("warmup"),
        "mem_source": first.get("mem_source", ""),
    }
    acc = accuracy(run)
    ok_rows = [r for r in latency if r.get("status", "ok") == "ok"]
    batches = sorted({int(r["batch_size"]) for r in ok_rows})
    scatter_batch = 1 if 1 in batches else (batches[0] if batches else None)
    points = []
    for r in ok_rows:
        if int(r["batch_size"]) == scatter_batch and r["method"] in acc and _num(r.get("ms_per_pair")):
            points.append((float(r["ms_per_pair"]), acc[r["method"]]["value"], r["method"]))
    front = pareto_front(points)
    harness_rows = [{
        "method": label_of(h["method"]), "color": color_of(h["method"]), "ok": h.get("status") == "ok",
        "status": h.get("status", ""), "batch": h.get("batch_size"), "pairs": h.get("pairs"),
        "e2e": fmt(h.get("harness_pairs_per_s")), "loop": fmt(h.get("loop_pairs_per_s")),
        "bare": fmt(h.get("bare_pairs_per_s")), "e2e_bare": fmt(h.get("harness_over_bare"), 2),
        "loop_bare": fmt(h.get("loop_over_bare"), 2), "reference": fmt(h.get("reference_pairs_per_s")),
        "e2e_reference": fmt(h.get("harness_over_reference"), 2),
        "cache": "yes" if str(h.get("feature_cache")).lower() == "true" else "no",
    } for h in harness]
    not_in_run = sorted({r["method"] for r in latency} - stored)
    no_accuracy = sorted({r["method"] for r in ok_rows if r["method"] in stored and r["method"] not in acc})
    return {
        "label": run.label, "present": True, "file": str(path), "command": command,
        "stamp": stamp_line(first) if first else "", "settings": settings, "rows": rows, "harness": harness_rows,
        "throughput_figure": _throughput_figure(ok_rows, label_of, color_of) if len(batches) else None,
        "pareto_figure": _pareto_figure(points, front, scatter_batch, label_of, color_of, acc) if points else None,
        "front": [label_of(m) for m in front], "scatter_batch": scatter_batch, "not_in_run": not_in_run,
        "no_accuracy": no_accuracy,
    }


def build(runs: list[RunData], colors: dict[str, str]) -> dict:
    """Context of ``speed.html.j2``."""
    blocks = [_run_block(run, colors) for run in runs]
    return {"blocks": blocks, "any": any(b["present"] for b in blocks), "weights_note": WEIGHTS_NOTE,
            "metric": METRIC, "profile_file": PROFILE_FILE}


def _scale(ax, axis: str, values: list[float]) -> str:
    """A log axis with plain-number ticks when the values span more than 10×, else a linear one; the scale name."""
    from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: PLC0415

    positive = [v for v in values if v and v > 0]
    if not positive or max(positive) / min(positive) <= 10:
        return "linear"
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    target.set_major_formatter(FuncFormatter(lambda v, _pos: fmt(v, 2)))
    target.set_minor_formatter(NullFormatter())
    return "log"


def _throughput_figure(rows: list[dict], label_of, color_of):
    plt = figures.pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: int(r["batch_size"]))
        xs = [int(r["batch_size"]) for r in mine]
        ys = [float(r["pairs_per_s"]) for r in mine]
        lo = [max(0.0, y - (_num(r.get("pairs_per_s_q25")) or y)) for y, r in zip(ys, mine, strict=True)]
        hi = [max(0.0, (_num(r.get("pairs_per_s_q75")) or y) - y) for y, r in zip(ys, mine, strict=True)]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", markersize=4, capsize=2, linewidth=1.4,
                     color=color_of(method), label=label_of(method))
    ax.set_xscale("log", base=2)
    y_scale = _scale(ax, "y", [float(r["pairs_per_s"]) for r in rows])
    batches = sorted({int(r["batch_size"]) for r in rows})
    ax.set_xticks(batches)
    ax.set_xticklabels([str(b) for b in batches])
    ax.set_xlabel("query batch size B")
    ax.set_ylabel(f"pairs / s (median, IQR bars{'; log scale' if y_scale == 'log' else ''})")
    ax.set_title("Throughput against batch size", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return figures.svg(fig, "pairs per second against query batch size")


def _pareto_figure(points, front, batch, label_of, color_of, acc):
    plt = figures.pyplot()
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    for x, y, method in points:
        on = method in front
        ax.scatter([x], [y], s=46 if on else 26, color=color_of(method), edgecolors="black" if on else "white",
                   linewidths=0.9 if on else 0.4, zorder=3)
        ax.annotate(label_of(method), (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7)
    line = sorted((x, y) for x, y, m in points if m in front)
    if len(line) > 1:
        xs, ys = [line[0][0]], [line[0][1]]
        for x, y in line[1:]:  # staircase: a slower model is only worth it when it is more accurate
            xs += [x, x]
            ys += [ys[-1], y]
        ax.plot(xs, ys, color="#555555", linewidth=1, linestyle="--", zorder=2, label="Pareto front")
        ax.legend(fontsize=7, frameon=False, loc="best")
    shots = sorted({acc[m]["shots"] for _, _, m in points})
    x_scale = _scale(ax, "x", [x for x, _, _ in points])
    ax.set_xlabel(f"ms per pair at batch {batch} (median{'; log scale' if x_scale == 'log' else ''})")
    ax.set_ylabel(f"{METRIC} (%), {'/'.join(map(str, shots))}-shot, mean over splits")
    ax.set_title("Accuracy against latency", fontsize=9)
    fig.tight_layout()
    return figures.svg(fig, "accuracy against latency with the Pareto front")
