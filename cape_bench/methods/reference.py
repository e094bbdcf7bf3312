"""Three reference methods that need no pixels.

``support-copy`` is the no-learning floor of the support-image methods: every query keypoint goes
where the support keypoint sits in the normalised crop frame, x_q = c_q + (s_q / s_s)(x_s − c_s),
averaged over the shots that see it. ``text-prior`` is the floor of the text methods: it reads only
the keypoint descriptions (no image, no support keypoint) and puts each keypoint at the median crop-frame
location its description has over the training split. ``oracle`` returns the ground truth; under the
official averaging (a pair without a valid keypoint scores 0) it measures the protocol ceiling of a cell.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from cape_bench.api import InstanceView, MethodInfo, RunContext
from cape_bench.data.mp100 import load_annotation_set, load_descriptions, split_file
from cape_bench.metrics.ambiguity import normalize_description


def crop_frame_offsets(keypoints_px: np.ndarray, center_px: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """float64[N, K, 2] keypoints relative to their crop: (x − c) / s, in units of 1/200 of the crop side."""
    return (keypoints_px.astype(np.float64) - center_px[:, None, :]) / scale[:, None, :]


def from_crop_frame(offsets: np.ndarray, center_px: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """float32[N, K, 2] image px of crop-frame offsets [K, 2] (shared) or [N, K, 2]: c + s · offset."""
    return (center_px[:, None, :].astype(np.float64) + scale[:, None, :] * offsets).astype(np.float32)


class SupportCopy:
    info = MethodInfo(
        name="support-copy",
        needs_images=False,
        paper="no-learning floor: copy support keypoints in the normalised crop frame",
    )

    def __init__(self, **options) -> None:
        if options:
            raise TypeError(f"support-copy takes no options, got {sorted(options)}")

    def prepare(self, ctx: RunContext) -> None:
        pass

    def encode_support(self, support: InstanceView) -> np.ndarray:
        """float64[K, 2]: mean over shots of (x_s − c_s) / s_s, over the shots where a keypoint is visible."""
        rel = crop_frame_offsets(support.keypoints_px, support.center_px, support.scale)
        vis = support.visible[..., None]
        count = vis.sum(axis=0)
        mean_visible = np.where(vis, rel, 0.0).sum(axis=0) / np.maximum(count, 1)
        # a keypoint no shot sees is never scored (the support mask), but still gets a finite guess
        return np.where(count > 0, mean_visible, rel.mean(axis=0))

    def predict(self, state: np.ndarray, queries: InstanceView) -> np.ndarray:
        return from_crop_frame(state, queries.center_px, queries.scale)

    def provenance(self) -> dict:
        return {"weights": "none (no parameters)"}


class TextPrior:
    """The text methods' floor: each description's median crop-frame location over the training split.

    ``prepare`` reads the split's training file (``mp100_split{k}_train.json``, with the run's descriptions
    file and text variant, as the text methods train on it) and takes, for every normalised description
    (:func:`~cape_bench.metrics.ambiguity.normalize_description`), the per-axis median of (x − c) / s over
    the visible keypoints of all training instances that carry it. A query keypoint goes there in its own crop.
    A description no training keypoint carries (an unseen name, a bare index) goes to the crop centre; the
    provenance counts how many descriptions of the evaluated categories did. Neither the query image nor the
    support keypoints are read (only the support's category, for its descriptions).
    """

    info = MethodInfo(
        name="text-prior",
        needs_images=False,
        reads_text=True,
        paper="no-image floor of the text methods: each description's median crop-frame location in training",
    )

    def __init__(self, **options) -> None:
        if options:
            raise TypeError(f"text-prior takes no options, got {sorted(options)}")
        self.medians: dict[str, np.ndarray] = {}
        self._key: tuple | None = None
        self._prov: dict = {}

    def prepare(self, ctx: RunContext) -> None:
        key = (ctx.ann_dir, ctx.split, ctx.descriptions, ctx.text_variant, repr(ctx.description_drop))
        if key == self._key:
            return
        train_file = split_file(ctx.ann_dir, ctx.split, "train")
        texts = (load_descriptions(ctx.descriptions, ctx.text_variant, ctx.description_drop)
                 if ctx.descriptions else None)
        self.medians = description_medians(load_annotation_set(train_file, descriptions=texts))
        self._key = key
        self._prov = {"weights": f"none: per-description medians over {train_file}",
                      "descriptions_learned": len(self.medians)}
        evaluated = split_file(ctx.ann_dir, ctx.split, ctx.subset)
        if evaluated.is_file():  # how many evaluated keypoints fall back to the crop centre
            names = [normalize_description(d) for c in load_annotation_set(evaluated, descriptions=texts)
                     .categories.values() for d in c.descriptions]
            unseen = sum(n not in self.medians for n in names)
            self._prov["evaluated_keypoints_at_crop_centre"] = f"{unseen} of {len(names)} (description unseen)"

    def encode_support(self, support: InstanceView) -> np.ndarray:
        """float64[K, 2] crop-frame offsets of the category's descriptions (the support's keypoints unused)."""
        names = [normalize_description(d) for d in support.category.descriptions]
        return np.stack([self.medians.get(n, np.zeros(2)) for n in names])

    def predict(self, state: np.ndarray, queries: InstanceView) -> np.ndarray:
        return from_crop_frame(state, queries.center_px, queries.scale)

    def provenance(self) -> dict:
        return dict(self._prov) or {"weights": "none: per-description medians over the training split"}


def description_medians(ann) -> dict[str, np.ndarray]:
    """Normalised description → float64[2] median crop-frame offset of its visible training keypoints."""
    samples: dict[str, list[np.ndarray]] = defaultdict(list)
    for cat_id, obj_ids in ann.cat2obj.items():
        if not obj_ids:
            continue
        rows = [ann.instances[i] for i in obj_ids]
        rel = crop_frame_offsets(np.stack([r.keypoints_px for r in rows]), np.stack([r.center_px for r in rows]),
                                 np.stack([r.scale for r in rows]))
        visible = np.stack([r.visible for r in rows])
        for k, text in enumerate(ann.categories[cat_id].descriptions[: rel.shape[1]]):
            if visible[:, k].any():
                samples[normalize_description(text)].append(rel[visible[:, k], k])
    return {name: np.median(np.concatenate(parts), axis=0) for name, parts in samples.items()}


class Oracle:
    info = MethodInfo(
        name="oracle",
        needs_images=False,
        reads_query_ground_truth=True,
        paper="returns the ground truth: the protocol ceiling",
    )

    def __init__(self, **options) -> None:
        if options:
            raise TypeError(f"oracle takes no options, got {sorted(options)}")

    def prepare(self, ctx: RunContext) -> None:
        pass

    def encode_support(self, support: InstanceView) -> None:
        return None

    def predict(self, state: None, queries: InstanceView) -> np.ndarray:
        return queries.keypoints_px.astype(np.float32)

    def provenance(self) -> dict:
        return {"weights": "none (returns the ground truth)"}
