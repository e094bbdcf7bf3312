"""A bounded LRU cache of per-instance arrays that spills to disk instead of forgetting.

The evaluation loop computes a method's per-instance stages (crop → backbone features, image embeddings) once
per distinct instance of a split and reuses them in every (support, query) pair the instance appears in
(~30–60 pairs on MP-100 / CAPE-Synth). A whole split's features can exceed what should stay in memory
(official ResNet-50 at 256²: 0.5 MB per instance; SwinV2-T: 0.8 MB), so the cache keeps at most
``max_bytes`` in memory, least recently used first out; an evicted entry is written once to ``.npy`` files in a
spill folder and read back (and promoted again) on its next use. Nothing is ever recomputed because of the bound.

Entries are immutable: ``key → {name: array}``, arrays stored as C-contiguous numpy copies. Keys are tuples of
str / int (``(namespace, stage, ann_id)`` in the runner).

Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MB = 1024 * 1024


def _nbytes(arrays: dict[str, np.ndarray]) -> int:
    return int(sum(a.nbytes for a in arrays.values()))


@dataclass
class CacheStats:
    """Counters of a :class:`FeatureCache` (cumulative since creation or :meth:`FeatureCache.reset_counters`).

    Attributes:
        hits_memory: lookups answered from memory.
        hits_disk: lookups answered by reloading spilled ``.npy`` files.
        misses: lookups of absent keys (the caller then computes and :meth:`~FeatureCache.put` s them).
        puts: entries stored.
        spills: entries written to disk on eviction (each at most once).
        evictions: entries moved out of memory (spilled or already on disk).
        memory_bytes / memory_entries: held in memory now.
        peak_memory_bytes: the most held in memory at once.
        disk_bytes / disk_entries: spilled files now on disk.
        peak_disk_bytes: the most on disk at once.
        bytes_read_disk / bytes_written_disk: traffic.
    """

    hits_memory: int = 0
    hits_disk: int = 0
    misses: int = 0
    puts: int = 0
    spills: int = 0
    evictions: int = 0
    memory_bytes: int = 0
    memory_entries: int = 0
    peak_memory_bytes: int = 0
    disk_bytes: int = 0
    disk_entries: int = 0
    peak_disk_bytes: int = 0
    bytes_read_disk: int = 0
    bytes_written_disk: int = 0

    @property
    def lookups(self) -> int:
        return self.hits_memory + self.hits_disk + self.misses

    @property
    def hit_rate(self) -> float | None:
        """Share of lookups answered without computing (memory or disk), None before any lookup."""
        n = self.lookups
        return (self.hits_memory + self.hits_disk) / n if n else None

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["lookups"] = self.lookups
        out["hit_rate"] = self.hit_rate
        return out


class FeatureCache:
    """LRU of ``key → {name: array}`` with a memory bound; evicted entries spill to ``.npy`` files.

    Args:
        max_bytes: memory bound for the held arrays (0: every entry goes straight to disk). An entry larger
            than the bound is kept on disk only.
        spill_dir: parent folder of the spill folder (None: the system temp folder). The cache creates its
            own sub-folder there and deletes it on :meth:`close` (also at interpreter exit).
    """

    def __init__(self, max_bytes: int, spill_dir: str | Path | None = None) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._parent = Path(spill_dir) if spill_dir is not None else None
        self._dir: Path | None = None
        self._finalizer: weakref.finalize | None = None
        self._mem: OrderedDict[tuple, dict[str, np.ndarray]] = OrderedDict()
        self._mem_bytes: dict[tuple, int] = {}
        self._disk: dict[tuple, tuple[Path, tuple[str, ...], int]] = {}  # key → (folder, names, bytes)
        self.stats = CacheStats()

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return len(set(self._mem) | set(self._disk))

    def __contains__(self, key: tuple) -> bool:
        return key in self._mem or key in self._disk

    @property
    def spill_path(self) -> Path | None:
        """The spill folder (None until something was spilled)."""
        return self._dir

    def probe(self, key: tuple) -> bool:
        """Whether ``key`` is cached, counting a miss when it is not (the caller computes and puts it; a later
        :meth:`get` counts the hit). Nothing is loaded."""
        if key in self:
            return True
        self.stats.misses += 1
        return False

    def get(self, key: tuple) -> dict[str, np.ndarray] | None:
        """The arrays stored under ``key`` (read-only views; do not modify), or None (counted as a miss)."""
        entry = self._mem.get(key)
        if entry is not None:
            self._mem.move_to_end(key)
            self.stats.hits_memory += 1
            return entry
        spilled = self._disk.get(key)
        if spilled is None:
            self.stats.misses += 1
            return None
        folder, names, size = spilled
        entry = {n: np.load(folder / f"{n}.npy", allow_pickle=False) for n in names}
        for a in entry.values():
            a.setflags(write=False)
        self.stats.hits_disk += 1
        self.stats.bytes_read_disk += size
        self._hold(key, entry, size)
        return entry

    def get_many(self, keys: list[tuple]) -> dict[str, np.ndarray]:
        """Stack the entries of ``keys`` (all present) along a new first axis: ``{name: array[N, ...]}``."""
        entries = []
        for k in keys:
            e = self.get(k)
            if e is None:
                raise KeyError(f"feature cache: {k} is not cached")
            entries.append(e)
        if not entries:
            return {}
        return {n: np.stack([e[n] for e in entries]) for n in entries[0]}

    # ------------------------------------------------------------------ updates
    def put(self, key: tuple, arrays: dict[str, np.ndarray]) -> None:
        """Store ``arrays`` under ``key`` (copied, made read-only). Re-putting a key replaces it."""
        entry = {}
        for name, a in arrays.items():
            if not name.isidentifier():
                raise ValueError(f"feature cache: array name {name!r} must be an identifier (it names a file)")
            a = np.array(a, copy=True, order="C")
            if a.dtype == object:
                raise TypeError(f"feature cache: {name!r} is an object array; store numeric arrays only")
            a.setflags(write=False)
            entry[name] = a
        self.discard(key)
        self.stats.puts += 1
        self._hold(key, entry, _nbytes(entry))

    def discard(self, key: tuple) -> None:
        """Forget ``key`` (memory and disk)."""
        if key in self._mem:
            del self._mem[key]
            self.stats.memory_bytes -= self._mem_bytes.pop(key)
        spilled = self._disk.pop(key, None)
        if spilled is not None:
            shutil.rmtree(spilled[0], ignore_errors=True)
            self.stats.disk_bytes -= spilled[2]
        self._sync_counts()

    def discard_where(self, predicate) -> int:
        """Forget every key for which ``predicate(key)`` is true; returns how many."""
        keys = [k for k in set(self._mem) | set(self._disk) if predicate(k)]
        for k in keys:
            self.discard(k)
        return len(keys)

    def clear(self) -> None:
        """Forget everything (spilled files included); counters other than sizes are kept."""
        self.discard_where(lambda k: True)

    def reset_counters(self) -> None:
        """Zero the traffic counters and the peaks (sizes now held are kept)."""
        s = self.stats
        self.stats = CacheStats(memory_bytes=s.memory_bytes, memory_entries=s.memory_entries,
                                peak_memory_bytes=s.memory_bytes, disk_bytes=s.disk_bytes,
                                disk_entries=s.disk_entries, peak_disk_bytes=s.disk_bytes)

    def close(self) -> None:
        """Drop everything and delete the spill folder."""
        self._mem.clear()
        self._mem_bytes.clear()
        self._disk.clear()
        self.stats.memory_bytes = self.stats.disk_bytes = 0
        self._sync_counts()
        if self._finalizer is not None:
            self._finalizer()
        self._dir = None
        self._finalizer = None

    def __enter__(self) -> FeatureCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _hold(self, key: tuple, entry: dict[str, np.ndarray], size: int) -> None:
        if size > self.max_bytes:  # never fits: disk only
            self._spill(key, entry, size)
            self._sync_counts()
            return
        self._mem[key] = entry
        self._mem_bytes[key] = size
        self.stats.memory_bytes += size
        while self.stats.memory_bytes > self.max_bytes:
            old, old_entry = self._mem.popitem(last=False)
            old_size = self._mem_bytes.pop(old)
            self.stats.memory_bytes -= old_size
            self.stats.evictions += 1
            self._spill(old, old_entry, old_size)
        self.stats.peak_memory_bytes = max(self.stats.peak_memory_bytes, self.stats.memory_bytes)
        self._sync_counts()

    def _spill(self, key: tuple, entry: dict[str, np.ndarray], size: int) -> None:
        if key in self._disk:  # written before, immutable since
            return
        if self._dir is None:
            parent = self._parent
            if parent is not None:
                parent.mkdir(parents=True, exist_ok=True)
            self._dir = Path(tempfile.mkdtemp(prefix="cape-bench-features-", dir=parent))
            self._finalizer = weakref.finalize(self, shutil.rmtree, str(self._dir), True)
        folder = self._dir / hashlib.sha1(repr(key).encode()).hexdigest()
        folder.mkdir(exist_ok=True)
        for name, a in entry.items():
            np.save(folder / f"{name}.npy", a, allow_pickle=False)
        self._disk[key] = (folder, tuple(entry), size)
        self.stats.spills += 1
        self.stats.disk_bytes += size
        self.stats.bytes_written_disk += size
        self.stats.peak_disk_bytes = max(self.stats.peak_disk_bytes, self.stats.disk_bytes)

    def _sync_counts(self) -> None:
        self.stats.memory_entries = len(self._mem)
        self.stats.disk_entries = len(self._disk)


def describe(stats: dict[str, Any]) -> str:
    """One line for the terminal: memory / disk used and the hit rate."""
    rate = stats.get("hit_rate")
    rate_s = "n/a" if rate is None else f"{100 * rate:.1f} %"
    return (f"feature cache: {stats['memory_bytes'] / MB:,.0f} MB in memory "
            f"(peak {stats['peak_memory_bytes'] / MB:,.0f} MB, {stats['memory_entries']} entries), "
            f"{stats['disk_bytes'] / MB:,.0f} MB on disk ({stats['disk_entries']} entries), hit rate {rate_s} "
            f"({stats['hits_memory']} memory + {stats['hits_disk']} disk hits, {stats['misses']} computed)")
