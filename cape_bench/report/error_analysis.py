"""Why methods fail: the error-analysis tables of ``cape-bench score`` (``RUN_DIR/analysis/*.csv``).

Read only; nothing is recomputed from predictions except the CAPE-Synth polysemy-knob table, which
:func:`cape_bench.analysis.polysemy_knob_table` builds across runs. Shown:

* the error taxonomy (good / jitter / inversion / swap / miss) per method, as stacked bars, and per
  supercategory (one panel per method and shots), plus a sortable per-category table;
* the polysemy gap (``ambiguity.csv``);
* text-probe ΔPCK (:func:`cape_bench.analysis.probe_table` between runs, or between a method and its
  probe variant inside one run; the rules are :func:`probe_run_pairs` and :func:`probe_variants`);
* spread and sensitivity (``variation_by_category.csv``), PCK against pose dissimilarity
  (``pose_quartiles.csv``) and the CAPE-Synth factor trends (``trends.csv``).

Every number is a mean over the splits a method ran (the headline's averaging); per category it is the
category's own split. Methods with every scored keypoint good in every cell (``oracle``) are left out
of everything but the per-method bars: they have no errors to analyse.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from cape_bench.report import figures
from cape_bench.report.runs import RunData, method_rows

# the order errors are stacked in: from "right" outwards to "nowhere near"
ERROR_ORDER = ("good", "jitter", "inversion", "swap", "miss")
ERROR_COLORS = {"good": "#59a14f", "jitter": "#edc948", "inversion": "#9c6ade", "swap": "#f28e2b", "miss": "#d44a4a"}
CELL = ["method", "split", "shots"]
PROBE_METRIC = "PCK@0.2"
# run.json config keys that name or place a run without changing what it measures
_RUN_ONLY_KEYS = frozenset({"run.name", "run.out_dir", "run.report"})
# method options that are test-time text probes (capenext's official use_wrong_catName)
PROBE_OPTIONS = ("wrong_class_name", "wrong_class_pool")
_MAX_TREND_PANELS = 12
# the analysis tables this section reads (errors_by_keypoint.csv is the per-keypoint detail it leaves to the CSV)
SHOWN_TABLES = ("errors_by_method.csv", "errors_by_supercategory.csv", "errors_by_category.csv", "ambiguity.csv",
                "variation_by_category.csv", "pose_quartiles.csv", "trends.csv", "notes.csv")


def _pd():
    import pandas as pd  # noqa: PLC0415

    return pd


def _pct(value) -> float | None:
    """A fraction as a percentage; None for a missing value."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value * 100


