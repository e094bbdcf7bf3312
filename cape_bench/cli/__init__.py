"""``cape-bench``: the command line, one module per subcommand. Every heavy import happens inside a command, so
``--help`` is instant; the pipeline behind ``run`` is :func:`cape_bench.pipeline.run_and_report`."""

from __future__ import annotations

import argparse
import sys

from cape_bench.cli import data, episodes, ls, report, run, score, study, train

EPILOG = """examples:
  cape-bench run                                    # CAPE-Synth (generated on first use), methods of bench.toml
  cape-bench run --methods support-copy,oracle --shots 1 --splits 1
  cape-bench run --dataset mp100 --ann-dir ../shared/mp100/annotations --methods support-copy,oracle
  cape-bench run --executor ray --address auto      # one Ray task per (method, split, shots) cell
  cape-bench train --method capeformer --split 1   # train (or find trained) the model run would use
  torchrun --nproc-per-node 4 -m cape_bench train --method capeformer --device cuda   # 4 GPUs, DDP
  cape-bench study --knob polysemy --values 0,0.5,1  # CapeX, CapeNext and its ablations per CAPE-Synth variant
  cape-bench score runs/NAME                        # recompute every score from stored predictions
  cape-bench episodes --ann mp100_split1_test.json --shots 1
  cape-bench data check --ann mp100_split1_test.json
  cape-bench data synth --out /tmp/cape-synth --seed 0
  cape-bench data show --ann /tmp/cape-synth/annotations/mp100_split1_test.json --out sample.png
  cape-bench ls methods
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cape-bench",
        description="Benchmark and evaluation harness for category-agnostic pose estimation (MP-100 protocol).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in (run, train, study, score, report, episodes, ls, data):
        command.add_parser(sub)
    from cape_bench.profile.command import add_profile_parser  # noqa: PLC0415  (torch-free at import)

    add_profile_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from cape_bench import __version__  # noqa: PLC0415

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from cape_bench.config import ConfigError  # noqa: PLC0415
    from cape_bench.data.mp100 import AnnotationError  # noqa: PLC0415
    from cape_bench.registry import UnknownMethodError  # noqa: PLC0415

    try:
        return args.func(args)
    except (ConfigError, AnnotationError, UnknownMethodError, FileNotFoundError) as err:
        print(f"cape-bench: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a read-only folder: the file and the reason, no traceback
        print(f"cape-bench: error: {err.filename or ''}{': ' if err.filename else ''}{err.strerror or err}",
              file=sys.stderr)
        return 2
