"""The evaluation loop: annotations → episodes → predictions, one (method, split, shots) cell at a time.

The harness owns the loop; methods only see :class:`~cape_bench.api.InstanceView` batches.
A cell is written atomically when it finishes, so an interrupted run resumes without
recomputing finished cells, and a failing cell (bad output, missing images) is reported
without losing the others.

The same loop serves distributed runs (:mod:`cape_bench.executors`): a driver calls :meth:`Runner.plan` (run.json,
categories, episodes of the whole grid; no cell computed), workers call :meth:`Runner.execute_cells` for the
cells they are given under the full config (writing only those cells' files, never run.json), and the driver
merges what they report with :meth:`Runner.record_outcomes`: only the driver ever writes run.json.

Per-instance work is done once per split: a method that declares per-instance stages
(:class:`~cape_bench.api.InstanceCachedMethod`) gets each distinct instance's crop and stage features
(backbone features, image embeddings) computed once, in batches, kept in a bounded
:class:`~cape_bench.feature_cache.FeatureCache` (``[run] feature_cache_mb``, spilling to disk) that lives
across the shots cells of a split, and only its pair-dependent part runs per episode — the queries of
several episodes of one category per call. Other methods run through ``encode_support`` / ``predict``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cape_bench.api import supports_instance_cache
from cape_bench.config import BenchConfig, ConfigError
from cape_bench.configured import create_configured_method, make_context
from cape_bench.data.mp100 import AnnotationError, AnnotationSet, load_annotation_set, load_descriptions, split_file
from cape_bench.datasets import DatasetRef, cache_root, resolve_dataset
from cape_bench.environment import environment, git_state
from cape_bench.episodes import EpisodeManifest, build_manifest
from cape_bench.feature_cache import MB, FeatureCache, describe
from cape_bench.images import CropSource, check_images
from cape_bench.job_clock import plan_job
from cape_bench.loops import CachedLoop, run_uncached
from cape_bench.metrics.pck import METRIC_VERSION
from cape_bench.predictions import predictions_frame
from cape_bench.store import PROTOCOL_VERSION, RUN_FORMAT_VERSION, RunDir, write_frame, write_json
from cape_bench.train_ahead import train_pending


@dataclass
class CellOutcome:
    method: str
    split: int
    shots: int
    status: str  # "done", "skipped (finished earlier)", "failed"; "pending" from Runner.plan
    error: str = ""
    record: dict = field(default_factory=dict)


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
        self._features: FeatureCache | None = None

    def feature_cache(self) -> FeatureCache | None:
        """The per-instance feature cache (None when ``run.feature_cache_mb`` is 0: methods run uncached)."""
        if self.cfg.run.feature_cache_mb <= 0:
            return None
        if self._features is None:
            self._features = FeatureCache(int(self.cfg.run.feature_cache_mb * MB),
                                          spill_dir=cache_root(self.cfg) / "feature-spill")
        return self._features

    def close(self) -> None:
        """Free the feature cache and delete its spill folder."""
        if self._features is not None:
            self._features.close()
            self._features = None

    def log(self, message: str) -> None:
        from rich.errors import MarkupError  # noqa: PLC0415

        self.messages.append(message)
        try:
            self.console.print(message, highlight=False)
        except MarkupError:  # a name from the data that looks like markup ("bed[/bold]") is printed as it is
            self.console.print(_escape(message), highlight=False)

    # ------------------------------------------------------------------ data
    def _load(self, ds: DatasetRef, split: int) -> AnnotationSet:
        descriptions = (
            load_descriptions(ds.descriptions, self.cfg.dataset.text_variant, self.cfg.dataset.description_drop)
            if ds.descriptions else None
        )
        ann = load_annotation_set(
            split_file(ds.ann_dir, split, self.cfg.dataset.subset),
            descriptions=descriptions,
            categories=list(self.cfg.dataset.categories) or None,
        )
        for message in ann.warnings:  # once per split, into the terminal and run.json's messages
            if f"WARNING {message}" not in self.messages:
                self.log(f"WARNING {message}")
        return ann

    def _manifest(self, ann: AnnotationSet, split: int, shots: int, write: bool = True) -> EpisodeManifest:
        proto = self.cfg.protocol
        manifest = build_manifest(
            ann,
            shots,
            num_episodes=proto.num_episodes or None,
            subset=self.cfg.dataset.subset,
            num_queries=proto.num_queries,
        )
        if write:
            path = self.run.episodes(split, self.cfg.dataset.subset, shots)
            write_frame(path, manifest.to_frame())
        return manifest

    # ------------------------------------------------------------------ run.json
    def _envelope(self, ds: DatasetRef, wanted=()) -> dict:
        previous = self.run.read_run_json() if self.run.run_json.exists() else {}
        if previous and previous.get("config_sha256") != self.cfg.sha256:
            if self.run.finished_cells():
                changed = _changed_keys(previous.get("config", {}), self.cfg.to_dict())
                raise RunConflictError(
                    f"{self.run.root} holds finished cells of a run with a different config (changed: "
                    f"{', '.join(changed[:6]) or 'the config digest'}); use a new --name, or the same config to resume"
                )
            self.log(f"{self.run.root}: no cell of the earlier run there had finished; starting it with this config")
            previous = {}
        # a cell this run computes again gets a fresh record: its earlier failure goes unless it fails again
        failures = [f for f in previous.get("failures", []) if (f["method"], f["split"], f["shots"]) not in wanted]
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
            "environment": environment(self.cfg.run.device),
            "episodes": previous.get("episodes", {}),
            "annotations": previous.get("annotations", {}),
            "failures": failures,
            "messages": previous.get("messages", []),
        }

    # ------------------------------------------------------------------ the loop
    def execute(self, cells=None) -> list[CellOutcome]:
        """Run the grid, or only ``cells`` ((method, split, shots) triples of the grid), recording in run.json."""
        try:
            return self._execute(self.select(cells), mode="run")
        finally:
            self.close()

    def plan(self) -> list[CellOutcome]:
        """A distributed run's driver: write run.json, categories and episodes of the whole grid, compute no cell.

        Returns one outcome per grid cell, in grid order: "skipped (finished earlier)" or "pending".
        """
        return self._execute(self.select(None), mode="plan")

    def execute_cells(self, cells, expected: dict) -> list[CellOutcome]:
        """A worker: compute ``cells`` of a run the driver planned, under the full config.

        Writes only these cells' prediction and record files into this Runner's run directory (a worker's scratch
        folder or the shared run directory) and never run.json, categories or episodes. ``expected`` holds the
        driver's run.json ``annotations`` and ``episodes`` entries: a cell whose annotation file or episodes differ
        here (another file on this node) fails instead of computing something else. Failures and messages are
        returned (``outcomes``, :attr:`messages`) for the driver to record.
        """
        try:
            return self._execute(self.select(cells), mode="worker", expected=expected)
        finally:
            self.close()

    def record_outcomes(self, outcomes: list[CellOutcome]) -> None:
        """A distributed run's driver: add the failures of ``outcomes`` and the messages so far to run.json."""
        envelope = self.run.read_run_json()
        for o in outcomes:
            if o.status == "failed":
                envelope["failures"].append({"method": o.method, "split": o.split, "shots": o.shots, "error": o.error})
        envelope["messages"] = self.messages[-200:]
        write_json(self.run.run_json, envelope)

    def select(self, cells=None) -> list[tuple[str, int, int]]:
        """The grid's (method, split, shots) cells in run order, or those of ``cells`` (each must be in the grid)."""
        grid = [(name, split, shots) for split in self.cfg.protocol.splits for shots in self.cfg.protocol.shots
                for name in self.cfg.run.methods]
        if cells is None:
            return grid
        wanted = {(str(m), int(sp), int(sh)) for m, sp, sh in cells}
        outside = sorted(wanted - set(grid))
        if outside:
            raise ValueError(f"cells not in this run's grid (methods × splits × shots): {outside}")
        return [c for c in grid if c in wanted]

    def _execute(self, selected: list[tuple[str, int, int]], mode: str = "run",
                 expected: dict | None = None) -> list[CellOutcome]:
        from cape_bench.registry import resolve  # noqa: PLC0415

        cfg = self.cfg
        for name in cfg.run.methods:  # fail fast on a typo, before any work
            resolve(cfg.method(name).method or name)
        ds = resolve_dataset(cfg, self.log)
        record = mode != "worker"  # a worker writes its cells' files only; the driver (or local run) owns run.json
        envelope: dict = {}
        if record:
            envelope = self._envelope(ds, set(selected))  # run / plan: every selected cell is (re)computed now
            write_json(self.run.run_json, envelope)
            if not envelope["official_protocol"]:
                self.log(
                    "[yellow]note: protocol shortened (num_episodes/num_queries changed): "
                    "numbers are not comparable with published MP-100 results[/yellow]"
                )
        wanted = set(selected)
        # a cell counts as finished when its record and a readable prediction table are there (a truncated
        # table is computed again)
        finished = {(r["method"], r["split"], r["shots"]) for r in self.run.finished_cells()}
        outcomes: list[CellOutcome] = []
        methods: dict[str, Any] = {}
        clock = None
        if mode == "run":  # say what the job will do; train what it needs, several models at once where it pays
            clock = plan_job(cfg, ds, [c for c in selected if c not in finished], methods, self.log)
            train_pending(cfg, clock, self.log)
        for split in cfg.protocol.splits:
            if not any(c[1] == split for c in wanted):
                continue
            try:
                ann = self._load(ds, split)
            except (AnnotationError, OSError) as err:  # this split's cells fail; the other splits still run
                self._fail_cells(outcomes, envelope if record else None, wanted, split, cfg.protocol.shots, err)
                continue
            problem = ""
            if record:
                stored = envelope["annotations"].get(f"split{split}", {}).get("sha256")
                if stored and stored != ann.sha256 and any(c[1] == split for c in finished):
                    raise RunConflictError(
                        f"{ann.path} changed since the finished cells of split {split} in {self.run.root} were "
                        f"computed (sha256 {stored[:12]} then, {ann.sha256[:12]} now): use a new --name, or restore "
                        "the file to resume")
                envelope["annotations"][f"split{split}"] = {"file": str(ann.path), "sha256": ann.sha256}
                write_json(self.run.categories_file(split), _categories_record(ann))
            else:
                problem = _differs("annotation file", (expected or {}).get("annotations", {}).get(f"split{split}"),
                                   ann.sha256, ann.path)
            for shots in cfg.protocol.shots:
                if not any(c[1:] == (split, shots) for c in wanted):
                    continue
                try:
                    manifest = self._manifest(ann, split, shots, write=record)
                except ValueError as err:  # e.g. a category too small for shots + queries: these cells fail
                    self._fail_cells(outcomes, envelope if record else None, wanted, split, (shots,),
                                     ValueError(f"{ann.path}: {err}"))
                    continue
                key = f"split{split}_{shots}shot"
                if record:
                    envelope["episodes"][key] = {
                        "sha256": manifest.sha256,
                        "pairs": len(manifest),
                        "episodes_per_category": manifest.num_episodes,
                        "official": manifest.official,
                    }
                    write_json(self.run.run_json, envelope)
                else:
                    problem = problem or _differs("episodes", (expected or {}).get("episodes", {}).get(key),
                                                  manifest.sha256, key)
                for name in cfg.run.methods:
                    if (name, split, shots) not in wanted:
                        continue
                    if (name, split, shots) in finished:
                        outcomes.append(CellOutcome(name, split, shots, "skipped (finished earlier)"))
                        continue
                    if mode == "plan":
                        outcomes.append(CellOutcome(name, split, shots, "pending"))
                        continue
                    t_cell, prepare_s = time.perf_counter(), 0.0
                    try:
                        if problem:
                            raise RuntimeError(problem)
                        if name not in methods:
                            methods[name] = create_configured_method(self.cfg, name)
                        record_ = self._run_cell(methods[name], name, ds, ann, manifest, split, shots)
                        prepare_s = record_["timings"]["prepare_s"]
                        outcomes.append(CellOutcome(name, split, shots, "done", record=record_))
                    except Exception as err:  # noqa: BLE001 — one failing cell must not lose the others
                        message = f"{name} split {split} {shots}-shot failed: {type(err).__name__}: {err}"
                        self.log(f"[red]{_escape(message)}[/red]")
                        if record:
                            envelope["failures"].append({"method": name, "split": split, "shots": shots,
                                                         "error": message})
                        outcomes.append(CellOutcome(name, split, shots, "failed", error=message))
                    if clock is not None:
                        self.log(clock.cell_done(name, split, prepare_s, time.perf_counter() - t_cell))
                    if record:
                        envelope["messages"] = self.messages[-200:]
                        write_json(self.run.run_json, envelope)
        return outcomes

    def _fail_cells(self, outcomes: list[CellOutcome], envelope: dict | None, wanted, split: int, shots_list,
                    err: Exception) -> None:
        """Record every wanted cell of ``split`` × ``shots_list`` as failed with ``err`` (the data, not a method, is
        at fault), so the cells that can run still do and the run's summary covers them."""
        for shots in shots_list:
            for name in self.cfg.run.methods:
                if (name, split, shots) not in wanted:
                    continue
                message = f"{name} split {split} {shots}-shot failed: {err}"
                self.log(f"[red]{_escape(message)}[/red]")
                if envelope is not None:
                    envelope["failures"].append({"method": name, "split": split, "shots": shots, "error": message})
                outcomes.append(CellOutcome(name, split, shots, "failed", error=message))
        if envelope is not None:
            envelope["messages"] = self.messages[-200:]
            write_json(self.run.run_json, envelope)

    def _run_cell(self, method, name: str, ds: DatasetRef, ann: AnnotationSet, manifest: EpisodeManifest, split, shots):
        info = method.info
        ctx = make_context(self.cfg, name, ds, split, shots, self.log)
        crops = None
        if info.needs_images:
            files = [ann.instances[i].image_file for i in np.unique(np.r_[manifest.query_obj, manifest.support_obj.ravel()])]
            check_images(ds.image_root, files, needed_by=f"method {name!r}")
            crops = CropSource(ds.image_root, info.input_size)
        t0 = time.perf_counter()
        method.prepare(ctx)
        prepare_s = time.perf_counter() - t0
        self._announce(name, method.provenance())
        cache = self.feature_cache() if info.needs_images else None
        label = f"{name} · split {split} · {shots}-shot"
        episodes = sum(1 for _ in manifest.episode_slices())
        if cache is not None and supports_instance_cache(method):
            with self._progress(label, episodes) as advance:
                preds, timings, cache_record = CachedLoop(method, name, ann, manifest, crops, cache, split).run(advance)
        else:
            with self._progress(label, episodes) as advance:
                preds, timings = run_uncached(method, ann, manifest, crops, advance)
            if not info.needs_images:
                reason = "the method reads no images"
            elif cache is None:
                reason = "feature cache off (run.feature_cache_mb = 0)"
            else:
                reason = "the method declares no per-instance stages"
            cache_record = {"used": False, "reason": reason}
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
                "reads_query_ground_truth": info.reads_query_ground_truth,
                "paper": info.paper,
            },
            "provenance": method.provenance(),
            "timings": {"prepare_s": prepare_s, **timings, "pairs_per_s": len(manifest) / total if total else None},
            "crop_cache": {"hits": crops.hits, "misses": crops.misses} if crops else None,
            "feature_cache": cache_record,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_json(self.run.cell(name, split, shots), record)
        if total:
            instance = f"instance features {timings['instance_s']:.1f} s, " if "instance_s" in timings else ""
            self.log(f"{label}: {len(manifest)} pairs in {total:.1f} s "
                     f"({len(manifest) / total:,.1f} pairs/s; data {timings['data_s']:.1f} s, {instance}support "
                     f"{timings['support_s']:.1f} s, predict {timings['predict_s']:.1f} s; prepare {prepare_s:.1f} s)")
        if cache_record.get("used"):
            self.log(f"{label}: {describe(cache_record)}; limit {cache_record['limit_mb']:,.0f} MB; "
                     f"{cache_record['instances_computed']} instance stages computed for {len(manifest)} pairs; "
                     f"the head ran on {cache_record['pairs_computed']} distinct (query, support state) pairs")
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


def _differs(what: str, expected: dict | None, sha256: str, where) -> str:
    """Why a worker must not compute a cell: its data differ from what the driver recorded ("" when they agree)."""
    if expected is None:
        return f"the driver recorded no {what} for {where}"
    if expected.get("sha256") != sha256:
        return (f"{what} {where} differs on this worker (sha256 {sha256[:12]}, driver {str(expected.get('sha256'))[:12]}); "
                "every node must see the same dataset")
    return ""


class RunConflictError(ConfigError, RuntimeError):
    """A run directory holds finished cells that this command would not reproduce (another config, an edited
    annotation file): a one-line error from the CLI (a ConfigError), a RuntimeError to Python callers."""


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted config keys whose values differ between two ``BenchConfig.to_dict()`` trees."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b and not (isinstance(a, list) and isinstance(b, tuple | list) and list(a) == list(b)):
            out.append(f"{prefix}{key}")
    return out


def _escape(text: str) -> str:
    """``text`` with rich markup escaped, for names and errors that come from the data."""
    from rich.markup import escape  # noqa: PLC0415

    return escape(text)
