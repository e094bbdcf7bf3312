"""``cape-bench study``: sweep one CAPE-Synth knob; train and evaluate the same methods per value; summarise."""

from __future__ import annotations

import argparse
from pathlib import Path

from cape_bench.cli.common import _csv_list, _putter


def _float_list(text: str) -> list[float]:
    return [float(v) for v in _csv_list(text)]


def add_parser(sub) -> argparse.ArgumentParser:
    from cape_bench.study import DEFAULT_METHODS  # noqa: PLC0415  (torch-free)

    study = sub.add_parser("study", help="sweep one CAPE-Synth knob: train and evaluate methods per value, "
                                         "then compare them (study.csv, gaps.csv, pose.csv, study.html)")
    study.add_argument("--knob", required=True, help="a CAPE-Synth knob, e.g. polysemy, variation, appearance")
    study.add_argument("--values", type=_float_list, required=True, help="comma-separated values, e.g. 0,0.5,1")
    study.add_argument("--methods", type=_csv_list, default=list(DEFAULT_METHODS),
                       help=f"methods (default: {','.join(DEFAULT_METHODS)}); the text-prior floor is always added")
    study.add_argument("--name", help="study directory name under run.out_dir (default: study-<knob>); "
                                      "an existing study resumes")
    study.add_argument("--config", type=Path, help="config file (default: ./bench.toml if present)")
    study.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config value for every run, e.g. --set protocol.splits=[1] (repeatable)")
    study.add_argument("--splits", help="e.g. 1 or 1-5 (default: the config's)")
    study.add_argument("--shots", help="e.g. 1 or 1,5 (default: the config's)")
    study.add_argument("--num-episodes", type=int, help="episodes per category")
    study.add_argument("--summarize", action="store_true",
                       help="only (re)write the summary of an existing study directory from its stored runs")
    study.add_argument("--quiet", action="store_true", help="no progress bars")
    study.set_defaults(func=cmd_study)
    return study


def cmd_study(args) -> int:
    from rich.console import Console  # noqa: PLC0415

    from cape_bench.cli.common import _int_range_list  # noqa: PLC0415
    from cape_bench.config import find_config, load_config  # noqa: PLC0415
    from cape_bench.study import run_study, summarize_study  # noqa: PLC0415

    overrides = list(args.overrides)
    put = _putter(overrides)
    if args.splits:
        put("protocol.splits", _int_range_list(args.splits))
    if args.shots:
        put("protocol.shots", _int_range_list(args.shots))
    if args.num_episodes is not None:
        put("protocol.num_episodes", args.num_episodes)
    config = args.config or find_config()
    name = args.name or f"study-{args.knob}"
    console = Console(soft_wrap=True)
    if args.summarize:
        root = Path(load_config(config, overrides).run.out_dir) / name
        summarize_study(root, console)
        console.print(f"study: {root / 'study.html'}")
        return 0
    plan, status = run_study(config, overrides, args.knob, args.values, args.methods, name, console,
                             show_progress=not args.quiet)
    console.print(f"study: {plan.root / 'study.html'} (tables: study.csv, gaps.csv, pose.csv)")
    return status
