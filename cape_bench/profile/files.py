"""Profile files (``profile.csv``): write, read, and compare two profiles of the same machine."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from cape_bench.profile.spec import (
    MACHINE_KEYS,
    PROFILE_FORMAT,
    PROFILE_VERSION,
    ROW_KEYS,
    SAMPLE_COLUMNS,
    ProfileMismatchError,
    summarize,
)
from cape_bench.profile.timing import ProfileResult

# ----------------------------------------------------------------------------------------------------------------
# Profile files


def _cell(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return " ".join(repr(float(v)) for v in value)
    return value


def write_profile(result: ProfileResult, path: str | Path) -> Path:
    """Write a profile: ``.json`` (machine, spec, notes and every row) or CSV (one row per measurement, the
    machine stamp and every timing sample on each row). Returns the path."""
    import pandas as pd  # noqa: PLC0415

    from cape_bench.store import atomic_write_text, write_json  # noqa: PLC0415

    path = Path(path)
    rows = [*result.rows, *result.harness]
    if path.suffix.lower() == ".json":
        write_json(path, {"format": PROFILE_FORMAT, "version": PROFILE_VERSION, "machine": result.machine,
                          "spec": result.spec, "notes": result.notes, "rows": rows})
        return path
    frame = pd.DataFrame([{k: _cell(v) for k, v in row.items()} for row in rows])
    atomic_write_text(path, frame.to_csv(index=False))
    return path


def clean_value(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_profile(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a profile file written by :func:`write_profile` (CSV or JSON); samples as lists of ms.

    Raises:
        FileNotFoundError: no such file. ValueError: not a cape-bench profile.
    """
    import pandas as pd  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: profile file not found")
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
            raise ValueError(f"{path}: not a cape-bench profile (format {data.get('format')!r})")
        return [dict(r) for r in data["rows"]]
    frame = pd.read_csv(path)
    missing = {"kind", "method", "batch_size", *MACHINE_KEYS} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: not a cape-bench profile (columns missing: {', '.join(sorted(missing))})")
    rows = []
    for rec in frame.to_dict("records"):
        row = {k: clean_value(v) for k, v in rec.items()}
        for key in SAMPLE_COLUMNS:
            if key in row:
                text = row[key]
                row[key] = [float(t) for t in str(text).split()] if text not in (None, "") else []
        for key in ("amp", "compile", "backbone_frozen"):
            if isinstance(row.get(key), str):
                row[key] = row[key].strip().lower() == "true"
        for key in ("batch_size", "keypoints", "shots", "threads", "interop_threads", "repeats", "warmup", "pairs",
                    "episodes", "reference_pairs", "reference_text_strings", "cpu_count"):
            if isinstance(row.get(key), float) and row[key].is_integer():
                row[key] = int(row[key])
        rows.append(row)
    return rows


def _norm(value: Any) -> Any:
    value = clean_value(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None if value is None else str(value) if not isinstance(value, (int, bool)) else value


def machine_key(row: dict[str, Any]) -> tuple:
    """The fields that must agree before two rows are compared (:data:`MACHINE_KEYS`)."""
    return tuple(_norm(row.get(k)) for k in MACHINE_KEYS)


def row_key(row: dict[str, Any]) -> tuple:
    return tuple(_norm(row.get(k)) for k in ROW_KEYS)


def compare_profiles(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> dict[str, Any]:
    """Compare the latency rows of two profiles measured on the same machine.

    Rows are matched on method, preset, backbone, batch size, AMP, compile, K and shots. A matched pair whose
    machine stamps differ (device, torch, CUDA, thread counts) refuses the whole comparison.

    Returns:
        ``rows`` (one per matched measurement: old / new medians, ``speedup`` = old / new prediction time,
        ``distinct``: the two interquartile ranges do not overlap), ``only_old`` and ``only_new`` (keys).

    Raises:
        ProfileMismatchError: rows from different machines.
    """
    def latency(rows):
        return {row_key(r): r for r in rows if r.get("kind", "model") == "model" and r.get("status", "ok") == "ok"}

    a, b = latency(old), latency(new)
    out = []
    for key in [k for k in a if k in b]:
        ra, rb = a[key], b[key]
        if machine_key(ra) != machine_key(rb):
            diffs = [f"{name}: {x!r} vs {y!r}" for name, x, y in zip(MACHINE_KEYS, machine_key(ra), machine_key(rb),
                                                                        strict=True) if x != y]
            raise ProfileMismatchError(
                f"refusing to compare {ra['method']} batch {ra['batch_size']}: the profiles were measured on different "
                f"machines or software ({'; '.join(diffs)}). Re-run both on one machine with the same torch, CUDA "
                "and thread settings.")
        pa, pb = summarize(ra.get("predict_samples_ms") or []), summarize(rb.get("predict_samples_ms") or [])
        med_a = pa["median"] if pa["n"] else ra["predict_ms"]
        med_b = pb["median"] if pb["n"] else rb["predict_ms"]
        distinct = bool(pa["n"] and pb["n"] and (pa["q75"] < pb["q25"] or pb["q75"] < pa["q25"]))
        out.append({"method": ra["method"], "backbone": ra.get("backbone"), "batch_size": ra["batch_size"],
                    "amp": ra.get("amp"), "compile": ra.get("compile"),
                    "predict_ms_old": med_a, "predict_ms_new": med_b, "speedup": med_a / med_b if med_b else None,
                    "support_ms_old": ra.get("support_ms"), "support_ms_new": rb.get("support_ms"),
                    "pairs_per_s_old": ra.get("pairs_per_s"), "pairs_per_s_new": rb.get("pairs_per_s"),
                    "distinct": distinct})
    return {"rows": out, "only_old": [k for k in a if k not in b], "only_new": [k for k in b if k not in a]}
