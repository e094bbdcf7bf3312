"""Which comparisons a run's table is read for, and how one stored comparison (``paired.csv``) reads."""

from __future__ import annotations

#: the no-learning floor each learned method is compared with (paired), when both ran
FLOORS = {"support-copy": ("pomnet", "capeformer", "graphcape", "capex", "capenext"), "text-prior": ("capex", "capenext")}


def variant_bases(config: dict) -> dict[str, str]:
    """label → registered method, for the ``[methods.<label>] method = ...`` variants of a run's config dict."""
    return {label: entry["method"] for label, entry in (config.get("methods") or {}).items() if entry.get("method")}


def comparison_pairs(labels, bases: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """The comparisons a run's table is read for: CapeNext against CapeX, each variant (ablation, probe) against the
    model it varies, and each learned method against its floor(s)."""
    labels = list(labels)
    bases = bases or {}
    pairs = []
    if "capenext" in labels and "capex" in labels:
        pairs.append(("capenext", "capex"))
    pairs += [(label, bases[label]) for label in labels if bases.get(label, label) != label and bases[label] in labels]
    for floor, methods in FLOORS.items():
        if floor in labels:
            pairs += [(label, floor) for label in labels if label in methods]
    return pairs


def describe_row(row) -> str:
    """One ``paired.csv`` row as ``a vs b: +x [lo, hi] points, p = …: resolved``."""
    from cape_bench.metrics.paired import PairedResult, describe  # noqa: PLC0415

    result = PairedResult(row["delta"], row["ci95_low"], row["ci95_high"], row["p_value"], int(row["episodes"]))
    return describe(row["method_a"], row["method_b"], result)


def is_resolved(paired, a: str, b: str, split, shots) -> bool | None:
    """Whether ``a`` vs ``b`` is resolved in that cell (None: no paired row)."""
    if paired is None or not len(paired):
        return None
    row = paired[(paired["method_a"] == a) & (paired["method_b"] == b) & (paired["split"] == split)
                 & (paired["shots"] == shots)]
    return None if row.empty else bool(row["resolved"].iloc[0])
