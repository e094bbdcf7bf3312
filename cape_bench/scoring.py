"""``cape-bench score``: stored predictions → every score table, with no model in sight.

Reads ``predictions/*/*.parquet`` of a run directory and writes per-keypoint distances
(``scores/``), ``summary.csv`` (``method,split,shots,metric,value``), ``intervals.csv``
(bootstrap 95 % intervals over episodes), ``ceiling.csv`` (the protocol ceiling of each cell),
``per_category.csv`` and ``per_keypoint.csv``, then the error analysis under ``analysis/``.
"""

from __future__ import annotations

import numpy as np

from cape_bench.cells import cell_arrays
from cape_bench.metrics import pck
from cape_bench.store import RunDir, write_frame


def score_run(run_dir, thresholds=None, *, bootstrap_reps: int = 1000, analysis: bool = True) -> dict:
    """Score every finished cell of a run; returns the tables as pandas DataFrames.

    ``thresholds``: the PCK thresholds scored (and averaged into mPCK); None = the run's own
    ``protocol.pck_thresholds`` from ``run.json`` (the official five when it records none).

    With ``analysis`` the error analysis (:mod:`cape_bench.analysis`: error taxonomy, polysemy,
    intra-category variation) is written to ``RUN_DIR/analysis/`` as well.
    """
    import pandas as pd  # noqa: PLC0415

    run = RunDir(run_dir)
    record = run.read_run_json()  # fails clearly when this is not a run directory
    if thresholds is None:
        thresholds = tuple(record.get("config", {}).get("protocol", {}).get("pck_thresholds", pck.PCK_THRESHOLDS))
    names = _category_names(run)
    summary, intervals, ceiling, per_cat, per_kpt = [], [], [], [], []
    by_cell: dict[tuple[int, int], dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for rec in run.finished_cells():
        method, split, shots = rec["method"], rec["split"], rec["shots"]
        frame = pd.read_parquet(run.predictions(method, split, shots))
        arrays = cell_arrays(frame)
        per_pair = pck.per_pair_metrics(arrays.dist_norm, arrays.dist_px, thresholds)
        for metric, value in pck.summarize(per_pair).items():
            summary.append((method, split, shots, metric, value))
        by_cell.setdefault((split, shots), {})[method] = (per_pair["PCK@0.2"], arrays.pair_episode)
        lo, hi = pck.bootstrap_ci(per_pair["PCK@0.2"], arrays.pair_episode, reps=bootstrap_reps)
        intervals.append((method, split, shots, "PCK@0.2", lo, hi, bootstrap_reps))
        ceiling.append((method, split, shots, float(np.mean(arrays.mask.any(axis=1)))))
        valid_kpt = frame["visible_query"].to_numpy() & frame["visible_support"].to_numpy()
        dist_rows = arrays.dist_norm[frame["pair"].to_numpy(), frame["kpt"].to_numpy().astype(np.int64)]
        write_frame(
            run.scores(method, split, shots),
            pd.DataFrame(
                {
                    "pair": frame["pair"],
                    "kpt": frame["kpt"],
                    "category_id": frame["category_id"],
                    "scored": valid_kpt,
                    "dist_norm": dist_rows,
                    "dist_px": arrays.dist_px[frame["pair"].to_numpy(), frame["kpt"].to_numpy().astype(np.int64)],
                }
            ),
        )
        for cat in np.unique(arrays.pair_category):
            sel = arrays.pair_category == cat
            for metric in ("PCK@0.2", "mPCK", "NME"):
                per_cat.append((method, split, shots, int(cat), *names.get(int(cat), ("", "")), metric, float(np.mean(per_pair[metric][sel]))))
            d = arrays.dist_norm[sel]
            scored = ~np.isnan(d)
            hits = (np.where(scored, d, np.inf) < np.float32(0.2)).sum(axis=0)
            counts = scored.sum(axis=0)
            for k in range(d.shape[1]):
                if counts[k]:
                    per_kpt.append((method, split, shots, int(cat), k, int(counts[k]), float(hits[k] / counts[k])))
    tables = {
        "summary.csv": pd.DataFrame(summary, columns=["method", "split", "shots", "metric", "value"]),
        "intervals.csv": pd.DataFrame(
            intervals, columns=["method", "split", "shots", "metric", "ci95_low", "ci95_high", "bootstrap_reps"]
        ),
        "ceiling.csv": pd.DataFrame(ceiling, columns=["method", "split", "shots", "ceiling"])
        .groupby(["split", "shots"], as_index=False)["ceiling"]
        .first(),
        "per_category.csv": pd.DataFrame(
            per_cat, columns=["method", "split", "shots", "category_id", "category", "supercategory", "metric", "value"]
        ),
        "per_keypoint.csv": pd.DataFrame(
            per_kpt, columns=["method", "split", "shots", "category_id", "kpt", "scored", "PCK@0.2"]
        ),
        "paired.csv": paired_table(by_cell, bootstrap_reps),
    }
    for name, table in tables.items():
        write_frame(run.table(name), table)
    if analysis:
        from cape_bench.analysis import analyze_run  # noqa: PLC0415

        tables.update({f"analysis/{k}": v for k, v in analyze_run(run.root).items()})
    return tables


def _category_names(run: RunDir) -> dict[int, tuple[str, str]]:
    """category id → (name, supercategory), from the categories the run stored."""
    return {cid: (c["name"], c["supercategory"]) for cid, c in run.categories().items()}


PAIRED_COLUMNS = ["method_a", "method_b", "split", "shots", "metric", "delta", "ci95_low", "ci95_high", "p_value",
                  "test", "episodes", "resolved"]


def paired_table(by_cell: dict, reps: int = 1000):
    """Every ordered pair of methods of each cell: ΔPCK@0.2 (a − b) with its paired bootstrap interval over episodes
    and the Wilcoxon signed-rank p over per-episode differences (:mod:`cape_bench.metrics.paired`)."""
    import pandas as pd  # noqa: PLC0415

    from cape_bench.metrics.paired import paired_comparison  # noqa: PLC0415

    rows = []
    test = "wilcoxon signed-rank over episodes"
    for (split, shots), methods in sorted(by_cell.items()):
        names = sorted(methods)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                (pck_a, episodes_a), (pck_b, episodes_b) = methods[a], methods[b]
                if len(pck_a) != len(pck_b) or not np.array_equal(episodes_a, episodes_b):
                    continue
                r = paired_comparison(pck_a, pck_b, episodes_a, reps=reps)
                rows.append((a, b, split, shots, "PCK@0.2", r.delta, r.ci95_low, r.ci95_high, r.p_value, test,
                             r.episodes, r.resolved))
                # b − a: the same resampling draws negate Δ and swap the interval; the two-sided p is symmetric
                rows.append((b, a, split, shots, "PCK@0.2", -r.delta, -r.ci95_high, -r.ci95_low, r.p_value, test,
                             r.episodes, r.resolved))
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS).sort_values(
        ["split", "shots", "method_a", "method_b"], ignore_index=True)
