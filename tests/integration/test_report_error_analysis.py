"""The report's "Error analysis" section: taxonomy, polysemy gap, probes, spread, pose and CAPE-Synth trends."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cape_bench.analysis import NOT_APPLICABLE
from cape_bench.cli import main
from cape_bench.report import SECTIONS, build_report
from cape_bench.report import error_analysis as ea
from cape_bench.report.runs import RunData, load_runs
from tests.helpers import write_tiny_mp100

SECTION_ID = "error-analysis"


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory) -> Path:
    """support-copy and oracle on 3 tiny categories, splits 1–2, 1- and 5-shot, scored with analysis tables."""
    base = tmp_path_factory.mktemp("ea")
    root = write_tiny_mp100(base / "data", splits=(1, 2))
    status = main(["run", "--ann-dir", str(root / "annotations"), "--methods", "support-copy,oracle",
                   "--splits", "1,2", "--shots", "1,5", "--num-episodes", "4", "--out-dir", str(base / "runs"),
                   "--name", "tiny", "--quiet", "--set", "run.report=false"])
    assert status == 0
    run_dir = base / "runs" / "tiny"
    assert main(["score", str(run_dir)]) == 0
    assert (run_dir / "analysis" / "errors_by_method.csv").is_file()
    return run_dir


class Tables(HTMLParser):
    """Text of the error-analysis section, and the cell texts of each of its tables by id."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text = ""
        self.tables: dict[str, list[list[str]]] = {}
        self.headings: list[str] = []
        self.nav: list[str] = []
        self._in = False
        self._table: str | None = None
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and (a.get("href") or "").startswith("#"):
            self.nav.append(a["href"][1:])
        if tag == "section":
            self._in = a.get("id") == SECTION_ID
        if not self._in:
            return
        if tag == "table":
            self._table = a.get("id") or f"table-{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []
        elif tag == "h3":
            self._heading = []

    def handle_endtag(self, tag):
        if tag == "section":
            self._in = False
        elif tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "h3" and self._heading is not None:
            self.headings.append(" ".join("".join(self._heading).split()))
            self._heading = None

    @property
    def flat(self) -> str:
        """The section's text with whitespace runs collapsed."""
        return " ".join(self.text.split())

    def handle_data(self, data):
        if not self._in:
            return
        self.text += data
        if self._cell is not None:
            self._cell.append(data)
        if self._heading is not None:
            self._heading.append(data)


def render(run_dirs: list[Path], out: Path) -> Tables:
    html = build_report(run_dirs, out).read_text(encoding="utf-8")
    page = Tables()
    page.feed(html)
    return page


def body(page: Tables, table: str) -> list[list[str]]:
    rows = page.tables[table]
    return [r for r in rows[1:] if r]


@pytest.fixture(scope="module")
def page(scored_run, tmp_path_factory) -> Tables:
    return render([scored_run], tmp_path_factory.mktemp("html") / "tiny.html")


# ------------------------------------------------------------------------------------------------ the section


def test_section_is_registered_and_linked(page):
    assert (SECTION_ID, "Error analysis", "error_analysis") in SECTIONS
    assert SECTION_ID in page.nav
    for heading in ("Error taxonomy per method", "Per supercategory and per category", "Polysemy gap",
                    "Text probes: ΔPCK", "Spread and sensitivity", "PCK against pose dissimilarity"):
        assert heading in page.headings, heading
    assert "CAPE-Synth factor trends" not in page.headings  # an MP-100-format run has no generator factors
    assert "run `cape-bench score" not in page.flat and "has no error-analysis tables" not in page.flat


def test_taxonomy_table_matches_the_analysis_tables(page, scored_run):
    ebm = pd.read_csv(scored_run / "analysis" / "errors_by_method.csv")
    rows = body(page, "taxonomy-table")
    assert len(rows) == ebm.groupby(["method", "shots"]).ngroups == 4
    for method in ("support-copy", "oracle"):
        for shots in (1, 5):
            sel = ebm[(ebm["method"] == method) & (ebm["shots"] == shots)]
            row = next(r for r in rows if r[0] == method and r[1] == str(shots))
            assert row[2] == "2"  # splits
            assert row[3] == f"{int(sel['scored'].sum()):,}"
            shown = [float(v) for v in row[4:9]]
            expected = [sel[t].mean() * 100 for t in ("good", "jitter", "inversion", "swap", "miss")]
            assert shown == pytest.approx(expected, abs=0.051)
            assert sum(shown) == pytest.approx(100, abs=0.3)
    oracle = [r for r in rows if r[0] == "oracle"]
    assert all(r[4] == "100.0" for r in oracle)
    # support-copy copies the support's keypoints: it cannot be perfect on random similarity transforms
    assert any(float(r[4]) < 100 for r in rows if r[0] == "support-copy")
    assert "oracle scores every keypoint good" in page.flat


