"""Run directories → the tables a report or a paper table reads, with the checks that combining runs needs.

Only stored files are read (run.json, cells/, the score tables); no model runs. Several runs can be
combined when they share a protocol version, a metric version and a dataset; anything else is refused
with a message that names the runs (a number measured under another protocol is not the same number).
A method that appears in more than one run gets the run name appended, so rows never merge silently.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cape_bench.config import ConfigError
from cape_bench.store import RunDir

# Score tables written by ``cape-bench score`` (cape_bench/scoring.py).
TABLES = ("summary.csv", "intervals.csv", "ceiling.csv", "per_category.csv", "per_keypoint.csv")


class ReportError(ConfigError):
    """Run directories that cannot be reported together (or at all); the message names the runs.

    A :class:`~cape_bench.config.ConfigError` subclass so that ``cape-bench report`` / ``tables``
    print it as a one-line error (exit status 2) instead of a traceback.
    """


@dataclass
class RunData:
    """One run directory as the report sees it.

    Attributes:
        path: the run directory. label: its name, unique among the runs of one report.
        meta: run.json. categories: category id → name, supercategory, keypoint names, descriptions,
            skeleton (all splits). cells: finished-cell records (cells/*/*.json).
        tables: score table name → DataFrame (only those asked for).
        display: stored method name → name shown in the report (run label appended on a clash).
    """

    path: Path
    label: str
    meta: dict[str, Any]
    categories: dict[int, dict]
    cells: list[dict]
    tables: dict[str, Any]
    display: dict[str, str] = field(default_factory=dict)

    @property
    def dataset(self) -> str:
        return str((self.meta.get("dataset") or {}).get("name", "?"))

    def cell(self, method: str, split: int, shots: int) -> dict | None:
        for rec in self.cells:
            if rec["method"] == method and int(rec["split"]) == int(split) and int(rec["shots"]) == int(shots):
                return rec
        return None

    def methods(self) -> list[str]:
        """Stored method names in the order the config lists them, then any others."""
        order = list((self.meta.get("config") or {}).get("run", {}).get("methods") or [])
        present = {rec["method"] for rec in self.cells}
        present |= set(self.tables["summary.csv"]["method"]) if "summary.csv" in self.tables else set()
        return [m for m in order if m in present] + sorted(present - set(order))


def comparability(meta: dict) -> tuple[bool, str]:
    """Whether a run's numbers can be set beside published MP-100 numbers, and if not, why.

    Returns:
        (True, "") or (False, a sentence saying why no comparison is made).
    """
    dataset = (meta.get("dataset") or {}).get("name")
    config = meta.get("config") or {}
    if dataset != "mp100":
        return False, (f"the dataset is {dataset}, not MP-100: published numbers are measured on MP-100, "
                       "so no comparison is made")
    if not meta.get("official_protocol", False):
        proto = config.get("protocol") or {}
        return False, ("the protocol was shortened (num_episodes="
                       f"{proto.get('num_episodes')}, num_queries={proto.get('num_queries')}; official: 200 episodes "
                       "× 15 queries per category), so no difference to published numbers is computed")
    ds_cfg = config.get("dataset") or {}
    if ds_cfg.get("categories"):
        return False, ("the run is restricted to some categories, so its split means are not the published "
                       "split means; no difference is computed")
    if (meta.get("dataset") or {}).get("subset", "test") != "test":
        return False, "the run evaluates the val subset; published numbers are on test, so no difference is computed"
    return True, ""


def _labels(paths: list[Path]) -> list[str]:
    """Run names (directory names), made unique with the parent folder where two runs share a name."""
    names = [p.resolve().name for p in paths]
    counts = Counter(names)
    out = []
    for p, n in zip(paths, names, strict=True):
        out.append(f"{p.resolve().parent.name}/{n}" if counts[n] > 1 else n)
    if len(set(out)) != len(out):  # the same directory given twice
        dup = sorted({o for o in out if out.count(o) > 1})
        raise ReportError(f"the same run directory is given more than once: {', '.join(dup)}")
    return out


def load_runs(run_dirs: list[Path | str], tables: tuple[str, ...] = TABLES) -> list[RunData]:
    """Read run directories and check that they can be combined.

    Args:
        run_dirs: one or more run directories (each with run.json and the score tables).
        tables: which score tables to read.

    Raises:
        FileNotFoundError: not a run directory, or not scored yet (the message says which command fixes it).
        ReportError: runs with different protocol or metric versions, or different datasets.
    """
    import pandas as pd  # noqa: PLC0415

    if not run_dirs:
        raise ReportError("no run directory given")
    paths = [Path(p) for p in run_dirs]
    runs = []
    for path, label in zip(paths, _labels(paths), strict=True):
        rd = RunDir(path)
        meta = rd.read_run_json()
        frames = {}
        for name in tables:
            file = rd.table(name)
            if not file.exists():
                raise FileNotFoundError(f"{path}: {name} is missing; score the run first: cape-bench score {path}")
            frames[name] = pd.read_csv(file)
        runs.append(RunData(path=path, label=label, meta=meta, categories=rd.categories(),
                            cells=rd.finished_cells(), tables=frames))
    check_combinable(runs)
    assign_display_names(runs)
    return runs


def check_combinable(runs: list[RunData]) -> None:
    """Refuse runs whose numbers do not mean the same thing (protocol, metric, dataset)."""
    if len(runs) < 2:
        return
    for key, what in (("protocol_version", "protocol versions"), ("metric_version", "metric versions")):
        values = {r.label: r.meta.get(key) for r in runs}
        if len(set(values.values())) > 1:
            listing = ", ".join(f"{label} ({key} {value})" for label, value in values.items())
            raise ReportError(
                f"refusing to combine runs with different {what}: {listing}. Their numbers are not measured the "
                "same way; report them separately or re-run them with one cape-bench version."
            )
    datasets = {r.label: r.dataset for r in runs}
    if len(set(datasets.values())) > 1:
        listing = ", ".join(f"{label} ({ds})" for label, ds in datasets.items())
        raise ReportError(f"refusing to combine runs on different datasets: {listing}; report them separately.")


def assign_display_names(runs: list[RunData]) -> None:
    """The name each stored method gets: itself, or ``"method (run)"`` when several runs hold it."""
    counts = Counter(m for r in runs for m in r.methods())
    for r in runs:
        r.display = {m: (f"{m} ({r.label})" if counts[m] > 1 else m) for m in r.methods()}


def method_rows(runs: list[RunData]) -> list[tuple[RunData, str, str]]:
    """(run, stored method, display name) for every method row, in report order."""
    return [(r, m, r.display[m]) for r in runs for m in r.methods()]


def backbone_of(run: RunData, method: str) -> str:
    """The backbone a method's cells record in their provenance (``"backbone"``), else ``"—"``."""
    found = []
    for rec in run.cells:
        if rec["method"] == method:
            value = (rec.get("provenance") or {}).get("backbone")
            if value and str(value) not in found:
                found.append(str(value))
    return " / ".join(found) if found else "—"


def text_encoder_of(run: RunData, method: str) -> str | None:
    """The text encoder a method's provenance names (``text_encoder`` or a nested ``encoder``), else None."""
    for rec in run.cells:
        if rec["method"] != method:
            continue
        prov = rec.get("provenance") or {}
        value = prov.get("text_encoder")
        if isinstance(value, dict):
            value = value.get("encoder") or value.get("name")
        if value:
            return str(value)
        for item in prov.values():
            if isinstance(item, dict) and item.get("encoder"):
                return str(item["encoder"])
    return None


def reads_ground_truth_of(run: RunData, method: str) -> bool:
    """Whether the method's cells read the query ground truth (``oracle``: a reference, never "best")."""
    return any((rec.get("info") or {}).get("reads_query_ground_truth") for rec in run.cells if rec["method"] == method)


def extra_inputs_of(run: RunData, method: str) -> list[str]:
    """Inputs beyond the support set that the method's cells declare (``info.extra_inputs``)."""
    out: list[str] = []
    for rec in run.cells:
        if rec["method"] == method:
            for item in (rec.get("info") or {}).get("extra_inputs") or []:
                if item not in out:
                    out.append(str(item))
    return out
