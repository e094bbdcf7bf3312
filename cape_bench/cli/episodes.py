"""``cape-bench episodes``: build the official episodes of an annotation file and print their digest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    ep = sub.add_parser("episodes", help="build the official episodes of an annotation file; print the digest")
    ep.add_argument("--ann", type=Path, required=True, help="an mp100_split{k}_{test,val}.json file")
    ep.add_argument("--shots", type=int, required=True)
    ep.add_argument("--subset", choices=["test", "val"],
                    help="200 (test) or 100 (val) episodes (default: val for a *_val.json file, else test)")
    ep.add_argument("--num-episodes", type=int, help="episodes per category (default: official)")
    ep.add_argument("--out", type=Path,
                    help="also write the manifest CSV there (default: only print its sha256)")
    ep.set_defaults(func=cmd_episodes)

    return ep


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
