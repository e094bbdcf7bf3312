"""``cape-bench report`` and ``cape-bench tables``: sections, self-containment, size, formats, refusals, rendering."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cape_bench import registry
from cape_bench.cli import main
from cape_bench.report import SECTIONS, build_report, default_report_path, reports_dir
from cape_bench.report.paper_tables import render_tables
from cape_bench.report.published import load_published, matching_rows
from cape_bench.report.runs import ReportError
from tests.helpers import write_tiny_mp100

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SIZE_BUDGET = 10 * 1024 * 1024


# ------------------------------------------------------------------------------------------------ fixtures


def _run(root: Path, out_dir: Path, name: str, *, methods: str, splits: str, shots: str = "1,5") -> Path:
    status = main(["run", "--ann-dir", str(root / "annotations"), "--images", str(root / "images"),
                   "--methods", methods, "--splits", splits, "--shots", shots, "--num-episodes", "3",
                   "--out-dir", str(out_dir), "--name", name, "--quiet", "--set", "run.report=false"])
    assert status == 0
    return out_dir / name


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """support-copy and oracle on 3 tiny categories with images, splits 1–2, 1- and 5-shot, 3 episodes each."""
    base = tmp_path_factory.mktemp("report")
    root = write_tiny_mp100(base / "data", images=True, splits=(1, 2))
    return _run(root, base / "runs", "tiny", methods="support-copy,oracle", splits="1,2")


@pytest.fixture(scope="module")
def tiny_report(tiny_run, tmp_path_factory) -> tuple[Path, str]:
    path = build_report([tiny_run], tmp_path_factory.mktemp("html") / "tiny.html")
    return path, path.read_text(encoding="utf-8")


class Page(HTMLParser):
    """Every start tag with its attributes, plus the text of each section."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.sections: dict[str, str] = {}
        self._section: str | None = None
        self._depth = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "section":
            self._section = a.get("id")
            self.sections[self._section] = ""
        self._depth += tag == "section"

    def handle_endtag(self, tag):
        if tag == "section":
            self._section = None

    def handle_data(self, data):
        if self._section:
            self.sections[self._section] += data

    def find(self, tag: str, **attrs) -> list[dict]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]

    def with_class(self, tag: str, cls: str) -> list[dict]:
        return [a for t, a in self.tags if t == tag and cls in (a.get("class") or "").split()]


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def assert_self_contained(html: str) -> None:
    """No URL that a browser would fetch: only in-page anchors and data: URIs; no stylesheet link, script src."""
    page = parse(html)
    fetched = ("src", "href", "xlink:href", "srcset", "poster", "data", "action", "background")
    for tag, attrs in page.tags:
        for key in fetched:
            value = (attrs.get(key) or "").strip()
            if not value:
                continue
            assert not re.match(r"(?i)^(https?:|//|ftp:|file:)", value), f"<{tag} {key}={value[:80]}> is external"
            assert value.startswith(("#", "data:")), f"<{tag} {key}={value[:80]}> points to a file"
        if tag == "link":
            assert "stylesheet" not in (attrs.get("rel") or ""), f"<link {attrs}> loads a stylesheet"
        if tag == "script":
            assert "src" not in attrs, "external script"
    assert "@import" not in html
    for url in re.findall(r"url\(([^)]*)\)", html):
        assert url.strip("'\" ").startswith(("#", "data:")), f"CSS url({url}) is external"


# ------------------------------------------------------------------------------------------------ report


def test_report_has_every_section(tiny_report):
    _, html = tiny_report
    page = parse(html)
    assert [s[0] for s in SECTIONS] == list(page.sections)
    for anchor, title, _ in SECTIONS:
        assert page.find("a", href=f"#{anchor}"), f"navigation lacks {title}"
        assert page.sections[anchor].strip(), f"section {anchor} is empty"
    prov = page.sections["provenance"]
    for fact in ("config sha256", "git", "protocol version", "metric version", "device", "numpy", "support-copy",
                 "none (no parameters)", "every cell of the grid finished"):
        assert fact in prov, fact
    headline = page.sections["headline"]
    assert "1-shot" in headline and "5-shot" in headline and "protocol ceiling" in headline
    assert re.search(r"\[\d+\.\d\d, \d+\.\d\d\]", headline), "bootstrap interval missing"
    assert "protocol was shortened" in headline  # --num-episodes 3: no comparison with published numbers
    assert len(page.find("svg")) >= 2  # threshold and category charts, inline
    assert page.find("table", id="category-table") and page.with_class("td", "best") and page.with_class("td", "worst")
    assert len(page.find("details")) >= 6  # a per-keypoint table per (split, category)
    assert "part_0" in page.sections["keypoints"]


