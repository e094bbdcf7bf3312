"""A cell's stored prediction table (one row per pair × keypoint) as padded per-pair arrays with the official distances.

Shared by scoring (:mod:`cape_bench.scoring`) and the error analysis (:mod:`cape_bench.analysis`), which both read
the stored predictions and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cape_bench.metrics import pck


@dataclass(frozen=True)
class CellArrays:
    """A cell's long prediction table as padded arrays ``[P pairs, Kmax]`` (NaN / False padding)."""

    pair_category: np.ndarray  # int[P]
    pair_episode: np.ndarray  # int[P]
    dist_norm: np.ndarray  # float32[P, Kmax], NaN where not scored
    dist_px: np.ndarray  # float32[P, Kmax]
    mask: np.ndarray  # bool[P, Kmax]


def cell_arrays(frame) -> CellArrays:
    """Pad the long table by (pair, kpt) and compute the official distances."""
    pair = frame["pair"].to_numpy()
    kpt = frame["kpt"].to_numpy().astype(np.int64)
    n_pairs = int(pair.max()) + 1 if len(pair) else 0
    kmax = int(kpt.max()) + 1 if len(kpt) else 0

    def padded(col, fill, dtype):
        out = np.full((n_pairs, kmax), fill, dtype=dtype)
        out[pair, kpt] = frame[col].to_numpy()
        return out

    pred = np.stack([padded("pred_x", np.nan, np.float64), padded("pred_y", np.nan, np.float64)], axis=-1)
    gt = np.stack([padded("gt_x", np.nan, np.float32), padded("gt_y", np.nan, np.float32)], axis=-1)
    mask = padded("visible_query", False, bool) & padded("visible_support", False, bool)
    norm = np.zeros(n_pairs)
    norm[pair] = frame["norm_px"].to_numpy()
    category = np.zeros(n_pairs, np.int64)
    category[pair] = frame["category_id"].to_numpy()
    episode = np.zeros(n_pairs, np.int64)
    episode[pair] = frame["episode"].to_numpy()
    return CellArrays(
        pair_category=category,
        pair_episode=episode,
        dist_norm=pck.normalized_distances(pred, gt, mask, norm),
        dist_px=pck.pixel_distances(pred, gt, mask),
        mask=mask,
    )
