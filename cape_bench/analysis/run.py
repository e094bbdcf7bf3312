"""``analyze_run``: the error analysis of a run directory, written to ``RUN_DIR/analysis/*.csv``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cape_bench.analysis.cell import (
    _PRED_COLUMNS,
    _ambiguity_row,
    _analyze_cell,
    _empty_keypoints,
    _pose_quartile_rows,
    _rates,
    _stamp,
    _trend_rows,
    _variation_rows,
)
from cape_bench.analysis.inputs import (
    _CELL_KEYS,
    ANALYSIS_DIR,
    ANALYSIS_VERSION,
    SYNTH_PREFIX,
    _categories,
    _instances,
    _pair_context,
    _PairContext,
)
from cape_bench.cells import cell_arrays
from cape_bench.metrics import pck, taxonomy
from cape_bench.store import RunDir, write_frame


# ---------------------------------------------------------------------------------------------- public
def analyze_run(run_dir, alpha: float = taxonomy.DEFAULT_ALPHA, *, write: bool = True) -> dict:
    """Error analysis of every finished cell of a run; writes ``RUN_DIR/analysis/*.csv``.

    Args:
        run_dir: a run directory (``cape-bench run`` output).
        alpha: threshold on the normalised distance (fraction of the bbox max side) for good /
            inversion / swap, 2 alpha for jitter, and the PCK of the variation tables.
        write: write the CSV files (the tables are returned either way).

    Returns:
        file name → pandas DataFrame, the tables described in the module docstring.
    """
    import pandas as pd  # noqa: PLC0415

    from cape_bench.data.mp100 import load_annotation_set  # noqa: PLC0415

    run = RunDir(run_dir)
    meta = run.read_run_json()
    subset = (meta.get("dataset") or {}).get("subset") or "test"
    cats, notes = _categories(run, meta)
    cells = run.finished_cells()

    split_instances: dict[int, tuple] = {}
    for split in sorted({rec["split"] for rec in cells}):
        record = (meta.get("annotations") or {}).get(f"split{split}") or {}
        path = record.get("file")
        if not path or not Path(path).is_file():
            notes.append(("pose_quartiles.csv", (
                f"split {split}: annotation file {path!r} not found; "
                "support poses unknown, no pose or synth factors")))
            split_instances[split] = (None, {})
            continue
        ann_set = load_annotation_set(path)
        if record.get("sha256") and record["sha256"] != ann_set.sha256:
            notes.append(("pose_quartiles.csv", (
                f"split {split}: {path} changed since the run (sha256 differs); no pose or synth factors")))
            split_instances[split] = (None, {})
            continue
        split_instances[split] = _instances(ann_set)
    contexts: dict[tuple[int, int], _PairContext] = {}

    kp_rows, amb_rows, var_rows, quart_rows, trend_rows = [], [], [], [], []
    for rec in cells:
        method, split, shots = rec["method"], rec["split"], rec["shots"]
        key = (split, shots)
        if key not in contexts:
            contexts[key] = _pair_context(run, split, shots, subset, *split_instances[split])
        ctx = contexts[key]
        frame = pd.read_parquet(run.predictions(method, split, shots), columns=_PRED_COLUMNS)
        res = _analyze_cell(frame, cats, alpha)
        if len(res.pair_pck) != len(ctx.category) or not (
            np.array_equal(res.pair_category, ctx.category) and np.array_equal(res.query_ann, ctx.query_ann)
        ):
            raise ValueError(f"{method} split {split} {shots}-shot: predictions do not match the stored episodes")
        cell = {"method": method, "split": split, "shots": shots}
        kp = res.keypoints
        kp_rows.append(kp.assign(**cell))

        amb_rows.append({**cell, **_ambiguity_row(res)})
        var_rows += _variation_rows(cell, ctx, res, cats)
        quart_rows += _pose_quartile_rows(cell, ctx, res, cats)
        trend_rows += _trend_rows(cell, ctx, res)

    if any(ctx.bins for ctx in contexts.values()) and not any(
        name.startswith(SYNTH_PREFIX) for ctx in contexts.values() for name in ctx.bins
    ):
        notes.append(("trends.csv", (
            "no per-instance generator metadata (annotation 'synth' key) in this dataset: "
            "only pose_dissimilarity, no appearance factors")))

    keypoints = pd.concat(kp_rows, ignore_index=True) if kp_rows else _empty_keypoints().assign(
        method=[], split=[], shots=[]
    )
    by_kpt = _rates(keypoints, [*_CELL_KEYS, "category_id", "category", "supercategory", "kpt", "description",
                                "mirror_kpt", "polysemous"])

    tables = {
        "errors_by_method.csv": _rates(keypoints, list(_CELL_KEYS)),
        "errors_by_supercategory.csv": _rates(keypoints, [*_CELL_KEYS, "supercategory"]),
        "errors_by_category.csv": _rates(keypoints, [*_CELL_KEYS, "category_id", "category", "supercategory"]),
        "errors_by_keypoint.csv": by_kpt,
        "ambiguity.csv": pd.DataFrame(amb_rows, columns=[
            *_CELL_KEYS, "n_polysemous", "n_unique", "pck_polysemous", "pck_unique", "pck_gap",
            "swap_rate_polysemous", "swap_rate_unique", "inversion_rate_polysemous", "inversion_rate_unique",
            "swap_rate_duplicate_name", "same_name_swap_share"]),
        "variation_by_category.csv": pd.DataFrame(var_rows, columns=[
            *_CELL_KEYS, "category_id", "category", "supercategory", "n_pairs", "pck", "n_queries", "query_pck_std",
            "n_multi_support_queries", "support_var", "pose_slope"]),
        "pose_quartiles.csv": pd.DataFrame(quart_rows, columns=[
            *_CELL_KEYS, "category_id", "category", "supercategory", "quartile", "n_pairs", "dissimilarity_min",
            "dissimilarity_max", "pck"]),
        "trends.csv": pd.DataFrame(trend_rows, columns=[
            *_CELL_KEYS, "factor", "bin", "n_pairs", "factor_min", "factor_max", "pck", "slope"]),
    }
    tables = {name: _stamp(t, alpha) for name, t in tables.items()}
    notes_frame = pd.DataFrame(notes, columns=["table", "note"])
    notes_frame.insert(0, "analysis_version", ANALYSIS_VERSION)
    tables["notes.csv"] = notes_frame
    if write:
        for name, table in tables.items():
            write_frame(run.root / ANALYSIS_DIR / name, table)
    return tables


def _summary(run: RunDir):
    """The run's ``summary.csv``, or the same numbers computed from the predictions when it is absent."""
    import pandas as pd  # noqa: PLC0415

    path = run.table("summary.csv")
    if path.exists():
        return pd.read_csv(path)
    rows = []
    for rec in run.finished_cells():
        arrays = cell_arrays(pd.read_parquet(run.predictions(rec["method"], rec["split"], rec["shots"])))
        per_pair = pck.per_pair_metrics(arrays.dist_norm, arrays.dist_px)
        rows += [(rec["method"], rec["split"], rec["shots"], m, v) for m, v in pck.summarize(per_pair).items()]
    return pd.DataFrame(rows, columns=["method", "split", "shots", "metric", "value"])


def _cell_records(run: RunDir) -> dict[tuple, dict]:
    return {(r["method"], r["split"], r["shots"]): r for r in run.finished_cells()}