def _num(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


# --------------------------------------------------------------------------------------------- loading
def load_analysis(runs: list[RunData]) -> tuple[dict, list[dict]]:
    """The analysis tables of every run, with a ``label`` (the report's method name) column.

    Returns:
        (tables, missing, versions): table name → DataFrame over all runs (only the rows of methods the
        report shows); ``missing``: ``{"run", "path"}`` of each run without an ``analysis/`` folder;
        ``versions``: run label → the ``analysis_version`` values its tables hold.
    """
    from cape_bench.analysis import ANALYSIS_DIR  # noqa: PLC0415

    pd = _pd()
    frames: dict[str, list] = {}
    missing, versions = [], {}
    for run in runs:
        folder = Path(run.path) / ANALYSIS_DIR
        if not (folder / "errors_by_method.csv").is_file():
            missing.append({"run": run.label, "path": str(run.path)})
            continue
        for file in sorted(folder.glob("*.csv")):
            if file.name not in SHOWN_TABLES:
                continue
            frame = pd.read_csv(file)
            if "analysis_version" in frame.columns:
                versions.setdefault(run.label, set()).update(str(v) for v in frame["analysis_version"].dropna())
            if file.name == "notes.csv":
                frame = frame.assign(run=run.label)
            elif "method" in frame.columns:
                frame = frame[frame["method"].isin(list(run.display))]
                frame = frame.assign(label=frame["method"].map(run.display), run=run.label)
            else:
                continue
            frames.setdefault(file.name, []).append(frame)
    tables = {name: pd.concat(parts, ignore_index=True) for name, parts in frames.items()}
    return tables, missing, versions


def _mean(frame, keys: list[str], columns: list[str]):
    """Mean of ``columns`` over the splits (every row of a ``keys`` group), NaN skipped; keys kept as columns."""
    return frame.groupby(keys, sort=False, dropna=False)[columns].mean().reset_index()


def perfect_labels(errors_by_method) -> list[str]:
    """Methods whose every scored keypoint is good in every cell (the oracle): nothing to analyse."""
    out = []
    for label, block in errors_by_method.groupby("label", sort=False):
        if len(block) and (block["good"] >= 1.0 - 1e-12).all():
            out.append(str(label))
    return out


# --------------------------------------------------------------------------------------------- taxonomy
def _taxonomy_rows(ebm, order: list[str], colors: dict[str, str]) -> list[dict]:
    pd = _pd()
    means = _mean(ebm, ["label", "shots"], list(ERROR_ORDER))
    scored = ebm.groupby(["label", "shots"])["scored"].sum()
    splits = ebm.groupby(["label", "shots"])["split"].nunique()
    means["rank"] = pd.Categorical(means["label"], categories=order, ordered=True)
    rows = []
    for rec in means.sort_values(["shots", "rank"], kind="stable").itertuples(index=False):
        key = (rec.label, rec.shots)
        rows.append({"label": rec.label, "shots": int(rec.shots), "color": colors.get(rec.label, "#888"),
                     "rates": {t: _pct(getattr(rec, t)) for t in ERROR_ORDER},
                     "scored": int(scored[key]), "splits": int(splits[key])})
    return rows


def _bar_segments(ax, y, rates: dict, height: float = 0.72, text: bool = True, fontsize: float = 7.5) -> None:
    left = 0.0
    for t in ERROR_ORDER:
        width = rates.get(t) or 0.0
        if width <= 0:
            continue
        ax.barh(y, width, left=left, height=height, color=ERROR_COLORS[t], edgecolor="white", linewidth=0.4)
        if text and width >= 7:
            ax.text(left + width / 2, y, f"{width:.0f}", ha="center", va="center", fontsize=fontsize,
                    color="white" if t in ("good", "inversion", "miss") else "#222")
        left += width


def _legend(fig, height_in: float) -> None:
    from matplotlib.patches import Patch  # noqa: PLC0415

    handles = [Patch(facecolor=ERROR_COLORS[t], label=t) for t in ERROR_ORDER]
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), frameon=False,
               bbox_to_anchor=(0.5, 1.0 + 0.32 / height_in), fontsize=8.5)


def _method_figure(rows: list[dict]):
    plt = figures.pyplot()
    n = len(rows)
    height = 0.34 * n + 0.9
    fig, ax = plt.subplots(figsize=(9.0, height))
    for y, row in enumerate(rows):
        _bar_segments(ax, y, row["rates"])
    ax.set_yticks(range(n))
    ax.set_yticklabels([f"{r['label']} · {r['shots']}-shot" for r in rows], fontsize=8.5)
    for tick, row in zip(ax.get_yticklabels(), rows, strict=True):
        tick.set_color(row["color"])
    ax.set_ylim(n - 0.5, -0.5)
    ax.set_xlim(0, 100)
    ax.set_xlabel("share of scored keypoints (%), mean over splits")
    ax.grid(axis="y", visible=False)
    _legend(fig, height)
    fig.tight_layout()
    return figures.svg(fig, "error taxonomy per method")


def _supercategory_figure(esc, labels: list[str], shots_list: list[int], colors: dict[str, str]):
    """One panel per (method, shots), a stacked bar per supercategory, sorted by the mean good rate."""
    means = _mean(esc, ["label", "shots", "supercategory"], list(ERROR_ORDER))
    panels = [(label, shots) for shots in shots_list for label in labels
              if not means[(means["label"] == label) & (means["shots"] == shots)].empty]
    if not panels:
        return None
    order = (means.groupby("supercategory")["good"].mean().sort_values(ascending=False).index.tolist())
    n = len(order)
    one_row = len(panels) <= 6
    ncols = len(panels) if one_row else len(labels)
    nrows = 1 if one_row else len(shots_list)
    plt = figures.pyplot()
    panel_h = 0.19 * n + 0.6
    width = min(2.6, 12.0 / ncols) * ncols + 1.8
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, panel_h * nrows + 0.5), sharey=True, squeeze=False)
    for ax in axes.ravel():
        ax.set_visible(False)
    for i, (label, shots) in enumerate(panels):
        ax = axes[0][i] if one_row else axes[shots_list.index(shots)][labels.index(label)]
        ax.set_visible(True)
        block = means[(means["label"] == label) & (means["shots"] == shots)].set_index("supercategory")
        for y, sc in enumerate(order):
            if sc in block.index:
                rates = {t: _pct(block.at[sc, t]) for t in ERROR_ORDER}
                _bar_segments(ax, y, rates, height=0.78, text=ncols <= 3, fontsize=6.5)
        ax.set_title(f"{label} · {shots}-shot", fontsize=8.5, color=colors.get(label, "#333"))
        ax.set_xlim(0, 100)
        ax.set_xticks([0, 50, 100])
        ax.grid(axis="y", visible=False)
        ax.tick_params(axis="x", labelsize=7)
    for row in axes:
        row[0].set_visible(True)
        row[0].set_yticks(range(n))
        row[0].set_yticklabels(order, fontsize=7.5)
        row[0].set_ylim(n - 0.5, -0.5)
    fig.supxlabel("share of scored keypoints (%), mean over splits", fontsize=8.5)
    _legend(fig, panel_h * nrows + 0.5)
    fig.tight_layout()
    return figures.svg(fig, "error taxonomy per supercategory")


