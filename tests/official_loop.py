"""A per-pair scoring loop written the way the official code does it (mmpose 0.x ``keypoint_*`` helpers
called once per pair and threshold, as in ``TestBaseDataset._report_metric``). Test-only reference:
it is what the vectorised :mod:`cape_bench.metrics.pck` must equal, and what the benchmark beats."""

from __future__ import annotations

import numpy as np


def _calc_distances(preds, targets, mask, normalize):
    n, k, _ = preds.shape
    _mask = mask.copy()
    _mask[np.where((normalize == 0).sum(1))[0], :] = False
    distances = np.full((n, k), -1, dtype=np.float32)
    normalize = normalize.copy()
    normalize[np.where(normalize <= 0)] = 1e6
    distances[_mask] = np.linalg.norm(((preds - targets) / normalize[:, None, :])[_mask], axis=-1)
    return distances.T


def _distance_acc(distances, thr):
    valid = distances != -1
    n_valid = valid.sum()
    if n_valid > 0:
        return (distances[valid] < thr).sum() / n_valid
    return -1


def keypoint_pck_accuracy(pred, gt, mask, thr, normalize):
    distances = _calc_distances(pred, gt, mask, normalize)
    acc = np.array([_distance_acc(d, thr) for d in distances])
    valid_acc = acc[acc >= 0]
    cnt = len(valid_acc)
    avg_acc = valid_acc.mean() if cnt > 0 else 0
    return acc, avg_acc, cnt


def keypoint_auc(pred, gt, mask, normalize, num_step=20):
    nor = np.tile(np.array([[normalize, normalize]]), (pred.shape[0], 1))
    x = [1.0 * i / num_step for i in range(num_step)]
    y = [keypoint_pck_accuracy(pred, gt, mask, thr, nor)[1] for thr in x]
    auc = 0
    for i in range(num_step):
        auc += 1.0 / num_step * y[i]
    return auc


def keypoint_mean(pred, gt, mask, normalize):
    distances = _calc_distances(pred, gt, mask, normalize)
    valid = distances[distances != -1]
    return valid.sum() / max(1, len(valid))


def report_metric(outputs, gts, masks, bbox_sides, thresholds=(0.05, 0.1, 0.15, 0.2, 0.25)):
    """outputs/gts: lists of [K, 2]; masks: list of bool[K]; bbox_sides: list of floats."""
    results = {}
    pck = {t: [] for t in thresholds}
    nme, auc, epe = [], [], []
    for out, gt, mask, side in zip(outputs, gts, masks, bbox_sides, strict=True):
        thr_bbox = np.array([[side, side]])
        o, g, m = out[None], gt[None], mask[None]
        for t in thresholds:
            pck[t].append(keypoint_pck_accuracy(o, g, m, t, thr_bbox)[1])
        nme.append(keypoint_mean(o, g, m, thr_bbox))
        auc.append(keypoint_auc(o, g, m, side))
        epe.append(keypoint_mean(o, g, m, np.ones((1, 2), dtype=np.float32)))
    mpck = 0
    for t in thresholds:
        results[f"PCK@{t}"] = np.mean(pck[t])
        mpck += np.mean(pck[t])
    results["mPCK"] = mpck / len(thresholds)
    results["NME"] = np.mean(nme)
    results["AUC"] = np.mean(auc)
    results["EPE"] = np.mean(epe)
    return results
