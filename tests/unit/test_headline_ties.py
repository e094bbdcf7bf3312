"""The HTML headline bolds a column's best only when the paired test resolves its lead (as the terminal table)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cape_bench.report.headline import Block, Row, _leads, _method_row, metric_spec
from cape_bench.report.runs import RunData


def _block(run) -> Block:
    rows = [Row(label=m, method=m, run=run, backbone="—", extra_inputs=[], values={1: v1, 2: v2})
            for m, v1, v2 in (("capex", 71.1, 60.0), ("capenext", 69.8, 65.0), ("oracle", 100.0, 100.0))]
    rows[2].reference = True
    return Block(shots=1, splits=[1, 2], rows=rows, metric=metric_spec("PCK@0.2"))


def test_unresolved_best_is_marked_not_bolded():
    run = RunData(path=Path("."), label="r", meta={}, categories={}, cells=[], tables={})
    paired = pd.DataFrame([
        {"method_a": "capex", "method_b": "capenext", "split": 1, "shots": 1, "resolved": True},
        {"method_a": "capenext", "method_b": "capex", "split": 2, "shots": 1, "resolved": False},
    ])
    block = _block(run)
    leads = _leads(block, {"r": paired})
    assert leads == {1: True, 2: False, "mean": False}
    capex, capenext = (_method_row(block, row, leads)["cells"] for row in block.rows[:2])
    assert capex[0]["best"] and not capex[0]["tie"]  # split 1: resolved lead → bold
    assert capenext[1]["tie"] and not capenext[1]["best"]  # split 2: unresolved → ≈, not bold
    # without paired.csv nothing is known: the best is bold as before
    assert _leads(block, {}) == {1: None, 2: None, "mean": None}
    assert _method_row(block, block.rows[1], _leads(block, {}))["cells"][1]["best"]