def test_per_category_table_leaves_the_oracle_out(page, scored_run):
    ebc = pd.read_csv(scored_run / "analysis" / "errors_by_category.csv")
    var = pd.read_csv(scored_run / "analysis" / "variation_by_category.csv")
    rows = body(page, "ea-category-table")
    sc = ebc[ebc["method"] == "support-copy"]
    assert len(rows) == len(sc) == 3 * 2 * 2  # categories × splits × shots
    assert {r[3] for r in rows} == {"support-copy"}
    # the category name present in both splits gets its split
    assert {r[1] for r in rows} == {f"thing_{c} (split {s})" for c in (1, 2, 3) for s in (1, 2)}
    rec = sc.iloc[0]
    v = var[(var["method"] == "support-copy") & (var["split"] == rec["split"]) & (var["shots"] == rec["shots"])
            & (var["category_id"] == rec["category_id"])].iloc[0]
    row = next(r for r in rows if r[1] == f"{rec['category']} (split {rec['split']})" and r[4] == str(rec["shots"]))
    assert float(row[6]) == pytest.approx(rec["good"] * 100, abs=0.051)
    assert float(row[9]) == pytest.approx(rec["swap"] * 100, abs=0.051)
    assert float(row[11]) == pytest.approx(v["pck"] * 100, abs=0.051)
    assert float(row[13]) == pytest.approx(np.sqrt(v["support_var"]) * 100, abs=0.051)


def test_polysemy_spread_and_quartile_tables(page, scored_run):
    amb = pd.read_csv(scored_run / "analysis" / "ambiguity.csv")
    poly = body(page, "polysemy-table")
    assert [r[0] for r in poly] == ["support-copy", "support-copy"]  # the oracle is left out
    sel = amb[(amb["method"] == "support-copy") & (amb["shots"] == 1)]
    row = next(r for r in poly if r[1] == "1")
    assert row[2] == f"{int(sel['n_polysemous'].sum()):,} / {int(sel['n_unique'].sum()):,}"
    gap = sel["pck_gap"].mean() * 100
    assert float(row[5]) == pytest.approx(gap, abs=0.051)
    spread = body(page, "spread-table")
    assert [(r[0], r[1]) for r in spread] == [("support-copy", "1"), ("support-copy", "5")]
    assert all(r[2] == "6" for r in spread)  # 3 categories × 2 splits
    pq = pd.read_csv(scored_run / "analysis" / "pose_quartiles.csv")
    quart = body(page, "quartile-table")
    q1 = pq[(pq["method"] == "support-copy") & (pq["shots"] == 5) & (pq["quartile"] == 1)]
    row = next(r for r in quart if r[1] == "5")
    assert float(row[2]) == pytest.approx(q1["pck"].mean() * 100, abs=0.051)
    for meaning in ("Query spread", "Support spread", "Pose slope", "polysemous", "Pose dissimilarity of a pair"):
        assert meaning in page.flat


