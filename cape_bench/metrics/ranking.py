"""Rank agreement between two scorings of the same methods (e.g. a benchmark against published MP-100)."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations


def kendall_tau(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Kendall's τ-b between two scorings over the keys both have (ties count for neither side).

    τ = (concordant − discordant) / √((n₀ − tiesₐ)(n₀ − ties_b)), n₀ = number of pairs; 1 = the same order,
    −1 = the reverse. NaN with fewer than two common keys or when either side is all tied.
    """
    keys = sorted(set(a) & set(b))
    concordant = discordant = ties_a = ties_b = 0
    for x, y in combinations(keys, 2):
        da, db = a[x] - a[y], b[x] - b[y]
        ties_a += da == 0
        ties_b += db == 0
        if da * db > 0:
            concordant += 1
        elif da * db < 0:
            discordant += 1
    pairs = len(keys) * (len(keys) - 1) // 2
    denominator = ((pairs - ties_a) * (pairs - ties_b)) ** 0.5
    return (concordant - discordant) / denominator if denominator else float("nan")


def inverted_pairs(a: Mapping[str, float], b: Mapping[str, float]) -> list[tuple[str, str]]:
    """Pairs (x, y) of common keys that ``a`` ranks x above y and ``b`` ranks y above x, ``a``'s best first."""
    keys = sorted(set(a) & set(b), key=lambda k: -a[k])
    return [(x, y) for x, y in combinations(keys, 2) if a[x] > a[y] and b[x] < b[y]]
