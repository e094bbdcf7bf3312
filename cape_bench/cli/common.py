"""Argument helpers the subcommands share: lists and ranges, the dataset flags, ``--set`` overrides."""

from __future__ import annotations

import argparse
from pathlib import Path


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
