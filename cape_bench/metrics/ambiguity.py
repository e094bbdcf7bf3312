"""Cross-category ambiguity: what the keypoint *names* share, and what that costs.

CapeNext's first motivation is polysemy: "leg" names a part of a person and of a chair
(../shared/spec/literature.md §1.1). Here a keypoint is **polysemous** when its normalised description
also names a keypoint of a category with a *different supercategory* somewhere in the dataset; the
others are **unique**. Keypoints whose description holds no letter (MP-100's bare ``"0"``, ``"1"``, …
names) are **unnamed** and belong to neither group.

Text normalisation (:func:`normalize_description`): lower case, every run of characters other than
letters and digits becomes one space, the articles "the", "a", "an" are dropped. The left/right mirror
map used by the error taxonomy (:func:`mirror_map`) is read from the same normalised words.

Functions are pure. Changing any rule here must bump ``cape_bench.analysis.ANALYSIS_VERSION``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from cape_bench.metrics.taxonomy import ERROR_TYPES, GOOD, INVERSION, SWAP

_NON_WORD = re.compile(r"[^0-9a-z]+")
_ARTICLES = frozenset({"the", "a", "an"})
_SIDE_SWAP = {"left": "right", "right": "left"}


def normalize_description(text: str) -> str:
    """The comparable form of a description: ``"Left_Front  Paw of the dog"`` → ``"left front paw of dog"``."""
    words = _NON_WORD.sub(" ", str(text).lower()).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def is_named(normalized: str) -> bool:
    """True when a normalised description holds a letter (bare indices like ``"12"`` are not names)."""
    return any(c.isalpha() for c in normalized)


def mirror_map(descriptions: Sequence[str], flip_pairs: Iterable[Sequence[int]] = ()) -> np.ndarray:
    """int64[K]: the left/right mirror partner of each keypoint, itself when it has none.

    Keypoint ``k`` is paired with ``j`` when swapping the words "left" ↔ "right" in ``k``'s normalised
    description gives exactly ``j``'s, and both descriptions occur once in the category (repeated names
    such as DeepFashion's nine "left sleeve" points get no partner: which of the nine mirrors which is
    not in the text). Explicit ``flip_pairs`` (a dataset's own, e.g. COCO's) are added on top and win.

    Args:
        descriptions: the K keypoint texts of one category.
        flip_pairs: optional ``(i, j)`` index pairs.
    """
    names = [normalize_description(d) for d in descriptions]
    k = len(names)
    index: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        index.setdefault(name, []).append(i)
    mirror = np.arange(k, dtype=np.int64)
    for i, name in enumerate(names):
        words = name.split()
        flipped = " ".join(_SIDE_SWAP.get(w, w) for w in words)
        if flipped == name or len(index[name]) != 1:
            continue
        partners = index.get(flipped, [])
        if len(partners) == 1:
            mirror[i] = partners[0]
    for i, j in flip_pairs:
        i, j = int(i), int(j)
        if not (0 <= i < k and 0 <= j < k):
            raise ValueError(f"flip pair ({i}, {j}) outside 0..{k - 1}")
        mirror[i], mirror[j] = j, i
    return mirror


def polysemy_flags(
    categories: Mapping[int, Mapping], vocabulary: Mapping[int, Mapping] | None = None
) -> dict[int, np.ndarray]:
    """Which keypoints of each category are polysemous.

    Args:
        categories: category id → ``{"supercategory": str, "descriptions": [K str]}``: the categories to flag.
        vocabulary: more categories (same shape) that count as "the dataset" but are not flagged
            themselves, e.g. the categories of the splits a run did not evaluate. Entries of
            ``categories`` take precedence for ids present in both.

    Returns:
        category id → float64[K]: 1.0 polysemous, 0.0 unique, NaN unnamed.
    """
    everything = {**(vocabulary or {}), **categories}
    supercats: dict[str, set[str]] = {}
    for entry in everything.values():
        for text in entry["descriptions"]:
            supercats.setdefault(normalize_description(text), set()).add(str(entry["supercategory"]))
    out = {}
    for cid, entry in categories.items():
        own = str(entry["supercategory"])
        flags = []
        for text in entry["descriptions"]:
            name = normalize_description(text)
            flags.append(float(bool(supercats[name] - {own})) if is_named(name) else np.nan)
        out[cid] = np.asarray(flags, np.float64)
    return out


def duplicate_name_flags(descriptions: Sequence[str]) -> np.ndarray:
    """bool[K]: the keypoint's normalised description is shared by another keypoint of the same category."""
    names = [normalize_description(d) for d in descriptions]
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return np.asarray([counts[n] > 1 and is_named(n) for n in names], bool)


