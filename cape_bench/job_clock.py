"""The whole job's progress: which models train first, and how long the job has left at the pace measured so far.

Before the grid runs, the runner asks every method that trains on first use how many iterations its ``prepare``
will run for each split (:func:`cape_bench.api.pending_training`). After each cell the clock says what is done and
estimates the rest from this job's own measurements: seconds per training iteration over the models trained so far,
and seconds per evaluated cell. Nothing is assumed about the machine; until something is measured there is no ETA.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from cape_bench.api import pending_training
from cape_bench.configured import create_configured_method, make_context


def clock_text(seconds: float) -> str:
    """``1 h 02 min``, ``12 min 05 s`` or ``42 s``."""
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


@dataclass
class JobClock:
    """Counts the job's cells and training iterations.

    Attributes:
        cells: cells this job computes.
        training: (method label, split) → (iterations its first cell's ``prepare`` trains, model key); labels with
            the same key share one model (a probe variant and its base), trained once.
    """

    cells: int
    training: dict[tuple[str, int], tuple[int, str]] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    cells_done: int = 0
    trained_iterations: int = 0
    training_s: float = 0.0  # prepare time of the cells that trained
    eval_s: float = 0.0  # the cells' time besides training
    _trained: set = field(default_factory=set)

    def __post_init__(self) -> None:
        # a hook that names no model: its (label, split) is the model
        self.training = {(m, s): (n, key or f"{m}:split{s}") for (m, s), (n, key) in self.training.items()}

    def _models(self) -> dict[str, int]:
        """Model key → iterations, each model once (cached models left out)."""
        return {key: iterations for iterations, key in self.training.values() if iterations}

    @property
    def total_iterations(self) -> int:
        return sum(self._models().values())

    def plan_text(self) -> str:
        """What the job will do, before it starts."""
        text = f"job: {self.cells} cell{'s' if self.cells != 1 else ''}"
        models = self._models()
        if not models:
            return text + "; no model to train (cached or none needed)"
        several_splits = len({s for _, s in self.training}) > 1
        labels, seen = [], set()
        for (method, split), (iterations, key) in self.training.items():
            if iterations and key not in seen:
                seen.add(key)
                labels.append(f"{method} (split {split})" if several_splits else method)
        return (f"{text}; {len(models)} model{'s' if len(models) != 1 else ''} to train first, "
                f"{self.total_iterations:,} iterations in all: {', '.join(labels)}")

    def cell_done(self, method: str, split: int, prepare_s: float, cell_s: float) -> str:
        """Record a finished (or failed) cell; one line of progress with the ETA."""
        self.cells_done += 1
        iterations, key = self.training.get((method, split), (0, ""))
        if iterations and key not in self._trained:  # this cell's prepare trained the model
            self._trained.add(key)
            self.trained_iterations += iterations
            self.training_s += prepare_s
            self.eval_s += max(cell_s - prepare_s, 0.0)
        else:
            self.eval_s += cell_s
        line = f"job: {self.cells_done}/{self.cells} cells in {clock_text(time.perf_counter() - self.started)}"
        if self.cells_done >= self.cells:
            return line
        left_iterations = self.total_iterations - self.trained_iterations
        cells_left = self.cells - self.cells_done
        if left_iterations and not self.trained_iterations:
            return line + f"; {left_iterations:,} training iterations to go (no ETA before a model has trained)"
        per_iteration = self.training_s / self.trained_iterations if self.trained_iterations else 0.0
        eta = left_iterations * per_iteration + cells_left * self.eval_s / self.cells_done
        detail = f"{left_iterations:,} training iterations at {per_iteration:.2f} s, " if left_iterations else ""
        return line + f"; ≈ {clock_text(eta)} left ({detail}{cells_left} cells, at this job's pace so far)"


def plan_job(cfg, ds, todo: list[tuple[str, int, int]], methods: dict[str, Any], log) -> JobClock:
    """Ask each method of ``todo`` ((label, split, shots) cells) how much it trains before the grid runs, creating
    the methods the runner's loop then uses (``methods``: label → method); log the plan. A method that cannot even
    be created counts as no training: its cells fail later and say why."""
    training: dict[tuple[str, int], tuple[int, str]] = {}
    for name, split, shots in todo:
        if (name, split) in training:
            continue
        try:
            if name not in methods:
                methods[name] = create_configured_method(cfg, name)
            training[(name, split)] = pending_training(methods[name], make_context(cfg, name, ds, split, shots, log))
        except Exception:  # noqa: BLE001 — the cell itself fails later, with the message
            training[(name, split)] = (0, "")
    clock = JobClock(len(todo), training)
    if todo:
        log(clock.plan_text())
    return clock
