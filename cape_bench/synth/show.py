"""A contact sheet of annotated samples: one row per supercategory, keypoints and skeletons drawn.

Works on any MP-100-format file whose images are on disk (CAPE-Synth or the real MP-100).
"""

from __future__ import annotations

import colorsys
import json
import os
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

_LABEL_W = 150  # left column with the supercategory name, px
_TITLE_H = 18  # caption strip above each cell, px


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has a single bitmap size
        return ImageFont.load_default()


def _colour(j: int, k: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((j / max(k, 1)) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def _fit(draw: ImageDraw.ImageDraw, name: str, suffix: str, font, width: float) -> str:
    """``name + suffix``, the name shortened with an ellipsis until the text fits ``width`` px."""
    text = name + suffix
    while len(name) > 1 and draw.textlength(text, font=font) > width:
        name = name[:-1]
        text = name + "…" + suffix
    return text


def pick_samples(data: dict, per_supercategory: int, seed: int) -> list[tuple[str, list[dict]]]:
    """(supercategory, annotations) rows: a seeded choice of distinct categories per supercategory.

    Supercategories appear in order of their first category in the file; within a row the
    annotations come from different categories when there are enough of them.
    """
    rng = random.Random(seed)
    by_cat: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        if a.get("num_keypoints", 1) > 0:
            by_cat.setdefault(a["category_id"], []).append(a)
    rows: dict[str, list[int]] = {}
    for c in data["categories"]:
        if c["id"] in by_cat:
            rows.setdefault(c.get("supercategory", "?"), []).append(c["id"])
    out = []
    for sc, cat_ids in rows.items():
        order = cat_ids[:]
        rng.shuffle(order)
        picked = []
        for i in range(per_supercategory):
            cid = order[i % len(order)]
            picked.append(rng.choice(by_cat[cid]))
        out.append((sc, picked))
    return out


def draw_instance(image: Image.Image, ann: dict, category: dict, cell: int) -> Image.Image:
    """The instance's bbox crop (padded to a square) resized to ``cell`` px with its pose drawn."""
    x, y, w, h = ann["bbox"]
    side = max(w, h) * 1.25
    cx, cy = x + w / 2, y + h / 2
    box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    crop = image.convert("RGB").crop(tuple(int(round(v)) for v in box)).resize((cell, cell), Image.BILINEAR)
    s = cell / (int(round(box[2])) - int(round(box[0])))
    ox, oy = int(round(box[0])), int(round(box[1]))
    kp = ann["keypoints"]
    k = len(kp) // 3
    pts = [((kp[3 * j] - ox) * s, (kp[3 * j + 1] - oy) * s, kp[3 * j + 2]) for j in range(k)]
    d = ImageDraw.Draw(crop)
    lw = max(1, cell // 110)
    for a, b in category.get("skeleton", []):
        if 0 <= a < k and 0 <= b < k and pts[a][2] > 0 and pts[b][2] > 0:
            d.line([pts[a][:2], pts[b][:2]], fill=(20, 20, 20), width=lw + 2)
            d.line([pts[a][:2], pts[b][:2]], fill=(245, 245, 245), width=lw)
    r = max(2.5, cell / 64)
    for j, (px, py, v) in enumerate(pts):
        if v <= 0:
            continue
        c = _colour(j, k)
        shape = [px - r, py - r, px + r, py + r]
        if v >= 2:
            d.ellipse(shape, fill=c, outline=(0, 0, 0))
        else:  # labelled but not visible: hollow marker
            d.ellipse(shape, outline=c, width=max(1, lw))
    return crop


def show(
    ann_file: str | os.PathLike,
    image_root: str | os.PathLike,
    out_png: str | os.PathLike,
    *,
    per_supercategory: int = 4,
    seed: int = 0,
    cell: int = 192,
) -> Path:
    """Render a grid of annotated samples, one row per supercategory.

    Args:
        ann_file: an MP-100-format annotation file.
        image_root: folder its ``file_name`` entries are relative to.
        out_png: where to write the PNG.
        per_supercategory: samples per row.
        seed: which samples (python ``random``, seeded locally).
        cell: side of one sample, px.

    Returns:
        The written PNG path.
    """
    data = json.loads(Path(ann_file).read_text(encoding="utf-8"))
    cats = {c["id"]: c for c in data["categories"]}
    imgs = {i["id"]: i for i in data["images"]}
    rows = pick_samples(data, per_supercategory, seed)
    if not rows:
        raise ValueError(f"{ann_file} has no annotated instance to show")
    width = _LABEL_W + per_supercategory * cell
    height = len(rows) * (cell + _TITLE_H)
    sheet = Image.new("RGB", (width, height), (250, 250, 248))
    d = ImageDraw.Draw(sheet)
    big, small = _font(15), _font(12)
    for r, (sc, anns) in enumerate(rows):
        top = r * (cell + _TITLE_H)
        d.text((8, top + _TITLE_H + cell // 2 - 8), sc, fill=(30, 30, 30), font=big)
        for c, ann in enumerate(anns):
            cat = cats[ann["category_id"]]
            with Image.open(Path(image_root) / imgs[ann["image_id"]]["file_name"]) as im:
                tile = draw_instance(im, ann, cat, cell)
            left = _LABEL_W + c * cell
            sheet.paste(tile, (left, top + _TITLE_H))
            label = _fit(d, cat["name"], f"  K={len(cat['keypoints'])}", small, cell - 8)
            d.text((left + 4, top + 3), label, fill=(60, 60, 60), font=small)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
