"""Where a run's cells are computed: in this process one after another (``local``), or as Ray tasks (``ray``).

``local`` (the default) is :meth:`cape_bench.runner.Runner.execute` and needs nothing beyond cape-bench.

``ray`` (``pip install 'cape-bench[ray]'``) splits a run into a driver and workers:

1. the driver plans the run (:meth:`~cape_bench.runner.Runner.plan`): run.json, categories and the episodes of
   the whole grid are written and every cell already finished in the run directory is skipped, never recomputed;
2. every other (method, split, shots) cell becomes one Ray task reserving ``run.cpus_per_cell`` CPUs and
   ``run.gpus_per_cell`` GPUs (``run.cell_resources`` changes them per method label);
3. a task computes its cell under the full config in a scratch folder of its node
   (:func:`compute_cell`) and sends the prediction table and the cell record back; the driver writes them into the
   run directory (the predictions first, the record last, each atomically) as each cell comes back, so the run
   directory needs to exist on the driver's machine only, and a cell is finished the moment its record lands;
4. the driver alone writes run.json: a cell whose method raised is recorded as failed, as in a local run; a cell
   whose worker process died (killed, out of memory, node lost) is submitted again up to ``run.cell_retries``
   times, then recorded as failed. The other cells are never lost, and running the same command again computes
   exactly the cells that are not finished.

Workers import cape-bench and every method from the paths the driver imports them from (``PYTHONPATH`` in the
tasks' runtime environment) and resolve method names to the code the driver resolved them to. The dataset (and,
for trained methods, the model cache ``synth.cache_dir``) must be readable at the same path on every node; a
worker whose annotation file or episodes differ from the driver's fails its cells instead of computing others.
"""

from __future__ import annotations

import importlib.util
import io
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from cape_bench.config import BenchConfig, ConfigError

EXECUTORS = ("local", "ray")


def execute(runner, executor: str | None = None, address: str | None = None):
    """Run ``runner``'s grid with ``executor`` (default: ``run.executor``); returns its cell outcomes in grid order."""
    name = executor or runner.cfg.run.executor
    if name == "local":
        return runner.execute()
    if name == "ray":
        return RayExecutor(runner.cfg, runner.cfg.run.ray_address if address is None else address).run(runner)
    raise ConfigError(f"run.executor: unknown executor {name!r}; expected one of {', '.join(EXECUTORS)}")


def import_ray():
    """The ``ray`` module, or a ConfigError saying how to install it."""
    try:
        import ray  # noqa: PLC0415
    except ImportError as err:
        raise ConfigError("run.executor = 'ray' needs Ray: pip install 'cape-bench[ray]' (or pip install ray)") from err
    return ray


def cell_label(cell: tuple[str, int, int]) -> str:
    name, split, shots = cell
    return f"{name} split {split} {shots}-shot"


