"""Tables across runs: text-probe ΔPCK (``probe_table``) and PCK against CAPE-Synth's polysemy knob."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cape_bench.analysis.cell import _analyze_cell, _stamp
from cape_bench.analysis.inputs import _CELL_KEYS, ANALYSIS_VERSION, _categories
from cape_bench.analysis.run import _cell_records, _summary
from cape_bench.cells import cell_arrays
from cape_bench.metrics import ambiguity, pck, taxonomy
from cape_bench.store import RunDir

NOT_APPLICABLE = "not applicable: method does not read text"
NOT_COMPARABLE = "not comparable: the runs scored different episodes"


def probe_table(regular_run, probe_run, metric: str = "PCK@0.2"):
    """ΔPCK of a text probe (e.g. synonyms, typos, a wrong class name) against a regular run.

    Args:
        regular_run, probe_run: run directories over the same episodes; the probe run changes only
            the text the methods read.
        metric: summary metric to compare.

    Returns:
        DataFrame ``analysis_version, method, split, shots, metric, regular_run, probe_run,
        regular_text_variant, probe_text_variant, regular, probe, delta, status``. ``delta`` is
        ``probe − regular`` (:func:`cape_bench.metrics.ambiguity.probe_delta`) and is empty, with
        ``status`` saying why, for a method that does not read text (``info.reads_text`` False in
        its cell record: "not applicable") or cells whose episodes differ; ``status`` is ``ok``
        otherwise.
    """
    reg, prb = RunDir(regular_run), RunDir(probe_run)
    reg_meta, prb_meta = reg.read_run_json(), prb.read_run_json()
    table = ambiguity.probe_delta(_summary(reg), _summary(prb), [metric])
    reg_cells, prb_cells = _cell_records(reg), _cell_records(prb)
    status = []
    for key in zip(table["method"], table["split"], table["shots"], strict=True):
        r, p = reg_cells.get(key, {}), prb_cells.get(key, {})
        reads_text = (p.get("info") or r.get("info") or {}).get("reads_text", False)
        if not reads_text:
            status.append(NOT_APPLICABLE)
        elif r.get("episodes_sha256") != p.get("episodes_sha256"):
            status.append(NOT_COMPARABLE)
        else:
            status.append("ok")
    table = table.assign(status=status)
    table["delta"] = table["delta"].where(table["status"] == "ok")
    table.insert(4, "regular_run", reg.root.name)
    table.insert(5, "probe_run", prb.root.name)
    table.insert(6, "regular_text_variant", (reg_meta.get("dataset") or {}).get("text_variant"))
    table.insert(7, "probe_text_variant", (prb_meta.get("dataset") or {}).get("text_variant"))
    table.insert(0, "analysis_version", ANALYSIS_VERSION)
    return table


def _find_numeric(obj, key: str) -> list[float]:
    """Every numeric value stored under ``key`` anywhere in nested dicts and lists."""
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key and isinstance(v, (int, float)) and not isinstance(v, bool):
                found.append(float(v))
            else:
                found += _find_numeric(v, key)
    elif isinstance(obj, list):
        for v in obj:
            found += _find_numeric(v, key)
    return found


def _knob_value(run: RunDir, meta: dict, knob: str) -> float:
    """The knob's value: run.json ``dataset.generated`` first, then the annotation files' ``info``."""
    values = _find_numeric((meta.get("dataset") or {}).get("generated"), knob)
    if not values:
        for record in (meta.get("annotations") or {}).values():
            path = record.get("file")
            if path and Path(path).is_file():
                values += _find_numeric(json.loads(Path(path).read_text()).get("info"), knob)
    if not values:
        raise ValueError(f"{run.root}: no numeric {knob!r} in run.json dataset.generated or the annotation files' info")
    if len(set(values)) > 1:
        raise ValueError(f"{run.root}: several values of {knob!r}: {sorted(set(values))}")
    return values[0]


def polysemy_knob_table(run_dirs, knob: str = "polysemy", alpha: float = taxonomy.DEFAULT_ALPHA):
    """PCK as a function of a CAPE-Synth generation knob (default: polysemy) over several runs.

    Args:
        run_dirs: run directories whose datasets were generated with different values of ``knob``.
        knob: the numeric knob to read (see :func:`_knob_value`).
        alpha: PCK threshold.

    Returns:
        DataFrame ``analysis_version, alpha, knob, value, run, method, split, shots, pck`` (official
        per-pair mean PCK@alpha), ``pck_polysemous, pck_unique, pck_gap`` (keypoint-level, as in
        ``ambiguity.csv``) and ``slope`` (least-squares PCK per knob unit across the runs of a
        (method, split, shots); NaN with fewer than two knob values), sorted by method, split,
        shots, value.
    """
    import pandas as pd  # noqa: PLC0415

    rows = []
    for run_dir in run_dirs:
        run = RunDir(run_dir)
        meta = run.read_run_json()
        value = _knob_value(run, meta, knob)
        cats, _ = _categories(run, meta)
        for rec in run.finished_cells():
            frame = pd.read_parquet(run.predictions(rec["method"], rec["split"], rec["shots"]))
            res = _analyze_cell(frame, cats, alpha)
            kp = res.keypoints
            summary = ambiguity.polysemy_summary(kp[list(taxonomy.ERROR_TYPES)].to_numpy(), kp["polysemous"].to_numpy())
            official = float(np.mean(pck.pck_per_pair(cell_arrays(frame).dist_norm, alpha)))
            rows.append({
                "knob": knob, "value": value, "run": str(run.root), "method": rec["method"], "split": rec["split"],
                "shots": rec["shots"], "pck": official, "pck_polysemous": summary["pck_polysemous"],
                "pck_unique": summary["pck_unique"], "pck_gap": summary["pck_gap"],
            })
    table = pd.DataFrame(rows, columns=["knob", "value", "run", *_CELL_KEYS, "pck", "pck_polysemous", "pck_unique",
                                        "pck_gap"])
    slopes = {}
    for key, group in table.groupby(_CELL_KEYS):
        x, y = group["value"].to_numpy(float), group["pck"].to_numpy(float)
        xc = x - x.mean()
        slopes[key] = float(np.sum(xc * (y - y.mean())) / np.sum(xc * xc)) if np.sum(xc * xc) > 0 else np.nan
    table["slope"] = [slopes[k] for k in zip(table["method"], table["split"], table["shots"], strict=True)]
    table = table.sort_values([*_CELL_KEYS, "value"], kind="stable").reset_index(drop=True)
    return _stamp(table, alpha)
