"""The run pipeline as a library call: run the grid, score it, print the headline table, write the report.

``cape-bench run`` is this function behind its flags; a Python user calls it with a loaded config::

    from rich.console import Console
    from cape_bench.config import load_config
    from cape_bench.pipeline import run_and_report

    status = run_and_report(load_config("bench.toml", ["run.methods=[\"support-copy\"]"]), Console())
"""

from __future__ import annotations

from pathlib import Path


def run_and_report(cfg, console, show_progress: bool = True) -> int:
    """Run the grid, score it, print the table; exit status 1 when a cell failed."""
    import time  # noqa: PLC0415

    from cape_bench.comparisons import variant_bases  # noqa: PLC0415
    from cape_bench.executors import execute  # noqa: PLC0415
    from cape_bench.runner import Runner  # noqa: PLC0415
    from cape_bench.scoring import score_run  # noqa: PLC0415
    from cape_bench.tables import print_headline  # noqa: PLC0415

    name = cfg.run.name or time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(cfg.run.out_dir) / name
    console.print(f"run directory: {run_dir}")
    runner = Runner(cfg, run_dir, console=console, show_progress=show_progress)
    outcomes = execute(runner)
    tables = score_run(run_dir)
    extra, reference = cell_flags(runner.run.finished_cells())
    print_headline(console, tables["summary.csv"], tables["ceiling.csv"], extra_inputs=extra, reference=reference,
                   paired=tables.get("paired.csv"), bases=variant_bases(cfg.to_dict()))
    console.print(cfg.protocol.describe())
    skipped = [o for o in outcomes if o.status.startswith("skipped")]
    if skipped:
        console.print(f"{len(skipped)} cells were finished earlier and not recomputed")
    failed = [o for o in outcomes if o.status == "failed"]
    console.print(f"results: {run_dir / 'summary.csv'}")
    if cfg.run.report and runner.run.finished_cells():
        from cape_bench.report import build_report  # noqa: PLC0415

        # inside the run directory: two out-dirs holding runs of the same name never overwrite each other's report
        console.print(f"report: {build_report([run_dir], run_dir / 'report.html')}")
    if failed:
        console.print(f"[red]{len(failed)} cells failed; finished cells are kept. Re-run the same command to retry.[/red]")
        return 1
    return 0


def cell_flags(cells) -> tuple[dict[str, list[str]], set[str]]:
    """Per method: the extra inputs its cells declare; and the methods that read the query ground truth."""
    extra, reference = {}, set()
    for rec in cells:
        extra[rec["method"]] = rec["info"]["extra_inputs"]
        if rec["info"].get("reads_query_ground_truth"):
            reference.add(rec["method"])
    return extra, reference
