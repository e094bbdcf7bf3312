"""The predictions table of a cell: one row per (pair, keypoint), in original-image pixels.

What ``RUN_DIR/predictions/<method>/split<k>_<s>shot.parquet`` holds (:meth:`cape_bench.store.RunDir.predictions`):
``pair, episode, category_id, query_ann_id, kpt, pred_x, pred_y, gt_x, gt_y, visible_query, visible_support,
norm_px`` (the PCK normaliser: the longer side of the query's bbox, px). Scoring and the error analysis read only
this table, the episodes and the categories (:mod:`cape_bench.cells`).
"""

from __future__ import annotations

import numpy as np

from cape_bench.data.mp100 import AnnotationSet
from cape_bench.episodes import EpisodeManifest


def predictions_frame(ann: AnnotationSet, manifest: EpisodeManifest, pred_px: list[np.ndarray]):
    """One row per (pair, keypoint): prediction, ground truth, masks and the normaliser, all in original px."""
    import pandas as pd  # noqa: PLC0415

    rows_pair, rows_kpt, px, py, gx, gy, vq, vs, norm, cat, qann, ep = ([] for _ in range(12))
    for p, pred in enumerate(pred_px):
        q = ann.instances[manifest.query_obj[p]]
        sup_vis = np.all([ann.instances[s].visible for s in manifest.support_obj[p]], axis=0)
        k = len(q.visible)
        rows_pair.append(np.full(k, p, np.int32))
        rows_kpt.append(np.arange(k, dtype=np.int16))
        px.append(pred[:, 0])
        py.append(pred[:, 1])
        gx.append(q.keypoints_px[:, 0])
        gy.append(q.keypoints_px[:, 1])
        vq.append(q.visible)
        vs.append(sup_vis)
        norm.append(np.full(k, max(q.bbox_px[2], q.bbox_px[3]), np.float64))
        cat.append(np.full(k, q.category_id, np.int32))
        qann.append(np.full(k, q.ann_id, np.int64))
        ep.append(np.full(k, manifest.episode[p], np.int32))
    cat_ = np.concatenate

    return pd.DataFrame(
        {
            "pair": cat_(rows_pair),
            "episode": cat_(ep),
            "category_id": cat_(cat),
            "query_ann_id": cat_(qann),
            "kpt": cat_(rows_kpt),
            "pred_x": cat_(px).astype(np.float64),
            "pred_y": cat_(py).astype(np.float64),
            "gt_x": cat_(gx).astype(np.float32),
            "gt_y": cat_(gy).astype(np.float32),
            "visible_query": cat_(vq),
            "visible_support": cat_(vs),
            "norm_px": cat_(norm),
        }
    )
