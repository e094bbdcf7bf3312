"""Paper-style tables from a run's ``summary.csv``: methods × splits + mean, one block per shots."""

from __future__ import annotations

import numpy as np

from cape_bench.comparisons import is_resolved


def headline(summary, ceiling=None, metric: str = "PCK@0.2"):
    """Pivot ``summary`` into {shots: DataFrame(method × split, + 'mean')} in percent.

    The mean is over the splits present (the papers' "Mean" over 5 splits when all ran).
    A ``(protocol ceiling)`` row is appended when ``ceiling`` is given.
    """

    out = {}
    sel = summary[summary["metric"] == metric]
    for shots, block in sel.groupby("shots"):
        table = block.pivot_table(index="method", columns="split", values="value", aggfunc="first") * 100
        if ceiling is not None and len(ceiling):
            c = ceiling[ceiling["shots"] == shots].set_index("split")["ceiling"] * 100
            table.loc["(protocol ceiling)"] = c.reindex(table.columns)
        table["mean"] = table.mean(axis=1)
        out[int(shots)] = table.rename(columns=lambda s: s if s == "mean" else f"split {s}")
    return out


def print_headline(console, summary, ceiling=None, metric: str = "PCK@0.2", extra_inputs=None,
                   reference=(), paired=None, bases: dict[str, str] | None = None) -> None:
    """Print the headline tables with rich; best method per column in bold.

    ``reference``: methods that read the query ground truth (``oracle``), shown dim and never bold.
    ``paired``: the run's ``paired.csv``; with it a split's best is bold only when its lead over the runner-up is
    resolved (paired test, see :mod:`cape_bench.metrics.paired`), the mean only when it is in every split, and the
    comparisons of :func:`comparison_pairs` are printed under the table (``bases``: variant → method).
    """
    from rich.table import Table  # noqa: PLC0415

    extra_inputs = extra_inputs or {}
    reference = set(reference)
    for shots, table in headline(summary, ceiling, metric).items():
        rich_table = Table(title=f"{metric} (%), {shots}-shot", title_justify="left")
        rich_table.add_column("method")
        for col in table.columns:
            rich_table.add_column(str(col), justify="right")
        methods = [m for m in table.index if not m.startswith("(") and m not in reference]
        best = {col: table.loc[methods, col].max() if methods else np.nan for col in table.columns}
        lead = {}  # column → the best's lead over the runner-up is resolved (None: unknown)
        for col in table.columns:
            if col == "mean" or len(methods) < 2:
                continue
            ranked = table.loc[methods, col].dropna().sort_values(ascending=False)
            if len(ranked) > 1:
                lead[col] = is_resolved(paired, ranked.index[0], ranked.index[1], int(col.split()[-1]), shots)
        if lead:
            lead["mean"] = None if any(v is None for v in lead.values()) else all(lead.values())
        unresolved = False
        for method, row in table.iterrows():
            name = method + (" †" if extra_inputs.get(method) else "") + (" ‡" if method in reference else "")
            cells = []
            for col, value in row.items():
                text = "—" if np.isnan(value) else f"{value:.2f}"
                if method in methods and len(methods) > 1 and value == best[col]:
                    if lead.get(col) is False:
                        text, unresolved = f"{text}≈", True
                    else:
                        text = f"[bold]{text}[/bold]"
                cells.append(text)
            style = "dim" if method.startswith("(") or method in reference else None
            rich_table.add_row(name, *cells, style=style)
        console.print(rich_table)
        if metric == "mPCK":  # name the threshold set next to every mPCK: papers average different ones
            from cape_bench.metrics.pck import mpck_definition, thresholds_in  # noqa: PLC0415

            console.print(mpck_definition(thresholds_in(summary["metric"])), highlight=False)
        if unresolved:
            console.print("≈ best in its column, but not resolved from the runner-up (paired test over episodes)")
    if paired is not None and len(paired):
        from cape_bench.comparisons import comparison_pairs, describe_row  # noqa: PLC0415

        for a, b in comparison_pairs(sorted(set(summary["method"])), bases):
            for _, row in paired[(paired["method_a"] == a) & (paired["method_b"] == b)].iterrows():
                console.print(f"split {row['split']}, {row['shots']}-shot: " + describe_row(row), highlight=False)
    if reference & set(summary["method"]):
        console.print("‡ reads the query's ground truth: a reference for the pipeline, not a CAPE method")
    flagged = sorted(m for m, v in extra_inputs.items() if v)
    if flagged:
        notes = "; ".join(f"{m}: {', '.join(extra_inputs[m])}" for m in flagged)
        console.print(f"† uses extra input — {notes}")
    for line in rank_agreement_lines(summary, metric):
        console.print(line)


def rank_agreement_lines(summary, metric: str = "PCK@0.2") -> list[str]:
    """One line per (shots, split) cell where at least three of the published methods ran: Kendall τ between
    their order here and the published MP-100 order (each method's official configuration), and the pairs
    ranked the other way round."""
    from cape_bench.metrics.ranking import inverted_pairs, kendall_tau  # noqa: PLC0415
    from cape_bench.report.published import load_published, official_scores  # noqa: PLC0415

    if metric != "PCK@0.2":
        return []
    published = load_published()
    lines = []
    sel = summary[summary["metric"] == metric]
    for (shots, split), block in sel.groupby(["shots", "split"]):
        reference = official_scores(int(split), int(shots), published)
        here = {m: 100 * v for m, v in zip(block["method"], block["value"], strict=True) if m in reference}
        if len(here) < 3:
            continue
        tau = kendall_tau(here, reference)
        flips = inverted_pairs(here, reference)
        flipped = "; inverted: " + ", ".join(f"{x} > {y}" for x, y in flips) if flips else ""
        lines.append(f"rank agreement with published MP-100 (split {split}, {shots}-shot, official configurations):"
                     f" Kendall τ = {tau:+.2f} over {len(here)} methods{flipped}")
    return lines

