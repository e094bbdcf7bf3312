"""``cape-bench train``: train (or find trained) the model a run would use, for each split."""

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


def add_parser(sub) -> argparse.ArgumentParser:
    tr = sub.add_parser("train", help="train a method's model for a split (cached; `run` then reuses it)")
    tr.add_argument("--config", type=Path, help="config file (default: ./bench.toml if present)")
    tr.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override one config value, e.g. --set methods.capex.train.iterations=2000 (repeatable)")
    tr.add_argument("--method", "--methods", dest="methods", type=_csv_list, required=True,
                    help="method name(s), comma-separated (a variant section of bench.toml counts)")
    tr.add_argument("--split", "--splits", dest="splits", type=_int_range_list, default=[1], help="e.g. 1 or 1-5")
    tr.add_argument("--preset", help="training preset (budget | quick | official; default: bench.toml or budget)")
    tr.add_argument("--backbone", help="backbone name (default: the preset's)")
    tr.add_argument("--iterations", type=int, help="override the preset's number of iterations")
    _add_dataset_args(tr)
    tr.add_argument("--device", choices=["cpu", "cuda"])
    tr.set_defaults(func=cmd_train)

    return tr


def cmd_train(args) -> int:
    from rich.console import Console  # noqa: PLC0415

    from cape_bench.config import find_config, load_config  # noqa: PLC0415
    from cape_bench.configured import train_methods  # noqa: PLC0415

    overrides = list(args.overrides)
    put = _putter(overrides)
    _dataset_overrides(args, put)
    for name in args.methods:
        if args.preset:
            put(f"methods.{name}.preset", args.preset)
        if args.backbone:
            put(f"methods.{name}.backbone", args.backbone)
        if args.iterations:
            put(f"methods.{name}.train.iterations", args.iterations)
    cfg = load_config(args.config or find_config(), overrides)
    # under torchrun every process trains its share; the first one (RANK 0) alone speaks
    console = Console(soft_wrap=True, quiet=int(os.environ.get("RANK", "0") or 0) != 0)
    for split in args.splits:
        for rec in train_methods(cfg, args.methods, split, log=console.print):
            loss = rec.get("final_loss") or {}
            total = sum(v for k, v in loss.items() if "loss" in k)
            secs = rec.get("train_seconds")
            console.print(f"{rec['method']} split {split}: {rec.get('trained', '')}"
                          + (f", {secs:.0f} s" if secs else "") + (f", final loss {total:.4f}" if loss else "")
                          + f"\n  checkpoint: {rec.get('checkpoint')}")
    return 0