def test_report_headline_numbers_match_the_summary(tiny_run, tiny_report):
    _, html = tiny_report
    summary = pd.read_csv(tiny_run / "summary.csv")
    value = summary.query("method == 'support-copy' and split == 1 and shots == 1 and metric == 'PCK@0.2'")["value"]
    intervals = pd.read_csv(tiny_run / "intervals.csv").query("method == 'support-copy' and split == 1 and shots == 1")
    lo, hi = intervals["ci95_low"].iloc[0] * 100, intervals["ci95_high"].iloc[0] * 100
    assert f"{value.iloc[0] * 100:.2f}" in html
    assert f"[{lo:.2f}, {hi:.2f}]" in html


def test_qualitative_examples_are_bounded_png_data_uris(tiny_run, tiny_report):
    _, html = tiny_report
    page = parse(html)
    examples = page.with_class("div", "example")
    assert examples, "a run with images must show qualitative examples"
    per_category: dict[tuple, int] = {}
    for ex in examples:
        key = (ex["data-category"], ex["data-split"])
        per_category[key] = per_category.get(key, 0) + 1
    assert max(per_category.values()) <= 2 and len(examples) <= 40
    assert {ex["data-kind"] for ex in examples} <= {"worst", "median"}
    images = [a for a in page.find("img")]
    assert len(images) == len(examples) * 4  # support, query, support-copy, oracle
    for img in images:
        assert img["src"].startswith("data:image/png;base64,")


def test_report_is_self_contained_and_small(tiny_report):
    path, html = tiny_report
    assert_self_contained(html)
    assert path.stat().st_size < SIZE_BUDGET


def test_self_containment_check_catches_external_resources():
    for bad in ('<img src="https://x.org/a.png">', '<script src="//cdn.example/a.js"></script>',
                '<link rel="stylesheet" href="style.css">', '<a href="other.html">x</a>',
                '<div style="background: url(http://x/y.png)"></div>'):
        with pytest.raises(AssertionError):
            assert_self_contained(f"<html><body>{bad}</body></html>")


def test_full_grid_with_noisy_images_stays_under_budget(tmp_path):
    """5 methods × 5 splits × 2 shots, with incompressible images: the report stays under 10 MB."""
    root = write_tiny_mp100(tmp_path / "data", images=True, splits=(1, 2, 3, 4, 5))
    rng = np.random.default_rng(0)
    from PIL import Image

    for png in (root / "images").rglob("*.png"):
        Image.fromarray(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)).save(png)
    with pytest.MonkeyPatch.context() as mp:
        for alias in ("copy-b", "copy-c", "copy-d"):
            mp.setitem(registry.BUILTIN_METHODS, alias, "cape_bench.methods.reference:SupportCopy")
        run = _run(root, tmp_path / "runs", "grid", methods="support-copy,oracle,copy-b,copy-c,copy-d", splits="1-5")
    path = build_report([run], tmp_path / "grid.html")
    html = path.read_text(encoding="utf-8")
    page = parse(html)
    assert path.stat().st_size < SIZE_BUDGET
    examples = page.with_class("div", "example")
    assert 0 < len(examples) <= 40
    assert len(page.find("img")) == len(examples) * 7
    assert_self_contained(html)


