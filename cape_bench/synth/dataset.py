"""Writing a CAPE-Synth dataset in the MP-100 layout.

Output::

    DIR/annotations/mp100_split{1..5}_{train,val,test}.json
    DIR/images/<category name>/<index>.jpg

Splits copy MP-100's structure: the categories are dealt into five disjoint test folds
(stratified by supercategory, so each fold mixes families), split ``k`` tests on fold ``k``,
validates on half of fold ``k+1`` and trains on the rest (70 / 10 / 20 with 100 categories).
Everything is a function of the seed: two runs with the same arguments write byte-identical
files, whatever the number of worker processes.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from cape_bench.synth.appearance import NUM_APPEARANCES
from cape_bench.synth.instance import CategoryPlan, render_instance
from cape_bench.synth.knobs import Knobs
from cape_bench.synth.templates import catalog, polysemous_flags

SYNTH_VERSION = "1.0"
SUBSETS = ("train", "val", "test")
NUM_SPLITS = 5
DEFAULT_INSTANCES = 50
DEFAULT_IMAGE_SIZE = 128
_ID_STRIDE = 100_000  # image / annotation id = category id × stride + index + 1


@dataclass(frozen=True)
class SplitPlan:
    """Category ids of one split's three subsets (each sorted by id)."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]

    def subset(self, name: str) -> tuple[int, ...]:
        return getattr(self, name)


def plan_categories(num_categories: int, seed: int, polysemy: float) -> list[CategoryPlan]:
    """The first ``num_categories`` catalogue templates with their ids, appearance and naming.

    Args:
        num_categories: 10..100, a multiple of 10 (five test folds, val = half a fold).
        seed: dataset seed. polysemy: see :class:`Knobs`.
    """
    templates = catalog()
    if not (10 <= num_categories <= len(templates) and num_categories % 10 == 0):
        raise ValueError(f"num_categories must be a multiple of 10 in 10..{len(templates)}, got {num_categories}")
    chosen = templates[:num_categories]
    flags = polysemous_flags(chosen, polysemy, seed)
    rng = np.random.default_rng([seed, 1301])
    looks = rng.integers(NUM_APPEARANCES, size=num_categories)
    return [CategoryPlan(i + 1, t, int(looks[i]), flags[i]) for i, t in enumerate(chosen)]


def plan_splits(plans: list[CategoryPlan], seed: int) -> dict[int, SplitPlan]:
    """Split k (1..5) -> its train / val / test category ids.

    Categories are shuffled within each supercategory (seeded) and dealt round-robin into five
    folds, the deal continuing from one supercategory to the next, so every fold holds N/5
    categories and a near-equal share of each supercategory. The five test sets are the five
    folds: disjoint, covering every category, as in MP-100.
    """
    rng = np.random.default_rng([seed, 5309])
    by_super: dict[str, list[int]] = {}
    for p in plans:
        by_super.setdefault(p.template.supercategory, []).append(p.id)
    folds: list[list[int]] = [[] for _ in range(NUM_SPLITS)]
    turn = 0
    for sc in sorted(by_super, key=lambda s: min(by_super[s])):
        ids = by_super[sc]
        for j in rng.permutation(len(ids)):
            folds[turn % NUM_SPLITS].append(ids[j])
            turn += 1
    # shuffle within each fold so "first half = validation" is not biased to a supercategory
    folds = [[f[j] for j in rng.permutation(len(f))] for f in folds]
    n_val = len(plans) // 10
    out = {}
    for k in range(NUM_SPLITS):
        test = set(folds[k])
        val = set(folds[(k + 1) % NUM_SPLITS][:n_val])
        train = {p.id for p in plans} - test - val
        out[k + 1] = SplitPlan(tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(test)))
    return out


def category_entry(plan: CategoryPlan) -> dict:
    """COCO / MP-100 category record (``keypoints`` are the descriptions, skeleton 0-based)."""
    t = plan.template
    return {
        "supercategory": t.supercategory,
        "id": plan.id,
        "name": t.name,
        "keypoints": list(t.descriptions(plan.polysemous)),
        "skeleton": [[int(a), int(b)] for a, b in t.skeleton()],
    }


def image_id(category_id: int, index: int) -> int:
    return category_id * _ID_STRIDE + index + 1


def file_name(plan: CategoryPlan, index: int) -> str:
    return f"{plan.template.name}/{index:04d}.jpg"


def _render_category(plan: CategoryPlan, n: int, seed: int, image_size: int, knobs: Knobs,
                     image_root: str) -> list[dict]:
    """Render and write one category's images; return its annotation records (in index order)."""
    folder = Path(image_root) / plan.template.name
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for index in range(n):
        inst = render_instance(plan, index, seed=seed, image_size=image_size, knobs=knobs)
        (Path(image_root) / file_name(plan, index)).write_bytes(inst.jpeg)
        iid = image_id(plan.id, index)
        flat = [round(float(c), 2) for c in inst.keypoints.reshape(-1)]
        for j in range(2, len(flat), 3):
            flat[j] = int(flat[j])
        records.append({
            "image": {"id": iid, "file_name": file_name(plan, index), "width": image_size, "height": image_size},
            "annotation": {
                "id": iid,
                "image_id": iid,
                "category_id": plan.id,
                "keypoints": flat,
                "num_keypoints": int(sum(1 for v in flat[2::3] if v > 0)),
                "bbox": [float(b) for b in inst.bbox],
                "area": float(inst.area),
                "iscrowd": 0,
                "synth": inst.synth,
            },
        })
    return records


def _render_task(args) -> list[dict]:
    return _render_category(*args)


