"""The error analysis of one (method, split, shots) cell: taxonomy, ambiguity, variation and trend rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cape_bench.analysis.inputs import ANALYSIS_VERSION, POSE_FACTOR, _Category, _PairContext
from cape_bench.metrics import ambiguity, taxonomy, variation

# ---------------------------------------------------------------------------------------------- one cell
_PRED_COLUMNS = ["pair", "category_id", "query_ann_id", "kpt", "pred_x", "pred_y", "gt_x", "gt_y",
                 "visible_query", "visible_support", "norm_px"]


def _category_blocks(frame, cats: dict[int, _Category]):
    """Yield ``(category, pair ids [N], arrays)`` per category, with ``[N, K]`` arrays cut from the long table.

    Rows of one pair are contiguous with ``kpt`` 0..K-1 (as the runner writes them; other orders are
    sorted first), so each category's block is a plain reshape: no padding to the cell's largest K.
    """
    pair = frame["pair"].to_numpy(np.int64)
    kpt = frame["kpt"].to_numpy(np.int64)
    if len(pair) > 1 and not np.all((np.diff(pair) > 0) | ((np.diff(pair) == 0) & (np.diff(kpt) == 1))):
        order = np.lexsort((kpt, pair))
        frame = frame.iloc[order]
        pair, kpt = pair[order], kpt[order]
    columns = {c: frame[c].to_numpy() for c in _PRED_COLUMNS}
    category = columns["category_id"].astype(np.int64)
    for cid in np.unique(category).tolist():
        cat = cats.get(cid)
        if cat is None:
            raise ValueError(f"category {cid} has predictions but no entry in categories/")
        k = len(cat.descriptions)
        rows = np.flatnonzero(category == cid)
        if len(rows) % k or not np.array_equal(kpt[rows], np.tile(np.arange(k), len(rows) // k)):
            raise ValueError(f"category {cid} ({cat.name}): prediction rows are not {k} keypoints per pair")
        n = len(rows) // k

        def block(c, rows=rows, n=n, k=k):
            return columns[c][rows].reshape(n, k)

        yield cat, pair[rows[::k]], {
            "pred": np.stack([block("pred_x"), block("pred_y")], axis=-1),
            "gt": np.stack([block("gt_x"), block("gt_y")], axis=-1),
            "visible_query": block("visible_query").astype(bool),
            "scored": block("visible_query").astype(bool) & block("visible_support").astype(bool),
            "norm": columns["norm_px"][rows[::k]],
            "query_ann": columns["query_ann_id"][rows[::k]].astype(np.int64),
        }


@dataclass
class _CellResult:
    keypoints: object  # DataFrame: one row per (category, keypoint) with label counts
    pair_pck: np.ndarray  # float64[P], NaN for a pair without a scored keypoint
    pair_category: np.ndarray  # int64[P]
    query_ann: np.ndarray  # int64[P]
    same_name: tuple[float, int]  # (swaps onto a same-name keypoint, swaps)


def _analyze_cell(frame, cats: dict[int, _Category], alpha: float) -> _CellResult:
    """Label every keypoint of one cell and count labels per keypoint (vectorised within each category).

    The distances are :func:`cape_bench.metrics.pck.normalized_distances` on each category's
    ``[N, K]`` block: the same function and inputs as :func:`cape_bench.cells.cell_arrays`, without
    padding every category to the largest K of the cell.
    """
    import pandas as pd  # noqa: PLC0415

    n_pairs = int(frame["pair"].max()) + 1 if len(frame) else 0
    pair_pck = np.full(n_pairs, np.nan)
    pair_category = np.full(n_pairs, -1, np.int64)
    query_ann = np.full(n_pairs, -1, np.int64)
    statics, all_counts = [], []
    same_total, swap_total = 0.0, 0
    for cat, pairs, a in _category_blocks(frame, cats):
        errs = taxonomy.keypoint_errors(
            a["pred"], a["gt"], a["visible_query"], a["scored"], a["norm"], cat.mirror, alpha
        )
        pair_pck[pairs] = variation.scored_pair_pck(errs.distance, alpha)
        pair_category[pairs] = cat.id
        query_ann[pairs] = a["query_ann"]
        counts = taxonomy.error_counts(errs.error_type, axis=0)  # [K, 5]
        same = ambiguity.same_name_target(errs.error_type, errs.target, cat.name_ids)
        same_total += float(np.nansum(same))
        swap_total += int(np.sum(~np.isnan(same)))
        statics.append(cat.static)
        all_counts.append(counts)
    if statics:
        keypoints = pd.concat(statics, ignore_index=True)
        keypoints[list(taxonomy.ERROR_TYPES)] = np.concatenate(all_counts)
    else:
        keypoints = _empty_keypoints()
    return _CellResult(
        keypoints=keypoints,
        pair_pck=pair_pck,
        pair_category=pair_category,
        query_ann=query_ann,
        same_name=(same_total, swap_total),
    )


def _empty_keypoints():
    import pandas as pd  # noqa: PLC0415

    return pd.DataFrame(columns=["category_id", "category", "supercategory", "kpt", "description", "mirror_kpt",
                                 "polysemous", "duplicate_name", *taxonomy.ERROR_TYPES])


def _rates(counts_frame, keys: list[str]):
    """Sum label counts over ``keys`` groups; return ``keys, scored, good … miss`` as rates."""
    types = list(taxonomy.ERROR_TYPES)
    summed = counts_frame.groupby(keys, sort=True, dropna=False)[types].sum().reset_index()
    counts = summed[types].to_numpy()
    summed["scored"] = counts.sum(axis=1)
    summed[types] = taxonomy.error_rates(counts)
    return summed[keys + ["scored"] + types][summed["scored"] > 0].reset_index(drop=True)


def _stamp(frame, alpha: float):
    frame = frame.copy()
    frame.insert(0, "alpha", float(alpha))
    frame.insert(0, "analysis_version", ANALYSIS_VERSION)
    return frame


def _ambiguity_row(res: _CellResult) -> dict:
    kp = res.keypoints
    counts = kp[list(taxonomy.ERROR_TYPES)].to_numpy()
    same, swaps = res.same_name
    return {
        **ambiguity.polysemy_summary(counts, kp["polysemous"].to_numpy()),
        "swap_rate_duplicate_name": ambiguity.label_rate(counts, kp["duplicate_name"].to_numpy(), taxonomy.SWAP),
        "same_name_swap_share": same / swaps if swaps else np.nan,
    }


def _variation_rows(cell: dict, ctx: _PairContext, res: _CellResult, cats: dict[int, _Category]) -> list[dict]:
    rows = []
    pose_bins = ctx.bins.get(POSE_FACTOR)
    for cid in np.unique(ctx.category).tolist():
        sel = ctx.category == cid
        v = res.pair_pck[sel]
        spread, n_q = variation.query_spread(v, ctx.query_ann[sel])
        sens, n_multi = variation.support_sensitivity(v, ctx.query_ann[sel], ctx.support_set[sel])
        slope = variation.trend_slope(variation.bin_means(pose_bins[sel], v)[0]) if pose_bins is not None else np.nan
        rows.append({
            **cell, "category_id": cid, "category": cats[cid].name, "supercategory": cats[cid].supercategory,
            "n_pairs": int(np.sum(~np.isnan(v))), "pck": float(np.nanmean(v)) if np.any(~np.isnan(v)) else np.nan,
            "n_queries": n_q, "query_pck_std": spread, "n_multi_support_queries": n_multi, "support_var": sens,
            "pose_slope": slope,
        })
    return rows


def _pose_quartile_rows(cell: dict, ctx: _PairContext, res: _CellResult, cats: dict[int, _Category]) -> list[dict]:
    if POSE_FACTOR not in ctx.bins:
        return []
    rows = []
    for cid in np.unique(ctx.category).tolist():
        sel = ctx.category == cid
        bins, dis = ctx.bins[POSE_FACTOR][sel], ctx.factors[POSE_FACTOR][sel]
        means, n = variation.bin_means(bins, res.pair_pck[sel])
        for q in np.flatnonzero(n):
            in_bin = bins == q + 1
            rows.append({
                **cell, "category_id": cid, "category": cats[cid].name, "supercategory": cats[cid].supercategory,
                "quartile": int(q + 1), "n_pairs": int(n[q]), "dissimilarity_min": float(dis[in_bin].min()),
                "dissimilarity_max": float(dis[in_bin].max()), "pck": means[q],
            })
    return rows


def _trend_rows(cell: dict, ctx: _PairContext, res: _CellResult) -> list[dict]:
    rows = []
    for name, bins in ctx.bins.items():
        means, n = variation.bin_means(bins, res.pair_pck)
        slope = variation.trend_slope(means)
        values = ctx.factors[name]
        for b in np.flatnonzero(n):
            in_bin = bins == b + 1
            rows.append({
                **cell, "factor": name, "bin": int(b + 1), "n_pairs": int(n[b]),
                "factor_min": float(values[in_bin].min()), "factor_max": float(values[in_bin].max()),
                "pck": means[b], "slope": slope,
            })
    return rows