def _category_table(ebc, var, labels: list[str], colors: dict[str, str]) -> list[dict]:
    """One row per (category, method, shots): the five rates, per-pair PCK, spread and pose slope."""
    pd = _pd()
    keys = ["label", "shots", "split", "category_id"]
    ebc = ebc[ebc["label"].isin(labels)]
    merged = ebc[keys + ["category", "supercategory", "scored", *ERROR_ORDER]]
    if var is not None and not var.empty:
        extra = var[keys + ["pck", "query_pck_std", "support_var", "pose_slope"]]
        merged = merged.merge(extra, on=keys, how="left")
    else:
        merged = merged.assign(pck=float("nan"), query_pck_std=float("nan"), support_var=float("nan"),
                               pose_slope=float("nan"))
    merged["rank"] = pd.Categorical(merged["label"], categories=labels, ordered=True)
    merged = merged.sort_values(["split", "category", "rank", "shots"], kind="stable")
    names = Counter(zip(merged["category"], merged["split"], strict=True))
    repeated = Counter(name for name, _ in names)
    rows = []
    for rec in merged.itertuples(index=False):
        name = str(rec.category)
        if repeated[name] > 1:  # a name present in several splits (only in toy data) gets its split
            name = f"{name} (split {rec.split})"
        sv = _num(rec.support_var)
        rows.append({
            "split": int(rec.split), "category": name,
            "supercategory": "" if str(rec.supercategory) == "nan" else str(rec.supercategory),
            "label": rec.label, "m": labels.index(rec.label), "shots": int(rec.shots),
            "scored": int(rec.scored), "rates": {t: _pct(getattr(rec, t)) for t in ERROR_ORDER},
            "pck": _pct(rec.pck), "query_std": _pct(rec.query_pck_std),
            "support_spread": None if sv is None else math.sqrt(max(sv, 0.0)) * 100,
            "pose_slope": _pct(rec.pose_slope),
        })
    return rows


# --------------------------------------------------------------------------------------------- polysemy
def _polysemy_rows(amb, labels: list[str], colors: dict[str, str]) -> list[dict]:
    pd = _pd()
    amb = amb[amb["label"].isin(labels)]
    if amb.empty:
        return []
    columns = ["pck_polysemous", "pck_unique", "pck_gap", "swap_rate_polysemous", "swap_rate_unique",
               "inversion_rate_polysemous", "inversion_rate_unique", "swap_rate_duplicate_name",
               "same_name_swap_share"]
    means = _mean(amb, ["label", "shots"], columns)
    counts = amb.groupby(["label", "shots"])[["n_polysemous", "n_unique"]].sum()
    means["rank"] = pd.Categorical(means["label"], categories=labels, ordered=True)
    rows = []
    for rec in means.sort_values(["shots", "rank"], kind="stable").itertuples(index=False):
        key = (rec.label, rec.shots)
        rows.append({"label": rec.label, "shots": int(rec.shots), "color": colors.get(rec.label, "#888"),
                     "n_polysemous": int(counts.at[key, "n_polysemous"]), "n_unique": int(counts.at[key, "n_unique"]),
                     **{c: _pct(getattr(rec, c)) for c in columns}})
    return rows


