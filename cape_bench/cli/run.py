"""``cape-bench run``: evaluate methods on the episode protocol, score them, print the table, write the report."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cape_bench.cli.common import (
    _add_dataset_args,
    _csv_list,
    _dataset_overrides,
    _int_range_list,
    _putter,
)
from cape_bench.pipeline import run_and_report


def add_parser(sub) -> argparse.ArgumentParser:
    run = sub.add_parser("run", help="evaluate methods on the episode protocol and score them")
    run.add_argument("--config", type=Path, help="config file (default: ./bench.toml if present, else built-in defaults)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override one config value, e.g. --set protocol.shots=[1] (repeatable)")
    run.add_argument("--methods", type=_csv_list, help="comma-separated method names (see `cape-bench ls methods`)")
    _add_dataset_args(run)
    run.add_argument("--subset", choices=["test", "val"], help="test (200 episodes/category) or val (100)")
    run.add_argument("--categories", type=_csv_list, help="restrict to these category ids or names")
    run.add_argument("--splits", type=_int_range_list, help="e.g. 1-5 or 1,3")
    run.add_argument("--shots", type=_int_range_list, help="e.g. 1,5")
    run.add_argument("--num-episodes", type=int, help="episodes per category (smoke runs; not the official protocol)")
    run.add_argument("--protocol", choices=["official"],
                     help="official: all five splits, 1- and 5-shot, the official episode count (overrides "
                          "bench.toml's slice; --splits/--shots still narrow it)")
    run.add_argument("--checkpoint", action="append", default=[], metavar="METHOD=PATH",
                     help="use a checkpoint for a method (repeatable)")
    run.add_argument("--device", choices=["cpu", "cuda"])
    run.add_argument("--out-dir", help="parent folder of run directories (default: runs)")
    run.add_argument("--name", help="run directory name (default: a timestamp); an existing run resumes")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--executor", choices=["local", "ray"],
                     help="where cells run: local (this process; default) or ray (one Ray task per cell)")
    run.add_argument("--address", help="ray: the cluster to use, e.g. auto (the cluster `ray start` runs here) or "
                                       "ray://HOST:10001; default: start Ray on this machine")
    run.set_defaults(func=cmd_run)

    return run


def run_overrides(args) -> list[str]:
    """The config overrides (``KEY=VALUE``) that ``run``'s flags stand for, after the ``--set`` ones."""
    overrides = list(args.overrides)
    put = _putter(overrides)
    if args.methods:
        put("run.methods", args.methods)
    _dataset_overrides(args, put)
    if args.categories:
        put("dataset.categories", args.categories)
    if args.protocol == "official":
        put("protocol.splits", [1, 2, 3, 4, 5])
        put("protocol.shots", [1, 5])
        put("protocol.num_episodes", 0)
        put("protocol.num_queries", 15)
    if args.splits:
        put("protocol.splits", args.splits)
    if args.shots:
        put("protocol.shots", args.shots)
    if args.num_episodes is not None:
        put("protocol.num_episodes", args.num_episodes)
    if args.executor:
        put("run.executor", args.executor)
    if args.address is not None:
        put("run.ray_address", args.address)
    for item in args.checkpoint:
        method, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"--checkpoint {item!r}: expected METHOD=PATH")
        put(f"methods.{method}.checkpoint", str(Path(path).resolve()))
    return overrides


def cmd_run(args) -> int:
    from rich.console import Console  # noqa: PLC0415

    from cape_bench.config import ConfigError, find_config, load_config  # noqa: PLC0415

    cfg = load_config(args.config or find_config(), run_overrides(args))
    for item in args.checkpoint:
        method = item.partition("=")[0]
        if method not in cfg.run.methods:
            raise ConfigError(f"--checkpoint {item!r}: {method!r} is not among the methods of this run "
                              f"({', '.join(cfg.run.methods)})")
    if args.address is not None and cfg.run.executor != "ray":
        raise ConfigError("--address names a Ray cluster: use it with --executor ray")
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise ConfigError("`run` is not a torchrun program (every process would run the whole grid): run it once, "
                          "with --executor ray to spread the cells; torchrun is for `cape-bench train`")
    console = Console(soft_wrap=True)  # log lines stay whole (greppable) in logs and CI output
    return run_and_report(cfg, console, show_progress=not args.quiet)
