"""Qualitative examples: support and query side by side, ground truth and each method's prediction.

Only when the run recorded an image root that exists here. Per category, the worst query and a
median query of the split's smallest-shots cell, ranked by the per-query PCK@0.2 averaged over the
run's methods (ties: larger mean normalised error is worse). Categories are taken hardest first until
:data:`MAX_TOTAL` examples or :data:`IMAGE_BUDGET_BYTES` of images are reached, so the report stays
small. Images are the official crops (cape_bench.images / cape_bench.data.geometry), as PNG data URIs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cape_bench.report.runs import RunData
from cape_bench.store import RunDir

MAX_PER_CATEGORY = 2  # the worst and a median query
MAX_TOTAL = 40
IMAGE_BUDGET_BYTES = 5_000_000  # base64 bytes of all example images together
PANEL = 168  # px, side of one panel
SUPERSAMPLE = 2  # draw at 2× and downsample, for smooth lines
THRESHOLD = np.float32(0.2)  # PCK@0.2, compared in float32 as the official code does

GT_COLOR = (34, 197, 94)
MISS_COLOR = (239, 68, 68)
HIT_COLOR = (248, 250, 252)


@dataclass
class Candidate:
    hardness: float  # category mean PCK over methods (lower = harder)
    split: int
    shots: int
    category_id: int
    pairs: list[tuple[str, int, float]]  # (kind, pair, mean PCK over methods)


def _hex_rgb(color: str) -> tuple[int, int, int]:
    color = color.lstrip("#")
    return tuple(int(color[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


def build(runs: list[RunData], colors: dict[str, str]) -> dict:
    """Context of ``qualitative.html.j2``."""
    examples: list[dict] = []
    notes: list[str] = []
    used = 0
    for run in runs:
        if len(examples) >= MAX_TOTAL or used >= IMAGE_BUDGET_BYTES:
            break
        used = _run_examples(run, colors, examples, notes, used)
    return {"examples": examples, "notes": notes, "max_per_category": MAX_PER_CATEGORY, "max_total": MAX_TOTAL,
            "threshold": float(THRESHOLD)}


def _image_root(run: RunData, notes: list[str]) -> Path | None:
    root = (run.meta.get("dataset") or {}).get("image_root")
    if not root:
        notes.append(f"{run.label}: the run recorded no image root (it ran without --images), so it has no "
                     "qualitative examples.")
        return None
    if not Path(root).is_dir():
        notes.append(f"{run.label}: the image root {root} is not on this machine, so no qualitative examples.")
        return None
    return Path(root)


def pair_scores(scores):
    """Per-pair PCK@0.2 and mean normalised error from a cell's score table (pairs with a scored keypoint)."""
    import pandas as pd  # noqa: PLC0415

    s = scores[scores["scored"]]
    hit = s["dist_norm"].to_numpy(np.float32) < THRESHOLD
    frame = pd.DataFrame({"pair": s["pair"].to_numpy(), "category_id": s["category_id"].to_numpy(), "hit": hit,
                          "dist": s["dist_norm"].to_numpy(np.float64)})
    return frame.groupby("pair").agg(category_id=("category_id", "first"), pck=("hit", "mean"), dist=("dist", "mean"))


def _candidates(run: RunData) -> list[Candidate]:
    import pandas as pd  # noqa: PLC0415

    rd = RunDir(run.path)
    out = []
    splits = sorted({int(c["split"]) for c in run.cells})
    for split in splits:
        shots = min(int(c["shots"]) for c in run.cells if int(c["split"]) == split)
        methods = [m for m in run.methods() if run.cell(m, split, shots) and rd.scores(m, split, shots).exists()]
        if not methods:
            continue
        per_method = []
        for m in methods:
            scores = pd.read_parquet(rd.scores(m, split, shots), columns=["pair", "category_id", "scored", "dist_norm"])
            per_method.append(pair_scores(scores))
        joined = pd.concat(per_method, keys=range(len(per_method)), names=["m", "pair"]).reset_index()
        mean = joined.groupby("pair").agg(category_id=("category_id", "first"), pck=("pck", "mean"),
                                          dist=("dist", "mean"))
        for cid, group in mean.groupby("category_id"):
            ranked = group.sort_values(["pck", "dist"], ascending=[True, False])
            picks = [("worst", int(ranked.index[0]), float(ranked["pck"].iloc[0]))]
            if len(ranked) > 2 and MAX_PER_CATEGORY > 1:
                mid = len(ranked) // 2
                picks.append(("median", int(ranked.index[mid]), float(ranked["pck"].iloc[mid])))
            out.append(Candidate(float(group["pck"].mean()), split, shots, int(cid), picks[:MAX_PER_CATEGORY]))
    return sorted(out, key=lambda c: (c.hardness, c.split, c.category_id))


