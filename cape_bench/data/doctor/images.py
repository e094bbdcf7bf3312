"""Image checks: ids, sizes, unused images, files under the image root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cape_bench.data.doctor.categories import _optional_str
from cape_bench.data.doctor.fields import FindingSink, ImageRecord, _id_field, _number, _short
from cape_bench.data.doctor.findings import BAD, MISSING
from cape_bench.data.paths import ALLOW_OUTSIDE_ENV, leaves_root

# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------


def _image_size(img: dict, key: str, path: str, sink: FindingSink, ctx: dict) -> float | None:
    value = _number(img, key, path, sink, required=True, **ctx)
    if value is MISSING or value is BAD:
        return None
    if value <= 0:
        sink.add("E-image-size", f"{key} must be positive, got {value:g}", f"{path}.{key}", **ctx)
        return None
    return value


def _index_images(raw: list, sink: FindingSink) -> dict[Any, ImageRecord]:
    imgs: dict[Any, ImageRecord] = {}
    for i, img in enumerate(raw):
        path = f"images[{i}]"
        if not isinstance(img, dict):
            sink.add("E-field-type", f"image must be an object, got {_short(img)}", path)
            continue
        iid = _id_field(img, "id", path, sink)
        if iid is MISSING or iid is BAD:
            continue
        ctx = {"image": iid}
        if iid in imgs:
            sink.add("E-dup-image-id", f"image id {iid} already used by images[{imgs[iid].index}]", f"{path}.id", **ctx)
            continue
        file_name = _optional_str(img, "file_name", path, sink, required=True, ctx=ctx)
        if isinstance(file_name, str) and leaves_root(file_name):
            sink.add("E-image-path", f"file_name {file_name!r} leaves the image root (absolute or '..'): run "
                                     f"refuses it unless {ALLOW_OUTSIDE_ENV}=1", f"{path}.file_name", **ctx)
        imgs[iid] = ImageRecord(
            index=i,
            id=iid,
            file_name=file_name,
            width=_image_size(img, "width", path, sink, ctx),
            height=_image_size(img, "height", path, sink, ctx),
        )
    return imgs


def _check_unused_images(imgs: dict[Any, ImageRecord], sink: FindingSink) -> None:
    for img in imgs.values():
        if img.num_annotations == 0:
            sink.add(
                "W-image-unused", f"image {img.file_name!r} has no annotation", f"images[{img.index}]", image=img.id
            )


def _check_image_files(imgs: dict[Any, ImageRecord], images_dir: Path, sink: FindingSink) -> int | None:
    """Report image files absent under ``images_dir``; returns how many are missing."""
    if not images_dir.is_dir():
        sink.add("E-images-dir", f"images directory {str(images_dir)!r} does not exist")
        return None
    missing = 0
    for img in imgs.values():
        if img.file_name is None:
            continue
        file = images_dir / img.file_name
        if not file.is_file():
            missing += 1
            sink.add(
                "E-image-missing",
                f"{img.file_name} not found under {images_dir}",
                f"images[{img.index}].file_name",
                image=img.id,
            )
        elif not _decodes(file):
            sink.add("E-image-corrupt", f"{img.file_name} under {images_dir} cannot be decoded as an image",
                     f"images[{img.index}].file_name", image=img.id)
    return missing


def _decodes(file: Path) -> bool:
    """True when ``file`` opens as an image (header and size; the pixels are not decoded)."""
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    try:
        with Image.open(file) as im:
            im.verify()
        return True
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return False