def _knob_table(runs: list[RunData]) -> dict | None:
    """PCK against CAPE-Synth's polysemy knob, when the report holds CAPE-Synth runs configured with
    different ``synth.knobs.polysemy`` values (:func:`cape_bench.analysis.polysemy_knob_table`)."""
    synth = [r for r in runs if r.dataset == "cape-synth"]
    if len(synth) < 2:
        return None
    values = {r.label: (((r.meta.get("config") or {}).get("synth") or {}).get("knobs") or {}).get("polysemy")
              for r in synth}
    if len(set(map(repr, values.values()))) < 2:
        return None
    from cape_bench.analysis import polysemy_knob_table  # noqa: PLC0415

    try:
        table = polysemy_knob_table([r.path for r in synth])
    except (ValueError, FileNotFoundError) as exc:
        return {"rows": [], "error": str(exc)}
    label_of = {(str(Path(r.path)), m): r.display.get(m, m) for r in synth for m in r.display}
    run_of = {str(Path(r.path)): r.label for r in synth}
    rows = []
    for rec in table.itertuples(index=False):
        rows.append({"value": float(rec.value), "run": run_of.get(str(rec.run), str(rec.run)),
                     "label": label_of.get((str(rec.run), rec.method), rec.method), "split": int(rec.split),
                     "shots": int(rec.shots), "pck": _pct(rec.pck), "pck_polysemous": _pct(rec.pck_polysemous),
                     "pck_unique": _pct(rec.pck_unique), "pck_gap": _pct(rec.pck_gap), "slope": _pct(rec.slope)})
    return {"rows": rows, "error": None}


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


# --------------------------------------------------------------------------------------------- variation
def _spread_rows(var, labels: list[str], colors: dict[str, str]) -> list[dict]:
    pd = _pd()
    var = var[var["label"].isin(labels)]
    if var.empty:
        return []
    rows = []
    var = var.assign(rank=pd.Categorical(var["label"], categories=labels, ordered=True))
    for (_, shots), block in var.groupby(["rank", "shots"], sort=True, observed=True):
        label = str(block["label"].iloc[0])
        sv = block["support_var"]
        top = block.loc[sv.idxmax()] if sv.notna().any() else None
        steep = block.loc[block["pose_slope"].idxmin()] if block["pose_slope"].notna().any() else None
        rows.append({
            "label": label, "shots": int(shots), "color": colors.get(label, "#888"), "categories": len(block),
            "pck": _pct(block["pck"].mean()), "query_std": _pct(block["query_pck_std"].mean()),
            "support_spread": None if not sv.notna().any() else math.sqrt(max(float(sv.mean()), 0.0)) * 100,
            "pose_slope": _pct(block["pose_slope"].mean()),
            "negative_slopes": int((block["pose_slope"] < 0).sum()),
            "slopes": int(block["pose_slope"].notna().sum()),
            "most_sensitive": None if top is None else {"category": str(top["category"]),
                                                        "spread": math.sqrt(max(float(top["support_var"]), 0)) * 100},
            "steepest": None if steep is None else {"category": str(steep["category"]),
                                                    "slope": _pct(steep["pose_slope"])},
        })
    rows.sort(key=lambda r: (r["shots"], labels.index(r["label"])))
    return rows


def _quartiles(pq, labels: list[str], shots_list: list[int], colors: dict[str, str]) -> dict | None:
    """PCK per pose-dissimilarity quartile: mean over categories, with the middle half of categories as a band."""
    pq = pq[pq["label"].isin(labels)]
    if pq.empty:
        return None
    per_cat = _mean(pq, ["label", "shots", "split", "category_id", "quartile"], ["pck", "dissimilarity_min",
                                                                                   "dissimilarity_max"])
    stats = per_cat.groupby(["label", "shots", "quartile"])["pck"]
    mean, q25, q75 = stats.mean(), stats.quantile(0.25), stats.quantile(0.75)
    curves: dict[int, dict[str, list]] = {}
    table = []
    for shots in shots_list:
        for label in labels:
            if (label, shots) not in mean.index.droplevel(2):
                continue
            qs = sorted(int(q) for q in mean.loc[(label, shots)].index)
            curves.setdefault(shots, {})[label] = [(q, mean[(label, shots, q)] * 100, q25[(label, shots, q)] * 100,
                                                    q75[(label, shots, q)] * 100) for q in qs]
            values = {q: mean[(label, shots, q)] * 100 for q in qs}
            table.append({"label": label, "shots": shots, "color": colors.get(label, "#888"),
                          "quartiles": [values.get(q) for q in range(1, 5)],
                          "drop": (values[4] - values[1]) if 1 in values and 4 in values else None})
    ranges = per_cat.groupby("quartile")[["dissimilarity_min", "dissimilarity_max"]].median()
    return {"figure": _quartile_figure(curves, colors), "table": table,
            "ranges": [{"q": int(q), "lo": float(r.dissimilarity_min), "hi": float(r.dissimilarity_max)}
                       for q, r in ranges.iterrows()]}


