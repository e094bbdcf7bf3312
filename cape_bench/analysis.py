"""Why methods fail: error analysis of a run directory, computed from stored arrays only.

:func:`analyze_run` reads a run's predictions, episodes and categories, plus the annotation files
recorded in ``run.json`` (for the support keypoints, which the predictions table does not hold, and
CAPE-Synth's per-instance metadata), and writes ``RUN_DIR/analysis/*.csv``. The metrics are the pure
functions of :mod:`cape_bench.metrics.taxonomy`, :mod:`~cape_bench.metrics.ambiguity` and
:mod:`~cape_bench.metrics.variation`; this module only loads, groups and writes.

Every row starts with ``analysis_version`` (:data:`ANALYSIS_VERSION`), ``alpha`` (the threshold on the
normalised distance), then ``method, split, shots``. Rates and PCKs are fractions in [0, 1]; an empty
cell is NaN ("not scored"). Error rates are shares of the *scored* keypoints (query and every support
visible), pooled over keypoints, so ``good`` is keypoint-level PCK@alpha.

Tables:

``errors_by_method.csv``
    ``scored`` (keypoints), ``good, inversion, swap, jitter, miss`` (rates summing to 1).
``errors_by_supercategory.csv`` / ``errors_by_category.csv``
    the same per ``supercategory`` / per ``category_id, category, supercategory``.
``errors_by_keypoint.csv``
    per ``category_id, category, supercategory, kpt, description``, with ``mirror_kpt`` (the
    left/right partner read from the descriptions; empty when none) and ``polysemous`` (1 / 0;
    empty for unnamed keypoints), then ``scored`` and the five rates.
``ambiguity.csv``
    one row per cell: ``n_polysemous, n_unique`` (scored keypoints), ``pck_polysemous, pck_unique,
    pck_gap`` (unique − polysemous), ``swap_rate_polysemous, swap_rate_unique,
    inversion_rate_polysemous, inversion_rate_unique``, ``swap_rate_duplicate_name`` (swap rate of
    keypoints whose description repeats within their category, e.g. the nine "left sleeve" points)
    and ``same_name_swap_share`` (share of all swaps that landed on a keypoint with the same
    description).
``variation_by_category.csv``
    ``category_id, category, supercategory, n_pairs`` (pairs with a scored keypoint), ``pck`` (mean
    per-pair PCK over them), ``n_queries, query_pck_std`` (std over queries of per-query PCK),
    ``n_multi_support_queries, support_var`` (mean over queries seen with ≥ 2 support sets of the
    variance of their PCK across sets), ``pose_slope`` (PCK per pose-dissimilarity quartile step).
``pose_quartiles.csv``
    per ``category_id, category, supercategory, quartile`` (1 = most similar support):
    ``n_pairs, dissimilarity_min, dissimilarity_max, pck``. Dissimilarity: Procrustes residual of the
    support keypoints aligned onto the query's, in normalised crop units.
``trends.csv``
    PCK against a pair factor, quantile bins formed within each category and pooled: ``factor``
    (``pose_dissimilarity``, or ``synth:<field>`` for each per-instance CAPE-Synth field: the support
    vs query difference, a mismatch share for categorical fields), ``bin`` (1..4; a factor with ties
    may fill only some bins), ``n_pairs, factor_min, factor_max, pck`` and ``slope`` (least-squares
    PCK per bin step over the filled bins, the same on every row of a factor). The value ranges of
    pooled bins overlap, because each category has its own quartile edges.
``notes.csv``
    ``analysis_version, table, note``: why a table or part of one is absent or restricted.

:func:`probe_table` (text-probe ΔPCK between two runs) and :func:`polysemy_knob_table` (PCK against
CAPE-Synth's polysemy knob over several runs) return tables and write nothing.

Cost: one vectorised pass per (cell, category) and one per (split, shots) for the method-independent
pair factors (support poses, synth metadata); Python loops run over categories and annotation
instances, never over pairs or keypoints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cape_bench.cells import cell_arrays
from cape_bench.metrics import ambiguity, pck, taxonomy, variation
from cape_bench.store import RunDir, write_frame

ANALYSIS_VERSION = "analysis-1"  # bump when any rule in metrics/{taxonomy,ambiguity,variation}.py or here changes
ANALYSIS_DIR = "analysis"
POSE_FACTOR = "pose_dissimilarity"
SYNTH_PREFIX = "synth:"
# per-keypoint records in CAPE-Synth's annotation["synth"], not per-instance factors
_PER_KEYPOINT_SYNTH_FIELDS = frozenset({"hidden", "hidden_xy"})
_VARIANT_KEY = {"regular": "descriptions", "synonyms": "synonyms", "translated": "translated", "typo": "typo"}
_CELL_KEYS = ["method", "split", "shots"]


# ---------------------------------------------------------------------------------------------- categories
@dataclass(frozen=True)
class _Category:
    id: int
    name: str
    supercategory: str
    descriptions: tuple[str, ...]
    mirror: np.ndarray  # int64[K]
    polysemous: np.ndarray  # float64[K]: 1 / 0 / NaN
    duplicate: np.ndarray  # bool[K]
    name_ids: np.ndarray  # int64[K]
    static: object  # DataFrame: the per-keypoint columns of errors_by_keypoint that do not depend on the cell


def _vocabulary(meta: dict) -> tuple[dict[int, dict], list[str]]:
    """Every category the dataset names (beyond the evaluated splits): descriptions file, then split files."""
    ds = meta.get("dataset") or {}
    vocab: dict[int, dict] = {}
    sources = []
    desc = ds.get("descriptions")
    if desc and Path(desc).is_file():
        data = json.loads(Path(desc).read_text())
        key = _VARIANT_KEY.get(ds.get("text_variant") or "regular", "descriptions")
        for cid, entry in (data.get("categories") or {}).items():
            if isinstance(entry, dict) and isinstance(entry.get(key), list) and "supercategory" in entry:
                vocab[int(cid)] = {"supercategory": entry["supercategory"], "descriptions": entry[key]}
        sources.append(str(desc))
    ann_dir = ds.get("ann_dir")
    if ann_dir and Path(ann_dir).is_dir():
        for path in sorted(Path(ann_dir).glob(f"mp100_split*_{ds.get('subset') or 'test'}.json")):
            for c in json.loads(path.read_text()).get("categories", []):
                if c.get("id") not in vocab and isinstance(c.get("keypoints"), list):
                    vocab[int(c["id"])] = {
                        "supercategory": c.get("supercategory", ""),
                        "descriptions": [str(n).replace("_", " ") for n in c["keypoints"]],
                    }
            sources.append(path.name)
    return vocab, sources


def _categories(run: RunDir, meta: dict) -> tuple[dict[int, _Category], list[tuple[str, str]]]:
    import pandas as pd  # noqa: PLC0415

    stored = run.categories()
    vocab, sources = _vocabulary(meta)
    notes = []
    if not sources:
        notes.append(("ambiguity.csv", (
            "polysemy judged against the evaluated categories only "
            "(descriptions file and annotation folder of run.json not found)")))
    flags = ambiguity.polysemy_flags(stored, vocab)
    out = {}
    for cid, entry in stored.items():
        texts = tuple(entry["descriptions"])
        normalized = [ambiguity.normalize_description(t) for t in texts]
        _, name_ids = np.unique(np.asarray(normalized, dtype=object), return_inverse=True)
        k = len(texts)
        mirror = ambiguity.mirror_map(texts, entry.get("flip_pairs") or ())
        duplicate = ambiguity.duplicate_name_flags(texts)
        static = pd.DataFrame({
            "category_id": np.full(k, cid, np.int64),
            "category": entry["name"],
            "supercategory": entry["supercategory"],
            "kpt": np.arange(k),
            "description": list(texts),
            "mirror_kpt": pd.Series(mirror, dtype="Int64").where(pd.Series(mirror != np.arange(k))),
            "polysemous": flags[cid],
            "duplicate_name": duplicate,
        })
        out[cid] = _Category(
            id=cid,
            name=entry["name"],
            supercategory=entry["supercategory"],
            descriptions=texts,
            mirror=mirror,
            polysemous=flags[cid],
            duplicate=duplicate,
            name_ids=np.asarray(name_ids, np.int64).reshape(-1),
            static=static,
        )
    unnamed = sorted(c.name for c in out.values() if np.isnan(c.polysemous).all())
    if unnamed:
        notes.append(("errors_by_keypoint.csv", (
            f"{len(unnamed)} of {len(out)} categories have no named keypoints "
            "(a run without a descriptions file?): no mirror pairs, so their left/right confusions count "
            f"as swaps, and they are in neither polysemy group: {', '.join(unnamed)}")))
    return out, notes


# ---------------------------------------------------------------------------------------------- instances
@dataclass
class _CategoryInstances:
    ann_ids: np.ndarray  # int64[n] sorted
    crop_xy: np.ndarray  # float64[n, K, 2] normalised crop frame
    visible: np.ndarray  # bool[n, K]
    factors: dict[str, np.ndarray] = field(default_factory=dict)  # field → float64[n] (codes if categorical)

    def local(self, ann: np.ndarray) -> np.ndarray:
        idx = np.searchsorted(self.ann_ids, ann)
        idx = np.minimum(idx, len(self.ann_ids) - 1)
        if not np.array_equal(self.ann_ids[idx], ann):
            raise ValueError("episodes name annotation ids that the annotation file does not hold")
        return idx


def _flatten_synth(record, prefix: str = "") -> dict[str, tuple[bool, object]]:
    """field → (categorical, value) for the per-instance scalars of a CAPE-Synth ``synth`` record."""
    out: dict[str, tuple[bool, object]] = {}
    if not isinstance(record, dict):
        return out
    for key, value in record.items():
        name = f"{prefix}{key}"
        if not prefix and key in _PER_KEYPOINT_SYNTH_FIELDS:
            continue
        if isinstance(value, dict):
            out.update(_flatten_synth(value, f"{name}."))
        elif isinstance(value, (bool, str)):
            out[name] = (True, value)
        elif isinstance(value, (int, float)) and np.isfinite(value):
            out[name] = (key == "id" or key.endswith("_id"), float(value))
    return out


def _instances(ann_set) -> tuple[dict[int, _CategoryInstances], dict[str, bool]]:
    """Per category: crop-frame keypoints and synth factors of every instance (a loop over instances, not pairs)."""
    by_cat: dict[int, list] = {}
    for inst in ann_set.instances:
        by_cat.setdefault(inst.category_id, []).append(inst)
    kinds: dict[str, bool] = {}
    codes: dict[str, dict] = {}
    out = {}
    for cid, insts in by_cat.items():
        insts = sorted(insts, key=lambda i: i.ann_id)
        kp = np.stack([i.keypoints_px for i in insts])
        center = np.stack([i.center_px for i in insts])
        scale = np.stack([i.scale for i in insts])
        raw = [_flatten_synth(i.extra.get("synth")) for i in insts]
        factors = {}
        for name in sorted({n for r in raw for n in r}):
            values = np.full(len(insts), np.nan)
            for j, r in enumerate(raw):
                if name in r:
                    categorical, v = r[name]
                    kinds[name] = kinds.get(name, False) or categorical
                    values[j] = codes.setdefault(name, {}).setdefault(v, len(codes[name])) if categorical else v
            factors[name] = values
        out[cid] = _CategoryInstances(
            ann_ids=np.array([i.ann_id for i in insts], np.int64),
            crop_xy=variation.crop_frame(kp, center, scale),
            visible=np.stack([i.visible for i in insts]),
            factors=factors,
        )
    return out, kinds


@dataclass
class _PairContext:
    """Method-independent facts about the pairs of one (split, shots) cell, indexed by pair id."""

    category: np.ndarray  # int64[P]
    query_ann: np.ndarray  # int64[P]
    support_set: np.ndarray  # int64[P] id of the unordered support set
    factors: dict[str, np.ndarray]  # factor name → float64[P]
    bins: dict[str, np.ndarray]  # factor name → float64[P] per-category quantile bin


def _split_ids(column) -> np.ndarray:
    """int64[P × S]: the space-separated annotation ids of a column, flattened (vectorised in Arrow)."""
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415

    parts = pc.split_pattern(pa.array(column.astype(str).to_numpy(dtype=object), type=pa.string()), " ")
    return pc.cast(pc.list_flatten(parts), pa.int64()).to_numpy()


def _pair_context(run: RunDir, split: int, shots: int, subset: str, instances, kinds) -> _PairContext:
    import pandas as pd  # noqa: PLC0415

    ep = pd.read_csv(run.episodes(split, subset, shots))
    if not np.array_equal(ep["pair"].to_numpy(), np.arange(len(ep))):
        raise ValueError(f"{run.episodes(split, subset, shots)}: pairs are not numbered 0..P-1 in order")
    support = _split_ids(ep["support_ann_ids"]).reshape(len(ep), -1)
    support_set = pd.DataFrame(np.sort(support, axis=1)).groupby(list(range(support.shape[1]))).ngroup().to_numpy()
    category = ep["category_id"].to_numpy(np.int64)
    query = ep["query_ann_id"].to_numpy(np.int64)
    factors: dict[str, np.ndarray] = {}
    if instances is not None:
        factors[POSE_FACTOR] = np.full(len(ep), np.nan)
        for cid in np.unique(category):
            sel = np.flatnonzero(category == cid)
            inst = instances.get(int(cid))
            if inst is None:
                raise ValueError(f"category {cid} of the episodes is not in the annotation file")
            q = inst.local(query[sel])
            s = inst.local(support[sel].reshape(-1)).reshape(len(sel), -1)
            factors[POSE_FACTOR][sel] = variation.pose_dissimilarity(
                inst.crop_xy[s], inst.visible[s], inst.crop_xy[q], inst.visible[q]
            )
            for name, values in inst.factors.items():
                key = SYNTH_PREFIX + name
                factors.setdefault(key, np.full(len(ep), np.nan))
                factors[key][sel] = variation.factor_difference(values[q], values[s], categorical=kinds[name])
    bins = {name: variation.quantile_bins(v, category) for name, v in factors.items()}
    return _PairContext(category, query, np.asarray(support_set, np.int64).reshape(-1), factors, bins)


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


NOT_APPLICABLE = "not applicable: method does not read text"
NOT_COMPARABLE = "not comparable: the runs scored different episodes"


def probe_table(regular_run, probe_run, metric: str = "PCK@0.2"):
    """ΔPCK of a text probe (e.g. synonyms, typos, a wrong class name) against a regular run.

    Args:
        regular_run, probe_run: run directories over the same episodes; the probe run changes only
            the text the methods read.
        metric: summary metric to compare.

    Returns:
        DataFrame ``analysis_version, method, split, shots, metric, regular_run, probe_run,
        regular_text_variant, probe_text_variant, regular, probe, delta, status``. ``delta`` is
        ``probe − regular`` (:func:`cape_bench.metrics.ambiguity.probe_delta`) and is empty, with
        ``status`` saying why, for a method that does not read text (``info.reads_text`` False in
        its cell record: "not applicable") or cells whose episodes differ; ``status`` is ``ok``
        otherwise.
    """
    reg, prb = RunDir(regular_run), RunDir(probe_run)
    reg_meta, prb_meta = reg.read_run_json(), prb.read_run_json()
    table = ambiguity.probe_delta(_summary(reg), _summary(prb), [metric])
    reg_cells, prb_cells = _cell_records(reg), _cell_records(prb)
    status = []
    for key in zip(table["method"], table["split"], table["shots"], strict=True):
        r, p = reg_cells.get(key, {}), prb_cells.get(key, {})
        reads_text = (p.get("info") or r.get("info") or {}).get("reads_text", False)
        if not reads_text:
            status.append(NOT_APPLICABLE)
        elif r.get("episodes_sha256") != p.get("episodes_sha256"):
            status.append(NOT_COMPARABLE)
        else:
            status.append("ok")
    table = table.assign(status=status)
    table["delta"] = table["delta"].where(table["status"] == "ok")
    table.insert(4, "regular_run", reg.root.name)
    table.insert(5, "probe_run", prb.root.name)
    table.insert(6, "regular_text_variant", (reg_meta.get("dataset") or {}).get("text_variant"))
    table.insert(7, "probe_text_variant", (prb_meta.get("dataset") or {}).get("text_variant"))
    table.insert(0, "analysis_version", ANALYSIS_VERSION)
    return table


def _find_numeric(obj, key: str) -> list[float]:
    """Every numeric value stored under ``key`` anywhere in nested dicts and lists."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key and isinstance(v, (int, float)) and not isinstance(v, bool):
                found.append(float(v))
            else:
                found += _find_numeric(v, key)
    elif isinstance(obj, list):
        for v in obj:
            found += _find_numeric(v, key)
    return found


