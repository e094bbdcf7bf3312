"""Controlled studies on CAPE-Synth: one generator knob swept, the same methods trained and evaluated per value.

``cape-bench study --knob polysemy --values 0,0.5,1`` makes a study directory ``out_dir/<name>/`` holding one
ordinary run directory per knob value (``<knob>-<value>/``: its own CAPE-Synth variant, generated and cached on
first use; every method trained on that variant with the same preset; evaluated, scored, analysed and reported
like any run), then reads only what those runs stored and writes:

``study.json``
    knob, values, methods, the floor, and each value's run directory.
``study.csv``
    one row per (value, method, split, shots): ``pck`` (PCK@0.2, the official per-pair mean), ``pck_polysemous,
    pck_unique, pck_gap`` (keypoint level, ``analysis/ambiguity.csv``), ``floor_pck`` (the floor method's PCK in the
    same run) and ``measurable`` (the method clears the floor by :data:`MEASURABLE_MARGIN`).
``gaps.csv``
    per (value, pair of methods) that the study compares (each ablation and CapeX against CapeNext):
    ΔPCK with its paired bootstrap interval and Wilcoxon p over episodes, from the run's ``paired.csv``.
``pose.csv``
    PCK per pose-dissimilarity quartile (1 = the most similar support), per value and method, pooled over
    categories (``analysis/pose_quartiles.csv``).
``study.html``
    the three figures and tables, self-contained.

A value whose learned methods do not clear the floor makes the study's answer there "not measurable": the study
says so instead of reading differences of methods that did not learn. Re-running the same command resumes: finished
cells of every run are kept. With ``run.executor = "ray"`` each run's cells go to Ray as in ``cape-bench run``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cape_bench.config import BenchConfig, ConfigError, load_config
from cape_bench.report.formatting import percent_text
from cape_bench.store import atomic_write_text, write_json

#: PCK@0.2 points a learned method must clear its floor by for a value's comparisons to mean anything
MEASURABLE_MARGIN = 0.10
#: the methods a study compares by default (CapeNext, CapeX and CapeNext's two ablations of bench.toml)
DEFAULT_METHODS = ("capex", "capenext", "capenext-no-class-text", "capenext-no-query-image")
#: the no-image floor of the text methods, added to every run
FLOOR = "text-prior"
#: the method every other one is compared against in ``gaps.csv``
REFERENCE = "capenext"
STUDY_FILE = "study.json"


@dataclass(frozen=True)
class StudyPlan:
    """What a study runs: one run directory per knob value."""

    root: Path
    knob: str
    values: tuple[float, ...]
    methods: tuple[str, ...]
    runs: tuple[Path, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"knob": self.knob, "values": list(self.values), "methods": list(self.methods), "floor": FLOOR,
                "reference": REFERENCE, "measurable_margin": MEASURABLE_MARGIN,
                "runs": [str(r) for r in self.runs]}


def value_label(knob: str, value: float) -> str:
    """The run-directory name of one knob value: ``polysemy-0.5``."""
    return f"{knob}-{value:g}"


def plan_study(cfg: BenchConfig, knob: str, values, methods, name: str) -> StudyPlan:
    """Check the knob, the values and the study name; place the runs under ``cfg.run.out_dir/name``."""
    from cape_bench.synth import Knobs  # noqa: PLC0415

    if cfg.dataset.name != "cape-synth" or cfg.dataset.ann_dir:
        raise ConfigError("a study sweeps a CAPE-Synth generator knob: dataset.name must be 'cape-synth' with no ann_dir")
    known = sorted(k for k, v in Knobs().to_dict().items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    if knob not in known:
        raise ConfigError(f"--knob {knob!r}: not a CAPE-Synth knob; known: {', '.join(known)}")
    if knob in cfg.synth.knobs:
        raise ConfigError(f"synth.knobs.{knob} is set in the config: the study sets it per value; remove it")
    values = tuple(float(v) for v in values)
    if len(values) < 2 or len(set(values)) != len(values):
        raise ConfigError(f"--values: at least two distinct values, got {list(values)}")
    if not methods:
        raise ConfigError("--methods: at least one method")
    if not name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConfigError(f"--name {name!r}: a plain folder name (letters, digits, '.', '_', '-')")
    for value in values:  # the generator refuses a value out of range before anything runs
        try:
            Knobs.from_dict({**cfg.synth.knobs, knob: value})
        except (KeyError, ValueError) as err:
            raise ConfigError(f"--values {value:g}: {err}") from None
    root = Path(cfg.run.out_dir) / name
    return StudyPlan(root, knob, values, tuple(methods), tuple(root / value_label(knob, v) for v in values))


def value_config(cfg: BenchConfig, plan: StudyPlan, value: float, config_path, overrides: list[str]) -> BenchConfig:
    """The configuration of one value's run: the study's, with the knob set, the floor added, placed in the study."""
    methods = [m for m in plan.methods if m != FLOOR] + [FLOOR]
    extra = [f"synth.knobs.{plan.knob}={json.dumps(value)}", f"run.methods={json.dumps(methods)}",
             f"run.out_dir={json.dumps(str(plan.root))}", f"run.name={json.dumps(value_label(plan.knob, value))}"]
    return load_config(config_path, [*overrides, *extra])


def run_study(config_path, overrides: list[str], knob: str, values, methods, name: str, console,
              show_progress: bool = True) -> tuple[StudyPlan, int]:
    """Run (or resume) every value's run, then summarise. Returns the plan and an exit status (1: a cell failed)."""
    from cape_bench.pipeline import run_and_report  # noqa: PLC0415

    cfg = load_config(config_path, overrides)
    plan = plan_study(cfg, knob, values, methods, name)
    plan.root.mkdir(parents=True, exist_ok=True)
    stored = plan.root / STUDY_FILE
    if stored.exists():
        previous = json.loads(stored.read_text())
        mine = plan.to_dict()
        if any(previous.get(k) != mine[k] for k in ("knob", "values", "methods")):
            raise ConfigError(f"{stored}: this study was started with knob {previous.get('knob')!r}, values "
                              f"{previous.get('values')}, methods {previous.get('methods')}; choose another --name")
    write_json(stored, plan.to_dict())
    status = 0
    for value in plan.values:
        console.rule(f"{plan.knob} = {value:g}")
        status = max(status, run_and_report(value_config(cfg, plan, value, config_path, overrides), console,
                                            show_progress=show_progress))
    summarize_study(plan.root, console)
    return plan, status


