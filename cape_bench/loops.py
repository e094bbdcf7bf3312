"""The two episode loops of a cell: every episode on its own, or per-instance stages once and the head per pair.

:func:`run_uncached` calls ``encode_support`` + ``predict`` per episode on freshly cut crops. :class:`CachedLoop`
serves methods with per-instance stages (:class:`~cape_bench.api.InstanceCachedMethod`), one category's episodes
at a time, in three named steps:

1. :meth:`CachedLoop.compute_stages`: each distinct instance's stage features (backbone features, image
   embeddings) once, in batches, into the :class:`~cape_bench.feature_cache.FeatureCache`;
2. :meth:`CachedLoop.support_states`: a support state per episode; episodes whose states the method declares equal
   (``support_state_key``: e.g. CapeX, whose support is the category's text and a keypoint mask) share one;
3. :meth:`CachedLoop.predict_pairs`: each distinct (query, support state) pair once, the queries of several
   episodes per call.

Both return predictions in original-image pixels per pair and the seconds spent per phase (``data_s``,
``instance_s``, ``support_s``, ``predict_s``). A prediction of the wrong shape or with a non-finite value raises
:class:`MethodOutputError` naming the episode, the category and the query annotation.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from cape_bench.api import role_stages
from cape_bench.data.mp100 import AnnotationSet
from cape_bench.episodes import EpisodeManifest
from cape_bench.feature_cache import MB, FeatureCache

#: cache counters a cell's record reports as the change over the cell
CACHE_COUNTERS = ("hits_memory", "hits_disk", "misses", "puts", "spills", "evictions", "bytes_read_disk",
                  "bytes_written_disk")


class MethodOutputError(RuntimeError):
    """A method returned predictions of the wrong shape or with non-finite values."""


def check_output(out: np.ndarray, expected: tuple, ep: int, category_name: str, ann_ids: np.ndarray) -> None:
    """Raise :class:`MethodOutputError` unless ``out`` has shape ``expected`` and only finite values."""
    if out.shape != expected:
        raise MethodOutputError(f"episode {ep} ({category_name}): predict returned shape {out.shape}, "
                                f"expected {expected} (queries, keypoints, xy)")
    if not np.all(np.isfinite(out)):
        bad = int(ann_ids[np.flatnonzero(~np.isfinite(out).all(axis=(1, 2)))[0]])
        raise MethodOutputError(f"episode {ep} ({category_name}): non-finite prediction for query annotation {bad}")


def to_numpy(value) -> np.ndarray:
    """A method's per-instance array (numpy or torch, any device) as a numpy array."""
    if isinstance(value, np.ndarray):
        return value
    detach = getattr(value, "detach", None)
    if detach is not None:  # torch.Tensor, without importing torch here
        return detach().cpu().numpy()
    return np.asarray(value)


def run_uncached(method, ann: AnnotationSet, manifest: EpisodeManifest, crops, advance: Callable[[], None]):
    """Every episode on its own: ``encode_support`` + ``predict`` on freshly cut crops (``crops`` None: no
    images). Returns (predictions per pair, seconds per phase)."""
    info = method.info
    timings = {"data_s": 0.0, "support_s": 0.0, "predict_s": 0.0}
    preds: list[np.ndarray] = [None] * len(manifest)  # type: ignore[list-item]
    for ep, sl in manifest.episode_slices():
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
        check_output(out, (len(q_ids), support.category.num_keypoints, 2), ep, support.category.name,
                     queries.ann_ids)
        for j, p in enumerate(range(sl.start, sl.stop)):
            preds[p] = out[j]
        advance()
    return preds, timings


