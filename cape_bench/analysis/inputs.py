"""What the error analysis reads besides predictions: categories (vocabulary, polysemy), instances (CAPE-Synth metadata) and per-pair context (support poses)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cape_bench.metrics import ambiguity, variation
from cape_bench.store import RunDir

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
