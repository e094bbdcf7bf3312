"""``cape-bench score``: recompute every score of a run directory from its stored predictions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cape_bench.pipeline import cell_flags


def add_parser(sub) -> argparse.ArgumentParser:
    score = sub.add_parser("score", help="recompute all scores of a run directory from its stored predictions")
    score.add_argument("run_dir", type=Path)
    score.set_defaults(func=cmd_score)

    return score


def cmd_score(args) -> int:
    from rich.console import Console  # noqa: PLC0415

    from cape_bench.comparisons import variant_bases  # noqa: PLC0415
    from cape_bench.scoring import score_run  # noqa: PLC0415
    from cape_bench.store import RunDir  # noqa: PLC0415
    from cape_bench.tables import print_headline  # noqa: PLC0415

    tables = score_run(args.run_dir)
    run = RunDir(args.run_dir)
    extra, reference = cell_flags(run.finished_cells())
    print_headline(Console(), tables["summary.csv"], tables["ceiling.csv"], extra_inputs=extra, reference=reference,
                   paired=tables.get("paired.csv"), bases=variant_bases(run.read_run_json().get("config", {})))
    print(f"wrote {', '.join(tables)} in {args.run_dir}")
    damaged = run.damaged_cells()
    for rec, problem in damaged:
        print(f"cape-bench: error: {rec['method']} split {rec['split']} {rec['shots']}-shot not scored: {problem}; "
              "the same `cape-bench run` command computes it again", file=sys.stderr)
    return 1 if damaged else 0