# ---------------------------------------------------------------------------------------------------------------- summary


def _pd():
    import pandas as pd  # noqa: PLC0415

    return pd


def summarize_study(root, console=None) -> dict[str, Any]:
    """Read every run of a study directory and write study.csv, gaps.csv, pose.csv and study.html."""
    pd = _pd()
    root = Path(root)
    plan = json.loads((root / STUDY_FILE).read_text())
    knob = plan["knob"]
    rows, gaps, pose = [], [], []
    for value, run_dir in zip(plan["values"], plan["runs"], strict=True):
        run_dir = Path(run_dir)
        if not (run_dir / "summary.csv").exists():
            continue  # a value that never got scored (interrupted before its first cell)
        summary = pd.read_csv(run_dir / "summary.csv")
        pck = summary[summary["metric"] == "PCK@0.2"].set_index(["method", "split", "shots"])["value"]
        amb_file = run_dir / "analysis" / "ambiguity.csv"
        amb = pd.read_csv(amb_file).set_index(["method", "split", "shots"]) if amb_file.exists() else None
        for (method, split, shots), value_pck in pck.items():
            if method == FLOOR:
                continue
            floor = pck.get((FLOOR, split, shots))
            row = {"knob": knob, "value": value, "method": method, "split": split, "shots": shots, "pck": value_pck,
                   "floor_pck": floor,
                   "measurable": bool(floor is not None and value_pck >= floor + MEASURABLE_MARGIN)}
            if amb is not None and (method, split, shots) in amb.index:
                a = amb.loc[(method, split, shots)]
                row.update(pck_polysemous=a["pck_polysemous"], pck_unique=a["pck_unique"], pck_gap=a["pck_gap"])
            rows.append(row)
        paired_file = run_dir / "paired.csv"
        if paired_file.exists():
            paired = pd.read_csv(paired_file)
            paired = paired[(paired["metric"] == "PCK@0.2") & (paired["method_a"] == REFERENCE)
                            & (paired["method_b"] != FLOOR)]
            for rec in paired.to_dict("records"):
                gaps.append({"knob": knob, "value": value, **rec})
        quart_file = run_dir / "analysis" / "pose_quartiles.csv"
        if quart_file.exists():
            q = pd.read_csv(quart_file)
            q = q[q["method"] != FLOOR]
            weighted = q.assign(w=q["pck"] * q["n_pairs"]).groupby(["method", "split", "shots", "quartile"])[
                ["w", "n_pairs"]].sum()
            for (method, split, shots, quartile), r in weighted.iterrows():
                pose.append({"knob": knob, "value": value, "method": method, "split": split, "shots": shots,
                             "quartile": quartile, "n_pairs": int(r["n_pairs"]),
                             "pck": r["w"] / r["n_pairs"] if r["n_pairs"] else float("nan")})
    tables = {"study.csv": pd.DataFrame(rows), "gaps.csv": pd.DataFrame(gaps), "pose.csv": pd.DataFrame(pose)}
    for file, frame in tables.items():
        atomic_write_text(root / file, frame.to_csv(index=False))
    atomic_write_text(root / "study.html", render_study(plan, tables))
    if console is not None:
        print_study(console, plan, tables)
    return tables


