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

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cape_bench.api import RunContext, supports_instance_cache
from cape_bench.config import BenchConfig, ConfigError
from cape_bench.data.mp100 import AnnotationError, AnnotationSet, load_annotation_set, load_descriptions, split_file
from cape_bench.datasets import DatasetRef, cache_root, resolve_dataset
from cape_bench.environment import environment, git_state
from cape_bench.episodes import EpisodeManifest, build_manifest
from cape_bench.feature_cache import MB, FeatureCache, describe
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
    status: str  # "done", "skipped (finished earlier)", "failed"; "pending" from Runner.plan
    error: str = ""
    record: dict = field(default_factory=dict)


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
                    try:
                        if problem:
                            raise RuntimeError(problem)
                        if name not in methods:
                            methods[name] = create_configured_method(self.cfg, name)
                        record_ = self._run_cell(methods[name], name, ds, ann, manifest, split, shots)
                        outcomes.append(CellOutcome(name, split, shots, "done", record=record_))
                    except Exception as err:  # noqa: BLE001 — one failing cell must not lose the others
                        message = f"{name} split {split} {shots}-shot failed: {type(err).__name__}: {err}"
                        self.log(f"[red]{_escape(message)}[/red]")
                        if record:
                            envelope["failures"].append({"method": name, "split": split, "shots": shots,
                                                         "error": message})
                        outcomes.append(CellOutcome(name, split, shots, "failed", error=message))
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
        if cache is not None and supports_instance_cache(method):
            preds, timings, cache_record = self._episodes_cached(method, name, ann, manifest, crops, cache, split,
                                                                 label)
        else:
            preds, timings = self._episodes_uncached(method, ann, manifest, crops, label)
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

    # ------------------------------------------------------------------ the two loops
    @staticmethod
    def _check_output(out: np.ndarray, expected: tuple, ep: int, category_name: str, ann_ids: np.ndarray) -> None:
        if out.shape != expected:
            raise MethodOutputError(
                f"episode {ep} ({category_name}): predict returned shape {out.shape}, "
                f"expected {expected} (queries, keypoints, xy)"
            )
        if not np.all(np.isfinite(out)):
            bad = int(ann_ids[np.flatnonzero(~np.isfinite(out).all(axis=(1, 2)))[0]])
            raise MethodOutputError(
                f"episode {ep} ({category_name}): non-finite prediction for query annotation {bad}"
            )

    def _episodes_uncached(self, method, ann: AnnotationSet, manifest: EpisodeManifest, crops, label: str):
        """Every episode on its own: ``encode_support`` + ``predict`` on freshly cut crops."""
        info = method.info
        timings = {"data_s": 0.0, "support_s": 0.0, "predict_s": 0.0}
        preds: list[np.ndarray] = [None] * len(manifest)  # type: ignore[list-item]
        episodes = list(manifest.episode_slices())
        with self._progress(label, len(episodes)) as advance:
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
                self._check_output(out, (len(q_ids), support.category.num_keypoints, 2), ep, support.category.name,
                                   queries.ann_ids)
                for j, p in enumerate(range(sl.start, sl.stop)):
                    preds[p] = out[j]
                advance()
        return preds, timings

    def _episodes_cached(self, method, name: str, ann: AnnotationSet, manifest: EpisodeManifest, crops,
                         cache: FeatureCache, split: int, label: str):
        """Per-instance stages once per distinct instance (cached), then episodes of a category in groups.

        Cache keys are ``(label, method identity, split, stage, ann_id)``: entries of another split or of an
        earlier model of this label are dropped first; those of this split survive into the next shots cell.
        """
        info = method.info
        stages = dict(method.instance_stages())
        identity = str(method.instance_cache_identity())
        cache.discard_where(lambda k: k[0] == name and (k[1] != identity or k[2] != split))
        cache.discard_where(lambda k: k[2] != split)  # one split at a time across methods too
        before = cache.stats.as_dict()
        batch = max(1, int(getattr(method, "batch_size", 0) or 32))  # instances per stage call, pairs per predict
        timings = {"data_s": 0.0, "instance_s": 0.0, "support_s": 0.0, "predict_s": 0.0}
        preds: list[np.ndarray] = [None] * len(manifest)  # type: ignore[list-item]
        instances = ann.instances

        def key(stage: str, obj: int) -> tuple:
            return (name, identity, split, stage, int(instances[obj].ann_id))

        computed = pairs_computed = 0
        state_keys = getattr(method, "support_state_key", None)  # optional: equal keys → equal predictions
        episodes = list(manifest.episode_slices())
        by_category = itertools.groupby(episodes, key=lambda e: int(manifest.category_id[e[1].start]))
        with self._progress(label, len(episodes)) as advance:
            for _, group in by_category:
                group = list(group)
                # 1. the category's per-instance stages, once per distinct instance, in batches
                need: dict[str, set[int]] = {}
                for role, stage in stages.items():
                    ids = need.setdefault(stage, set())
                    for _, sl in group:
                        ids.update((manifest.support_obj[sl.start] if role == "support" else
                                    manifest.query_obj[sl]).tolist())
                for stage, ids in need.items():
                    missing = [o for o in sorted(ids) if not cache.probe(key(stage, o))]
                    for start in range(0, len(missing), batch):
                        chunk = missing[start : start + batch]
                        t = time.perf_counter()
                        view = ann.view(chunk, with_ground_truth=False,
                                        crops=crops.crops([instances[i] for i in chunk]))
                        t1 = time.perf_counter()
                        feats = method.instance_features(view, stage)
                        arrays = {k: _to_numpy(v) for k, v in feats.items()}
                        for k, a in arrays.items():
                            if a.shape[:1] != (len(chunk),):
                                raise MethodOutputError(f"instance_features({stage!r}) returned {k} of shape "
                                                        f"{a.shape}, expected first dim {len(chunk)} (instances)")
                        t2 = time.perf_counter()
                        for j, o in enumerate(chunk):
                            cache.put(key(stage, o), {k: a[j] for k, a in arrays.items()})
                        computed += len(chunk)
                        timings["data_s"] += t1 - t
                        timings["instance_s"] += t2 - t1
                # 2. a support state per episode; then each distinct (query, support state) pair once, the
                # queries of several episodes per call. Episodes whose states a method declares equal
                # (``support_state_key``: e.g. CapeX, whose support is the category's text and a keypoint mask)
                # share their queries' predictions.
                states, state_index, state_of_episode = [], {}, []
                for ep, sl in group:
                    t = time.perf_counter()
                    sup_ids = manifest.support_obj[sl.start]
                    support = ann.view(sup_ids)
                    s_feats = (cache.get_many([key(stages["support"], o) for o in sup_ids])
                               if "support" in stages else {})
                    t1 = time.perf_counter()
                    state = method.encode_support_cached(support, s_feats)
                    timings["data_s"] += t1 - t
                    timings["support_s"] += time.perf_counter() - t1
                    state_key = state_keys(state) if state_keys else None
                    index = state_index.setdefault(("episode", ep) if state_key is None else ("key", state_key),
                                                   len(states))
                    if index == len(states):
                        states.append((ep, state))
                    state_of_episode.append(index)
                row_of: dict[tuple[int, int], int] = {}
                rows_q: list[int] = []
                rows_state: list[int] = []
                pair_rows: list[np.ndarray] = []
                for (ep, sl), index in zip(group, state_of_episode, strict=True):
                    rows = []
                    for q in manifest.query_obj[sl].tolist():
                        row = row_of.setdefault((q, index), len(rows_q))
                        if row == len(rows_q):
                            rows_q.append(q)
                            rows_state.append(index)
                        rows.append(row)
                    pair_rows.append(np.asarray(rows, dtype=np.int64))
                pairs_computed += len(rows_q)
                k = ann.categories[int(manifest.category_id[group[0][1].start])].num_keypoints
                out_rows = np.empty((len(rows_q), k, 2), dtype=np.float32)
                for start in range(0, len(rows_q), batch):
                    t = time.perf_counter()
                    q_ids = np.asarray(rows_q[start : start + batch])
                    used = sorted(set(rows_state[start : start + batch]))
                    local = {s: j for j, s in enumerate(used)}
                    owner = np.asarray([local[s] for s in rows_state[start : start + batch]], dtype=np.int64)
                    queries = ann.view(q_ids, with_ground_truth=info.reads_query_ground_truth)
                    q_feats = cache.get_many([key(stages["query"], o) for o in q_ids]) if "query" in stages else {}
                    t1 = time.perf_counter()
                    out = np.asarray(method.predict_cached([states[s][1] for s in used], queries, q_feats, owner))
                    t2 = time.perf_counter()
                    timings["data_s"] += t1 - t
                    timings["predict_s"] += t2 - t1
                    expected = (len(q_ids), k, 2)
                    finite = np.isfinite(out).all(axis=(1, 2)) if out.shape == expected else None
                    if finite is None or not finite.all():  # name the episode of the (first) failing query
                        row = 0 if finite is None else int(np.flatnonzero(~finite)[0])
                        self._check_output(out, expected, states[used[owner[row]]][0], queries.category.name,
                                           queries.ann_ids)
                    out_rows[start : start + len(q_ids)] = out
                for (ep, sl), rows in zip(group, pair_rows, strict=True):
                    for p, row in zip(range(sl.start, sl.stop), rows, strict=True):
                        preds[p] = out_rows[row]
                    advance()
        after = cache.stats.as_dict()
        delta = {c: after[c] - before[c] for c in ("hits_memory", "hits_disk", "misses", "puts", "spills", "evictions",
                                                     "bytes_read_disk", "bytes_written_disk")}
        lookups = delta["hits_memory"] + delta["hits_disk"] + delta["misses"]
        record = {
            "used": True,
            "stages": stages,
            "limit_mb": cache.max_bytes / MB,
            "instances_computed": computed,
            "pairs_computed": pairs_computed,  # distinct (query, support state) pairs the head ran on
            **delta,
            "hit_rate": (delta["hits_memory"] + delta["hits_disk"]) / lookups if lookups else None,
            "memory_bytes": after["memory_bytes"], "memory_entries": after["memory_entries"],
            "peak_memory_bytes": after["peak_memory_bytes"],
            "disk_bytes": after["disk_bytes"], "disk_entries": after["disk_entries"],
            "peak_disk_bytes": after["peak_disk_bytes"],
            "spill_dir": str(cache.spill_path) if cache.spill_path else None,
        }
        return preds, timings, record

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