def same_name_target(error_type: np.ndarray, target: np.ndarray, name_ids: np.ndarray) -> np.ndarray:
    """float32[N, K]: for each swap, 1 when it landed on a keypoint with the same normalised name, else 0.

    NaN for every keypoint that is not a swap, so ``np.nanmean`` is the share of swaps that went to a
    same-name part (e.g. one "left sleeve" point predicted on another).

    Args:
        error_type: float[N, K] codes; target: float[N, K] landing keypoint (both from
            :func:`cape_bench.metrics.taxonomy.keypoint_errors`).
        name_ids: int[K]: equal ids for equal normalised descriptions.
    """
    codes = np.asarray(error_type)
    name_ids = np.asarray(name_ids)
    is_swap = codes == SWAP
    landed = np.where(is_swap, np.asarray(target), 0).astype(np.int64)
    same = name_ids[landed] == name_ids[None, :]
    return np.where(is_swap, same.astype(np.float32), np.float32(np.nan))


def label_rate(counts: np.ndarray, select: np.ndarray, label: int) -> float:
    """Share of ``label`` among the scored keypoints of the selected rows, pooled; NaN when none is scored.

    Args:
        counts: int[M, 5] error counts (:data:`ERROR_TYPES` order). select: bool[M]. label: a code,
            e.g. :data:`cape_bench.metrics.taxonomy.SWAP`.
    """
    c = np.asarray(counts, np.float64).reshape(-1, len(ERROR_TYPES))[np.asarray(select, bool).reshape(-1)].sum(axis=0)
    return float(c[label] / c.sum()) if c.sum() else float("nan")


def polysemy_summary(counts: np.ndarray, polysemous: np.ndarray) -> dict[str, float]:
    """PCK and confusion rates of polysemous vs unique keypoints, pooled over keypoints.

    PCK here is keypoint-level (micro): the share of scored keypoints labelled good, i.e. ``d < α``.

    Args:
        counts: int[M, 5] error counts (:data:`ERROR_TYPES` order) of M keypoint rows (e.g. keypoint
            × category × cell).
        polysemous: float[M]: 1 polysemous, 0 unique, NaN unnamed (rows left out).

    Returns:
        ``n_polysemous``, ``n_unique`` (scored keypoints), ``pck_polysemous``, ``pck_unique``,
        ``pck_gap`` (unique − polysemous: what sharing a name costs), ``swap_rate_polysemous``,
        ``swap_rate_unique``, ``inversion_rate_polysemous``, ``inversion_rate_unique``; rates are NaN
        for an empty group.
    """
    counts = np.asarray(counts, np.float64).reshape(-1, len(ERROR_TYPES))
    flags = np.asarray(polysemous, np.float64).reshape(-1)
    out: dict[str, float] = {}
    for group, sel in (("polysemous", flags == 1), ("unique", flags == 0)):
        out[f"n_{group}"] = float(counts[sel].sum())
        out[f"pck_{group}"] = label_rate(counts, sel, GOOD)
        out[f"swap_rate_{group}"] = label_rate(counts, sel, SWAP)
        out[f"inversion_rate_{group}"] = label_rate(counts, sel, INVERSION)
    out["pck_gap"] = out["pck_unique"] - out["pck_polysemous"]
    return out


def probe_delta(regular_summary, probe_summary, metrics: Sequence[str] | None = None):
    """ΔPCK of a text probe: ``probe − regular`` for every (method, split, shots, metric) both runs hold.

    Args:
        regular_summary, probe_summary: pandas DataFrames in ``summary.csv`` format
            (``method, split, shots, metric, value``).
        metrics: keep only these metrics (default: all shared ones).

    Returns:
        DataFrame ``method, split, shots, metric, regular, probe, delta`` (inner join; the inputs are
        not modified).
    """
    keys = ["method", "split", "shots", "metric"]
    reg = regular_summary[keys + ["value"]].rename(columns={"value": "regular"})
    prb = probe_summary[keys + ["value"]].rename(columns={"value": "probe"})
    out = reg.merge(prb, on=keys, how="inner")
    if metrics is not None:
        out = out[out["metric"].isin(list(metrics))]
    out = out.assign(delta=out["probe"] - out["regular"])
    return out.sort_values(keys, kind="stable").reset_index(drop=True)
