"""Number formatting shared by the report sections and the paper tables."""

from __future__ import annotations

import math

DASH = "—"


def is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def mean_if_complete(values: list) -> float | None:
    """The mean of ``values`` when none is missing (a paper's "Mean" is over every split), else None."""
    if not values or any(is_missing(v) for v in values):
        return None
    return float(sum(values) / len(values))


def percent_text(value) -> str:
    """A fraction as a percentage with one decimal (``0.7106`` → ``"71.1"``); ``—`` when missing or not a number."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return DASH
    return DASH if math.isnan(value) else f"{value * 100:.1f}"