def _run_examples(run: RunData, colors: dict[str, str], examples: list[dict], notes: list[str], used: int) -> int:
    import pandas as pd  # noqa: PLC0415

    from cape_bench.data.mp100 import AnnotationError, load_annotation_set  # noqa: PLC0415

    root = _image_root(run, notes)
    if root is None:
        return used
    rd = RunDir(run.path)
    subset = (run.meta.get("dataset") or {}).get("subset") or "test"
    candidates = _candidates(run)
    chosen: list[Candidate] = []
    room = MAX_TOTAL - len(examples)
    for cand in candidates:
        if room <= 0:
            break
        cand.pairs = cand.pairs[:room]
        chosen.append(cand)
        room -= len(cand.pairs)
    skipped_categories = len(candidates) - len(chosen)
    annotations: dict[int, dict] = {}
    predictions: dict[tuple[int, int], dict] = {}  # (split, shots) → method → its rows of the chosen pairs
    budget_hit = False
    for cand in chosen:
        if used >= IMAGE_BUDGET_BYTES:
            budget_hit = True
            break
        if cand.split not in annotations:
            record = (run.meta.get("annotations") or {}).get(f"split{cand.split}") or {}
            try:
                ann = load_annotation_set(record.get("file", ""))
            except AnnotationError as err:
                notes.append(f"{run.label}, split {cand.split}: annotation file unusable ({err}); no examples.")
                annotations[cand.split] = {}
                continue
            if record.get("sha256") and ann.sha256 != record["sha256"]:
                notes.append(f"{run.label}, split {cand.split}: {ann.path} changed since the run (sha256 differs); "
                             "no examples drawn from it.")
                annotations[cand.split] = {}
                continue
            episodes = pd.read_csv(rd.episodes(cand.split, subset, cand.shots)).set_index("pair")
            annotations[cand.split] = {"ann": ann, "by_id": {i.ann_id: i for i in ann.instances},
                                       "episodes": {cand.shots: episodes}}
        data = annotations[cand.split]
        if not data:
            continue
        if cand.shots not in data["episodes"]:
            data["episodes"][cand.shots] = pd.read_csv(rd.episodes(cand.split, subset, cand.shots)).set_index("pair")
        episodes = data["episodes"][cand.shots]
        cell = (cand.split, cand.shots)
        if cell not in predictions:  # each method's predictions of the cell read once, for all its examples
            methods = [m for m in run.methods() if run.cell(m, *cell)]
            wanted = [p for c in chosen if (c.split, c.shots) == cell for _, p, _ in c.pairs]
            predictions[cell] = {m: pd.read_parquet(rd.predictions(m, *cell), filters=[("pair", "in", wanted)])
                                 for m in methods}
        preds = {m: frame[frame["pair"].isin([p for _, p, _ in cand.pairs])]
                 for m, frame in predictions[cell].items()}
        category = data["ann"].categories[cand.category_id]
        for kind, pair, mean_pck in cand.pairs:
            row = episodes.loc[pair]
            query = data["by_id"][int(row["query_ann_id"])]
            supports = [data["by_id"][int(a)] for a in str(row["support_ann_ids"]).split()]
            try:
                example = _example(run, root, category, query, supports, preds, pair, colors)
            except FileNotFoundError as err:
                notes.append(f"{run.label}: {err}; example skipped.")
                continue
            example.update({"kind": kind, "split": cand.split, "shots": cand.shots, "mean_pck": mean_pck * 100,
                            "run": run.label, "pair": pair})
            examples.append(example)
            used += sum(len(p["uri"]) for p in example["panels"])
    if budget_hit:
        notes.append(f"{run.label}: stopped at {len(examples)} examples to keep the images under "
                     f"{IMAGE_BUDGET_BYTES / 1e6:.0f} MB.")
    elif skipped_categories > 0:
        notes.append(f"{run.label}: examples are shown for the {len(chosen)} hardest categories; the other "
                     f"{skipped_categories} have none (at most {MAX_TOTAL} examples keep the report small).")
    return used


def _example(run: RunData, root: Path, category, query, supports, preds, pair: int, colors) -> dict:
    from cape_bench.report.figures import png_data_uri  # noqa: PLC0415

    skeleton = np.asarray(category.skeleton, dtype=np.int64).reshape(-1, 2)
    panels = []
    sup = supports[0]
    sup_img = _crop(root, sup)
    _draw_pose(sup_img, _to_crop(sup.keypoints_px, sup), sup.visible, skeleton, GT_COLOR)
    caption = "support (ground truth)" if len(supports) == 1 else f"support 1 of {len(supports)} (ground truth)"
    panels.append({"uri": png_data_uri(_finish(sup_img)), "caption": caption, "color": ""})
    q_base = _crop(root, query)
    q_gt = q_base.copy()
    gt_crop = _to_crop(query.keypoints_px, query)
    _draw_pose(q_gt, gt_crop, query.visible, skeleton, GT_COLOR)
    panels.append({"uri": png_data_uri(_finish(q_gt)), "caption": "query (ground truth)", "color": ""})
    for m, frame in preds.items():
        rows = frame[frame["pair"] == pair].sort_values("kpt")
        if rows.empty:
            continue
        scored = rows["visible_query"].to_numpy(bool) & rows["visible_support"].to_numpy(bool)
        pred = np.stack([rows["pred_x"].to_numpy(np.float64), rows["pred_y"].to_numpy(np.float64)], axis=1)
        gt = np.stack([rows["gt_x"].to_numpy(np.float64), rows["gt_y"].to_numpy(np.float64)], axis=1)
        norm = float(rows["norm_px"].iloc[0])
        dist = (np.linalg.norm(pred - gt, axis=1) / (norm if norm > 0 else 1e6)).astype(np.float32)
        hit = scored & (dist < THRESHOLD)
        img = (q_base.astype(np.float32) * 0.7).astype(np.uint8)  # dimmed, so the overlay stands out
        color = _hex_rgb(colors.get(run.display[m], "#888888"))
        _draw_prediction(img, _to_crop(pred, query), _to_crop(gt, query), scored, hit, skeleton, color)
        n = int(scored.sum())
        pck = f"{100 * hit.sum() / n:.0f}% ({int(hit.sum())}/{n})" if n else "no scored keypoint"
        panels.append({"uri": png_data_uri(_finish(img)), "caption": f"{run.display[m]} · PCK@0.2 {pck}",
                       "color": colors.get(run.display[m], "#888")})
    return {"category": category.name, "supercategory": category.supercategory, "panels": panels,
            "query_ann": query.ann_id, "support_anns": [s.ann_id for s in supports]}


