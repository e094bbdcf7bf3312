"""Synthetic profiling inputs: random crops and one synthetic category (COCO keypoint names)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cape_bench.api import Category, InstanceView
from cape_bench.profile.spec import COCO_KEYPOINTS

# ----------------------------------------------------------------------------------------------------------------
# Synthetic inputs


def keypoint_names(k: int) -> tuple[str, ...]:
    """K keypoint names: COCO's 17, then ``extra_point_<i>``."""
    return tuple(COCO_KEYPOINTS[i] if i < len(COCO_KEYPOINTS) else f"extra_point_{i}" for i in range(k))


def synthetic_category(k: int = 17, category_id: int = 1, name: str = "profile_person") -> Category:
    """A category of K keypoints (COCO names, descriptions with ``_`` → space, a chain skeleton)."""
    names = keypoint_names(k)
    return Category(id=category_id, name=name, supercategory="profile", keypoint_names=names,
                    descriptions=tuple(n.replace("_", " ") for n in names),
                    skeleton=np.array([[j, j + 1] for j in range(k - 1)], dtype=np.int64).reshape(-1, 2))


class SyntheticInputs:
    """Support and query views of one synthetic category, crops of ``input_size`` px (random pixels).

    Every query view gets fresh annotation ids, so per-instance caches never serve a timed call.

    Args:
        category: the category.
        input_size: crop side S (the method's ``info.input_size``).
        needs_images: attach crops.
        max_queries: largest query batch.
        shots: support instances.
        seed: pixels and keypoints.
    """

    IMAGE_SIDE = 256.0  # the frame the boxes live in
    BBOX = (32.0, 32.0, 192.0, 192.0)

    def __init__(self, category: Category, input_size: int, needs_images: bool, max_queries: int, shots: int = 1,
                 seed: int = 0) -> None:
        self.category = category
        self.input_size = input_size
        self.needs_images = needs_images
        self.shots = shots
        rng = np.random.default_rng(seed)
        k = category.num_keypoints
        n = max_queries + shots
        self.crops = rng.integers(0, 256, size=(n, input_size, input_size, 3), dtype=np.uint8) if needs_images \
            else None
        x, y, w, h = self.BBOX
        self.keypoints = np.stack([rng.uniform(x, x + w, size=(n, k)), rng.uniform(y, y + h, size=(n, k))],
                                  axis=-1).astype(np.float32)
        self._next_id = 10**9 + seed * 10**6

    def _ids(self, n: int) -> np.ndarray:
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._next_id += n
        return ids

    def _view(self, rows: slice, n: int, ground_truth: bool) -> InstanceView:
        x, y, w, h = self.BBOX
        side = max(w, h) * 1.25 / 200.0
        return InstanceView(
            category=self.category, ann_ids=self._ids(n), image_files=tuple(f"profile/{i}.jpg" for i in range(n)),
            bbox_px=np.tile(np.array(self.BBOX, dtype=np.float64), (n, 1)),
            center_px=np.tile(np.array([x + w / 2, y + h / 2], dtype=np.float32), (n, 1)),
            scale=np.tile(np.array([side, side], dtype=np.float32), (n, 1)),
            crops=None if self.crops is None else self.crops[rows],
            keypoints_px=self.keypoints[rows] if ground_truth else None,
            visible=np.ones((n, self.category.num_keypoints), dtype=bool) if ground_truth else None,
        )

    def support(self) -> InstanceView:
        return self._view(slice(0, self.shots), self.shots, True)

    def queries(self, n: int, ground_truth: bool = False) -> InstanceView:
        return self._view(slice(self.shots, self.shots + n), n, ground_truth)


def write_profile_dataset(root: str | Path, *, categories: int = 2, instances: int = 20, keypoints: int = 17,
                          image_size: int = 256, seed: int = 0) -> Path:
    """A small MP-100-format dataset with JPEG images: ``root/annotations/mp100_split1_test.json`` + ``images/``.

    Content is random (noise and blobs); only the shapes matter: it exists so the evaluation loop can run end to
    end (decode, crop, episodes, scoring) without MP-100 or CAPE-Synth.

    Returns:
        ``root``.
    """
    import cv2  # noqa: PLC0415

    root = Path(root)
    rng = np.random.default_rng(seed)
    ann_dir = root / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    names = keypoint_names(keypoints)
    cats, imgs, anns = [], [], []
    for c in range(categories):
        cid = c + 1
        cats.append({"id": cid, "name": f"profile_thing_{cid}", "supercategory": "profile", "keypoints": list(names),
                     "skeleton": [[j, j + 1] for j in range(keypoints - 1)]})
        for i in range(instances):
            image_id = cid * 10_000 + i
            side = rng.uniform(0.4, 0.8) * image_size
            x0, y0 = rng.uniform(0, image_size - side, size=2)
            pts = np.stack([rng.uniform(x0, x0 + side, keypoints), rng.uniform(y0, y0 + side, keypoints)], axis=1)
            kp = np.concatenate([pts, np.full((keypoints, 1), 2.0)], axis=1)
            file_name = f"profile_thing_{cid}/{i:04d}.jpg"
            path = root / "images" / file_name
            path.parent.mkdir(parents=True, exist_ok=True)
            img = rng.integers(0, 256, size=(image_size, image_size, 3), dtype=np.uint8)
            for (px, py) in pts:
                cv2.circle(img, (int(px), int(py)), 3, (240, 200, 40), -1)
            cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
            imgs.append({"id": image_id, "file_name": file_name, "width": image_size, "height": image_size})
            anns.append({"id": image_id * 10, "image_id": image_id, "category_id": cid, "iscrowd": 0,
                         "keypoints": [round(float(v), 3) for v in kp.ravel()], "num_keypoints": keypoints,
                         "bbox": [float(x0), float(y0), float(side), float(side)], "area": float(side * side)})
    data = {"info": {"description": "cape-bench profile dataset (random content; speed only)"}, "images": imgs,
            "annotations": anns, "categories": cats}
    (ann_dir / "mp100_split1_test.json").write_text(json.dumps(data))
    return root