def _quartile_figure(curves, colors):
    plt = figures.pyplot()
    shots_list = sorted(curves)
    fig, axes = plt.subplots(1, len(shots_list), figsize=(4.3 * len(shots_list), 3.1), sharey=True, squeeze=False)
    for ax, shots in zip(axes[0], shots_list, strict=True):
        for label, pts in curves[shots].items():
            xs, ys, lo, hi = zip(*pts, strict=True)
            color = colors.get(label, "#888")
            ax.fill_between(xs, lo, hi, color=color, alpha=0.13, linewidth=0)
            ax.plot(xs, ys, marker="o", markersize=3.5, linewidth=1.6, color=color, label=label)
        ax.set_title(f"{shots}-shot", fontsize=10)
        ax.set_xticks([1, 2, 3, 4])
        ax.set_xticklabels(["Q1\nmost similar", "Q2", "Q3", "Q4\nleast similar"], fontsize=8)
        ax.set_xlim(0.8, 4.2)
        ax.set_ylim(0, 101)
        ax.set_xlabel("support–query pose dissimilarity (per-category quartile)", fontsize=8.5)
    axes[0][0].set_ylabel("PCK@0.2 (%)")
    handles, labels = [], []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5), frameon=False,
               bbox_to_anchor=(0.5, 1.08))
    fig.tight_layout()
    return figures.svg(fig, "PCK against support-query pose dissimilarity")


def _trends(trends, labels: list[str], shots_list: list[int], colors: dict[str, str]) -> dict | None:
    """CAPE-Synth factor trends (``synth:*`` factors of trends.csv): small multiples plus a slope table."""
    from cape_bench.analysis import SYNTH_PREFIX  # noqa: PLC0415

    tr = trends[trends["label"].isin(labels) & trends["factor"].astype(str).str.startswith(SYNTH_PREFIX)]
    if tr.empty:
        return None
    tr = tr.assign(factor=tr["factor"].str[len(SYNTH_PREFIX):])
    bins = _mean(tr, ["factor", "label", "shots", "bin"], ["pck", "factor_min", "factor_max"])
    slopes = _mean(tr.drop_duplicates(["factor", *CELL, "label"]), ["factor", "label", "shots"], ["slope"])
    columns = [(label, shots) for shots in shots_list for label in labels
               if not slopes[(slopes["label"] == label) & (slopes["shots"] == shots)].empty]
    table = []
    for factor, block in slopes.groupby("factor"):
        values = {(r.label, int(r.shots)): _pct(r.slope) for r in block.itertuples(index=False)}
        cells = [values.get(c) for c in columns]
        present = [abs(v) for v in cells if v is not None]
        table.append({"factor": factor, "cells": cells, "max_abs": max(present) if present else 0.0})
    table.sort(key=lambda r: -r["max_abs"])
    top_level = [r["factor"] for r in table if "." not in r["factor"]]
    shown = sorted(top_level[:_MAX_TREND_PANELS])
    figure = _trend_figure(bins, shown, labels, shots_list, colors) if shown else None
    return {"figure": figure, "shown": shown, "table": table,
            "columns": [{"label": lab, "shots": s, "color": colors.get(lab, "#888")} for lab, s in columns],
            "count": len(table), "nested": len(table) - len(top_level)}