class RayExecutor:
    """One Ray task per unfinished cell; the driver gathers the results into the run directory."""

    def __init__(self, cfg: BenchConfig, address: str = "") -> None:
        self.cfg = cfg
        self.address = address
        self.retries = cfg.run.cell_retries
        if self.retries < 0:
            raise ConfigError(f"run.cell_retries: expected >= 0, got {self.retries}")
        for label in cfg.run.methods:  # checked before anything runs
            self.resources(label)

    def resources(self, label: str) -> dict[str, float]:
        """``num_cpus`` / ``num_gpus`` the task of a cell of method ``label`` reserves."""
        run = self.cfg.run
        cpus, gpus = run.cpus_per_cell, run.gpus_per_cell
        extra = run.cell_resources.get(label, {})
        if not isinstance(extra, dict) or set(extra) - {"cpus", "gpus"}:
            raise ConfigError(f"run.cell_resources.{label}: expected a table with cpus and/or gpus, got {extra!r}")
        cpus, gpus = extra.get("cpus", cpus), extra.get("gpus", gpus)
        for key, value in (("cpus", cpus), ("gpus", gpus)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(f"run.cell_resources.{label}.{key} (or run.{key}_per_cell): "
                                  f"expected a number >= 0, got {value!r}")
        return {"num_cpus": float(cpus), "num_gpus": float(gpus)}

    def run(self, runner) -> list:
        from cape_bench.registry import resolve  # noqa: PLC0415
        from cape_bench.runner import CellOutcome  # noqa: PLC0415

        ray = import_ray()
        table = {}
        for label in self.cfg.run.methods:
            registered = self.cfg.method(label).method or label
            table[registered] = resolve(registered).target
        try:
            planned = runner.plan()
        finally:
            runner.close()
        results: dict[tuple, Any] = {(o.method, o.split, o.shots): o for o in planned if o.status != "pending"}
        pending = [(o.method, o.split, o.shots) for o in planned if o.status == "pending"]
        if not pending:
            return [results[c] for c in runner.select(None)]
        if str(self.cfg.run.device).startswith("cuda"):
            cpu_only = sorted({c[0] for c in pending if not self.resources(c[0])["num_gpus"]})
            if cpu_only:
                runner.log(f"[yellow]note: run.device = {self.cfg.run.device!r} but cells of {', '.join(cpu_only)} "
                           "reserve no GPU (run.gpus_per_cell / run.cell_resources): Ray may hide the GPUs from "
                           "their tasks[/yellow]")
        envelope = runner.run.read_run_json()
        expected = {"annotations": envelope["annotations"], "episodes": envelope["episodes"]}
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.address or None)
        try:
            self._gather(ray, runner, pending, expected, table, results, CellOutcome)
        finally:
            if started_here:
                ray.shutdown()
        return [results[c] for c in runner.select(None)]

    def _gather(self, ray, runner, pending, expected, table, results, CellOutcome) -> None:
        crashed_types = tuple(getattr(ray.exceptions, n) for n in (
            "WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "ObjectLostError", "LocalRayletDiedError")
            if hasattr(ray.exceptions, n))
        task = ray.remote(compute_cell)
        runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(import_roots(table.values()))}}
        refs: dict[Any, tuple] = {}
        attempts = dict.fromkeys(pending, 0)
        started: dict[tuple, float] = {}

        def submit(cell):
            ref = task.options(**self.resources(cell[0]), max_retries=0, retry_exceptions=False,
                               runtime_env=runtime_env, name=f"cape-bench {cell_label(cell)}").remote(
                self.cfg, cell, expected, table)
            refs[ref] = cell
            started[cell] = time.perf_counter()

        for cell in pending:
            submit(cell)
        total = ray.cluster_resources()
        runner.log(f"ray: {len(pending)} cells submitted, {len(results)} finished earlier; cluster: "
                   f"{total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs")
        finished = 0
        while refs:
            (ref,), _ = ray.wait(list(refs), num_returns=1)
            cell = refs.pop(ref)
            name, split, shots = cell
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as err:
                attempts[cell] += 1
                first = (str(err).strip().splitlines() or [""])[0]
                if isinstance(err, crashed_types) and attempts[cell] <= self.retries:
                    runner.log(f"[yellow]{cell_label(cell)}: the worker died ({type(err).__name__}: {first}); "
                               f"submitting it again ({attempts[cell]} of {self.retries})[/yellow]")
                    submit(cell)
                    continue
                what = "worker died" if isinstance(err, crashed_types) else "task error"
                outcome = CellOutcome(name, split, shots, "failed",
                                      error=f"{cell_label(cell)} failed: {what} after {attempts[cell]} attempt(s): "
                                            f"{type(err).__name__}: {first}")
                runner.log(f"[red]{outcome.error}[/red]")
            else:
                for line in result["messages"]:
                    runner.log(line)
                outcome = CellOutcome(**result["outcome"])
                if outcome.status == "done":
                    # the record last: a cell counts as finished only when both files are there
                    from cape_bench.store import atomic_write_bytes  # noqa: PLC0415

                    atomic_write_bytes(runner.run.predictions(name, split, shots), result["files"]["predictions"])
                    atomic_write_bytes(runner.run.cell(name, split, shots), result["files"]["cell"])
                    finished += 1
                    runner.log(f"ray: {cell_label(cell)} done on {result['host']} (pid {result['pid']}) in "
                               f"{time.perf_counter() - started[cell]:.1f} s [{finished}/{len(pending)}]")
            results[cell] = outcome
            runner.record_outcomes([outcome])


def import_roots(targets) -> list[str]:
    """Folders a worker needs on its path to import cape-bench and the modules of ``targets`` ("module:attr")."""
    roots = [str(Path(__file__).resolve().parents[1])]
    for target in targets:
        top = target.partition(":")[0].split(".")[0]
        spec = importlib.util.find_spec(top)
        if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
            continue
        origin = Path(spec.origin).resolve()
        root = origin.parents[1] if spec.submodule_search_locations else origin.parent
        if str(root) not in roots:
            roots.append(str(root))
    roots += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in roots]
    return roots


def compute_cell(cfg: BenchConfig, cell: tuple[str, int, int], expected: dict, table: dict[str, str]) -> dict:
    """A Ray task: compute one cell in a scratch folder and return its outcome, messages and files.

    ``table`` maps each registered method name of the run to the "module:attr" the driver resolved it to; a
    name this worker resolves differently (e.g. a method registered at run time in the driver) is registered here
    the driver's way.
    """
    from rich.console import Console  # noqa: PLC0415

    from cape_bench import registry  # noqa: PLC0415
    from cape_bench.runner import Runner  # noqa: PLC0415

    known = registry.list_methods()
    for name, target in table.items():
        if name not in known or known[name].target != target:
            registry.BUILTIN_METHODS[name] = target
    with tempfile.TemporaryDirectory(prefix="cape-bench-cell-") as scratch:
        runner = Runner(cfg, scratch, console=Console(file=io.StringIO(), soft_wrap=True), show_progress=False)
        (outcome,) = runner.execute_cells([cell], expected)
        files = {}
        if outcome.status == "done":
            files = {"predictions": runner.run.predictions(*cell).read_bytes(),
                     "cell": runner.run.cell(*cell).read_bytes()}
    return {
        "outcome": {"method": outcome.method, "split": outcome.split, "shots": outcome.shots,
                    "status": outcome.status, "error": outcome.error, "record": outcome.record},
        "messages": runner.messages,
        "files": files,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
