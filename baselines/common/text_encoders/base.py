"""The text-encoder interface: ``encode`` (unit rows, cached), provenance, weights identity."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from baselines.common.text_encoders.cache import EmbeddingCache, EncodeStats

# ----------------------------------------------------------------------------------------------------------------
# The interface


@dataclass(frozen=True)
class WeightsInfo:
    """Where an encoder's weights came from.

    Attributes:
        genuine: True for pretrained weights read from disk, False for seeded random init.
        path: file or folder they were read from (None when random).
        identity: cache key part: ``sha256:<hex>`` of the weights file, or ``random-init:seed<k>:torch<v>``.
        tokenizer: where the tokenizer came from (a stand-in is said so).
        note: free text (e.g. why random).
    """

    genuine: bool
    path: str | None
    identity: str
    tokenizer: str
    note: str = ""


class TextEncoder:
    """Base class: caching, dedup and bookkeeping; subclasses implement ``_encode_batch``.

    Attributes:
        name: registry name.
        dim: embedding width D.
        pooling: short description of how a sentence vector is formed.
        weights: :class:`WeightsInfo`.
        stats: :class:`EncodeStats`.
    """

    name: str = ""
    pooling: str = ""
    batch_size: int = 64

    def __init__(self, dim: int, weights: WeightsInfo, cache_dir: str | os.PathLike | None) -> None:
        self.dim = dim
        self.weights = weights
        self.stats = EncodeStats()
        db = Path(cache_dir) / "text_embeddings.sqlite" if cache_dir is not None else None
        self.cache = EmbeddingCache(db, f"{self.name}|{weights.identity}|{self.pooling}", dim)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed strings, each distinct string at most once per cache lifetime.

        Args:
            texts: N strings (repeats allowed; exact text is the key: no stripping or case folding).

        Returns:
            float32[N, D], L2-normalised rows, in input order.
        """
        texts = list(texts)
        if any(not isinstance(t, str) for t in texts):
            raise TypeError("encode() takes a sequence of str")
        self.stats.requested += len(texts)
        unique = list(dict.fromkeys(texts))
        self.stats.unique += len(unique)
        table: dict[str, np.ndarray] = {}
        missing = []
        for t in unique:
            if t in self.cache.memory:
                table[t] = self.cache.memory[t]
                self.stats.memory_hits += 1
            else:
                missing.append(t)
        from_disk = self.cache.get_disk(missing)
        self.stats.disk_hits += len(from_disk)
        self.cache.memory.update(from_disk)
        table.update(from_disk)
        todo = [t for t in missing if t not in from_disk]
        if todo:
            t0 = time.perf_counter()
            fresh = self._encode_all(todo)
            self.stats.encode_seconds += time.perf_counter() - t0
            self.stats.encoded += len(todo)
            new = {t: fresh[i] for i, t in enumerate(todo)}
            self.cache.put(new)
            table.update(new)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([table[t] for t in texts]).astype(np.float32, copy=False)

    def _encode_all(self, texts: list[str]) -> np.ndarray:
        # Length-sorted batches waste less padding; results are scattered back to the caller's order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), np.float32)
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            out[idx] = self._encode_batch([texts[i] for i in idx])
        return out

    def _encode_batch(self, texts: list[str]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def provenance(self) -> dict[str, Any]:
        """JSON-able description for run.json (weights genuine or random, path, digest, pooling, cache)."""
        return {
            "encoder": self.name, "dim": self.dim, "pooling": self.pooling, **asdict(self.weights),
            "cache": str(self.cache.path) if self.cache.path else None, "stats": asdict(self.stats),
        }
