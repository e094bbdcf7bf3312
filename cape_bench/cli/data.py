"""``cape-bench data``: the dataset doctor (check), CAPE-Synth generation (synth) and sample grids (show)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
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

    return data


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
