"""Training episodes for every method: the official class-balanced sampler, augmentation and targets.

Mirrors ``TransformerPoseDataset`` (transformer_dataset.py) of the official repositories
(../shared/spec/official_code.md §1.2–1.4):

* per epoch, for every training category, ``max_c |cat2obj[c]|`` samples of
  ``random.sample(cat2obj[c], shots + 1)`` (last = query), shuffled; re-drawn every epoch;
* support and query are augmented independently: scale ``× clip(N(0,1)·0.15 + 1, 0.85, 1.15)``,
  rotation ``clip(N(0,1)·15, −30, 30)`` with probability 0.6; no flip, no colour jitter;
* the affine warp is the test-time one with that scale and rotation; keypoints are moved only
  where visible; MSRA heatmap targets (σ per method) and their weights.

Deliberate deviation: the official sampler draws from the process-global ``random`` state seeded
once; here every epoch has its own generator seeded from (seed, epoch), so a resumed training
run sees exactly the episodes the uninterrupted one would have.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from baselines.common.heatmaps import msra_targets
from cape_bench.data.geometry import affine_matrix, apply_affine, warp_crop
from cape_bench.data.mp100 import AnnotationSet, Instance
from cape_bench.images import image_path, normalize_crops, read_rgb


def class_balanced_epoch(cat2obj: dict[int, tuple[int, ...]], shots: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch of ``[support obj ids…, query obj id]`` samples (``random_paired_samples``)."""
    rng = random.Random(f"{seed}:{epoch}")
    usable = {c: list(v) for c, v in cat2obj.items() if len(v) >= shots + 1}
    per_category = max(len(v) for v in usable.values())
    samples = [rng.sample(pop, shots + 1) for pop in usable.values() for _ in range(per_category)]
    order = np.random.default_rng(rng.getrandbits(32)).permutation(len(samples))
    return [samples[i] for i in order]


@dataclass(frozen=True)
class Augmentation:
    """Official ``TopDownGetRandomScaleRotation`` settings; ``enabled=False`` gives the test-time crop."""

    enabled: bool = True
    scale_factor: float = 0.15
    rot_factor: float = 15.0
    rot_prob: float = 0.6

    def draw(self, rng: np.random.Generator) -> tuple[float, float]:
        """(scale multiplier, rotation in degrees)."""
        if not self.enabled:
            return 1.0, 0.0
        s = float(np.clip(rng.standard_normal() * self.scale_factor + 1, 1 - self.scale_factor, 1 + self.scale_factor))
        r = float(np.clip(rng.standard_normal() * self.rot_factor, -2 * self.rot_factor, 2 * self.rot_factor))
        return s, (r if rng.random() <= self.rot_prob else 0.0)


@dataclass
class PreparedInstance:
    """One instance warped for training or inference.

    Attributes:
        image: float32[3, S, S] ImageNet-normalised crop.
        keypoints_crop: float32[K, 2] (crop px; zeros where not visible).
        visible: float32[K] (1 visible and inside the heatmap window, else 0: the target weight).
        target: float32[K, H, W] MSRA heatmaps.
    """

    image: np.ndarray
    keypoints_crop: np.ndarray
    visible: np.ndarray
    target: np.ndarray


class InstanceLoader:
    """Reads, augments and crops instances of one annotation set; keeps decoded images in memory."""

    def __init__(self, ann: AnnotationSet, image_root: str | Path, input_size: int, sigma: float,
                 heatmap_size: int | None = None, max_cached: int = 20_000) -> None:
        self.ann = ann
        self.root = Path(image_root)
        self.size = input_size
        self.heatmap_size = heatmap_size or input_size // 4
        self.sigma = sigma
        self._images: dict[int, np.ndarray] = {}
        self._max_cached = max_cached

    def image(self, inst: Instance) -> np.ndarray:
        img = self._images.get(inst.ann_id)
        if img is None:
            img = read_rgb(image_path(self.root, inst.image_file))
            if len(self._images) < self._max_cached:
                self._images[inst.ann_id] = img
        return img

    def prepare(self, obj_id: int, rng: np.random.Generator, augment: Augmentation) -> PreparedInstance:
        inst = self.ann.instances[obj_id]
        s, r = augment.draw(rng)
        scale = inst.scale * np.float32(s)
        crop = warp_crop(self.image(inst), inst.center_px, scale, self.size, rot=r)
        matrix = affine_matrix(inst.center_px, scale, r, (self.size, self.size))
        kpts = np.where(inst.visible[:, None], apply_affine(inst.keypoints_px, matrix), 0.0).astype(np.float32)
        targets = msra_targets(kpts, inst.visible.astype(np.float32), sigma=self.sigma, image_size=self.size,
                               heatmap_size=self.heatmap_size)
        return PreparedInstance(
            image=normalize_crops(crop[None])[0],
            keypoints_crop=kpts,
            visible=targets.target_weight[..., 0].astype(np.float32),
            target=targets.target,
        )


