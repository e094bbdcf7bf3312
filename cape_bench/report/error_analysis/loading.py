"""The analysis tables the section reads (``RUN_DIR/analysis/*.csv``), merged over runs; small number helpers."""

from __future__ import annotations

import math
from pathlib import Path

from cape_bench.report.runs import RunData

# the order errors are stacked in: from "right" outwards to "nowhere near"
ERROR_ORDER = ("good", "jitter", "inversion", "swap", "miss")
ERROR_COLORS = {"good": "#59a14f", "jitter": "#edc948", "inversion": "#9c6ade", "swap": "#f28e2b", "miss": "#d44a4a"}
CELL = ["method", "split", "shots"]
PROBE_METRIC = "PCK@0.2"
# run.json config keys that name or place a run without changing what it measures
_RUN_ONLY_KEYS = frozenset({"run.name", "run.out_dir", "run.report"})
# method options that are test-time text probes (capenext's official use_wrong_catName)
PROBE_OPTIONS = ("wrong_class_name", "wrong_class_pool")
_MAX_TREND_PANELS = 12
# the analysis tables this section reads (errors_by_keypoint.csv is the per-keypoint detail it leaves to the CSV)
SHOWN_TABLES = ("errors_by_method.csv", "errors_by_supercategory.csv", "errors_by_category.csv", "ambiguity.csv",
                "variation_by_category.csv", "pose_quartiles.csv", "trends.csv", "notes.csv")


def _pd():
    import pandas as pd  # noqa: PLC0415

    return pd


def _pct(value) -> float | None:
    """A fraction as a percentage; None for a missing value."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value * 100


def _num(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


# --------------------------------------------------------------------------------------------- loading
def load_analysis(runs: list[RunData]) -> tuple[dict, list[dict]]:
    """The analysis tables of every run, with a ``label`` (the report's method name) column.

    Returns:
        (tables, missing, versions): table name → DataFrame over all runs (only the rows of methods the
        report shows); ``missing``: ``{"run", "path"}`` of each run without an ``analysis/`` folder;
        ``versions``: run label → the ``analysis_version`` values its tables hold.
    """
    from cape_bench.analysis import ANALYSIS_DIR  # noqa: PLC0415

    pd = _pd()
    frames: dict[str, list] = {}
    missing, versions = [], {}
    for run in runs:
        folder = Path(run.path) / ANALYSIS_DIR
        if not (folder / "errors_by_method.csv").is_file():
            missing.append({"run": run.label, "path": str(run.path)})
            continue
        for file in sorted(folder.glob("*.csv")):
            if file.name not in SHOWN_TABLES:
                continue
            frame = pd.read_csv(file)
            if "analysis_version" in frame.columns:
                versions.setdefault(run.label, set()).update(str(v) for v in frame["analysis_version"].dropna())
            if file.name == "notes.csv":
                frame = frame.assign(run=run.label)
            elif "method" in frame.columns:
                frame = frame[frame["method"].isin(list(run.display))]
                frame = frame.assign(label=frame["method"].map(run.display), run=run.label)
            else:
                continue
            frames.setdefault(file.name, []).append(frame)
    tables = {name: pd.concat(parts, ignore_index=True) for name, parts in frames.items()}
    return tables, missing, versions


def _mean(frame, keys: list[str], columns: list[str]):
    """Mean of ``columns`` over the splits (every row of a ``keys`` group), NaN skipped; keys kept as columns."""
    return frame.groupby(keys, sort=False, dropna=False)[columns].mean().reset_index()


def perfect_labels(errors_by_method) -> list[str]:
    """Methods whose every scored keypoint is good in every cell (the oracle): nothing to analyse."""
    out = []
    for label, block in errors_by_method.groupby("label", sort=False):
        if len(block) and (block["good"] >= 1.0 - 1e-12).all():
            out.append(str(label))
    return out
