"""Data builders the tests share: a tiny MP-100-format dataset and a bench.toml over it.

Imported by test modules (``from tests.helpers import write_tiny_mp100``); :mod:`tests.conftest` holds only
fixtures.
"""

from __future__ import annotations

from pathlib import Path


def write_tiny_mp100(root: Path, *, splits=(1,), num_categories: int = 3, instances: int = 20, images: bool = False,
                     image_size: int = 64, seed: int = 0, train: bool = False) -> Path:
    """A tiny MP-100-format dataset: ``root/annotations/mp100_split{k}_test.json`` (+ images).

    ``train``: also write the same annotations as ``mp100_split{k}_train.json`` (methods that train need one).

    Each category is a random template of 4–6 keypoints placed by a random similarity transform,
    so every method has something to predict and ``oracle`` scores exactly 1.
    """
    import json

    import numpy as np

    rng = np.random.default_rng(seed)
    ann_dir = root / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    categories, anns, imgs = [], [], []
    for c in range(num_categories):
        k = 4 + c % 3
        template = rng.uniform(-1, 1, size=(k, 2))
        categories.append({
            "id": c + 1, "name": f"thing_{c + 1}", "supercategory": f"family_{c % 2}",
            "keypoints": [f"part_{j}" for j in range(k)],
            "skeleton": [[j, j + 1] for j in range(k - 1)],
        })
        for i in range(instances):
            image_id = (c + 1) * 1000 + i
            angle = rng.uniform(-0.5, 0.5)
            rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            pts = template @ rot.T * rng.uniform(12, 20) + rng.uniform(24, 40, size=2)
            vis = np.where(rng.random(k) < 0.9, 2, 0)
            vis[0] = 2
            x0, y0 = pts.min(0) - 3
            x1, y1 = pts.max(0) + 3
            kp = np.concatenate([pts, vis[:, None]], axis=1)
            kp[vis == 0, :2] = 0
            file_name = f"thing_{c + 1}/{i}.png"
            imgs.append({"id": image_id, "file_name": file_name, "width": image_size, "height": image_size})
            anns.append({
                "id": image_id * 10, "image_id": image_id, "category_id": c + 1, "iscrowd": 0,
                "keypoints": [round(float(v), 3) for v in kp.ravel()], "num_keypoints": int((vis > 0).sum()),
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                "area": float((x1 - x0) * (y1 - y0)),
            })
            if images:
                from PIL import Image, ImageDraw

                path = root / "images" / file_name
                path.parent.mkdir(parents=True, exist_ok=True)
                im = Image.new("RGB", (image_size, image_size), (30, 30, 30))
                draw = ImageDraw.Draw(im)
                for (x, y), v in zip(pts, vis, strict=True):
                    if v:
                        draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(220, 200, 40))
                im.save(path)
    for split in splits:
        data = {"info": {"description": "tiny test set"}, "images": imgs, "annotations": anns,
                "categories": categories}
        for subset in ("test", "train") if train else ("test",):
            (ann_dir / f"mp100_split{split}_{subset}.json").write_text(json.dumps(data))
    return root


#: CapeFormer's preset shrunk for tests: 2 iterations of a random-init ResNet-18 at 64 px and a tiny head (d 32)
TINY_TRAIN = {"iterations": 2, "batch_size": 2, "input_size": 64, "backbone": "resnet18", "freeze_backbone": False,
              "log_every": 1, "head": {"d_model": 32, "nhead": 2, "dim_feedforward": 64, "similarity_proj_dim": 32,
                                       "dynamic_proj_dim": 16, "dropout": 0.0}}


def toml_value(value) -> str:
    """A TOML literal for a number, string, bool, list or (inline) table."""
    import json

    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def write_tiny_config(path: Path, tiny: Path, *, runs: Path, cache: Path, methods=None, shots=(1,), train=None,
                      run_extra: str = "", extra: str = "") -> Path:
    """A bench.toml over a :func:`write_tiny_mp100` dataset: split 1, 2 episodes of 4 queries, and a
    ``[methods.capeformer]`` trained with ``TINY_TRAIN`` (updated with ``train``)."""
    import json

    table = toml_value({**TINY_TRAIN, **(train or {})})[1:-1]
    listed = f"methods = {json.dumps(list(methods))}\n" if methods else ""
    path.write_text(f"""
[run]
{listed}out_dir = "{runs}"
{run_extra}
[dataset]
name = "mp100"
ann_dir = "{tiny / 'annotations'}"
image_root = "{tiny / 'images'}"
[protocol]
splits = [1]
shots = {json.dumps(list(shots))}
num_episodes = 2
num_queries = 4
[synth]
cache_dir = "{cache}"
[methods.capeformer]
train = {{{table}}}
options = {{backbone_weights = "random"}}
{extra}
""")
    return path
