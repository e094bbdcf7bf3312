"""Published MP-100 numbers (``published.csv``, cited per row) and their matching to reproduced rows.

A published row matches a reproduced method when the method name and the image backbone are the same
(cape-bench backbone names, e.g. ``resnet50``, ``swinv2_tiny``). Text-based rows name their text encoder
after a ``+`` (``swinv2_tiny+clip-vit-b32``); when the run records which text encoder it used, only rows
with that encoder match, and when it does not, every text-encoder variant is shown with its name.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib.resources import files

PUBLISHED_FILE = "published.csv"


@dataclass(frozen=True)
class PublishedRow:
    """One published table row: PCK@0.2 in % per split."""

    method: str
    backbone: str  # as in published.csv, e.g. "swinv2_tiny+clip-vit-b32"
    shots: int
    pck: dict[int, float]  # split → PCK@0.2 (%)
    source: str

    @property
    def image_backbone(self) -> str:
        return self.backbone.split("+", 1)[0]

    @property
    def text_encoder(self) -> str | None:
        parts = self.backbone.split("+", 1)
        return parts[1] if len(parts) == 2 else None


def load_published() -> list[PublishedRow]:
    """Every row of ``cape_bench/report/published.csv`` (lines starting with ``#`` are comments)."""
    text = files("cape_bench.report").joinpath(PUBLISHED_FILE).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    grouped: dict[tuple[str, str, int], dict] = {}
    for rec in csv.DictReader(lines):
        key = (rec["method"], rec["backbone"], int(rec["shots"]))
        entry = grouped.setdefault(key, {"pck": {}, "source": rec["source"]})
        entry["pck"][int(rec["split"])] = float(rec["pck"])
    return [PublishedRow(m, b, s, e["pck"], e["source"]) for (m, b, s), e in grouped.items()]


def _same_encoder(a: str, b: str) -> bool:
    """Loose text-encoder identity: ``clip-vit-b32`` ~ ``CLIP ViT-B/32``, ``gte-base-en-v1.5`` ~ ``gte-base``."""
    norm = [x.lower().replace("/", "").replace(" ", "-").replace("_", "-") for x in (a, b)]
    for family in ("clip", "gte", "minilm", "bert", "mobilenet"):
        if family in norm[0] and family in norm[1]:
            return True
    return norm[0] == norm[1]


def matching_rows(published: list[PublishedRow], method: str, backbone: str, text_encoder: str | None,
                  shots: int) -> list[PublishedRow]:
    """Published rows of ``method`` with the same image backbone (and text encoder when known)."""
    out = []
    for row in published:
        if row.method != method or row.shots != shots or row.image_backbone != backbone:
            continue
        if text_encoder and row.text_encoder and not _same_encoder(text_encoder, row.text_encoder):
            continue
        out.append(row)
    return out


#: the configuration each method's paper leads with (its released code's default), for the published ranking
OFFICIAL_CONFIGURATIONS: dict[str, str] = {
    "pomnet": "resnet50",
    "capeformer": "resnet50",
    "graphcape": "swinv2_tiny",
    "capex": "swinv2_tiny+gte-base-en-v1.5",
    "capenext": "swinv2_tiny+clip-vit-b32",
}


def official_scores(split: int, shots: int, published: list[PublishedRow] | None = None) -> dict[str, float]:
    """Published PCK@0.2 (%) of each method's official configuration on ``split`` (methods without one are left
    out): the MP-100 ranking a benchmark's ranking is compared with."""
    out = {}
    for row in published if published is not None else load_published():
        if row.shots == shots and OFFICIAL_CONFIGURATIONS.get(row.method) == row.backbone and split in row.pck:
            out[row.method] = row.pck[split]
    return out