def test_report_never_imports_torch(tiny_run, tmp_path):
    code = ("import sys\nfrom pathlib import Path\nfrom cape_bench.report import build_report\n"
            f"build_report([Path({str(tiny_run)!r})], Path({str(tmp_path / 'r.html')!r}))\n"
            "print([m for m in ('torch', 'torchvision', 'timm') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_default_report_path():
    assert default_report_path(["mp100"]) == reports_dir() / "mp100.html"
    assert default_report_path(["a", "b"]).name == "a+b.html"
    long = default_report_path([f"run-{i:03d}-" + "x" * 30 for i in range(5)])
    assert len(long.name) < 120 and long.name.endswith(".html")
    assert reports_dir() == REPO / "reports"  # running from the checkout


# ------------------------------------------------------------------------------------------------ combining


def _copy_run(src: Path, dst: Path, **run_json) -> Path:
    shutil.copytree(src, dst)
    meta = json.loads((dst / "run.json").read_text())
    for key, value in run_json.items():
        target = meta
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    (dst / "run.json").write_text(json.dumps(meta))
    return dst


@pytest.mark.parametrize("key", ["metric_version", "protocol_version"])
def test_mixed_versions_are_refused_naming_the_runs(tiny_run, tmp_path, key, capsys):
    other = _copy_run(tiny_run, tmp_path / "older", **{key: "v0-old"})
    what = key.replace("_", " ")
    with pytest.raises(ReportError, match=rf"different {what}s: tiny \({key} .*\), older \({key} v0-old\)"):
        render_tables([tiny_run, other], "md")
    with pytest.raises(ReportError, match="older"):
        build_report([tiny_run, other], tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()
    assert main(["tables", str(tiny_run), str(other)]) == 2
    assert "refusing to combine" in capsys.readouterr().err


def test_different_datasets_are_refused(tiny_run, tmp_path):
    other = _copy_run(tiny_run, tmp_path / "synth", **{"dataset.name": "cape-synth"})
    with pytest.raises(ReportError, match="different datasets.*tiny \\(mp100\\).*synth \\(cape-synth\\)"):
        render_tables([tiny_run, other], "csv")


def test_same_method_in_two_runs_gets_the_run_name(tiny_run, tmp_path):
    other = _copy_run(tiny_run, tmp_path / "again")
    text = render_tables([tiny_run, other], "md")
    for name in ("support-copy (tiny)", "support-copy (again)", "oracle (tiny)", "oracle (again)"):
        assert name in text
    html = build_report([tiny_run, other], tmp_path / "both.html").read_text()
    assert "support-copy (again)" in html and "Run again" in html and "Run tiny" in html


# ------------------------------------------------------------------------------------------------ tables


def test_tables_markdown_latex_csv(tiny_run):
    summary = pd.read_csv(tiny_run / "summary.csv").query("metric == 'PCK@0.2'")
    md = render_tables([tiny_run], "md")
    assert md.count("| Method | Backbone | Split 1 | Split 2 | Mean |") == 2
    assert "**PCK@0.2 (%), 1-shot**" in md and "**PCK@0.2 (%), 5-shot**" in md
    # oracle reads the query ground truth: a reference row, never bold; with it left out, one method is not a race
    assert "| oracle ‡ | — | 100.00 | 100.00 | 100.00 |" in md and "‡ reads the query's ground truth" in md
    assert not [line for line in md.splitlines() if line.startswith("| ") and "**" in line]
    copy = summary.query("method == 'support-copy' and shots == 1").sort_values("split")["value"].to_numpy() * 100
    assert f"| support-copy | — | {copy[0]:.2f} | {copy[1]:.2f} | {copy.mean():.2f} |" in md
    assert md.count("| *protocol ceiling* | | *100.00* | *100.00* | *100.00* |") == 2  # beside every table

    tex = render_tables([tiny_run], "latex")
    assert tex.count("\\begin{tabular}{llrrr}") == 2 and "\\toprule" in tex
    assert "oracle$^\\ddagger$ & --- & 100.00 & 100.00 & 100.00 \\\\" in tex
    assert "**" not in tex
    assert tex.count("\\emph{protocol ceiling} &  & \\emph{100.00}") == 2

    rows = list(csv.DictReader(io.StringIO(render_tables([tiny_run], "csv"))))
    ceiling = [r for r in rows if r["method"] == "(protocol ceiling)"]
    assert len(ceiling) == 2 and all(float(r["mean"]) == 100.0 for r in ceiling)
    rows = [r for r in rows if r not in ceiling]
    assert {(r["method"], r["shots"]) for r in rows} == {(m, s) for m in ("support-copy", "oracle") for s in ("1", "5")}
    for r in rows:
        got = summary.query(f"method == '{r['method']}' and shots == {r['shots']}").sort_values("split")["value"] * 100
        assert float(r["split1"]) == pytest.approx(got.iloc[0], abs=1e-4)
        assert float(r["mean"]) == pytest.approx(got.mean(), abs=1e-4)
        assert "*" not in ",".join(r.values())


def test_tables_other_metric_and_bad_input(tiny_run):
    text = render_tables([tiny_run], "md", metric="EPE")
    assert "**EPE (px), 1-shot**" in text
    assert "| oracle ‡ | — | 0.00 |" in text
    with pytest.raises(ReportError, match="metric 'PCK@0.3' is not in .* PCK@0.2"):
        render_tables([tiny_run], "md", metric="PCK@0.3")
    with pytest.raises(ReportError, match="unknown table format"):
        render_tables([tiny_run], "html")


# ------------------------------------------------------------------------------------------------ published


def _as_method(run: Path, old: str, new: str, provenance: dict, extra_inputs=()) -> None:
    """Rename a stored method and give its cells a provenance, as if ``new`` had run."""
    for sub in ("cells", "predictions", "scores"):
        (run / sub / old).rename(run / sub / new)
    for cell in (run / "cells" / new).glob("*.json"):
        rec = json.loads(cell.read_text())
        rec.update(method=new, provenance=provenance)
        rec["info"]["extra_inputs"] = list(extra_inputs)
        cell.write_text(json.dumps(rec))
    for table in ("summary.csv", "intervals.csv", "per_category.csv", "per_keypoint.csv"):
        frame = pd.read_csv(run / table)
        frame["method"] = frame["method"].replace(old, new)
        frame.to_csv(run / table, index=False)


def test_published_csv_is_cited_and_complete():
    rows = load_published()
    assert all(r.source for r in rows)
    capeformer = matching_rows(rows, "capeformer", "resnet50", None, 1)
    assert [r.pck for r in capeformer] == [{1: 89.45, 2: 84.88, 3: 83.59, 4: 83.53, 5: 85.09}]
    assert len(matching_rows(rows, "capex", "swinv2_tiny", None, 1)) == 2  # gte-base and the CLIP re-run
    clip = matching_rows(rows, "capex", "swinv2_tiny", "clip-vit-b32", 1)
    assert [r.backbone for r in clip] == ["swinv2_tiny+clip-vit-b32"]
    assert matching_rows(rows, "capenext", "swinv2_tiny", "clip-vit-b32", 5) == []  # CapeNext publishes 1-shot only
    assert {(r.method, r.shots) for r in rows} >= {(m, 1) for m in ("pomnet", "capeformer", "graphcape", "capex",
                                                                   "capenext")}


def test_published_numbers_and_difference_on_official_mp100(tiny_run, tmp_path):
    run = _copy_run(tiny_run, tmp_path / "official", official_protocol=True)
    prov = {"backbone": "resnet50", "backbone_weights": "random init",
            "checkpoint": "/cache/model.safetensors", "trained": "here with preset 'quick' (10 iterations)"}
    _as_method(run, "support-copy", "capeformer", prov)
    _as_method(run, "oracle", "capenext", {"backbone": "swinv2_tiny",
                                           "text_encoder": {"encoder": "clip-vit-b32", "genuine": False}},
               extra_inputs=["ground-truth category name"])
    page = parse(build_report([run], tmp_path / "o.html").read_text())
    headline = page.sections["headline"]
    assert "Published, not run here" in headline
    assert "89.45" in headline and "84.88" in headline  # CapeFormer 1-shot splits 1–2
    assert "92.44" in headline  # CapeNext SwinV2-T + CLIP, split 1
    assert "gte-base" not in headline  # CapeX rows do not match CapeNext
    reproduced = pd.read_csv(run / "summary.csv").query(
        "method == 'capeformer' and split == 1 and shots == 1 and metric == 'PCK@0.2'")["value"].iloc[0] * 100
    assert f"{reproduced - 89.45:+.2f}".replace("-", "−") in headline
    assert "Δ capeformer − published" in headline
    assert "capenext †" in headline and "ground-truth category name" in headline
    prov_text = page.sections["provenance"]
    assert "trained here with preset 'quick' (10 iterations)" in prov_text
    assert "random init" in prov_text and "text encoder clip-vit-b32" in prov_text
    assert "| capeformer | resnet50 |" in render_tables([run], "md")

    shortened = _copy_run(run, tmp_path / "short", official_protocol=False)
    headline = parse(build_report([shortened], tmp_path / "s.html").read_text()).sections["headline"]
    assert "89.45" in headline and "Δ" not in headline and "no difference to published numbers" in headline

    synth = _copy_run(run, tmp_path / "synth", **{"dataset.name": "cape-synth"})
    headline = parse(build_report([synth], tmp_path / "y.html").read_text()).sections["headline"]
    assert "Published" not in headline and "89.45" not in headline
    assert "dataset is cape-synth, not MP-100" in headline


# ------------------------------------------------------------------------------------------------ browser


def test_headless_chromium_screenshot_is_not_blank(tiny_report, tmp_path):
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is absent (apt-get install -y chromium); the rendering check needs it"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    from PIL import Image

    path, _ = tiny_report
    shot = tmp_path / "report.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1280,2400", path.resolve().as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert shot.exists(), out.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2400, 1280)
    assert pixels.std() > 20, "the screenshot is (nearly) uniform: the page did not render"
    assert (pixels < 128).mean() > 0.02, "too few dark pixels: no text or figures rendered"

    # the inline sort script works: click the first method column of the category table, read the DOM back
    clicked = tmp_path / "clicked.html"
    clicked.write_text(path.read_text().replace(
        "</body>", '<script>document.querySelectorAll("#category-table thead th")[4].click();</script></body>'))
    cmd = [*cmd[:-3], "--dump-dom", clicked.resolve().as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=90).stdout
    table = dom[dom.index('id="category-table"'):]
    table = table[table.index("<tbody>"):table.index("</tbody>")]
    column = [float(v) for v in re.findall(r'<tr>(?:\s*<td[^>]*>[^<]*</td>){4}\s*<td[^>]*data-v="([^"]+)"', table)]
    assert len(column) == 6 and column == sorted(column, reverse=True)
