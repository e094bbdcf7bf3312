"""Text probes: which runs or variants are probes of which, and their ΔPCK tables."""

from __future__ import annotations

from cape_bench.report.error_analysis.loading import _RUN_ONLY_KEYS, CELL, PROBE_METRIC, PROBE_OPTIONS, _pct, _pd
from cape_bench.report.runs import RunData


# --------------------------------------------------------------------------------------------- probes
def _flatten(obj, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
    else:
        out[prefix[:-1]] = repr(obj)
    return out


def _is_probe_key(key: str) -> bool:
    if key == "dataset.text_variant":
        return True
    parts = key.split(".")
    return len(parts) == 4 and parts[0] == "methods" and parts[2] == "options" and parts[3] in PROBE_OPTIONS


def _probe_flags(meta: dict) -> tuple[str, list[str]]:
    """(text variant, labels of methods configured with a wrong-class-name probe) of a run."""
    config = meta.get("config") or {}
    variant = str((config.get("dataset") or {}).get("text_variant") or "regular")
    ran = set((config.get("run") or {}).get("methods") or ())  # a configured but unused section changes nothing
    wrong = [label for label, section in (config.get("methods") or {}).items()
             if label in ran and isinstance(section, dict) and (section.get("options") or {}).get("wrong_class_name")]
    return variant, wrong


def probe_run_pairs(runs: list[RunData]) -> list[tuple[RunData, RunData, str]]:
    """(regular run, probe run, what the probe changes) for runs of the report that form a text probe.

    Rule: the two runs' resolved configs (run.json ``config``) are identical except for the run's
    name and output folder and for probe settings only: ``dataset.text_variant`` and/or a method's
    ``wrong_class_name`` / ``wrong_class_pool`` options. The regular run is the one reading the
    ``regular`` descriptions with no wrong-class-name probe enabled.
    """
    flat = {r.label: {k: v for k, v in _flatten(r.meta.get("config") or {}).items() if k not in _RUN_ONLY_KEYS}
            for r in runs}
    pairs = []
    for reg in runs:
        variant, wrong = _probe_flags(reg.meta)
        if variant != "regular" or wrong:
            continue
        for prb in runs:
            if prb is reg:
                continue
            a, b = flat[reg.label], flat[prb.label]
            diff = {k for k in set(a) | set(b) if a.get(k) != b.get(k)}
            if not diff or not all(_is_probe_key(k) for k in diff):
                continue
            p_variant, p_wrong = _probe_flags(prb.meta)
            what = []
            if p_variant != "regular":
                what.append(f"text variant '{p_variant}'")
            if p_wrong:
                what.append(f"wrong class name ({', '.join(p_wrong)})")
            if what:
                pairs.append((reg, prb, "; ".join(what)))
    return pairs


def _is_probe_method(run: RunData, label: str) -> bool:
    section = ((run.meta.get("config") or {}).get("methods") or {}).get(label) or {}
    if (section.get("options") or {}).get("wrong_class_name"):
        return True
    for rec in run.cells:
        if rec["method"] == label:
            prov = rec.get("provenance") or {}
            if "wrong class" in str(prov.get("class_text") or "").lower():
                return True
    return False


def probe_variants(run: RunData) -> tuple[list[tuple[str, str, str]], list[str]]:
    """(base method, probe variant, what it changes) inside one run, plus notes on near misses.

    Rule: a method label ``<base>-<suffix>`` (or one whose ``[methods.<label>] method`` names a
    label of the run) is a probe variant of ``<base>`` when ``<base>`` is also in the run, the
    variant enables a wrong-class-name probe (``options.wrong_class_name`` in run.json, or its cells'
    provenance ``class_text`` says "wrong class name"), and its ``[methods]`` settings equal the
    base's except for the probe options (and ``batch_size``).
    """
    methods = run.methods()
    sections = (run.meta.get("config") or {}).get("methods") or {}
    out, notes = [], []
    for label in methods:
        if not _is_probe_method(run, label):
            continue
        section = sections.get(label) or {}
        candidates = [section.get("method")] if section.get("method") in methods and section.get("method") != label \
            else [b for b in methods if b != label and label.startswith(f"{b}-")]
        candidates = [b for b in candidates if not _is_probe_method(run, b)]
        if not candidates:
            continue
        base = max(candidates, key=len)

        def comparable(sec: dict) -> dict:
            sec = {k: v for k, v in (sec or {}).items() if k not in ("method", "batch_size")}
            sec["options"] = {k: v for k, v in (sec.get("options") or {}).items() if k not in PROBE_OPTIONS}
            return sec

        base_section = sections.get(base) or {}
        same_method = section.get("method") in (None, "", base, base_section.get("method") or base)
        if not same_method or comparable(section) != comparable(base_section):
            notes.append(f"{run.display.get(label, label)} reads a wrong class name but its settings differ from "
                         f"{run.display.get(base, base)}'s beyond the probe, so no ΔPCK is shown for it")
            continue
        out.append((base, label, "wrong class name"))
    return out, notes


def _probe_rows(table, reg_label: str, prb_label: str, what: str, display: dict) -> list[dict]:
    """Mean over splits of a ``probe_table``-shaped frame, one row per (method, shots)."""
    rows = []
    for (method, shots), block in table.groupby(["method", "shots"], sort=True):
        ok = block[block["status"] == "ok"]
        statuses = sorted(set(block["status"]) - {"ok"})
        rows.append({
            "label": display.get(method, method), "regular_run": reg_label, "probe_run": prb_label, "probe": what,
            "shots": int(shots), "splits": int(block["split"].nunique()),
            "regular": _pct(block["regular"].mean()), "probe_value": _pct(block["probe"].mean()),
            "delta": _pct(ok["delta"].mean()) if len(ok) else None,
            "status": "ok" if not statuses else "; ".join(statuses) + (f" ({len(ok)} of {len(block)} cells ok)"
                                                                       if len(ok) else ""),
        })
    return rows


def _probes(runs: list[RunData]) -> dict:
    from cape_bench.analysis import NOT_APPLICABLE, NOT_COMPARABLE, probe_table  # noqa: PLC0415

    pd = _pd()
    rows, notes, rules = [], [], []
    pairs = probe_run_pairs(runs)
    for reg, prb, what in pairs:
        rules += [] if "between runs" in rules else ["between runs"]
        table = probe_table(reg.path, prb.path, PROBE_METRIC)
        display = {m: m for m in table["method"].unique()}
        rows += _probe_rows(table, reg.label, prb.label, what, display)
    for run in runs:
        variants, near = probe_variants(run)
        notes += near
        summary = run.tables.get("summary.csv")
        if summary is None:
            continue
        summary = summary[summary["metric"] == PROBE_METRIC]
        for base, label, what in variants:
            rules += [] if "inside a run" in rules else ["inside a run"]
            reg = summary[summary["method"] == base]
            prb = summary[summary["method"] == label].assign(method=base)
            table = reg.merge(prb, on=CELL + ["metric"], suffixes=("_r", "_p"))
            table = pd.DataFrame({"method": table["method"], "split": table["split"], "shots": table["shots"],
                                  "regular": table["value_r"], "probe": table["value_p"],
                                  "delta": table["value_p"] - table["value_r"]})
            status = []
            for split, shots in zip(table["split"], table["shots"], strict=True):
                r, p = run.cell(base, split, shots) or {}, run.cell(label, split, shots) or {}
                if not (p.get("info") or r.get("info") or {}).get("reads_text", False):
                    status.append(NOT_APPLICABLE)
                elif r.get("episodes_sha256") != p.get("episodes_sha256"):
                    status.append(NOT_COMPARABLE)
                else:
                    status.append("ok")
            table["status"] = status
            display = {base: f"{run.display.get(label, label)} vs {run.display.get(base, base)}"}
            rows += _probe_rows(table, run.label, run.label, what, display)
    return {"rows": rows, "notes": notes, "rules": rules, "metric": PROBE_METRIC}