class CachedLoop:
    """Per-instance stages once per distinct instance (cached), then a category's episodes in groups.

    Cache keys are ``(label, method identity, split, stage, ann_id)``: entries of another split or of an earlier
    model of this label are dropped first; those of this split survive into the next shots cell. A stage with a
    ``stage_fingerprint`` is keyed ``("*", fingerprint, split, "shared", ann_id)`` instead: any method of the run
    whose stage has the same fingerprint (the same frozen backbone at the same input) reuses those arrays.
    """

    def __init__(self, method, name: str, ann: AnnotationSet, manifest: EpisodeManifest, crops,
                 cache: FeatureCache, split: int) -> None:
        self.method, self.name, self.ann, self.manifest, self.crops, self.cache = method, name, ann, manifest, crops, cache
        self.split = split
        self.stages = role_stages(method.instance_stages())
        self.identity = str(method.instance_cache_identity())
        fingerprint = getattr(method, "stage_fingerprint", None)
        self.fingerprints = {stage: str(fp) for names in self.stages.values() for stage in names
                             if fingerprint is not None and (fp := fingerprint(stage))}
        cache.discard_where(lambda k: k[0] == name and (k[1] != self.identity or k[2] != split))
        cache.discard_where(lambda k: k[2] != split)  # one split at a time across methods too
        self.before = cache.stats.as_dict()
        self.batch = max(1, int(getattr(method, "batch_size", 0) or 32))  # instances per stage call, pairs per predict
        self.timings = {"data_s": 0.0, "instance_s": 0.0, "support_s": 0.0, "predict_s": 0.0}
        self.instances_computed = 0
        self.pairs_computed = 0

    def key(self, stage: str, obj: int) -> tuple:
        ann_id = int(self.ann.instances[obj].ann_id)
        if stage in self.fingerprints:
            return ("*", self.fingerprints[stage], self.split, "shared", ann_id)
        return (self.name, self.identity, self.split, stage, ann_id)

    def role_features(self, role: str, objs) -> dict[str, np.ndarray]:
        """The cached arrays of ``role``'s stages for ``objs``, stacked and merged (``{}`` for a role without)."""
        out: dict[str, np.ndarray] = {}
        for stage in self.stages.get(role, ()):
            out.update(self.cache.get_many([self.key(stage, o) for o in objs]))
        return out

    def run(self, advance: Callable[[], None]) -> tuple[list[np.ndarray], dict[str, float], dict[str, Any]]:
        """Predictions per pair, seconds per phase, and the cell's feature-cache record."""
        manifest = self.manifest
        preds: list[np.ndarray] = [None] * len(manifest)  # type: ignore[list-item]
        episodes = list(manifest.episode_slices())
        for _, group in itertools.groupby(episodes, key=lambda e: int(manifest.category_id[e[1].start])):
            group = list(group)
            self.compute_stages(group)
            states, state_of_episode = self.support_states(group)
            for (_, sl), rows in zip(group, self.predict_pairs(group, states, state_of_episode), strict=True):
                for p, row in zip(range(sl.start, sl.stop), rows, strict=True):
                    preds[p] = row
                advance()
        return preds, self.timings, self.cache_record()

    def compute_stages(self, group) -> None:
        """Step 1: the group's per-instance stages, once per distinct instance not yet cached, in batches."""
        manifest, instances = self.manifest, self.ann.instances
        need: dict[str, set[int]] = {}
        for role, names in self.stages.items():
            for _, sl in group:
                objs = (manifest.support_obj[sl.start] if role == "support" else manifest.query_obj[sl]).tolist()
                for stage in names:
                    need.setdefault(stage, set()).update(objs)
        for stage, ids in need.items():
            missing = [o for o in sorted(ids) if not self.cache.probe(self.key(stage, o))]
            for start in range(0, len(missing), self.batch):
                chunk = missing[start : start + self.batch]
                t = time.perf_counter()
                view = self.ann.view(chunk, with_ground_truth=False, crops=self.crops.crops([instances[i] for i in chunk]))
                t1 = time.perf_counter()
                arrays = {k: to_numpy(v) for k, v in self.method.instance_features(view, stage).items()}
                for k, a in arrays.items():
                    if a.shape[:1] != (len(chunk),):
                        raise MethodOutputError(f"instance_features({stage!r}) returned {k} of shape {a.shape}, "
                                                f"expected first dim {len(chunk)} (instances)")
                t2 = time.perf_counter()
                for j, o in enumerate(chunk):
                    self.cache.put(self.key(stage, o), {k: a[j] for k, a in arrays.items()})
                self.instances_computed += len(chunk)
                self.timings["data_s"] += t1 - t
                self.timings["instance_s"] += t2 - t1

    def support_states(self, group) -> tuple[list[tuple[int, Any]], list[int]]:
        """Step 2: a support state per episode, shared by episodes with equal ``support_state_key``.

        Returns the distinct ``(first episode, state)`` pairs and, per episode of ``group``, its state's index.
        """
        manifest = self.manifest
        state_keys = getattr(self.method, "support_state_key", None)  # optional: equal keys → equal predictions
        states: list[tuple[int, Any]] = []
        state_index: dict[tuple, int] = {}
        state_of_episode: list[int] = []
        for ep, sl in group:
            t = time.perf_counter()
            sup_ids = manifest.support_obj[sl.start]
            support = self.ann.view(sup_ids)
            s_feats = self.role_features("support", sup_ids)
            t1 = time.perf_counter()
            state = self.method.encode_support_cached(support, s_feats)
            self.timings["data_s"] += t1 - t
            self.timings["support_s"] += time.perf_counter() - t1
            state_key = state_keys(state) if state_keys else None
            index = state_index.setdefault(("episode", ep) if state_key is None else ("key", state_key), len(states))
            if index == len(states):
                states.append((ep, state))
            state_of_episode.append(index)
        return states, state_of_episode

    def predict_pairs(self, group, states, state_of_episode) -> list[np.ndarray]:
        """Step 3: each distinct (query, support state) pair once, in batches; per episode its queries' rows."""
        manifest = self.manifest
        row_of: dict[tuple[int, int], int] = {}
        rows_q: list[int] = []
        rows_state: list[int] = []
        pair_rows: list[np.ndarray] = []
        for (_, sl), index in zip(group, state_of_episode, strict=True):
            rows = []
            for q in manifest.query_obj[sl].tolist():
                row = row_of.setdefault((q, index), len(rows_q))
                if row == len(rows_q):
                    rows_q.append(q)
                    rows_state.append(index)
                rows.append(row)
            pair_rows.append(np.asarray(rows, dtype=np.int64))
        self.pairs_computed += len(rows_q)
        k = self.ann.categories[int(manifest.category_id[group[0][1].start])].num_keypoints
        out_rows = np.empty((len(rows_q), k, 2), dtype=np.float32)
        for start in range(0, len(rows_q), self.batch):
            t = time.perf_counter()
            q_ids = np.asarray(rows_q[start : start + self.batch])
            used = sorted(set(rows_state[start : start + self.batch]))
            local = {s: j for j, s in enumerate(used)}
            owner = np.asarray([local[s] for s in rows_state[start : start + self.batch]], dtype=np.int64)
            queries = self.ann.view(q_ids, with_ground_truth=self.method.info.reads_query_ground_truth)
            q_feats = self.role_features("query", q_ids)
            t1 = time.perf_counter()
            out = np.asarray(self.method.predict_cached([states[s][1] for s in used], queries, q_feats, owner))
            t2 = time.perf_counter()
            self.timings["data_s"] += t1 - t
            self.timings["predict_s"] += t2 - t1
            expected = (len(q_ids), k, 2)
            finite = np.isfinite(out).all(axis=(1, 2)) if out.shape == expected else None
            if finite is None or not finite.all():  # name the episode of the (first) failing query
                row = 0 if finite is None else int(np.flatnonzero(~finite)[0])
                check_output(out, expected, states[used[owner[row]]][0], queries.category.name, queries.ann_ids)
            out_rows[start : start + len(q_ids)] = out
        return [out_rows[rows] for rows in pair_rows]

    def cache_record(self) -> dict[str, Any]:
        """What the cell did with the feature cache (``cell.json``'s ``feature_cache``)."""
        after = self.cache.stats.as_dict()
        delta = {c: after[c] - self.before[c] for c in CACHE_COUNTERS}
        lookups = delta["hits_memory"] + delta["hits_disk"] + delta["misses"]
        return {
            "used": True,
            "stages": {role: list(names) for role, names in self.stages.items()},
            "shared_stages": dict(self.fingerprints),  # stage → fingerprint: arrays any method of the run may reuse
            "limit_mb": self.cache.max_bytes / MB,
            "instances_computed": self.instances_computed,
            "pairs_computed": self.pairs_computed,  # distinct (query, support state) pairs the head ran on
            **delta,
            "hit_rate": (delta["hits_memory"] + delta["hits_disk"]) / lookups if lookups else None,
            "memory_bytes": after["memory_bytes"], "memory_entries": after["memory_entries"],
            "peak_memory_bytes": after["peak_memory_bytes"],
            "disk_bytes": after["disk_bytes"], "disk_entries": after["disk_entries"],
            "peak_disk_bytes": after["peak_disk_bytes"],
            "spill_dir": str(self.cache.spill_path) if self.cache.spill_path else None,
        }