def _info(seed: int, num_categories: int, n: int, image_size: int, knobs: Knobs, split: int, subset: str,
          plans: list[CategoryPlan]) -> dict:
    return {
        "description": "CAPE-Synth: procedurally generated category-agnostic pose benchmark in MP-100 format",
        "version": SYNTH_VERSION,
        "generator": "cape_bench.synth",
        "seed": seed,
        "split": split,
        "subset": subset,
        "num_categories": num_categories,
        "instances_per_category": n,
        "image_size": image_size,
        "knobs": knobs.to_dict(),
        "polysemous_category_ids": [p.id for p in plans if p.polysemous],
        "conventions": {
            "coordinates": "pixel centres: pixel (i, j) is at x = i, y = j",
            "visibility": "2 visible; 1 labelled but self-occluded (surface faces away); "
                          "0 under an occluder or out of frame, stored as (0, 0, 0)",
            "left_right": "intrinsic to the object: animals, people and vehicles use their own left; "
                          "furniture and garments the left of someone sitting on / wearing them",
            "synth": "annotation['synth'] holds the generation record: pose, proportions (instance / "
                     "category), yaw, pitch, flipped, rotation, scale, appearance_id, texture, clutter, "
                     "occluder, truncated, hidden (per keypoint: 0 visible, "
                     "1 self-occluded, 2 occluded, 3 out of frame), hidden_xy (true x, y of the (0, 0, 0) keypoints)",
        },
    }


def _dump(obj: dict, path: Path) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":"), ensure_ascii=True), encoding="utf-8")


def generate(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    num_categories: int = 100,
    instances_per_category: int = DEFAULT_INSTANCES,
    image_size: int = DEFAULT_IMAGE_SIZE,
    knobs: Knobs | None = None,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write a CAPE-Synth dataset.

    Args:
        out_dir: target folder; gets ``annotations/`` and ``images/``.
        seed: everything (categories' looks, polysemous naming, splits, every instance) follows it.
        num_categories: 10..100, multiple of 10.
        instances_per_category: images per category (≥ 20 for 5-shot episodes of 15 queries).
        image_size: side of the square images, pixels (32..1024).
        knobs: :class:`Knobs` (defaults: the benchmark's).
        workers: processes rendering in parallel (default: up to 2). Output does not depend on it.
        progress: show a rich progress bar.
        overwrite: replace existing ``annotations/`` and ``images/`` under ``out_dir``
            (otherwise their presence is an error).

    Returns:
        ``out_dir / "annotations"``, the folder holding the split files.
    """
    knobs = knobs or Knobs()
    if instances_per_category < 1 or instances_per_category >= _ID_STRIDE:
        raise ValueError(f"instances_per_category must be in 1..{_ID_STRIDE - 1}, got {instances_per_category}")
    if not 32 <= image_size <= 1024:
        raise ValueError(f"image_size must be in 32..1024, got {image_size}")
    plans = plan_categories(num_categories, seed, knobs.polysemy)  # validates num_categories first
    splits = plan_splits(plans, seed)
    out = Path(out_dir)
    ann_dir, img_dir = out / "annotations", out / "images"
    for d in (ann_dir, img_dir):
        if d.exists() and any(d.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{d} exists and is not empty (pass overwrite=True to replace it)")
            shutil.rmtree(d)
    ann_dir.mkdir(parents=True, exist_ok=True)
    img_dir.mkdir(parents=True, exist_ok=True)

    n = instances_per_category
    tasks = [(p, n, seed, image_size, knobs, str(img_dir)) for p in plans]
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))

    records: dict[int, list[dict]] = {}
    with _Progress(progress, len(plans) * n) as bar:
        try:
            for plan, recs in zip(plans, _run(tasks, workers)):
                records[plan.id] = recs
                bar.advance(len(recs))
        except BrokenProcessPool:
            # worker processes could not start (e.g. a __main__ read from stdin, which spawn
            # cannot re-import): render in this process; the output is the same either way
            bar.reset()
            for plan, recs in zip(plans, _run(tasks, 1)):
                records[plan.id] = recs
                bar.advance(len(recs))

    by_id = {p.id: p for p in plans}
    for k, sp in splits.items():
        for subset in SUBSETS:
            ids = sp.subset(subset)
            doc = {
                "info": _info(seed, num_categories, n, image_size, knobs, k, subset, plans),
                "images": [r["image"] for cid in ids for r in records[cid]],
                "annotations": [r["annotation"] for cid in ids for r in records[cid]],
                "categories": [category_entry(by_id[cid]) for cid in ids],
            }
            _dump(doc, ann_dir / f"mp100_split{k}_{subset}.json")
    return ann_dir


def _run(tasks: list, workers: int) -> Iterator[list[dict]]:
    """Results in task order (map keeps order, so output never depends on scheduling)."""
    if workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            yield _render_task(t)
        return
    # spawn, not fork: the caller may hold threads (torch, a progress bar) that fork would copy
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
        yield from pool.map(_render_task, tasks)


class _Progress:
    """A rich progress bar over rendered instances; silent when disabled."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total
        self._bar = None
        self._task = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn("CAPE-Synth"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            self._bar.__enter__()
            self._task = self._bar.add_task("render", total=self.total)
        return self

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def reset(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=0)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def dataset_summary(ann_dir: str | os.PathLike) -> dict:
    """Counts of a written dataset (for the CLI's closing line): files, images and bytes."""
    ann_dir = Path(ann_dir)
    images = list((ann_dir.parent / "images").rglob("*.jpg"))
    return {
        "annotation_files": len(list(ann_dir.glob("mp100_split*_*.json"))),
        "images": len(images),
        "image_bytes": sum(p.stat().st_size for p in images),
        "annotation_bytes": sum(p.stat().st_size for p in ann_dir.glob("*.json")),
    }