@dataclass
class EpisodeBatch:
    """A batch of B training episodes, keypoints padded to the batch's largest K.

    Attributes (numpy; the trainer moves them to torch):
        img_s: float32[B, S, 3, H, W]; img_q: float32[B, 3, H, W].
        kpts_s / kpts_q: float32[B, S, K, 2] / [B, K, 2] crop px.
        weight_s / weight_q: float32[B, S, K] / [B, K] (0 on padding and invisible).
        target_s / target_q: float32[B, S, K, h, w] / [B, K, h, w].
        mask_s: float32[B, K] product of the support weights over shots.
        category_ids: int[B]; num_keypoints: int[B]; descriptions: per sample K strings;
        category_names: B strings; skeletons: per sample int[E, 2].
    """

    img_s: np.ndarray
    img_q: np.ndarray
    kpts_s: np.ndarray
    kpts_q: np.ndarray
    weight_s: np.ndarray
    weight_q: np.ndarray
    target_s: np.ndarray
    target_q: np.ndarray
    mask_s: np.ndarray
    category_ids: np.ndarray
    num_keypoints: np.ndarray
    descriptions: list
    category_names: list
    skeletons: list


def collate(ann: AnnotationSet, samples: list[list[int]], prepared: list[list[PreparedInstance]],
            pad_to: int | None = None) -> EpisodeBatch:
    """Stack prepared (supports…, query) instances; K padded to ``pad_to`` or to the batch's widest category.

    The widest category counts one slot past its largest skeleton index: an out-of-range edge (MP-100 ships some
    1-based ones) then lands in a padded, masked slot, as it does in the official 100-slot layout.
    """
    b = len(samples)
    shots = len(samples[0]) - 1
    cats = [ann.categories[ann.instances[s[-1]].category_id] for s in samples]
    k = pad_to or max(max(c.num_keypoints, int(np.max(c.skeleton, initial=-1)) + 1) for c in cats)
    first = prepared[0][-1]
    h, w = first.target.shape[-2:]
    size = first.image.shape[-1]
    out = EpisodeBatch(
        img_s=np.zeros((b, shots, 3, size, size), np.float32),
        img_q=np.zeros((b, 3, size, size), np.float32),
        kpts_s=np.zeros((b, shots, k, 2), np.float32),
        kpts_q=np.zeros((b, k, 2), np.float32),
        weight_s=np.zeros((b, shots, k), np.float32),
        weight_q=np.zeros((b, k), np.float32),
        target_s=np.zeros((b, shots, k, h, w), np.float32),
        target_q=np.zeros((b, k, h, w), np.float32),
        mask_s=np.zeros((b, k), np.float32),
        category_ids=np.array([c.id for c in cats]),
        num_keypoints=np.array([c.num_keypoints for c in cats]),
        descriptions=[list(c.descriptions) for c in cats],
        category_names=[c.name for c in cats],
        skeletons=[c.skeleton for c in cats],
    )
    for i, (cat, items) in enumerate(zip(cats, prepared, strict=True)):
        n = cat.num_keypoints
        for j, item in enumerate(items[:-1]):
            out.img_s[i, j] = item.image
            out.kpts_s[i, j, :n] = item.keypoints_crop
            out.weight_s[i, j, :n] = item.visible
            out.target_s[i, j, :n] = item.target
        q = items[-1]
        out.img_q[i] = q.image
        out.kpts_q[i, :n] = q.keypoints_crop
        out.weight_q[i, :n] = q.visible
        out.target_q[i, :n] = q.target
        out.mask_s[i] = np.prod(out.weight_s[i], axis=0)
    return out
