"""Provenance section: what ran, on what, from which code, data and weights (run.json and cells/ only)."""

from __future__ import annotations

import re
from typing import Any

from cape_bench.report.runs import RunData, comparability, extra_inputs_of

_RICH_MARKUP = re.compile(r"\[/?(?:bold|dim|italic|red|green|yellow|blue|cyan|magenta)[^\]]*\]")  # rich console tags

# Keys of a cell's provenance that :func:`describe` shows in their own columns.
_SHOWN = {"checkpoint", "trained", "weights", "backbone", "backbone_weights"}


def weight_status(text: str) -> str:
    """``"genuine"``, ``"random"`` or ``"other"`` for a free-text weights description."""
    low = text.lower()
    if "random" in low:
        return "random"
    if low.startswith("genuine") or "pretrained" in low:
        return "genuine"
    return "other"


def describe(prov: dict[str, Any]) -> dict:
    """A cell's free-form provenance → where its weights came from and whether each part is genuine.

    Returns:
        ``{"source": str, "weights": [{"part", "status", "text"}], "details": [(key, value)]}`` where
        status is ``genuine`` / ``random`` / ``other``.
    """
    trained = prov.get("trained")
    checkpoint = prov.get("checkpoint")
    if trained and str(trained).startswith("here"):
        source = f"trained {trained}"
    elif checkpoint:
        source = f"checkpoint {checkpoint}" + (f" (trained with preset {trained})" if trained else "")
    elif prov.get("weights"):
        source = str(prov["weights"])
    else:
        source = "not recorded"
    weights = []
    if prov.get("backbone_weights"):
        text = str(prov["backbone_weights"])
        weights.append({"part": f"backbone {prov.get('backbone', '')}".strip(), "status": weight_status(text),
                        "text": text})
    for key, value in prov.items():
        if isinstance(value, dict) and "genuine" in value:
            name = value.get("encoder") or value.get("image_embedder") or value.get("name") or ""
            part = f"{key.replace('_', ' ')} {name}".strip()
            text = "genuine" if value["genuine"] else "random init"
            if value.get("path"):
                text += f": {value['path']}"
            if value.get("note"):
                text += f" ({value['note']})"
            weights.append({"part": part, "status": "genuine" if value["genuine"] else "random", "text": text})
    if "genuine" in prov and not isinstance(prov["genuine"], dict):
        genuine = bool(prov["genuine"])
        weights.append({"part": str(prov.get("encoder", "weights")), "status": "genuine" if genuine else "random",
                        "text": "genuine" if genuine else "random init"})
    details = [(k, _short(v)) for k, v in prov.items()
               if k not in _SHOWN and not (isinstance(v, dict) and "genuine" in v) and k != "genuine"]
    return {"source": source, "weights": weights, "details": details}


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_short(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_short(v) for v in value)
    return str(value)


def _rate(timings: dict) -> str:
    value = (timings or {}).get("pairs_per_s")
    return "—" if value is None else f"{value:,.0f}"


def build(runs: list[RunData], colors: dict[str, str]) -> dict:
    """Context of ``provenance.html.j2``: one block per run."""
    blocks = []
    for r in runs:
        meta = r.meta
        env = meta.get("environment") or {}
        git = meta.get("git") or {}
        config = meta.get("config") or {}
        dataset = meta.get("dataset") or {}
        ok, why = comparability(meta)
        facts = [
            ("run directory", str(r.path.resolve())),
            ("created", meta.get("created", "—")),
            ("dataset", f"{dataset.get('name', '?')} ({dataset.get('subset', '?')} subset, text variant "
                        f"{dataset.get('text_variant', '?')})"),
            ("annotations folder", dataset.get("ann_dir") or "—"),
            ("image root", dataset.get("image_root") or "none (no images: no qualitative examples)"),
            ("descriptions", dataset.get("descriptions") or "keypoint names"),
            ("official protocol", "yes (200 episodes × 15 queries per category)" if meta.get("official_protocol")
             else "no — shortened; not comparable with published numbers"),
            ("comparable with published MP-100 numbers", "yes" if ok else f"no: {why}"),
            ("protocol version", meta.get("protocol_version", "—")),
            ("metric version", meta.get("metric_version", "—")),
            ("config sha256", meta.get("config_sha256", "—")),
            ("git", f"{git.get('sha') or 'not a git checkout'}"
                    + (" (uncommitted changes)" if git.get("dirty") else "")),
            ("device", (config.get("run") or {}).get("device", "—")),
            ("cape-bench", env.get("cape_bench", "—")),
            ("python", env.get("python", "—")),
            ("platform", f"{env.get('platform', '—')} {env.get('machine', '')}".strip()),
        ]
        known = {"cape_bench", "python", "platform", "machine", "processor", "packages"}
        facts += [(key, _short(value)) for key, value in env.items() if key not in known and value]  # e.g. a GPU
        if dataset.get("generated"):
            facts.append(("generated with", _short(dataset["generated"])))
        packages = [(k, v or "not installed") for k, v in (env.get("packages") or {}).items()]
        annotations = [(split, a.get("file", "—"), a.get("sha256", "—"))
                       for split, a in sorted((meta.get("annotations") or {}).items())]
        episodes = [(cell, e.get("sha256", "—"), e.get("pairs", "—"), e.get("episodes_per_category", "—"),
                     "yes" if e.get("official") else "no")
                    for cell, e in sorted((meta.get("episodes") or {}).items())]
        methods = []
        for m in r.methods():
            cells = [c for c in r.cells if c["method"] == m]
            rows = []
            for c in cells:
                d = describe(c.get("provenance") or {})
                rows.append({"split": c["split"], "shots": c["shots"], "source": d["source"], "weights": d["weights"],
                             "details": d["details"], "pairs": c.get("pairs", "—"),
                             "rate": _rate(c.get("timings")), "finished": c.get("finished", "—")})
            statuses = {w["status"] for row in rows for w in row["weights"]}
            info = cells[0].get("info", {}) if cells else {}
            methods.append({
                "name": r.display[m],
                "color": colors.get(r.display[m], "#888"),
                "paper": info.get("paper", ""),
                "needs_images": info.get("needs_images"),
                "extra_inputs": extra_inputs_of(r, m),
                "sources": sorted({row["source"] for row in rows}),
                "random": "random" in statuses,
                "genuine": "genuine" in statuses,
                "cells": rows,
            })
        blocks.append({
            "label": r.label,
            "facts": facts,
            "packages": packages,
            "annotations": annotations,
            "episodes": episodes,
            "methods": methods,
            "failures": meta.get("failures") or [],
            "messages": [_RICH_MARKUP.sub("", str(m)) for m in meta.get("messages") or []],
        })
    return {"runs": blocks}