def test_a_run_without_analysis_renders_with_the_note(scored_run, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(scored_run, bare)
    shutil.rmtree(bare / "analysis")
    page = render([bare], tmp_path / "bare.html")
    assert "has no error-analysis tables" in page.flat
    assert f"cape-bench score {bare}" in page.flat
    assert "Error taxonomy per method" not in page.headings
    assert "Text probes: ΔPCK" in page.headings  # probes are read from the score tables, not analysis/


def test_stale_analysis_version_is_flagged(scored_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(scored_run, old)
    path = old / "analysis" / "errors_by_method.csv"
    path.write_text(path.read_text().replace("analysis-1,", "analysis-0,"))
    page = render([old], tmp_path / "old.html")
    assert "analysis tables of version analysis-0" in page.flat


# ------------------------------------------------------------------------------------------------ probes


def _edit_run(src: Path, dst: Path, config: dict | None = None, reads_text: bool = True) -> Path:
    shutil.copytree(src, dst)
    meta = json.loads((dst / "run.json").read_text())
    for key, value in (config or {}).items():
        target = meta["config"]
        *parents, leaf = key.split(".")
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = value
    (dst / "run.json").write_text(json.dumps(meta))
    for cell in (dst / "cells").glob("*/*.json"):
        rec = json.loads(cell.read_text())
        rec["info"]["reads_text"] = reads_text
        cell.write_text(json.dumps(rec))
    return dst


def test_probe_between_runs(scored_run, tmp_path):
    regular = _edit_run(scored_run, tmp_path / "regular")
    probe = _edit_run(scored_run, tmp_path / "synonyms", {"dataset.text_variant": "synonyms"})
    summary = pd.read_csv(probe / "summary.csv")
    hit = (summary["method"] == "support-copy") & (summary["metric"] == "PCK@0.2")
    summary.loc[hit, "value"] = summary.loc[hit, "value"] - 0.1  # the probe costs 10 points
    summary.to_csv(probe / "summary.csv", index=False)
    runs = load_runs([regular, probe])
    pairs = ea.probe_run_pairs(runs)
    assert [(a.label, b.label, what) for a, b, what in pairs] == [("regular", "synonyms", "text variant 'synonyms'")]
    assert ea.probe_variants(runs[0]) == ([], [])
    page = render([regular, probe], tmp_path / "probe.html")
    rows = body(page, "probe-table")
    sc = [r for r in rows if r[0] == "support-copy"]
    assert [r[4] for r in sc] == ["1", "5"]
    assert all(r[1:4] == ["regular", "synonyms", "text variant 'synonyms'"] for r in sc)
    assert all(float(r[8]) == pytest.approx(-10.0, abs=0.006) and r[9] == "ok" for r in sc)
    assert "Rule used here: between runs" in page.flat


def test_probe_needs_identical_configs_and_a_text_reader(scored_run, tmp_path):
    regular = _edit_run(scored_run, tmp_path / "regular", reads_text=False)
    typo = _edit_run(scored_run, tmp_path / "typo", {"dataset.text_variant": "typo"}, reads_text=False)
    other = _edit_run(scored_run, tmp_path / "other", {"dataset.text_variant": "typo", "run.seed": 7})
    page = render([regular, typo], tmp_path / "na.html")
    rows = body(page, "probe-table")
    assert rows and all(r[8] == "—" and r[9] == NOT_APPLICABLE for r in rows)
    page = render([regular, other], tmp_path / "none.html")
    assert "probe-table" not in page.tables
    assert "No probe in this report" in page.flat


def _run_data(methods: dict, cells: list[dict] | None = None) -> RunData:
    meta = {"config": {"run": {"methods": list(methods)}, "methods": methods}, "dataset": {"name": "mp100"}}
    cells = cells if cells is not None else [
        {"method": m, "split": 1, "shots": 1, "info": {"reads_text": True}, "provenance": {}} for m in methods]
    run = RunData(path=Path("/nonexistent"), label="r", meta=meta, categories={}, cells=cells, tables={})
    run.display = {m: m for m in methods}
    return run


def test_probe_variants_inside_one_run():
    base = {"method": "", "preset": "quick", "batch_size": 0, "options": {"use_category_text": True}}
    wrong = {**base, "method": "capenext", "batch_size": 8,
             "options": {"use_category_text": True, "wrong_class_name": True, "wrong_class_pool": "all"}}
    ablation = {**base, "method": "capenext", "options": {"use_category_text": False}}
    run = _run_data({"capenext": base, "capenext-wrong-class": wrong, "capenext-no-text": ablation})
    assert ea.probe_variants(run) == ([("capenext", "capenext-wrong-class", "wrong class name")], [])
    # also changes a setting beyond the probe: not a probe pair, and the section says why
    changed = {**wrong, "preset": "full"}
    found, notes = ea.probe_variants(_run_data({"capenext": base, "capenext-wrong-class": changed}))
    assert found == [] and "differ" in notes[0]
    # recognised from the cells' provenance alone, by the label prefix
    cells = [{"method": "capenext", "provenance": {"class_text": "ground-truth category name"}},
             {"method": "capenext-wc", "provenance": {"class_text": "wrong class name (probe; pool 'all', 100 names)"}}]
    run = _run_data({"capenext": {}, "capenext-wc": {}}, cells)
    assert ea.probe_variants(run)[0] == [("capenext", "capenext-wc", "wrong class name")]
    # a variant without its base method in the run has nothing to compare with
    assert ea.probe_variants(_run_data({"capenext-wrong-class": wrong})) == ([], [])


def test_probe_variant_delta_inside_one_run(scored_run, tmp_path):
    run_dir = _edit_run(scored_run, tmp_path / "variants", {
        "methods": {"support-copy-wrong-class": {"method": "support-copy", "options": {"wrong_class_name": True}},
                    "support-copy": {"method": "", "options": {}}},
        "run.methods": ["support-copy", "support-copy-wrong-class", "oracle"]})
    for folder in ("cells", "predictions"):  # the variant's stored outputs: a copy of support-copy's
        shutil.copytree(run_dir / folder / "support-copy", run_dir / folder / "support-copy-wrong-class")
    for cell in (run_dir / "cells" / "support-copy-wrong-class").glob("*.json"):
        rec = json.loads(cell.read_text())
        cell.write_text(json.dumps({**rec, "method": "support-copy-wrong-class"}))
    for table in ("summary.csv", "intervals.csv", "per_category.csv", "per_keypoint.csv"):
        frame = pd.read_csv(run_dir / table)
        variant = frame[frame["method"] == "support-copy"].assign(method="support-copy-wrong-class")
        if table == "summary.csv":
            variant.loc[variant["metric"] == "PCK@0.2", "value"] -= 0.05
        pd.concat([frame, variant]).to_csv(run_dir / table, index=False)
    page = render([run_dir], tmp_path / "variants.html")
    rows = body(page, "probe-table")
    assert [r[0] for r in rows] == ["support-copy-wrong-class vs support-copy"] * 2
    assert all(float(r[8]) == pytest.approx(-5.0, abs=0.006) and r[9] == "ok" for r in rows)
    assert "Rule used here: inside a run" in page.flat


def test_polysemy_knob_table_across_synth_runs(scored_run, tmp_path):
    """Runs labelled CAPE-Synth with different polysemy knobs get the knob table (same predictions: slope 0)."""
    dirs = []
    for value in (0.2, 0.8):
        run_dir = _edit_run(scored_run, tmp_path / f"poly{value}", {"synth.knobs": {"polysemy": value}})
        meta = json.loads((run_dir / "run.json").read_text())
        meta["dataset"].update(name="cape-synth", generated={"seed": 0, "polysemy": value})
        (run_dir / "run.json").write_text(json.dumps(meta))
        dirs.append(run_dir)
    page = render(dirs, tmp_path / "knob.html")
    assert "PCK against CAPE-Synth's polysemy knob" in page.headings
    rows = body(page, "knob-table")
    assert len(rows) == 2 * 2 * 2 * 2  # knob values × methods × splits × shots
    assert {r[0] for r in rows} == {"0.2", "0.8"} and {r[1] for r in rows} == {"poly0.2", "poly0.8"}
    assert all(r[9] in ("+0.0", "-0.0") for r in rows)
    one = render(dirs[:1], tmp_path / "one.html")
    assert "PCK against CAPE-Synth's polysemy knob" not in one.headings


# ------------------------------------------------------------------------------------------------ pure parts


def test_perfect_labels():
    frame = pd.DataFrame({"label": ["a", "a", "b", "b"], "good": [1.0, 1.0, 1.0, 0.99]})
    assert ea.perfect_labels(frame) == ["a"]


def test_synth_trends_plot_top_level_factors_and_list_all():
    rows = []
    for factor, slope in (("synth:flipped", -0.2), ("synth:scale", 0.01), ("synth:pose.tail", -0.05),
                          ("pose_dissimilarity", -0.3)):
        for split in (1, 2):
            for b in (1, 2, 3, 4):
                rows.append({"label": "m", "method": "m", "split": split, "shots": 1, "factor": factor, "bin": b,
                             "n_pairs": 10, "factor_min": b, "factor_max": b + 1, "pck": 0.8 + slope * b,
                             "slope": slope})
    out = ea._trends(pd.DataFrame(rows), ["m"], [1], {"m": "#123456"})
    assert out["shown"] == ["flipped", "scale"]  # pose.* is a per-family parameter: table only
    # steepest first; pose_dissimilarity is not a generator factor
    assert [r["factor"] for r in out["table"]] == ["flipped", "pose.tail", "scale"]
    assert out["table"][0]["cells"] == [pytest.approx(-20.0)]
    assert out["nested"] == 1 and out["count"] == 3
    assert "<svg" in str(out["figure"]) and "flipped" in str(out["figure"])
    assert ea._trends(pd.DataFrame(rows[-8:]), ["m"], [1], {}) is None  # only pose_dissimilarity: no synth factors
