"""The latency profile: support encoding and query prediction, per method and batch size, round robin."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cape_bench.profile.harness import measure_harness
from cape_bench.profile.inputs import SyntheticInputs, synthetic_category, write_profile_dataset
from cape_bench.profile.machine import MemoryProbe, amp_dtype, autocast_context, machine_stamp
from cape_bench.profile.models import build_method, compile_model, count_flops, count_parameters, uncached_text_encoder
from cape_bench.profile.spec import WEIGHTS_NOTE, ProfileSpec, round_robin, summarize
from cape_bench.profile.timing import ProfileResult, Subject, timed, to_ms

# ----------------------------------------------------------------------------------------------------------------
# The latency profile


def _episode_unit(subject: Subject, batch: int, spec: ProfileSpec, probe: MemoryProbe | None) -> tuple[float, float]:
    """One timed (support, predict) pair at ``batch``: seconds of each. Views are built before the timer."""
    method = subject.method
    support = subject.inputs.support()
    queries = subject.inputs.queries(batch, ground_truth=method.info.reads_query_ground_truth)
    if probe is not None:
        probe.reset()
    with autocast_context(spec.device, spec.amp):
        t_support, state = timed(spec.device, lambda: method.encode_support(support))
        t_predict, out = timed(spec.device, lambda: method.predict(state, queries))
    if probe is not None:
        peak, work = probe.read()
        subject.peak[batch] = max(subject.peak.get(batch, 0.0), peak)
        if work is not None:
            subject.peak_work[batch] = max(subject.peak_work.get(batch) or 0.0, work)
    out = np.asarray(out)
    if out.shape != (batch, subject.inputs.category.num_keypoints, 2) or not np.all(np.isfinite(out)):
        raise RuntimeError(f"{subject.name}: predict returned shape {out.shape} (finite: {np.isfinite(out).all()}), "
                           f"expected {(batch, subject.inputs.category.num_keypoints, 2)}")
    return t_support, t_predict


def _prepare_subject(subject: Subject, spec: ProfileSpec, workdir: Path, log) -> None:
    import torch  # noqa: PLC0415

    method, checkpoint = build_method(subject.name, preset=spec.preset, backbone=spec.backbone, device=spec.device,
                                      batch_size=max(spec.batch_sizes), workdir=workdir, shots=spec.shots,
                                      seed=spec.seed, log=log)
    subject.method, subject.checkpoint = method, checkpoint
    category = synthetic_category(spec.keypoints)
    subject.inputs = SyntheticInputs(category, method.info.input_size, method.info.needs_images,
                                     max(max(spec.batch_sizes), spec.queries), spec.shots, spec.seed)
    facts: dict[str, Any] = {
        "input_size": method.info.input_size,
        "text_encoder": getattr(getattr(method, "text", None), "name", None),
        "image_encoder": getattr(getattr(method, "image", None), "name", None),
        "backbone": getattr(method, "backbone_name", "") or "",
        **count_parameters(method),
    }
    one = subject.inputs.queries(1, ground_truth=method.info.reads_query_ground_truth)
    with torch.inference_mode():
        state = method.encode_support(subject.inputs.support())  # text embeddings now cached, as in a run
        facts["gflops_per_pair"] = count_flops(lambda: method.predict(state, one)) / 1e9
        facts["gflops_support"] = count_flops(lambda: method.encode_support(subject.inputs.support())) / 1e9
        encode = uncached_text_encoder(method)
        facts["gflops_text"] = (count_flops(lambda: encode(category.descriptions)) / 1e9) if encode else None
    if spec.compile:
        calls = [lambda: method.encode_support(subject.inputs.support()),
                 lambda: method.predict(state, subject.inputs.queries(
                     2, ground_truth=method.info.reads_query_ground_truth))]
        facts["compiled_modules"] = " ".join(compile_model(method, calls, spec.compile_backend))
    subject.facts = facts


def profile_methods(spec: ProfileSpec, *, log: Callable[[str], None] = print, workdir: Path | None = None
                    ) -> ProfileResult:
    """Measure every method of ``spec`` (see the module docstring); a method that fails is reported, not fatal.

    Args:
        spec: what to measure.
        log: one-message callable (rich markup allowed).
        workdir: where random-init checkpoints, caches and the harness dataset go (default: a temporary folder,
            removed afterwards).
    """
    import torch  # noqa: PLC0415

    if spec.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {spec.device}: CUDA is not available (torch {torch.__version__}, "
                           f"built with CUDA {torch.version.cuda})")
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cape-bench-profile-")))
        workdir = Path(workdir)
        machine = machine_stamp(spec.device)
        subjects = [Subject(name) for name in spec.methods]
        for subject in subjects:
            try:
                log(f"building {subject.name} (preset {spec.preset}, {WEIGHTS_NOTE})")
                _prepare_subject(subject, spec, workdir, log)
            except Exception as err:  # noqa: BLE001 — one broken method must not hide the others
                subject.error = f"{type(err).__name__}: {err}"
                log(f"[red]{subject.name}: cannot be profiled: {subject.error}[/red]")
        live = [s for s in subjects if not s.error]
        probe = MemoryProbe(spec.device)
        warmup = max(spec.warmup, 2) if spec.compile else spec.warmup
        with torch.inference_mode():
            for subject in live:  # warm-up: lazy initialisation, allocator, oneDNN / cuDNN kernel choice, compile
                try:
                    for batch in spec.batch_sizes:
                        for _ in range(warmup):
                            _episode_unit(subject, batch, spec, None)
                except Exception as err:  # noqa: BLE001
                    subject.error = f"{type(err).__name__}: {err}"
                    log(f"[red]{subject.name}: failed in warm-up: {subject.error}[/red]")
            live = [s for s in live if not s.error]
            by_name = {s.name: s for s in live}
            log(f"timing {len(live)} method(s) × batch sizes {list(spec.batch_sizes)} × {spec.repeats} repeats "
                f"(interleaved round robin)")
            for _repeat, name in round_robin([s.name for s in live], spec.repeats):
                subject = by_name[name]
                if subject.error:
                    continue
                try:
                    gc.collect()
                    encode = uncached_text_encoder(subject.method)
                    if encode is not None:
                        descriptions = subject.inputs.category.descriptions
                        subject.text.append(timed("cpu", lambda e=encode, d=descriptions: e(d))[0])
                    for batch in spec.batch_sizes:
                        t_support, t_predict = _episode_unit(subject, batch, spec, probe)
                        subject.support.setdefault(batch, []).append(t_support)
                        subject.predict.setdefault(batch, []).append(t_predict)
                except Exception as err:  # noqa: BLE001
                    subject.error = f"{type(err).__name__}: {err}"
                    log(f"[red]{subject.name}: failed while timing: {subject.error}[/red]")
        rows = [row for s in subjects for row in _rows_of(s, spec, machine, probe)]
        harness: list[dict[str, Any]] = []
        if spec.harness:
            live = [s for s in subjects if not s.error]
            if live:
                data_root = write_profile_dataset(workdir / "harness-data", categories=spec.harness_categories,
                                                  instances=max(20, spec.shots + spec.queries + 4),
                                                  keypoints=spec.keypoints, image_size=spec.image_size,
                                                  seed=spec.seed)
                for subject in live:
                    try:
                        log(f"harness overhead: {subject.name}")
                        harness.append({"kind": "harness", **_identity(subject, spec), **machine,
                                        **measure_harness(subject, spec, data_root, workdir, log)})
                    except Exception as err:  # noqa: BLE001
                        log(f"[red]{subject.name}: harness measurement failed: {type(err).__name__}: {err}[/red]")
                        harness.append({"kind": "harness", **_identity(subject, spec), **machine,
                                        "status": f"error: {type(err).__name__}: {err}"})
        notes = [f"{WEIGHTS_NOTE}: every method is built at preset '{spec.preset}' with random-init model weights "
                 "(text / image encoders: genuine where on disk, else random init of the same architecture)",
                 f"memory: {probe.source}"]
        return ProfileResult(machine=machine, spec=dataclasses.asdict(spec), rows=rows, harness=harness, notes=notes)


def _identity(subject: Subject, spec: ProfileSpec) -> dict[str, Any]:
    return {"method": subject.name, "preset": spec.preset,
            "backbone": subject.facts.get("backbone") or spec.backbone or "",
            "amp": spec.amp, "amp_dtype": amp_dtype(spec.device, spec.amp), "compile": spec.compile,
            "keypoints": spec.keypoints, "shots": spec.shots}


def _rows_of(subject: Subject, spec: ProfileSpec, machine: dict, probe: MemoryProbe) -> list[dict[str, Any]]:
    rows = []
    text = summarize(to_ms(subject.text)) if subject.text else None
    for batch in spec.batch_sizes:
        sup = summarize(to_ms(subject.support.get(batch, [])))
        pred = summarize(to_ms(subject.predict.get(batch, [])))
        per_sample = [batch / (t / 1e3) for t in to_ms(subject.predict.get(batch, [])) if t > 0]
        thr = summarize(per_sample)
        complete = not subject.error and pred["n"] == spec.repeats
        row = {
            "kind": "model", **_identity(subject, spec), "batch_size": batch,
            "status": "ok" if complete else f"error: {subject.error}",
            "repeats": pred["n"], "warmup": spec.warmup,
            "support_ms": sup["median"], "support_iqr_ms": sup["iqr"],
            "predict_ms": pred["median"], "predict_iqr_ms": pred["iqr"],
            "ms_per_pair": pred["median"] / batch if pred["n"] else float("nan"),
            "pairs_per_s": batch / (pred["median"] / 1e3) if pred["n"] and pred["median"] > 0 else float("nan"),
            "pairs_per_s_q25": thr["q25"], "pairs_per_s_q75": thr["q75"],
            "text_ms": text["median"] if text else None, "text_iqr_ms": text["iqr"] if text else None,
            "peak_mem_mb": subject.peak.get(batch), "peak_work_mb": subject.peak_work.get(batch),
            "mem_source": probe.source,
            **{k: v for k, v in subject.facts.items() if k != "backbone"},
            "support_samples_ms": to_ms(subject.support.get(batch, [])),
            "predict_samples_ms": to_ms(subject.predict.get(batch, [])),
            "text_samples_ms": to_ms(subject.text),
            **machine,
        }
        rows.append(row)
    return rows
