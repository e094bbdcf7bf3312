"""The embedding cache: one SQLite row per (encoder, weights identity, exact text), in memory first."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# ----------------------------------------------------------------------------------------------------------------
# Embedding cache


@dataclass
class EncodeStats:
    """Counters of one encoder instance (cumulative over ``encode`` calls).

    Attributes:
        requested: strings passed to ``encode`` (with repeats).
        unique: distinct strings among them, per call, summed.
        memory_hits: distinct strings served from the in-process dict.
        disk_hits: distinct strings served from the SQLite cache.
        encoded: distinct strings actually run through the network.
        encode_seconds: wall time spent in the network (s).
    """

    requested: int = 0
    unique: int = 0
    memory_hits: int = 0
    disk_hits: int = 0
    encoded: int = 0
    encode_seconds: float = 0.0


class EmbeddingCache:
    """Persistent (SQLite) + in-memory map ``text → float32[D]`` for one namespace.

    The namespace is ``"<encoder name>|<weights identity>|<pooling>"``, so embeddings of different weights or
    pooling never mix. ``path=None`` keeps everything in memory.
    """

    def __init__(self, path: Path | None, namespace: str, dim: int) -> None:
        self.path, self.namespace, self.dim = path, namespace, dim
        self.memory: dict[str, np.ndarray] = {}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as con:
                con.execute("CREATE TABLE IF NOT EXISTS emb (ns TEXT NOT NULL, text TEXT NOT NULL, dim INTEGER NOT"
                            " NULL, vec BLOB NOT NULL, PRIMARY KEY (ns, text))")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def get_disk(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Look ``texts`` up on disk (not in memory); returns the ones found."""
        if self.path is None or not texts:
            return {}
        found: dict[str, np.ndarray] = {}
        with self._connect() as con:
            for start in range(0, len(texts), 500):  # SQLite caps bound parameters per statement
                chunk = list(texts[start:start + 500])
                marks = ",".join("?" * len(chunk))
                rows = con.execute(f"SELECT text, dim, vec FROM emb WHERE ns = ? AND text IN ({marks})",
                                   [self.namespace, *chunk])
                for text, dim, blob in rows:
                    if dim == self.dim:
                        found[text] = np.frombuffer(blob, dtype=np.float32).copy()
        return found

    def put(self, items: dict[str, np.ndarray]) -> None:
        self.memory.update(items)
        if self.path is None or not items:
            return
        with self._connect() as con:
            con.executemany("INSERT OR REPLACE INTO emb (ns, text, dim, vec) VALUES (?, ?, ?, ?)",
                            [(self.namespace, t, self.dim, np.ascontiguousarray(v, np.float32).tobytes())
                             for t, v in items.items()])
