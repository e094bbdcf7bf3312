"""The report's "Does CapeNext fix what it claims?" section reads stored tables and refuses to read unlearned models."""

from __future__ import annotations

import pandas as pd

from cape_bench.report.capenext_claims import build, variant_roles
from cape_bench.report.runs import RunData

CONFIG = {"methods": {
    "nx-no-class": {"method": "capenext", "options": {"use_category_text": False}},
    "nx-wrong": {"method": "capenext", "options": {"wrong_class_name": True}},
    "nx-no-image": {"method": "capenext", "options": {"use_query_image": False}},
    "capex-variant": {"method": "capex", "options": {"use_category_text": False}},
}}


def _run(tmp_path, pcks: dict[str, float]) -> RunData:
    summary = pd.DataFrame([{"method": m, "split": 1, "shots": 1, "metric": "PCK@0.2", "value": v}
                            for m, v in pcks.items()])
    paired = pd.DataFrame([
        {"method_a": "capenext", "method_b": b, "split": 1, "shots": 1, "metric": "PCK@0.2", "delta": d,
         "ci95_low": d - 0.01, "ci95_high": d + 0.01, "p_value": 1e-5 if r else 0.4, "resolved": r, "episodes": 400}
        for b, d, r in (("capex", -0.013, True), ("nx-wrong", 0.035, True), ("nx-no-class", 0.004, False))])
    paired.to_csv(tmp_path / "paired.csv", index=False)
    (tmp_path / "analysis").mkdir()
    pd.DataFrame([{"method": m, "split": 1, "shots": 1, "pck_polysemous": p, "pck_unique": u}
                  for m, p, u in (("capenext", 0.784, 0.584), ("capex", 0.822, 0.591))]).to_csv(
        tmp_path / "analysis" / "ambiguity.csv", index=False)
    return RunData(path=tmp_path, label="r", meta={"config": CONFIG}, categories={}, cells=[],
                   tables={"summary.csv": summary})


def test_roles_come_from_the_config_not_the_label():
    assert variant_roles({"config": CONFIG}) == {"no_class_text": "nx-no-class", "wrong_class": "nx-wrong",
                                                 "no_query_image": "nx-no-image"}


def test_claims_read_paired_and_polysemy_tables(tmp_path):
    run = _run(tmp_path, {"capenext": 0.698, "capex": 0.711, "text-prior": 0.479, "nx-wrong": 0.663,
                          "nx-no-class": 0.694})
    (cell,) = build([run], {})["blocks"][0]["cells"]
    assert cell["measurable"] and cell["overall"]["text"].startswith("-1.3 [-2.3, -0.3]")
    assert cell["polysemy"]["polysemous"]["delta"] == "-3.8" and cell["polysemy"]["unique"]["delta"] == "-0.7"
    roles = {a["role"]: a for a in cell["ablations"]}
    assert roles["wrong_class"]["paired"]["resolved"] and not roles["no_class_text"]["paired"]["resolved"]
    assert cell["not_run"] == ["nx-no-image"]  # declared, not run: said, not compared


def test_unlearned_text_methods_are_not_measurable(tmp_path):
    run = _run(tmp_path, {"capenext": 0.268, "capex": 0.258, "text-prior": 0.491})
    (cell,) = build([run], {})["blocks"][0]["cells"]
    assert not cell["measurable"] and cell["why"].startswith("not measurable: capenext, capex below text-prior + 10")
    assert "polysemy" not in cell and "ablations" not in cell
