"""The evaluation loop: annotations → episodes → predictions, one (method, split, shots) cell at a time.

The harness owns the loop; methods only see :class:`~cape_bench.api.InstanceView` batches.
A cell is written atomically when it finishes, so an interrupted run resumes without
recomputing finished cells, and a failing cell (bad output, missing images) is reported
without losing the others.
"""

from __future__ import annotations

import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cape_bench import __version__
from cape_bench.api import RunContext
from cape_bench.config import BenchConfig
from cape_bench.data.mp100 import AnnotationSet, load_annotation_set, load_descriptions, split_file
from cape_bench.datasets import DatasetRef, cache_root, resolve_dataset
from cape_bench.episodes import EpisodeManifest, build_manifest
from cape_bench.images import CropSource, check_images
from cape_bench.metrics.pck import METRIC_VERSION
from cape_bench.store import PROTOCOL_VERSION, RUN_FORMAT_VERSION, RunDir, write_frame, write_json


class MethodOutputError(RuntimeError):
    """A method returned predictions of the wrong shape or with non-finite values."""


@dataclass
class CellOutcome:
    method: str
    split: int
    shots: int
    status: str  # "done", "skipped (finished earlier)", "failed"
    error: str = ""
    record: dict = field(default_factory=dict)


def git_state(root: Path | None = None) -> dict[str, Any]:
    """The git sha and dirty flag of the code that ran (None outside a checkout)."""
    root = root or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=5
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
        )
        return {"sha": sha, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def environment() -> dict[str, Any]:
    """Versions and machine facts stamped into run.json."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    pkgs = {}
    for name in ("numpy", "pandas", "pyarrow", "pycocotools", "torch", "torchvision", "timm", "opencv-python-headless"):
        try:
            pkgs[name] = version(name)
        except PackageNotFoundError:
            pkgs[name] = None
    return {
        "cape_bench": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "packages": pkgs,
    }


def predictions_frame(ann: AnnotationSet, manifest: EpisodeManifest, pred_px: list[np.ndarray]):
    """One row per (pair, keypoint): prediction, ground truth, masks and the normaliser, all in original px."""
    import pandas as pd  # noqa: PLC0415

    rows_pair, rows_kpt, px, py, gx, gy, vq, vs, norm, cat, qann, ep = ([] for _ in range(12))
    for p, pred in enumerate(pred_px):
        q = ann.instances[manifest.query_obj[p]]
        sup_vis = np.all([ann.instances[s].visible for s in manifest.support_obj[p]], axis=0)
        k = len(q.visible)
        rows_pair.append(np.full(k, p, np.int32))
        rows_kpt.append(np.arange(k, dtype=np.int16))
        px.append(pred[:, 0])
        py.append(pred[:, 1])
        gx.append(q.keypoints_px[:, 0])
        gy.append(q.keypoints_px[:, 1])
        vq.append(q.visible)
        vs.append(sup_vis)
        norm.append(np.full(k, max(q.bbox_px[2], q.bbox_px[3]), np.float64))
        cat.append(np.full(k, q.category_id, np.int32))
        qann.append(np.full(k, q.ann_id, np.int64))
        ep.append(np.full(k, manifest.episode[p], np.int32))
    cat_ = np.concatenate

    return pd.DataFrame(
        {
            "pair": cat_(rows_pair),
            "episode": cat_(ep),
            "category_id": cat_(cat),
            "query_ann_id": cat_(qann),
            "kpt": cat_(rows_kpt),
            "pred_x": cat_(px).astype(np.float64),
            "pred_y": cat_(py).astype(np.float64),
            "gt_x": cat_(gx).astype(np.float32),
            "gt_y": cat_(gy).astype(np.float32),
            "visible_query": cat_(vq),
            "visible_support": cat_(vs),
            "norm_px": cat_(norm),
        }
    )


def _categories_record(ann: AnnotationSet) -> dict:
    return {
        str(c.id): {
            "name": c.name,
            "supercategory": c.supercategory,
            "keypoint_names": list(c.keypoint_names),
            "descriptions": list(c.descriptions),
            "skeleton": c.skeleton.tolist(),
            "instances": len(ann.cat2obj[c.id]),
        }
        for c in ann.categories.values()
    }


class Runner:
    """Runs a config's grid of (method, split, shots) cells into one run directory."""

    def __init__(self, cfg: BenchConfig, run_dir: str | Path, *, console=None, show_progress: bool = True) -> None:
        from rich.console import Console  # noqa: PLC0415

        self.cfg = cfg
        self.run = RunDir(run_dir)
        self.console = console or Console()
        self.show_progress = show_progress
        self.messages: list[str] = []

    def log(self, message: str) -> None:
        self.messages.append(message)
        self.console.print(message, highlight=False)

    # ------------------------------------------------------------------ data
    def _load(self, ds: DatasetRef, split: int) -> AnnotationSet:
        descriptions = (
            load_descriptions(ds.descriptions, self.cfg.dataset.text_variant) if ds.descriptions else None
        )
        return load_annotation_set(
            split_file(ds.ann_dir, split, self.cfg.dataset.subset),
            descriptions=descriptions,
            categories=list(self.cfg.dataset.categories) or None,
        )

    def _manifest(self, ann: AnnotationSet, split: int, shots: int) -> EpisodeManifest:
        proto = self.cfg.protocol
        manifest = build_manifest(
            ann,
            shots,
            num_episodes=proto.num_episodes or None,
            subset=self.cfg.dataset.subset,
            num_queries=proto.num_queries,
        )
        path = self.run.episodes(split, self.cfg.dataset.subset, shots)
        write_frame(path, manifest.to_frame())
        return manifest

    # ------------------------------------------------------------------ run.json
    def _envelope(self, ds: DatasetRef) -> dict:
        previous = self.run.read_run_json() if self.run.run_json.exists() else {}
        if previous and previous.get("config_sha256") != self.cfg.sha256:
            raise RuntimeError(
                f"{self.run.root} holds a run with a different config (sha {previous.get('config_sha256', '?')[:12]}); "
                "use a new --name or the same config to resume"
            )
        return {
            "format_version": RUN_FORMAT_VERSION,
            "protocol_version": PROTOCOL_VERSION,
            "metric_version": METRIC_VERSION,
            "created": previous.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": self.cfg.to_dict(),
            "config_sha256": self.cfg.sha256,
            "dataset": {
                "name": ds.name,
                "ann_dir": str(ds.ann_dir),
                "image_root": str(ds.image_root) if ds.image_root else None,
                "descriptions": str(ds.descriptions) if ds.descriptions else None,
                "text_variant": self.cfg.dataset.text_variant,
                "subset": self.cfg.dataset.subset,
                "generated": ds.generated,
            },
            "official_protocol": not self.cfg.protocol.num_episodes and self.cfg.protocol.num_queries == 15,
            "git": git_state(),
            "environment": environment(),
            "episodes": previous.get("episodes", {}),
            "annotations": previous.get("annotations", {}),
            "failures": previous.get("failures", []),
            "messages": previous.get("messages", []),
        }

    # ------------------------------------------------------------------ the loop
    def execute(self) -> list[CellOutcome]:
        from cape_bench.registry import create_method, resolve  # noqa: PLC0415

        cfg = self.cfg
        for name in cfg.run.methods:  # fail fast on a typo, before any work
            resolve(cfg.method(name).method or name)
        ds = resolve_dataset(cfg, self.log)
        envelope = self._envelope(ds)
        write_json(self.run.run_json, envelope)
        if not envelope["official_protocol"]:
            self.log(
                "[yellow]note: protocol shortened (num_episodes/num_queries changed): "
                "numbers are not comparable with published MP-100 results[/yellow]"
            )
        outcomes: list[CellOutcome] = []
        methods: dict[str, Any] = {}
        for split in cfg.protocol.splits:
            ann = self._load(ds, split)
            envelope["annotations"][f"split{split}"] = {"file": str(ann.path), "sha256": ann.sha256}
            write_json(self.run.categories_file(split), _categories_record(ann))
            for shots in cfg.protocol.shots:
                manifest = self._manifest(ann, split, shots)
                envelope["episodes"][f"split{split}_{shots}shot"] = {
                    "sha256": manifest.sha256,
                    "pairs": len(manifest),
                    "episodes_per_category": manifest.num_episodes,
                    "official": manifest.official,
                }
                write_json(self.run.run_json, envelope)
                for name in cfg.run.methods:
                    if self.run.cell(name, split, shots).exists() and self.run.predictions(name, split, shots).exists():
                        outcomes.append(CellOutcome(name, split, shots, "skipped (finished earlier)"))
                        continue
                    try:
                        if name not in methods:
                            methods[name] = self._create(create_method, name)
                        record = self._run_cell(methods[name], name, ds, ann, manifest, split, shots)
                        outcomes.append(CellOutcome(name, split, shots, "done", record=record))
                    except Exception as err:  # noqa: BLE001 — one failing cell must not lose the others
                        message = f"{name} split {split} {shots}-shot failed: {type(err).__name__}: {err}"
                        self.log(f"[red]{message}[/red]")
                        envelope["failures"].append({"method": name, "split": split, "shots": shots, "error": message})
                        outcomes.append(CellOutcome(name, split, shots, "failed", error=message))
                    envelope["messages"] = self.messages[-200:]
                    write_json(self.run.run_json, envelope)
        return outcomes

    def _create(self, create_method, name: str):
        section = self.cfg.method(name)
        options = dict(section.options)
        for key in ("checkpoint", "backbone", "text_encoder", "batch_size", "preset"):
            value = getattr(section, key)
            if value:
                options[key] = value
        return create_method(section.method or name, **options)

    def _run_cell(self, method, name: str, ds: DatasetRef, ann: AnnotationSet, manifest: EpisodeManifest, split, shots):
        info = method.info
        ctx = RunContext(
            dataset=ds.name,
            split=split,
            shots=shots,
            ann_dir=str(ds.ann_dir),
            image_root=str(ds.image_root) if ds.image_root else None,
            cache_dir=str(cache_root(self.cfg)),
            options=dict(self.cfg.method(name).options),
            device=self.cfg.run.device,
            seed=self.cfg.run.seed,
            log=self.log,
            descriptions=str(ds.descriptions) if ds.descriptions else None,
            text_variant=self.cfg.dataset.text_variant,
            subset=self.cfg.dataset.subset,
        )
        crops = None
        if info.needs_images:
            files = [ann.instances[i].image_file for i in np.unique(np.r_[manifest.query_obj, manifest.support_obj.ravel()])]
            check_images(ds.image_root, files, needed_by=f"method {name!r}")
            crops = CropSource(ds.image_root, info.input_size)
        t0 = time.perf_counter()
        method.prepare(ctx)
        prepare_s = time.perf_counter() - t0
        self._announce(name, method.provenance())
        timings = {"data_s": 0.0, "support_s": 0.0, "predict_s": 0.0}
        preds: list[np.ndarray] = [None] * len(manifest)  # type: ignore[list-item]
        episodes = list(manifest.episode_slices())
        with self._progress(f"{name} · split {split} · {shots}-shot", len(episodes)) as advance:
            for ep, sl in episodes:
                t = time.perf_counter()
                sup_ids = manifest.support_obj[sl.start]
                q_ids = manifest.query_obj[sl]
                sup_crops = crops.crops([ann.instances[i] for i in sup_ids]) if crops else None
                q_crops = crops.crops([ann.instances[i] for i in q_ids]) if crops else None
                support = ann.view(sup_ids, crops=sup_crops)
                queries = ann.view(q_ids, with_ground_truth=info.reads_query_ground_truth, crops=q_crops)
                t1 = time.perf_counter()
                state = method.encode_support(support)
                t2 = time.perf_counter()
                out = np.asarray(method.predict(state, queries))
                t3 = time.perf_counter()
                timings["data_s"] += t1 - t
                timings["support_s"] += t2 - t1
                timings["predict_s"] += t3 - t2
                k = support.category.num_keypoints
                if out.shape != (len(q_ids), k, 2):
                    raise MethodOutputError(
                        f"episode {ep} ({support.category.name}): predict returned shape {out.shape}, "
                        f"expected {(len(q_ids), k, 2)} (queries, keypoints, xy)"
                    )
                if not np.all(np.isfinite(out)):
                    bad = int(queries.ann_ids[np.flatnonzero(~np.isfinite(out).all(axis=(1, 2)))[0]])
                    raise MethodOutputError(
                        f"episode {ep} ({support.category.name}): non-finite prediction for query annotation {bad}"
                    )
                for j, p in enumerate(range(sl.start, sl.stop)):
                    preds[p] = out[j]
                advance()
        frame = predictions_frame(ann, manifest, preds)
        write_frame(self.run.predictions(name, split, shots), frame)
        total = sum(timings.values())
        record = {
            "method": name,
            "split": split,
            "shots": shots,
            "pairs": len(manifest),
            "episodes_sha256": manifest.sha256,
            "info": {
                "needs_images": info.needs_images,
                "input_size": info.input_size,
                "reads_text": info.reads_text,
                "extra_inputs": list(info.extra_inputs),
                "paper": info.paper,
            },
            "provenance": method.provenance(),
            "timings": {"prepare_s": prepare_s, **timings, "pairs_per_s": len(manifest) / total if total else None},
            "crop_cache": {"hits": crops.hits, "misses": crops.misses} if crops else None,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_json(self.run.cell(name, split, shots), record)
        if total:
            self.log(f"{name} · split {split} · {shots}-shot: {len(manifest)} pairs in {total:.1f} s "
                     f"({len(manifest) / total:,.0f} pairs/s; data {timings['data_s']:.1f} s, support "
                     f"{timings['support_s']:.1f} s, predict {timings['predict_s']:.1f} s; prepare {prepare_s:.1f} s)")
        return record

    def _announce(self, name: str, provenance: dict) -> None:
        """Say what weights a method runs with; random-init weights are said loudly."""
        flat = {k: v for k, v in provenance.items() if isinstance(v, (str, int, float)) and k != "final_loss"}
        if not flat:
            return
        text = ", ".join(f"{k}: {v}" for k, v in flat.items())
        if any("random" in str(v).lower() for v in flat.values()):
            self.log(f"[bold red]{name} runs with RANDOM-INIT weights somewhere — {text}[/bold red]")
        else:
            self.log(f"{name} — {text}")

    def _progress(self, label: str, total: int):
        from contextlib import contextmanager  # noqa: PLC0415

        @contextmanager
        def bar():
            if not self.show_progress:
                yield lambda: None
                return
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn  # noqa: PLC0415

            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("episodes"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            ) as progress:
                task = progress.add_task(label, total=total)
                yield lambda: progress.advance(task)

        return bar()
