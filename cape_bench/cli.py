"""``cape-bench``: the command line. Every heavy import happens inside a command, so ``--help`` is instant."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

EPILOG = """examples:
  cape-bench run                                    # CAPE-Synth (generated on first use), methods of bench.toml
  cape-bench run --methods support-copy,oracle --shots 1 --splits 1
  cape-bench run --dataset mp100 --ann-dir ../shared/mp100/annotations --methods support-copy,oracle
  cape-bench run --executor ray --address auto      # one Ray task per (method, split, shots) cell
  cape-bench train --method capeformer --split 1   # train (or find trained) the model run would use
  torchrun --nproc-per-node 4 -m cape_bench train --method capeformer --device cuda   # 4 GPUs, DDP
  cape-bench score runs/NAME                        # recompute every score from stored predictions
  cape-bench episodes --ann mp100_split1_test.json --shots 1
  cape-bench data check --ann mp100_split1_test.json
  cape-bench data synth --out /tmp/cape-synth --seed 0
  cape-bench data show --ann /tmp/cape-synth/annotations/mp100_split1_test.json --out sample.png
  cape-bench ls methods
"""


def _csv_list(text: str) -> list[str]:
    return [t for t in text.replace(" ", ",").split(",") if t]


def _int_range_list(text: str) -> list[int]:
    """``"1-5"`` → [1..5]; ``"1,3"`` → [1, 3]."""
    out: list[int] = []
    for part in _csv_list(text):
        if "-" in part:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    return out


def _add_dataset_args(parser: argparse.ArgumentParser) -> None:
    """The dataset flags ``run`` and ``train`` share (see :func:`_dataset_overrides`)."""
    parser.add_argument("--dataset", choices=["cape-synth", "mp100"], help="dataset (default: cape-synth)")
    parser.add_argument("--ann-dir", help="folder with mp100_split{k}_{train,val,test}.json")
    parser.add_argument("--images", help="image root the annotation file names are relative to")
    parser.add_argument("--descriptions", help="keypoint descriptions file (format of keypoint_descriptions.json); "
                                               "text methods train and are evaluated on these")
    parser.add_argument("--text-variant", choices=["regular", "synonyms", "translated", "typo"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cape-bench",
        description="Benchmark and evaluation harness for category-agnostic pose estimation (MP-100 protocol).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

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

    tr = sub.add_parser("train", help="train a method's model for a split (cached; `run` then reuses it)")
    tr.add_argument("--config", type=Path, help="config file (default: ./bench.toml if present)")
    tr.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override one config value, e.g. --set methods.capex.train.iterations=2000 (repeatable)")
    tr.add_argument("--method", "--methods", dest="methods", type=_csv_list, required=True,
                    help="method name(s), comma-separated (a variant section of bench.toml counts)")
    tr.add_argument("--split", "--splits", dest="splits", type=_int_range_list, default=[1], help="e.g. 1 or 1-5")
    tr.add_argument("--preset", help="training preset (quick | official; default: bench.toml or the method's)")
    tr.add_argument("--backbone", help="backbone name (default: the preset's)")
    tr.add_argument("--iterations", type=int, help="override the preset's number of iterations")
    _add_dataset_args(tr)
    tr.add_argument("--device", choices=["cpu", "cuda"])
    tr.set_defaults(func=cmd_train)

    score = sub.add_parser("score", help="recompute all scores of a run directory from its stored predictions")
    score.add_argument("run_dir", type=Path)
    score.set_defaults(func=cmd_score)

    report = sub.add_parser("report", help="render the self-contained HTML report of one or more run directories")
    report.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    report.add_argument("--out", type=Path, help="output file (default: reports/<run name>.html)")
    report.set_defaults(func=cmd_report)

    tables = sub.add_parser("tables", help="print the headline table (methods × splits + mean) of run directories")
    tables.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    tables.add_argument("--format", choices=["md", "latex", "csv"], default="md")
    tables.add_argument("--metric", default="PCK@0.2")
    tables.set_defaults(func=cmd_tables)

    ep = sub.add_parser("episodes", help="build the official episodes of an annotation file; print the digest")
    ep.add_argument("--ann", type=Path, required=True, help="an mp100_split{k}_{test,val}.json file")
    ep.add_argument("--shots", type=int, required=True)
    ep.add_argument("--subset", choices=["test", "val"],
                    help="200 (test) or 100 (val) episodes (default: val for a *_val.json file, else test)")
    ep.add_argument("--num-episodes", type=int, help="episodes per category (default: official)")
    ep.add_argument("--out", type=Path,
                    help="also write the manifest CSV there (default: only print its sha256)")
    ep.set_defaults(func=cmd_episodes)

    ls = sub.add_parser("ls", help="list registered methods, datasets, backbones or text encoders (with where their "
                                   "genuine weights were found on this machine)")
    ls.add_argument("what", choices=["methods", "datasets", "backbones", "text-encoders"])
    ls.set_defaults(func=cmd_ls)

    data = sub.add_parser("data", help="dataset tools: check, synth, show")
    dsub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    check = dsub.add_parser("check", help="the dataset doctor: find inconsistencies in annotation files")
    check.add_argument("--ann", type=Path, action="append", required=True, help="annotation file (repeatable)")
    check.add_argument("--images", type=Path, help="image root; report missing images")
    check.add_argument("--descriptions", type=Path, help="keypoint descriptions file to check against")
    check.add_argument("--json", action="store_true", help="print the findings as JSON")
    check.set_defaults(func=cmd_data_check)

    synth = dsub.add_parser("synth", help="generate CAPE-Synth, a CAPE benchmark in the MP-100 file format")
    synth.add_argument("--out", type=Path, required=True, help="output folder (gets annotations/ and images/)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--num-categories", type=int, default=100, help="multiple of 10, 10..100")
    synth.add_argument("--instances-per-category", type=int, help="default: the generator's (50)")
    synth.add_argument("--image-size", type=int, help="image side in px (default: the generator's, 128)")
    synth.add_argument("--knob", action="append", default=[], metavar="NAME=VALUE",
                       help="generator knob, e.g. --knob polysemy=1.0 (see cape_bench/synth/knobs.py)")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")
    synth.set_defaults(func=cmd_data_synth)

    show = dsub.add_parser("show", help="draw a grid of annotated samples (keypoints and skeletons) as a PNG")
    show.add_argument("--ann", type=Path, required=True, help="an MP-100-format annotation file")
    show.add_argument("--images", type=Path, help="image root (default: ../images beside the annotations folder)")
    show.add_argument("--out", type=Path, required=True, help="PNG to write")
    show.add_argument("--per-supercategory", type=int, default=4)
    show.add_argument("--seed", type=int, default=0)
    show.set_defaults(func=cmd_data_show)

    from cape_bench.profile.command import add_profile_parser  # noqa: PLC0415  (torch-free at import)

    add_profile_parser(sub)
    return parser


def _dataset_overrides(args, put) -> None:
    """``--set`` entries for the dataset / device flags ``run`` and ``train`` share."""
    if getattr(args, "dataset", None):
        put("dataset.name", args.dataset)
    for flag, key in (("ann_dir", "dataset.ann_dir"), ("images", "dataset.image_root"),
                      ("descriptions", "dataset.descriptions"), ("text_variant", "dataset.text_variant"),
                      ("subset", "dataset.subset"), ("device", "run.device"), ("out_dir", "run.out_dir"),
                      ("name", "run.name")):
        value = getattr(args, flag, None)
        if value:
            put(key, str(Path(value).resolve()) if flag in ("ann_dir", "images", "descriptions") else value)
    if getattr(args, "ann_dir", None) and not getattr(args, "dataset", None):
        put("dataset.name", "mp100")


def _putter(overrides: list[str]):
    def put(key: str, value) -> None:
        import json  # noqa: PLC0415

        overrides.append(f"{key}={json.dumps(value)}")

    return put


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


def cmd_run(args) -> int:
    from rich.console import Console  # noqa: PLC0415

    from cape_bench.config import ConfigError, find_config, load_config  # noqa: PLC0415

    overrides = list(args.overrides)
    put = _putter(overrides)
    if args.methods:
        put("run.methods", args.methods)
    _dataset_overrides(args, put)
    if args.categories:
        put("dataset.categories", args.categories)
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
    cfg = load_config(args.config or find_config(), overrides)
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


def run_and_report(cfg, console, show_progress: bool = True) -> int:
    """Run the grid, score it, print the table; exit status 1 when a cell failed."""
    import time  # noqa: PLC0415

    from cape_bench.executors import execute  # noqa: PLC0415
    from cape_bench.runner import Runner  # noqa: PLC0415
    from cape_bench.scoring import score_run  # noqa: PLC0415
    from cape_bench.comparisons import variant_bases  # noqa: PLC0415
    from cape_bench.tables import print_headline  # noqa: PLC0415

    name = cfg.run.name or time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(cfg.run.out_dir) / name
    console.print(f"run directory: {run_dir}")
    runner = Runner(cfg, run_dir, console=console, show_progress=show_progress)
    outcomes = execute(runner)
    tables = score_run(run_dir)
    extra, reference = _cell_flags(runner.run.finished_cells())
    print_headline(console, tables["summary.csv"], tables["ceiling.csv"], extra_inputs=extra, reference=reference,
                   paired=tables.get("paired.csv"), bases=variant_bases(cfg.to_dict()))
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


def _cell_flags(cells) -> tuple[dict[str, list[str]], set[str]]:
    """Per method: the extra inputs its cells declare; and the methods that read the query ground truth."""
    extra, reference = {}, set()
    for rec in cells:
        extra[rec["method"]] = rec["info"]["extra_inputs"]
        if rec["info"].get("reads_query_ground_truth"):
            reference.add(rec["method"])
    return extra, reference


def cmd_score(args) -> int:
    from rich.console import Console  # noqa: PLC0415

    from cape_bench.scoring import score_run  # noqa: PLC0415
    from cape_bench.store import RunDir  # noqa: PLC0415
    from cape_bench.comparisons import variant_bases  # noqa: PLC0415
    from cape_bench.tables import print_headline  # noqa: PLC0415

    tables = score_run(args.run_dir)
    run = RunDir(args.run_dir)
    extra, reference = _cell_flags(run.finished_cells())
    print_headline(Console(), tables["summary.csv"], tables["ceiling.csv"], extra_inputs=extra, reference=reference,
                   paired=tables.get("paired.csv"), bases=variant_bases(run.read_run_json().get("config", {})))
    print(f"wrote {', '.join(tables)} in {args.run_dir}")
    damaged = run.damaged_cells()
    for rec, problem in damaged:
        print(f"cape-bench: error: {rec['method']} split {rec['split']} {rec['shots']}-shot not scored: {problem}; "
              "the same `cape-bench run` command computes it again", file=sys.stderr)
    return 1 if damaged else 0


def cmd_report(args) -> int:
    from cape_bench.report import build_report  # noqa: PLC0415

    path = build_report(args.run_dirs, args.out)
    print(f"report: {path}")
    return 0


def cmd_tables(args) -> int:
    from cape_bench.report.paper_tables import render_tables  # noqa: PLC0415

    print(render_tables(args.run_dirs, args.format, metric=args.metric))
    return 0


def cmd_episodes(args) -> int:
    from cape_bench.data.mp100 import load_annotation_set  # noqa: PLC0415
    from cape_bench.episodes import build_manifest  # noqa: PLC0415
    from cape_bench.store import write_frame  # noqa: PLC0415

    if args.shots < 1 or (args.num_episodes is not None and args.num_episodes < 1):
        print("cape-bench: error: --shots and --num-episodes must be at least 1", file=sys.stderr)
        return 2
    subset, why = args.subset, "--subset"
    if subset is None:  # the file says which protocol it is: mp100_split1_val.json → 100 episodes
        subset, why = ("val", "from the file name") if args.ann.stem.endswith("_val") else ("test", "default")
    ann = load_annotation_set(args.ann)
    manifest = build_manifest(ann, args.shots, num_episodes=args.num_episodes, subset=subset)
    print(f"{args.ann}: {len(ann.categories)} categories, {len(ann.instances)} instances, {subset} protocol ({why}): "
          f"{manifest.num_episodes} episodes × {manifest.num_queries} queries × {args.shots} shot(s) "
          f"= {len(manifest)} pairs" + ("" if manifest.official else " (not the official protocol size)"))
    if args.out:
        write_frame(args.out, manifest.to_frame())
        print(f"manifest: {args.out}")
    print(manifest.sha256)
    return 0


def cmd_ls(args) -> int:
    if args.what == "methods":
        from cape_bench.registry import list_methods  # noqa: PLC0415

        entries = list_methods()
        width = max(len(n) for n in entries)
        for entry in entries.values():
            print(f"{entry.name:<{width}}  {entry.target}  [{entry.source}]")
    elif args.what == "datasets":
        print("cape-synth  generated by `cape-bench data synth` (default; cached on first use)")
        print("mp100       MP-100 annotation files (--ann-dir) and, for image methods, images (--images)")
    else:
        from rich.console import Console  # noqa: PLC0415
        from rich.table import Table  # noqa: PLC0415

        from cape_bench.registry import load_catalog  # noqa: PLC0415

        try:
            rows = load_catalog(args.what)
        except ImportError as err:
            print(f"cape-bench: error: listing {args.what} needs the model packages ({err}); "
                  'install with pip install -e ".[models]"', file=sys.stderr)
            return 2
        table = Table(title=args.what, title_justify="left", show_lines=True)
        for column in rows[0]:
            table.add_column(column, overflow="fold", no_wrap=column == "name")
        for row in rows:
            table.add_row(*row.values())
        Console().print(table)
    return 0


def cmd_data_check(args) -> int:
    import json  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415

    from cape_bench.data import doctor  # noqa: PLC0415

    console = Console()
    status = 0
    reports = []
    for ann in args.ann:
        report = doctor.check_annotation_file(ann, images_dir=args.images, descriptions=args.descriptions)
        reports.append(report)
        if not args.json:
            doctor.render_report(report, console)
        status = max(status, 1 if report.has_errors else 0)
    if args.json:
        print(json.dumps([doctor.report_to_dict(r) for r in reports], indent=2))
    return status


def cmd_data_synth(args) -> int:
    from cape_bench import synth  # noqa: PLC0415
    from cape_bench.config import parse_override  # noqa: PLC0415

    knobs = dict(parse_override(k) for k in args.knob)
    kwargs = {"seed": args.seed, "num_categories": args.num_categories, "overwrite": args.overwrite}
    if args.instances_per_category:
        kwargs["instances_per_category"] = args.instances_per_category
    if args.image_size:
        kwargs["image_size"] = args.image_size
    ann_dir = synth.generate(args.out, knobs=synth.Knobs.from_dict(knobs) if knobs else None, **kwargs)
    print(f"CAPE-Synth written: {ann_dir} (images in {Path(args.out) / 'images'})")
    return 0


def cmd_data_show(args) -> int:
    from cape_bench import synth  # noqa: PLC0415

    images = args.images or args.ann.resolve().parent.parent / "images"
    print(f"wrote {synth.show(args.ann, images, args.out, per_supercategory=args.per_supercategory, seed=args.seed)}")
    return 0


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
