"""Train a job's pending models before its grid evaluates, several at once (``run.train_jobs``).

On a CPU, one training uses the cores poorly: a batch-8 step of a small model gains ≈1.3× from a second thread,
while two trainings side by side, one thread each, each run at nearly their one-thread speed. So the local executor
trains the models the job needs (:class:`cape_bench.job_clock.JobClock` knows which) in ``train_jobs`` processes of
cores / train_jobs threads, longest first, then evaluates the grid, whose cells find their models trained. A model
that fails to train here is left to its cells, which train it themselves or fail with the message.

A model trained on one thread and one trained on two differ in float rounding only; the trained-model cache does
not key on the thread count (the first one trained is the one used).
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any

from cape_bench.job_clock import JobClock, clock_text


def resolve_train_jobs(requested: int, pending_models: int, device: str) -> int:
    """Processes to train in: ``requested`` (0 = one per CPU core), at most one per pending model; 1 on a GPU."""
    if device != "cpu" or pending_models < 2:
        return 1
    jobs = requested or (os.cpu_count() or 1)
    return max(1, min(jobs, pending_models))


def train_pending(cfg, clock: JobClock, log) -> None:
    """With ``run.train_jobs`` ≠ 1 on a CPU: train the clock's pending models several at once (each model once,
    however many labels share it); the clock then counts the ones trained as done."""
    models, keys = [], {}
    for (name, split), (iterations, key) in clock.training.items():
        if iterations and key not in keys:
            keys[key] = (name, split)
            models.append((name, split, iterations))
    jobs = resolve_train_jobs(cfg.run.train_jobs, len(models), cfg.run.device)
    if jobs < 2:
        return
    outcome = train_ahead(cfg.to_dict(), models, jobs, log)
    trained = {key for key, cell in keys.items() if outcome.get(cell) == ""}
    clock.training = {cell: (0 if key in trained else n, key) for cell, (n, key) in clock.training.items()}


def train_ahead(config: dict[str, Any], models: list[tuple[str, int, int]], jobs: int, log) -> dict[tuple[str, int], str]:
    """Train ``models`` ((method label, split, iterations)) in ``jobs`` processes, the most iterations first.

    Args:
        config: the resolved config (``BenchConfig.to_dict()``).
        models: what to train, each (label, split, iterations).
        jobs: processes at once (≥ 2).
        log: one-message callable (the runner's).

    Returns:
        (label, split) → "" when trained, else the one-line reason it was not (its cells will try again).
    """
    threads = max(1, (os.cpu_count() or 1) // jobs)
    order = sorted(models, key=lambda m: -m[2])
    log(f"training {len(order)} models ahead, {jobs} at a time on {threads} thread{'s' if threads > 1 else ''} each")
    t0 = time.perf_counter()
    outcome: dict[tuple[str, int], str] = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_train_one, config, label, split, threads): (label, split) for label, split, _ in order}
        for future in as_completed(futures):
            label, split = futures[future]
            try:
                seconds = future.result()
                outcome[(label, split)] = ""
                log(f"{label}: split {split} trained in {clock_text(seconds)} "
                    f"({clock_text(time.perf_counter() - t0)} into the job's training)")
            except Exception as err:  # noqa: BLE001 — the cells retry; nothing computed is lost
                reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                outcome[(label, split)] = reason
                log(f"[yellow]{label}: split {split} could not be trained ahead ({reason}); its cells will "
                    "try[/yellow]")
    return outcome


class _NotATerminal:
    """A worker's stdout that says it is no terminal: the trainer prints its curve as lines, no live bar (two
    processes drawing bars on one terminal garble both)."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def _train_one(config: dict[str, Any], label: str, split: int, threads: int) -> float:
    """A worker process: train one model with ``threads`` threads; seconds it took."""
    import torch  # noqa: PLC0415  (the worker's own import; the core stays torch-free)
    from rich.console import Console  # noqa: PLC0415

    from cape_bench.config import BenchConfig, _build  # noqa: PLC0415
    from cape_bench.configured import train_methods  # noqa: PLC0415

    torch.set_num_threads(threads)
    sys.stdout = _NotATerminal(sys.stdout)
    console = Console(soft_wrap=True, file=sys.stdout)
    cfg = _build(BenchConfig, config, "")
    t0 = time.perf_counter()
    def log(message: str) -> None:  # every line names its model: two workers share the terminal
        console.print(message if message.startswith(label) else f"{label}: {message}")

    train_methods(cfg, [label], split, log=log)
    return time.perf_counter() - t0
