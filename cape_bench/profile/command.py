"""``cape-bench profile``: its arguments and command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cape_bench.api import supports_random_init
from cape_bench.profile.files import compare_profiles, read_profile, write_profile
from cape_bench.profile.measure import profile_methods
from cape_bench.profile.render import print_comparison, print_profile
from cape_bench.profile.spec import PROFILE_FILE, ProfileMismatchError, ProfileSpec

# ----------------------------------------------------------------------------------------------------------------
# Command line


def _csv_list(text: str) -> list[str]:
    return [t for t in text.replace(" ", ",").split(",") if t]


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv_list(text)]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err


def add_profile_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``profile`` command to ``cape-bench``'s sub-parsers (``set_defaults(func=cmd_profile)``)."""
    p = subparsers.add_parser(
        "profile", help="latency, throughput, memory, parameters and FLOPs of methods (random-init weights)",
        description="Time support encoding and query prediction of each method (random-init weights at the preset's "
                    "architecture, synthetic inputs; speed only), interleaved round robin; report median and IQR, "
                    "pairs/s per batch size, peak memory, parameters and FLOPs; then the evaluation loop's overhead "
                    "against the bare forward and against an official-style batch-1 loop.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  cape-bench profile --methods capenext,capex,capeformer\n"
               "  cape-bench profile --methods capex --device cuda --preset official --amp --out prof.csv\n"
               "  cape-bench profile --methods capex,capeformer --run-dir runs/NAME   # the report's Speed section\n"
               "  cape-bench profile --compare old.csv new.csv")
    p.add_argument("--methods", type=_csv_list, help="comma-separated method names (default: every PyTorch method)")
    p.add_argument("--backbone", default="", help="backbone override (default: each preset's)")
    p.add_argument("--batch-sizes", type=_int_list, default=[1, 8, 32], help="query batch sizes (default 1,8,32)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    p.add_argument("--amp", action="store_true", help="autocast: bfloat16 on CPU, float16 on CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile the modules a forward calls (slow on CPU)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default inductor)")
    p.add_argument("--preset", default="quick", help="architecture preset: quick or official (default quick)")
    p.add_argument("--repeats", type=int, help="timed repeats (default: 5 on CPU, 20 on CUDA)")
    p.add_argument("--warmup", type=int, help="warm-up calls per method and batch size (default: 1 CPU, 3 CUDA)")
    p.add_argument("--keypoints", type=int, default=17, help="K of the synthetic category (default 17)")
    p.add_argument("--shots", type=int, default=1, help="support instances (default 1)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--no-harness", action="store_true", help="skip the evaluation-loop overhead measurement")
    p.add_argument("--harness-episodes", type=int, default=2, help="episodes per category in the overhead run")
    p.add_argument("--reference-pairs", type=int, default=30, help="pairs of the official-style reference loop")
    p.add_argument("--out", type=Path, help="write the profile here (.csv, or .json with every field)")
    p.add_argument("--run-dir", type=Path, help=f"write RUN_DIR/{PROFILE_FILE} (read by the report's Speed section)")
    p.add_argument("--compare", type=Path, nargs=2, metavar=("OLD", "NEW"),
                   help="compare two profile files (same machine only) instead of profiling")
    p.set_defaults(func=cmd_profile)
    return p


def default_methods() -> list[str]:
    """Every registered method built from presets (the PyTorch methods)."""
    from cape_bench.registry import list_methods, load_method_class  # noqa: PLC0415

    out = []
    for name in list_methods():
        try:
            if supports_random_init(load_method_class(name)):
                out.append(name)
        except Exception:  # noqa: BLE001 — a broken plug-in is not profiled by default
            continue
    return out


def spec_from_args(args) -> ProfileSpec:
    cuda = str(args.device).startswith("cuda")
    return ProfileSpec(
        methods=tuple(args.methods or default_methods()), preset=args.preset, backbone=args.backbone,
        batch_sizes=tuple(args.batch_sizes), device=args.device, amp=args.amp, compile=args.compile,
        compile_backend=args.compile_backend, repeats=args.repeats or (20 if cuda else 5),
        warmup=args.warmup if args.warmup is not None else (3 if cuda else 1), keypoints=args.keypoints,
        shots=args.shots, harness=not args.no_harness, harness_episodes=args.harness_episodes,
        reference_pairs=args.reference_pairs)


def cmd_profile(args) -> int:
    """``cape-bench profile``: exit status 0, 1 when a method could not be profiled, 2 on refused input."""
    from rich.console import Console  # noqa: PLC0415

    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 180)  # whole table rows in logs
    if args.compare:
        try:
            cmp = compare_profiles(read_profile(args.compare[0]), read_profile(args.compare[1]))
        except (ProfileMismatchError, ValueError, FileNotFoundError) as err:
            print(f"cape-bench: error: {err}", file=sys.stderr)
            return 2
        print_comparison(cmp, console, str(args.compare[0]), str(args.compare[1]))
        return 0
    if args.threads:
        import torch  # noqa: PLC0415

        torch.set_num_threads(args.threads)
    try:
        spec = spec_from_args(args)
        result = profile_methods(spec, log=lambda m: console.print(m, highlight=False))
    except (ValueError, RuntimeError) as err:
        print(f"cape-bench: error: {err}", file=sys.stderr)
        return 2
    print_profile(result, console)
    targets = []
    if args.out:
        targets.append(Path(args.out))
    if args.run_dir:
        targets.append(Path(args.run_dir) / PROFILE_FILE)
    for target in targets:
        console.print(f"profile: {write_profile(result, target)}")
    if not targets:
        console.print("not saved: add --out FILE (.csv / .json) or --run-dir RUN_DIR to keep it")
    bad = [r for r in [*result.rows, *result.harness] if r.get("status") != "ok"]
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m cape_bench.profile [profile options]`` (the same as ``cape-bench profile``)."""
    parser = argparse.ArgumentParser(prog="cape-bench")
    sub = parser.add_subparsers(dest="command")
    add_profile_parser(sub)
    args = parser.parse_args(["profile", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)
