"""Images on disk → the official crops a method receives.

Mirrors mmpose ``LoadImageFromFile`` (RGB) + ``TopDownAffineFewShot`` at test time (no rotation):
each instance is warped to a square ``size`` × ``size`` crop around its 1.25-padded clean bbox.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np

from cape_bench.data.geometry import warp_crop
from cape_bench.data.paths import ALLOW_OUTSIDE_ENV, leaves_root, outside_allowed


class MissingImagesError(FileNotFoundError):
    """Images a method needs are not on disk; the message lists the first few and the count."""


class UnsafeImagePathError(MissingImagesError):
    """An annotation's ``file_name`` points outside the image root (absolute, or through ``..``)."""


def image_path(root: str | Path, file_name: str) -> Path:
    """``root / file_name``, refusing a ``file_name`` that leaves ``root`` unless ``$CAPE_BENCH_ALLOW_OUTSIDE_IMAGE_ROOT``
    is 1: annotation files come from others, and a crop read from elsewhere can end up embedded in a report."""
    if leaves_root(file_name) and not outside_allowed():
        raise UnsafeImagePathError(
            f"file_name {file_name!r} leaves the image root {root} (absolute or '..'); refused — set "
            f"{ALLOW_OUTSIDE_ENV}=1 to allow it for a file you trust")
    return Path(root) / file_name


def check_images(image_root: str | Path | None, files, *, needed_by: str, show: int = 5) -> None:
    """Raise :class:`MissingImagesError` when any of ``files`` is absent under ``image_root``."""
    unique = sorted(set(files))
    if image_root is None:
        raise MissingImagesError(
            f"{needed_by} needs images but no image root is configured (--images / dataset.image_root); "
            f"{len(unique)} image files are referenced, e.g. {', '.join(unique[:show])}"
        )
    root = Path(image_root)
    missing = [f for f in unique if not image_path(root, f).is_file()]
    if missing:
        more = f" … and {len(missing) - show} more" if len(missing) > show else ""
        raise MissingImagesError(
            f"{needed_by} needs images: {len(missing)} of {len(unique)} files are missing under {root}: "
            f"{', '.join(missing[:show])}{more}"
        )


#: ImageNet statistics the backbones' inputs are normalised with (torchvision ``Normalize``)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def normalize_crops(crops_uint8: np.ndarray) -> np.ndarray:
    """uint8[N, S, S, 3] RGB → float32[N, 3, S, S] ImageNet-normalised (``ToTensor`` + ``NormalizeTensor``)."""
    x = crops_uint8.astype(np.float32) / 255.0
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def read_rgb(path: Path) -> np.ndarray:
    """uint8[H, W, 3] RGB, as mmcv.imread(..., channel_order='rgb')."""
    import cv2  # noqa: PLC0415

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise MissingImagesError(f"{path}: cannot be read as an image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class CropSource:
    """Loads and crops instances, keeping the most recent crops in a bounded cache.

    An instance is cropped identically in every pair it appears in (test time has no
    augmentation), so a crop is computed once and reused across the ~30 pairs of a split that
    contain the same instance.
    """

    def __init__(self, image_root: str | Path, size: int, max_items: int = 4096) -> None:
        self.root = Path(image_root)
        self.size = size
        self.max_items = max_items
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def crops(self, instances) -> np.ndarray:
        """uint8[N, size, size, 3] for a sequence of :class:`~cape_bench.data.mp100.Instance`."""
        out = np.empty((len(instances), self.size, self.size, 3), dtype=np.uint8)
        for i, inst in enumerate(instances):
            crop = self._cache.get(inst.ann_id)
            if crop is None:
                self.misses += 1
                img = read_rgb(image_path(self.root, inst.image_file))
                crop = warp_crop(img, inst.center_px, inst.scale, self.size)
                self._cache[inst.ann_id] = crop
                if len(self._cache) > self.max_items:
                    self._cache.popitem(last=False)
            else:
                self.hits += 1
                self._cache.move_to_end(inst.ann_id)
            out[i] = crop
        return out
