"""Printing a profile and a comparison of two profiles."""

from __future__ import annotations

import math
from typing import Any

from cape_bench.profile.files import clean_value
from cape_bench.profile.machine import amp_dtype
from cape_bench.profile.spec import WEIGHTS_NOTE
from cape_bench.profile.timing import ProfileResult

# ----------------------------------------------------------------------------------------------------------------
# Printing


def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (thousands separated), ``—`` when missing."""
    value = clean_value(value)
    if value is None:
        return "—"
    value = float(value)
    if value == 0:
        return "0"
    mag = int(math.floor(math.log10(abs(value))))
    decimals = max(0, digits - 1 - mag)
    return f"{value:,.{decimals}f}"


def _millions(n: Any) -> str:
    n = clean_value(n)
    return "—" if n is None else f"{float(n) / 1e6:.2f}"


def stamp_line(row: dict[str, Any]) -> str:
    """One line naming where a profile row was measured."""
    cuda = f" · CUDA {row['cuda']}" if clean_value(row.get("cuda")) else ""
    return (f"{row.get('device')} ({row.get('device_name')}) · torch {row.get('torch')}{cuda} · threads "
            f"{row.get('threads')} (interop {row.get('interop_threads')}) of {row.get('cpu_count')} CPUs · load "
            f"{row.get('load_avg')} at start · host {row.get('host')} · code {row.get('git') or '?'}")


def print_profile(result: ProfileResult, console) -> None:
    """The latency table and the harness table, with the machine stamp and the weights note."""
    from rich.table import Table  # noqa: PLC0415

    spec = result.spec
    console.print(f"[bold]cape-bench profile[/bold] · {stamp_line(result.machine)}")
    console.print(f"preset {spec['preset']} · K = {spec['keypoints']} · {spec['shots']}-shot · AMP "
                  f"{amp_dtype(spec['device'], spec['amp']) if spec['amp'] else 'off'} · compile "
                  f"{spec['compile_backend'] if spec['compile'] else 'off'} · {spec['repeats']} repeats (median "
                  f"[IQR]), {spec['warmup']} warm-up · [bold]{WEIGHTS_NOTE}[/bold]")
    table = Table(show_lines=False, header_style="bold")
    for col, justify in (("method", "left"), ("backbone", "left"), ("B", "right"), ("support ms", "right"),
                         ("predict ms", "right"), ("ms/pair", "right"), ("pairs/s", "right"),
                         ("peak MB (call)", "right"), ("params M total/train", "right"), ("GFLOPs/pair", "right"),
                         ("text ms", "right")):
        table.add_column(col, justify=justify)
    for r in result.rows:
        if r["status"] != "ok":
            table.add_row(r["method"], r.get("backbone") or "", str(r["batch_size"]), f"[red]{r['status'][:60]}[/red]",
                          *[""] * 7)
            continue
        table.add_row(
            r["method"], r.get("backbone") or "", str(r["batch_size"]),
            f"{fmt(r['support_ms'])} [{fmt(r['support_iqr_ms'], 2)}]",
            f"{fmt(r['predict_ms'])} [{fmt(r['predict_iqr_ms'], 2)}]",
            fmt(r["ms_per_pair"]), fmt(r["pairs_per_s"]),
            f"{fmt(r['peak_mem_mb'], 4)} ({fmt(r['peak_work_mb'], 3)})",
            f"{_millions(r['params_total'])}/{_millions(r['params_trainable'])}",
            fmt(r["gflops_per_pair"]), fmt(r.get("text_ms")),
        )
    console.print(table)
    console.print("support: encode_support of the support set (text embeddings cached after first use, as in a run); "
                  "predict: B queries; text: the text encoder on the K descriptions, uncached; peak MB: process / "
                  "device peak (all methods loaded), in brackets the part the call added")
    if result.harness:
        ht = Table(header_style="bold", title="harness overhead: eval = cape_bench.runner.Runner (e2e: wall time "
                                              "without prepare; loop: its timed episodes); bare = model forward on "
                                              "device tensors; reference = official-style batch-1 loop re-encoding "
                                              "text per pair")
        for col in ("method", "B", "pairs", "eval e2e pairs/s", "eval loop pairs/s", "bare pairs/s", "e2e/bare",
                    "loop/bare", "reference pairs/s", "e2e/reference", "feature cache",
                    "data / instance / support / predict / other s"):
            ht.add_column(col, justify="left" if col == "method" else "right")
        for h in result.harness:
            if h.get("status") != "ok":
                ht.add_row(h["method"], "", "", f"[red]{str(h.get('status'))[:80]}[/red]", *[""] * 8)
                continue
            ht.add_row(h["method"], str(h["batch_size"]), str(h["pairs"]), fmt(h["harness_pairs_per_s"]),
                       fmt(h["loop_pairs_per_s"]), fmt(h["bare_pairs_per_s"]), fmt(h["harness_over_bare"], 2),
                       fmt(h["loop_over_bare"], 2), fmt(h["reference_pairs_per_s"]),
                       f"{fmt(h['harness_over_reference'], 2)}×", "yes" if h.get("feature_cache") else "no",
                       " / ".join(fmt(h.get(k), 2) for k in ("data_s", "instance_s", "support_s", "predict_s",
                                                              "other_s")))
        console.print(ht)
    for note in result.notes:
        console.print(f"note: {note}")


def print_comparison(cmp: dict[str, Any], console, old: str, new: str) -> None:
    from rich.table import Table  # noqa: PLC0415

    table = Table(header_style="bold", title=f"profile comparison: old = {old}, new = {new} (speed-up = old / new)")
    for col in ("method", "backbone", "B", "predict ms old", "predict ms new", "speed-up", "pairs/s old",
                "pairs/s new", "IQRs apart"):
        table.add_column(col, justify="left" if col in ("method", "backbone") else "right")
    for r in cmp["rows"]:
        table.add_row(r["method"], str(r.get("backbone") or ""), str(r["batch_size"]), fmt(r["predict_ms_old"]),
                      fmt(r["predict_ms_new"]), f"{r['speedup']:.2f}×" if r["speedup"] else "—",
                      fmt(r["pairs_per_s_old"]), fmt(r["pairs_per_s_new"]), "yes" if r["distinct"] else "no")
    console.print(table)
    for side, keys in (("old", cmp["only_old"]), ("new", cmp["only_new"])):
        if keys:
            console.print(f"only in {side}: " + "; ".join(", ".join(str(v) for v in k[:2]) + f" B={k[3]}"
                                                          for k in keys))