def verdict(study, gaps) -> list[str]:
    """One sentence per knob value: not measurable, or what the CapeNext comparisons say (resolved or not)."""
    lines = []
    for value, group in study.groupby("value", sort=True) if len(study) else []:
        unmeasurable = sorted(group.loc[~group["measurable"].astype(bool), "method"])
        if unmeasurable:
            lines.append(f"{value:g}: not measurable: {', '.join(unmeasurable)} below {FLOOR} + "
                         f"{MEASURABLE_MARGIN * 100:.0f} PCK points")
            continue
        parts = []
        for rec in gaps[gaps["value"] == value].to_dict("records") if len(gaps) else []:
            word = "resolved" if rec["resolved"] else "unresolved"
            parts.append(f"{REFERENCE} − {rec['method_b']}: {rec['delta'] * 100:+.1f} [{rec['ci95_low'] * 100:+.1f}, "
                         f"{rec['ci95_high'] * 100:+.1f}], p = {rec['p_value']:.2g} ({word})")
        lines.append(f"{value:g}: " + ("; ".join(parts) if parts else "no paired comparison stored"))
    return lines


def print_study(console, plan: dict, tables: dict) -> None:
    from rich.table import Table  # noqa: PLC0415

    study = tables["study.csv"]
    table = Table(title=f"study: {plan['knob']} (PCK@0.2 %, polysemous / unique keypoints)", title_justify="left")
    for column in ("value", "method", "PCK", "polysemous", "unique", FLOOR):
        table.add_column(column)
    for rec in study.to_dict("records"):
        table.add_row(f"{rec['value']:g}", rec["method"], f"{rec['pck'] * 100:.1f}" + ("" if rec["measurable"] else " ✗"),
                      percent_text(rec.get("pck_polysemous")), percent_text(rec.get("pck_unique")), percent_text(rec.get("floor_pck")))
    console.print(table)
    for line in verdict(study, tables["gaps.csv"]):
        console.print(f"  {plan['knob']} = {line}")


def render_study(plan: dict, tables: dict) -> str:
    """study.html: the figures (inline SVG) and the verdict, from the study's tables only."""
    from jinja2 import Environment, PackageLoader, select_autoescape  # noqa: PLC0415

    from cape_bench.report import figures  # noqa: PLC0415

    study, gaps, pose = tables["study.csv"], tables["gaps.csv"], tables["pose.csv"]
    methods = sorted(set(study["method"])) if len(study) else []
    colors = figures.method_colors(methods)
    svgs = []
    if len(study):
        plt = figures.pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=True)
        for ax, column, title in ((axes[0], "pck_polysemous", "polysemous keypoints"),
                                  (axes[1], "pck_unique", "unique keypoints")):
            for method in methods:
                part = study[study["method"] == method].sort_values("value")
                if column in part:
                    ax.plot(part["value"], part[column] * 100, marker="o", color=colors[method], label=method)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel(plan["knob"])
        axes[0].set_ylabel("PCK@0.2 (%)")
        axes[1].legend(fontsize=7)
        svgs.append(figures.svg(fig, f"PCK on polysemous vs unique keypoints against {plan['knob']}"))
    if len(gaps):
        plt = figures.pyplot()
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for method in sorted(set(gaps["method_b"])):
            part = gaps[gaps["method_b"] == method].sort_values("value")
            delta = part["delta"] * 100
            ax.errorbar(part["value"], delta, yerr=[delta - part["ci95_low"] * 100, part["ci95_high"] * 100 - delta],
                        marker="o", capsize=3, color=colors.get(method, "#555"), label=f"{REFERENCE} − {method}")
        ax.axhline(0, color="#999", linewidth=0.8)
        ax.set_xlabel(plan["knob"])
        ax.set_ylabel("ΔPCK@0.2 (points, 95 % CI)")
        ax.legend(fontsize=7)
        svgs.append(figures.svg(fig, f"{REFERENCE} against each compared method, per {plan['knob']} value"))
    if len(pose):
        plt = figures.pyplot()
        values = sorted(set(pose["value"]))
        fig, axes = plt.subplots(1, len(values), figsize=(3 * len(values), 3), sharey=True, squeeze=False)
        for ax, value in zip(axes[0], values, strict=True):
            for method in methods:
                part = pose[(pose["value"] == value) & (pose["method"] == method)].sort_values("quartile")
                ax.plot(part["quartile"], part["pck"] * 100, marker="o", color=colors[method], label=method)
            ax.set_title(f"{plan['knob']} = {value:g}", fontsize=9)
            ax.set_xlabel("pose-dissimilarity quartile")
        axes[0][0].set_ylabel("PCK@0.2 (%)")
        axes[0][-1].legend(fontsize=7)
        svgs.append(figures.svg(fig, "PCK against support–query pose dissimilarity"))
    env = Environment(loader=PackageLoader("cape_bench.report", "templates"), autoescape=select_autoescape())
    return env.get_template("study.html.j2").render(
        plan=plan, figures=svgs, verdict=verdict(study, gaps) if len(study) else [],
        rows=study.to_dict("records"), margin=MEASURABLE_MARGIN * 100, floor=FLOOR, pct=percent_text)
