"""Which annotation files a run evaluates: real MP-100 or the generated CAPE-Synth."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cape_bench.config import BenchConfig, ConfigError

SYNTH_COMPLETE_MARKER = "COMPLETE.json"


@dataclass(frozen=True)
class DatasetRef:
    """Resolved dataset location.

    Attributes:
        name: ``"mp100"`` or ``"cape-synth"``. ann_dir: folder of the split files.
        image_root: folder of the images, or None. descriptions: descriptions file, or None.
        generated: CAPE-Synth parameters when generated here (recorded in run.json).
    """

    name: str
    ann_dir: Path
    image_root: Path | None
    descriptions: Path | None
    generated: dict | None = None


def cache_root(cfg: BenchConfig) -> Path:
    if cfg.synth.cache_dir:
        return Path(cfg.synth.cache_dir).expanduser()
    env = os.environ.get("CAPE_BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cape-bench"


def synth_params(cfg: BenchConfig) -> dict:
    params = {"seed": cfg.synth.seed, "num_categories": cfg.synth.num_categories}
    if cfg.synth.instances_per_category:
        params["instances_per_category"] = cfg.synth.instances_per_category
    if cfg.synth.image_size:
        params["image_size"] = cfg.synth.image_size
    if cfg.synth.knobs:
        params["knobs"] = dict(sorted(cfg.synth.knobs.items()))
    return params


def ensure_synth(cfg: BenchConfig, log=print) -> Path:
    """Generate CAPE-Synth into the cache on first use; reuse it afterwards. Returns its folder."""
    from cape_bench import synth  # noqa: PLC0415

    params = synth_params(cfg)
    key = hashlib.sha256(json.dumps({**params, "generator": synth.SYNTH_VERSION}, sort_keys=True).encode())
    folder = cache_root(cfg) / f"cape-synth-{key.hexdigest()[:12]}"
    if (folder / SYNTH_COMPLETE_MARKER).exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    # one process generates; the others (torchrun ranks, Ray workers, a second shell) wait for it and reuse it
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / SYNTH_COMPLETE_MARKER).exists():
            return folder
        log(f"generating CAPE-Synth {params} into {folder} (first use; reused afterwards)")
        knobs = synth.Knobs.from_dict(params["knobs"]) if "knobs" in params else None
        gen_args = {k: v for k, v in params.items() if k != "knobs"}
        synth.generate(folder, **gen_args, knobs=knobs, overwrite=True)  # no marker: an interrupted attempt
        (folder / SYNTH_COMPLETE_MARKER).write_text(json.dumps({**params, "generator": synth.SYNTH_VERSION}))
    return folder


def resolve_dataset(cfg: BenchConfig, log=print) -> DatasetRef:
    ds = cfg.dataset
    descriptions = Path(ds.descriptions) if ds.descriptions else None
    if ds.name == "cape-synth":
        if ds.ann_dir:
            folder = Path(ds.ann_dir).parent if Path(ds.ann_dir).name == "annotations" else Path(ds.ann_dir)
            gen = None
        else:
            folder = ensure_synth(cfg, log)
            gen = synth_params(cfg)
        ann_dir = folder / "annotations" if (folder / "annotations").is_dir() else folder
        image_root = Path(ds.image_root) if ds.image_root else folder / "images"
        return DatasetRef("cape-synth", ann_dir, image_root, descriptions, gen)
    if ds.name == "mp100":
        if not ds.ann_dir:
            raise ConfigError("dataset.name = 'mp100' needs dataset.ann_dir (--ann-dir)")
        image_root = Path(ds.image_root) if ds.image_root else None
        return DatasetRef("mp100", Path(ds.ann_dir), image_root, descriptions)
    raise ConfigError(f"dataset.name: unknown dataset {ds.name!r}; expected 'cape-synth' or 'mp100'")
