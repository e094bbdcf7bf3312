"""Episodes as data: the official test sampler, a manifest table and its digest.

The sampler mirrors ``make_paired_samples`` (test_dataset.py; ../shared/spec/official_code.md §1.5):
``random.seed(1)``, then for each category in json order and each of ``num_episodes`` episodes,
``random.sample(cat2obj[cat], shots + num_queries)``; the first ``shots`` are supports and every
other instance forms one (supports…, query) pair. One RNG stream runs across categories, so the
episodes of a category depend on every category before it: that is why a run stores the
manifest and its sha256 instead of trusting the sampler to be re-run identically.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

import numpy as np

from cape_bench.data.mp100 import AnnotationSet

TEST_EPISODES = 200
VAL_EPISODES = 100
QUERIES_PER_EPISODE = 15
OFFICIAL_SEED = 1


def official_paired_samples(
    cat2obj: dict[int, tuple[int, ...]],
    shots: int,
    num_episodes: int,
    num_queries: int = QUERIES_PER_EPISODE,
    seed: int = OFFICIAL_SEED,
) -> list[list[int]]:
    """The official ``paired_samples``: a list of ``[support obj ids…, query obj id]``.

    Args:
        cat2obj: category id → obj ids, both in official (json) order.
    """
    rng = random.Random(seed)  # same stream as the official random.seed(1) + random.sample
    pairs: list[list[int]] = []
    for cat_id, population in cat2obj.items():
        need = shots + num_queries
        if len(population) < need:
            raise ValueError(
                f"category {cat_id} has {len(population)} instances; an episode needs {shots} + {num_queries}"
            )
        population = list(population)
        for _ in range(num_episodes):
            drawn = rng.sample(population, need)
            supports = drawn[:shots]
            pairs.extend([*supports, q] for q in drawn[shots:])
    return pairs


@dataclass(frozen=True)
class EpisodeManifest:
    """The (support…, query) pairs of one (annotation file, shots) cell, in official order.

    Attributes:
        support_obj: int64[P, S] and query_obj: int64[P] index ``AnnotationSet.instances``.
        support_ann: int64[P, S], query_ann: int64[P]: COCO annotation ids.
        category_id: int64[P]. episode: int64[P] running episode index (shared support set).
        official: True when the protocol size (200/100 episodes × 15 queries) was used.
    """

    ann_file: str
    ann_sha256: str
    shots: int
    num_episodes: int
    num_queries: int
    support_obj: np.ndarray
    query_obj: np.ndarray
    support_ann: np.ndarray
    query_ann: np.ndarray
    category_id: np.ndarray
    episode: np.ndarray
    official: bool

    def __len__(self) -> int:
        return len(self.query_obj)

    def canonical_text(self) -> str:
        """One line per pair: comma-joined annotation ids, supports first; "\\n"-joined, no trailing newline."""
        ids = np.concatenate([self.support_ann, self.query_ann[:, None]], axis=1)
        return "\n".join(",".join(map(str, row)) for row in ids.tolist())

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.canonical_text().encode()).hexdigest()

    def episode_slices(self):
        """Yield ``(episode index, slice of pairs)``; pairs of an episode are contiguous."""
        starts = np.flatnonzero(np.r_[True, self.episode[1:] != self.episode[:-1]])
        ends = np.r_[starts[1:], len(self.episode)]
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            yield int(self.episode[s]), slice(s, e)

    def to_frame(self):
        """A tidy table (pandas) with one row per pair, as stored in a run directory."""
        import pandas as pd  # noqa: PLC0415

        return pd.DataFrame(
            {
                "pair": np.arange(len(self), dtype=np.int64),
                "episode": self.episode,
                "category_id": self.category_id,
                "query_ann_id": self.query_ann,
                "support_ann_ids": [" ".join(map(str, r)) for r in self.support_ann.tolist()],
            }
        )


def build_manifest(
    ann: AnnotationSet,
    shots: int,
    num_episodes: int | None = None,
    subset: str = "test",
    num_queries: int = QUERIES_PER_EPISODE,
) -> EpisodeManifest:
    """Episodes of one annotation file with the official sampler.

    Args:
        num_episodes: per category; None → the official 200 (test) or 100 (val).
    """
    official_n = TEST_EPISODES if subset == "test" else VAL_EPISODES
    n = official_n if num_episodes is None else int(num_episodes)
    pairs = official_paired_samples(ann.cat2obj, shots, n, num_queries)
    obj = np.asarray(pairs, dtype=np.int64).reshape(-1, shots + 1)
    ann_ids = np.array([i.ann_id for i in ann.instances], dtype=np.int64)
    cat_ids = np.array([i.category_id for i in ann.instances], dtype=np.int64)
    return EpisodeManifest(
        ann_file=str(ann.path),
        ann_sha256=ann.sha256,
        shots=shots,
        num_episodes=n,
        num_queries=num_queries,
        support_obj=obj[:, :shots],
        query_obj=obj[:, shots],
        support_ann=ann_ids[obj[:, :shots]],
        query_ann=ann_ids[obj[:, shots]],
        category_id=cat_ids[obj[:, shots]],
        episode=np.arange(len(obj), dtype=np.int64) // num_queries,
        official=(n == official_n and num_queries == QUERIES_PER_EPISODE),
    )