def _to_numpy(value) -> np.ndarray:
    """A method's per-instance array (numpy or torch, any device) as a numpy array."""
    if isinstance(value, np.ndarray):
        return value
    detach = getattr(value, "detach", None)
    if detach is not None:  # torch.Tensor, without importing torch here
        return detach().cpu().numpy()
    return np.asarray(value)


def create_configured_method(cfg: BenchConfig, name: str):
    """The method ``[methods.<name>]`` describes (a registered method or a variant of one)."""
    from cape_bench.registry import create_method  # noqa: PLC0415

    section = cfg.method(name)
    options = dict(section.options)
    for key in ("checkpoint", "backbone", "text_encoder", "batch_size", "preset", "train"):
        value = getattr(section, key)
        if value:
            options[key] = value
    return create_method(section.method or name, **options)


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


def make_context(cfg: BenchConfig, name: str, ds: DatasetRef, split: int, shots: int, log) -> RunContext:
    """What method ``name`` may use to get ready for one (split, shots) cell."""
    return RunContext(
        dataset=ds.name,
        split=split,
        shots=shots,
        ann_dir=str(ds.ann_dir),
        image_root=str(ds.image_root) if ds.image_root else None,
        cache_dir=str(cache_root(cfg)),
        options=dict(cfg.method(name).options),
        device=cfg.run.device,
        seed=cfg.run.seed,
        log=log,
        descriptions=str(ds.descriptions) if ds.descriptions else None,
        text_variant=cfg.dataset.text_variant,
        description_drop=dict(cfg.dataset.description_drop),
        subset=cfg.dataset.subset,
    )


def train_methods(cfg: BenchConfig, names: list[str], split: int, log=print) -> list[dict]:
    """Train (or find already trained) each method for ``split`` exactly as ``run`` would before evaluating.

    Returns each method's provenance (checkpoint path, training time, final loss).
    """
    from cape_bench.registry import resolve  # noqa: PLC0415

    for name in names:
        resolve(cfg.method(name).method or name)
    ds = resolve_dataset(cfg, log)  # under torchrun the first rank generates a missing dataset, the rest wait (flock)
    out = []
    for name in names:
        if cfg.method(name).checkpoint:
            raise ConfigError(f"methods.{name}.checkpoint is set: the method would load it, not train")
        try:
            method = create_configured_method(cfg, name)
        except ValueError as err:  # an unknown preset, a bad preset override
            raise ConfigError(str(err)) from err
        if not getattr(method, "trainable", False):
            raise ConfigError(f"method {name!r} has nothing to train (it has no learned weights)")
        method.prepare(make_context(cfg, name, ds, split, 1, log))
        out.append({"method": name, "split": split, **method.provenance()})
    return out