def _trend_figure(bins, factors: list[str], labels: list[str], shots_list: list[int], colors: dict[str, str]):
    plt = figures.pyplot()
    ncols = min(5, len(factors))
    nrows = math.ceil(len(factors) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.55 * ncols, 2.2 * nrows + 0.4), sharey=True, squeeze=False)
    styles = ["-", "--", ":", "-."]
    for ax in axes.ravel()[len(factors):]:
        ax.set_visible(False)
    for ax, factor in zip(axes.ravel(), factors, strict=False):
        block = bins[bins["factor"] == factor]
        for label in labels:
            for i, shots in enumerate(shots_list):
                line = block[(block["label"] == label) & (block["shots"] == shots)].sort_values("bin")
                if line.empty:
                    continue
                ax.plot(line["bin"], line["pck"] * 100, marker="o", markersize=3, linewidth=1.3,
                        linestyle=styles[i % len(styles)], color=colors.get(label, "#888"),
                        label=f"{label} · {shots}-shot")
        ax.set_title(factor, fontsize=8.5)
        ax.set_xticks([1, 2, 3, 4])
        ax.set_xlim(0.7, 4.3)
        ax.set_ylim(0, 101)
        ax.tick_params(labelsize=7)
    for row in axes:
        row[0].set_ylabel("PCK@0.2 (%)", fontsize=8)
    fig.supxlabel("support–query difference (quantile bin within each category; 1 = most alike)", fontsize=8.5)
    handles, names = [], []
    for ax in axes.ravel():
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in names:
                handles.append(h)
                names.append(lab)
    height = 2.2 * nrows + 0.4
    fig.legend(handles, names, loc="upper center", ncol=min(len(names), 4), frameon=False,
               bbox_to_anchor=(0.5, 1.0 + 0.35 / height), fontsize=8)
    fig.tight_layout()
    return figures.svg(fig, "PCK against CAPE-Synth factors")


# --------------------------------------------------------------------------------------------- section
def build(runs: list[RunData], colors: dict[str, str]) -> dict:
    """Context of ``error_analysis.html.j2``."""
    from cape_bench.analysis import ANALYSIS_VERSION  # noqa: PLC0415

    tables, missing, versions = load_analysis(runs)
    stale = [{"run": run, "versions": sorted(v)} for run, v in versions.items() if v - {ANALYSIS_VERSION}]
    context = {
        "missing": missing, "stale": stale, "current_version": ANALYSIS_VERSION, "has_analysis": False,
        "probes": _probes(runs), "knob": _knob_table(runs),
        "error_order": [{"name": t, "color": ERROR_COLORS[t]} for t in ERROR_ORDER], "method_classes": [],
    }
    ebm = tables.get("errors_by_method.csv")
    if ebm is None or ebm.empty:
        return context
    order = [label for _, _, label in method_rows(runs)]
    perfect = perfect_labels(ebm)
    labels = [lab for lab in order if lab not in perfect and lab in set(ebm["label"])]
    shots_list = sorted(int(s) for s in ebm["shots"].unique())
    alphas = sorted({float(a) for t in tables.values() if "alpha" in t.columns for a in t["alpha"].dropna()})
    method_rows_ = _taxonomy_rows(ebm, order, colors)
    notes = []
    if "notes.csv" in tables:
        for rec in tables["notes.csv"].itertuples(index=False):
            text = f"{rec.table}: {rec.note}"
            notes.append(f"{rec.run} · {text}" if len(runs) > 1 else text)
    empty = _pd().DataFrame()
    esc = tables.get("errors_by_supercategory.csv", empty)
    ebc = tables.get("errors_by_category.csv", empty)
    var = tables.get("variation_by_category.csv", empty)
    amb = tables.get("ambiguity.csv", empty)
    pq = tables.get("pose_quartiles.csv", empty)
    trends = tables.get("trends.csv", empty)
    context.update({
        "has_analysis": True,
        "alpha": alphas[0] if len(alphas) == 1 else None,
        "alphas": alphas,
        "perfect": perfect,
        "labels": labels,
        "notes": notes,
        "method_rows": method_rows_,
        "method_figure": _method_figure(method_rows_) if method_rows_ else None,
        "supercategory_figure": (_supercategory_figure(esc, labels, shots_list, colors)
                                 if labels and not esc.empty else None),
        "supercategories": int(esc["supercategory"].nunique()) if not esc.empty else 0,
        "category_rows": _category_table(ebc, var if not var.empty else None, labels, colors)
        if labels and not ebc.empty else [],
        "categories": int(ebc[["split", "category_id"]].drop_duplicates().shape[0]) if not ebc.empty else 0,
        "polysemy": _polysemy_rows(amb, labels, colors) if not amb.empty else [],
        "spread": _spread_rows(var, labels, colors) if not var.empty else [],
        "quartiles": _quartiles(pq, labels, shots_list, colors) if labels and not pq.empty else None,
        "trends": _trends(trends, labels, shots_list, colors) if labels and not trends.empty else None,
        "method_classes": [colors.get(label, "#888") for label in labels],  # .m<i> of the per-category table
    })
    return context
