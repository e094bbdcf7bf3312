"""The polysemy gap (``ambiguity.csv``) and the CAPE-Synth polysemy-knob table across runs."""

from __future__ import annotations

from pathlib import Path

from cape_bench.report.error_analysis.loading import _mean, _pct, _pd
from cape_bench.report.runs import RunData


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