def _knob_value(run: RunDir, meta: dict, knob: str) -> float:
    """The knob's value: run.json ``dataset.generated`` first, then the annotation files' ``info``."""
    values = _find_numeric((meta.get("dataset") or {}).get("generated"), knob)
    if not values:
        for record in (meta.get("annotations") or {}).values():
            path = record.get("file")
            if path and Path(path).is_file():
                values += _find_numeric(json.loads(Path(path).read_text()).get("info"), knob)
    if not values:
        raise ValueError(f"{run.root}: no numeric {knob!r} in run.json dataset.generated or the annotation files' info")
    if len(set(values)) > 1:
        raise ValueError(f"{run.root}: several values of {knob!r}: {sorted(set(values))}")
    return values[0]


def polysemy_knob_table(run_dirs, knob: str = "polysemy", alpha: float = taxonomy.DEFAULT_ALPHA):
    """PCK as a function of a CAPE-Synth generation knob (default: polysemy) over several runs.

    Args:
        run_dirs: run directories whose datasets were generated with different values of ``knob``.
        knob: the numeric knob to read (see :func:`_knob_value`).
        alpha: PCK threshold.

    Returns:
        DataFrame ``analysis_version, alpha, knob, value, run, method, split, shots, pck`` (official
        per-pair mean PCK@alpha), ``pck_polysemous, pck_unique, pck_gap`` (keypoint-level, as in
        ``ambiguity.csv``) and ``slope`` (least-squares PCK per knob unit across the runs of a
        (method, split, shots); NaN with fewer than two knob values), sorted by method, split,
        shots, value.
    """
    import pandas as pd  # noqa: PLC0415

    rows = []
    for run_dir in run_dirs:
        run = RunDir(run_dir)
        meta = run.read_run_json()
        value = _knob_value(run, meta, knob)
        cats, _ = _categories(run, meta)
        for rec in run.finished_cells():
            frame = pd.read_parquet(run.predictions(rec["method"], rec["split"], rec["shots"]))
            res = _analyze_cell(frame, cats, alpha)
            kp = res.keypoints
            summary = ambiguity.polysemy_summary(kp[list(taxonomy.ERROR_TYPES)].to_numpy(), kp["polysemous"].to_numpy())
            official = float(np.mean(pck.pck_per_pair(cell_arrays(frame).dist_norm, alpha)))
            rows.append({
                "knob": knob, "value": value, "run": str(run.root), "method": rec["method"], "split": rec["split"],
                "shots": rec["shots"], "pck": official, "pck_polysemous": summary["pck_polysemous"],
                "pck_unique": summary["pck_unique"], "pck_gap": summary["pck_gap"],
            })
    table = pd.DataFrame(rows, columns=["knob", "value", "run", *_CELL_KEYS, "pck", "pck_polysemous", "pck_unique",
                                        "pck_gap"])
    slopes = {}
    for key, group in table.groupby(_CELL_KEYS):
        x, y = group["value"].to_numpy(float), group["pck"].to_numpy(float)
        xc = x - x.mean()
        slopes[key] = float(np.sum(xc * (y - y.mean())) / np.sum(xc * xc)) if np.sum(xc * xc) > 0 else np.nan
    table["slope"] = [slopes[k] for k in zip(table["method"], table["split"], table["shots"], strict=True)]
    table = table.sort_values([*_CELL_KEYS, "value"], kind="stable").reset_index(drop=True)
    return _stamp(table, alpha)