# ------------------------------------------------------------------------------------------------ drawing


def _crop(root: Path, inst) -> np.ndarray:
    """The official crop of an instance, drawn at SUPERSAMPLE × PANEL px (uint8 RGB)."""
    from cape_bench.data.geometry import warp_crop  # noqa: PLC0415
    from cape_bench.images import read_rgb  # noqa: PLC0415

    path = root / inst.image_file
    if not path.is_file():
        raise FileNotFoundError(f"image {path} is missing")
    return warp_crop(read_rgb(path), inst.center_px, inst.scale, PANEL * SUPERSAMPLE)


def _to_crop(xy_px: np.ndarray, inst) -> np.ndarray:
    from cape_bench.data.geometry import image_to_crop  # noqa: PLC0415

    side = PANEL * SUPERSAMPLE
    return image_to_crop(np.asarray(xy_px, np.float64)[None], np.asarray(inst.center_px)[None],
                         np.asarray(inst.scale)[None], (side, side))[0]


def _finish(img: np.ndarray) -> np.ndarray:
    import cv2  # noqa: PLC0415

    return cv2.resize(img, (PANEL, PANEL), interpolation=cv2.INTER_AREA)


def _pt(xy) -> tuple[int, int]:
    """Fixed-point (shift 4) integer point, clipped far outside the panel so huge predictions stay drawable."""
    lim = PANEL * SUPERSAMPLE * 4
    x = min(max(float(xy[0]), -lim), lim)  # plain floats: np.clip per scalar costs ~1 s over a report's drawing
    y = min(max(float(xy[1]), -lim), lim)
    return int(round(x * 16)), int(round(y * 16))


def _line(img, a, b, color, thickness, halo: bool = False):
    """An anti-aliased line; with ``halo``, over a dark outline so it reads on any background."""
    import cv2  # noqa: PLC0415

    if halo:
        cv2.line(img, _pt(a), _pt(b), (15, 15, 15), thickness + 2 * SUPERSAMPLE, cv2.LINE_AA, shift=4)
    cv2.line(img, _pt(a), _pt(b), color, thickness, cv2.LINE_AA, shift=4)


def _dot(img, xy, color, radius, outline=(20, 20, 20)):
    import cv2  # noqa: PLC0415

    cv2.circle(img, _pt(xy), (radius + 1) * 16, outline, -1, cv2.LINE_AA, shift=4)
    cv2.circle(img, _pt(xy), radius * 16, color, -1, cv2.LINE_AA, shift=4)


def _draw_pose(img, pts, visible, skeleton, color) -> None:
    """Ground truth: skeleton between visible keypoints, then the keypoints."""
    s = SUPERSAMPLE
    for a, b in skeleton:
        if a < len(pts) and b < len(pts) and visible[a] and visible[b]:
            _line(img, pts[a], pts[b], color, 2 * s, halo=True)
    for k in np.flatnonzero(visible):
        _dot(img, pts[k], color, 3 * s)


def _draw_prediction(img, pred, gt, scored, hit, skeleton, color) -> None:
    """A method's prediction: its skeleton, an error line to the ground truth (red = miss), the keypoints."""
    s = SUPERSAMPLE
    for a, b in skeleton:
        if a < len(pred) and b < len(pred) and scored[a] and scored[b]:
            _line(img, pred[a], pred[b], color, 2 * s, halo=True)
    for k in np.flatnonzero(scored):
        _line(img, gt[k], pred[k], HIT_COLOR if hit[k] else MISS_COLOR, 1 * s)
        _dot(img, gt[k], (230, 230, 230), 1 * s, outline=(40, 40, 40))
    for k in np.flatnonzero(scored):
        _dot(img, pred[k], color if hit[k] else MISS_COLOR, 3 * s, outline=(255, 255, 255) if hit[k] else (20, 20, 20))
