"""What one profiled method carries through a profile (:class:`Subject`), a profile's rows
(:class:`ProfileResult`), and the timed call."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cape_bench.profile.inputs import SyntheticInputs
from cape_bench.profile.machine import sync


@dataclass
class Subject:
    """One method under measurement."""

    name: str
    method: Any = None
    inputs: SyntheticInputs | None = None
    checkpoint: Path | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    support: dict[int, list[float]] = field(default_factory=dict)
    predict: dict[int, list[float]] = field(default_factory=dict)
    peak: dict[int, float] = field(default_factory=dict)
    peak_work: dict[int, float | None] = field(default_factory=dict)
    text: list[float] = field(default_factory=list)
    error: str = ""


@dataclass
class ProfileResult:
    """Rows of one profile: ``rows`` (kind ``model``: one per method × batch size) and ``harness`` (kind
    ``harness``: one per method), each carrying the machine stamp."""

    machine: dict[str, Any]
    spec: dict[str, Any]
    rows: list[dict[str, Any]]
    harness: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def timed(device: str, fn: Callable[[], Any]) -> tuple[float, Any]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def to_ms(samples: Sequence[float]) -> list[float]:
    return [round(s * 1e3, 6) for s in samples]
