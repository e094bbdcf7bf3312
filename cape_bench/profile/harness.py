"""Harness overhead: the evaluation loop against the bare forward and the official-style reference loop."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from cape_bench.profile.inputs import SyntheticInputs
from cape_bench.profile.machine import sync
from cape_bench.profile.models import method_options, text_cache_bypassed
from cape_bench.profile.spec import ProfileSpec, summarize
from cape_bench.profile.timing import Subject, timed, to_ms

# ----------------------------------------------------------------------------------------------------------------
# Harness overhead and the official-style reference loop


def official_style_reference_loop(method, ann, manifest, image_root: str | Path | None, *, max_pairs: int,
                                  device: str = "cpu") -> dict[str, Any]:
    """OFFICIAL-STYLE REFERENCE LOOP (what the evaluation loop is compared with; not how cape-bench evaluates).

    Mirrors how the official test scripts run: one (support, query) pair per forward (batch 1); both images read
    from disk and cropped for every pair (no crop cache); the support encoded again for every pair; the text
    encoder run inside every forward on every keypoint description (and, for CapeNext, the class prompt and the
    query-image tower) with no embedding cache.

    Args:
        method: a prepared method.
        ann: the :class:`~cape_bench.data.mp100.AnnotationSet` of the manifest.
        manifest: :class:`~cape_bench.episodes.EpisodeManifest`; its first ``max_pairs`` pairs run.
        image_root: image folder (methods that need images).
        max_pairs: pairs to run.
        device: for CUDA synchronisation.

    Returns:
        ``pairs``, ``seconds``, ``pairs_per_s`` and ``text_strings_encoded`` (strings the text encoder ran on).
    """
    from cape_bench.images import CropSource  # noqa: PLC0415

    needs = method.info.needs_images
    crops = CropSource(image_root, method.info.input_size, max_items=0) if needs else None  # max_items=0: no reuse
    n = min(int(max_pairs), len(manifest))
    next_id = 2 * 10**9
    with text_cache_bypassed(method) as encode:
        sync(device)
        t0 = time.perf_counter()
        for p in range(n):
            sup_ids = manifest.support_obj[p]
            q_id = int(manifest.query_obj[p])
            sup_crops = crops.crops([ann.instances[i] for i in sup_ids]) if crops else None
            q_crops = crops.crops([ann.instances[q_id]]) if crops else None
            support = ann.view(sup_ids, crops=sup_crops)
            query = ann.view([q_id], with_ground_truth=method.info.reads_query_ground_truth, crops=q_crops)
            # a new id: no per-instance cache (e.g. CapeNext's query-image token) may serve the forward
            query = dataclasses.replace(query, ann_ids=np.array([next_id + p], dtype=np.int64))
            state = method.encode_support(support)
            np.asarray(method.predict(state, query))
        sync(device)
        seconds = time.perf_counter() - t0
    return {"pairs": n, "seconds": seconds, "pairs_per_s": n / seconds if seconds > 0 else float("nan"),
            "text_strings_encoded": encode.encoded if encode is not None else 0}


def bare_forward_samples(method, inputs: SyntheticInputs, batch: int, repeats: int, device: str) -> list[float]:
    """Seconds of ``repeats`` bare query forwards at ``batch``: ``predict_normalized`` on crops already on the
    device (no InstanceView slicing, no numpy conversion, no crop → image mapping); methods without it: ``predict``.
    """
    import torch  # noqa: PLC0415

    with torch.inference_mode():
        state = method.encode_support(inputs.support())
        views = [inputs.queries(batch, ground_truth=method.info.reads_query_ground_truth) for _ in range(repeats + 1)]
        if callable(getattr(method, "predict_normalized", None)) and views[0].crops is not None:
            from cape_bench.images import normalize_crops  # noqa: PLC0415

            tensors = [torch.from_numpy(normalize_crops(v.crops)).to(method.device) for v in views]

            def call(i):
                return method.predict_normalized(state, tensors[i], views[i])
        else:
            def call(i):
                return method.predict(state, views[i])
        call(0)  # warm-up at this batch size
        return [timed(device, lambda i=i: call(i))[0] for i in range(1, repeats + 1)]


def measure_harness(subject: Subject, spec: ProfileSpec, data_root: Path, workdir: Path, log) -> dict[str, Any]:
    """Evaluation loop end to end vs bare forward vs the official-style reference, for one method."""
    from rich.console import Console  # noqa: PLC0415

    from cape_bench.config import load_config  # noqa: PLC0415
    from cape_bench.data.mp100 import load_annotation_set, split_file  # noqa: PLC0415
    from cape_bench.episodes import build_manifest  # noqa: PLC0415
    from cape_bench.runner import Runner  # noqa: PLC0415

    name = subject.name
    method = subject.method
    q = spec.queries
    ann_dir = data_root / "annotations"
    put = []

    def setting(key: str, value: Any) -> None:
        put.append(f"{key}={json.dumps(value)}")

    setting("dataset.name", "mp100")
    setting("dataset.ann_dir", str(ann_dir))
    setting("dataset.image_root", str(data_root / "images"))
    setting("protocol.splits", [1])
    setting("protocol.shots", [spec.shots])
    setting("protocol.num_episodes", spec.harness_episodes)
    setting("protocol.num_queries", q)
    setting("run.methods", [name])
    setting("run.device", spec.device)
    setting("run.report", False)
    setting("synth.cache_dir", str(workdir / "harness-cache"))  # a cold text-embedding cache, as in a first run
    cls = type(method)
    for key, value in method_options(cls, spec.preset, spec.backbone, q).items():
        if key in ("preset", "backbone", "batch_size"):
            setting(f"methods.{name}.{key}", value)
        else:
            setting(f"methods.{name}.options.{key}", value)
    if subject.checkpoint is not None:
        setting(f"methods.{name}.checkpoint", str(subject.checkpoint))
    cfg = load_config(None, put)
    run_dir = workdir / "harness-runs" / f"{name}-{time.strftime('%H%M%S')}-{os.getpid()}"
    runner = Runner(cfg, run_dir, console=Console(file=io.StringIO(), width=200), show_progress=False)
    sync(spec.device)
    t0 = time.perf_counter()
    outcomes = runner.execute()
    sync(spec.device)
    wall = time.perf_counter() - t0
    failed = [o for o in outcomes if o.status != "done"]
    if failed:
        raise RuntimeError(f"evaluation loop: {failed[0].status} {failed[0].error}")
    record = outcomes[0].record
    timings = record["timings"]
    pairs = int(record["pairs"])
    loop_s = wall - timings["prepare_s"]
    stages = {k: float(v) for k, v in timings.items()  # seconds of the loop's stages (data_s, instance_s, ...)
              if k.endswith("_s") and k not in ("prepare_s", "pairs_per_s") and v is not None}
    harness_pps = pairs / loop_s
    bare_samples = bare_forward_samples(method, subject.inputs, q, spec.repeats, spec.device)
    bare = summarize(bare_samples)
    bare_pps = q / bare["median"]
    ann = load_annotation_set(split_file(ann_dir, 1, "test"))
    manifest = build_manifest(ann, spec.shots, num_episodes=spec.harness_episodes, num_queries=q)
    ref = official_style_reference_loop(method, ann, manifest, data_root / "images",
                                        max_pairs=spec.reference_pairs, device=spec.device)
    loop_pps = timings.get("pairs_per_s")
    return {
        "batch_size": q, "status": "ok", "pairs": pairs, "episodes": pairs // q,
        "harness_s": loop_s, "harness_pairs_per_s": harness_pps, "loop_pairs_per_s": loop_pps,
        **{k: stages.get(k, 0.0) for k in ("data_s", "instance_s", "support_s", "predict_s")},
        "other_s": max(0.0, loop_s - sum(stages.values())),
        "feature_cache": bool((record.get("feature_cache") or {}).get("used", False)),
        "bare_pairs_per_s": bare_pps, "bare_ms": bare["median"] * 1e3, "bare_iqr_ms": bare["iqr"] * 1e3,
        "bare_samples_ms": to_ms(bare_samples),
        "harness_over_bare": harness_pps / bare_pps,
        "loop_over_bare": (loop_pps / bare_pps) if loop_pps else None,
        "reference_pairs": ref["pairs"], "reference_pairs_per_s": ref["pairs_per_s"],
        "reference_text_strings": ref["text_strings_encoded"],
        "harness_over_reference": harness_pps / ref["pairs_per_s"],
        "amp": False, "amp_dtype": "float32", "compile": False,  # the evaluation loop: no autocast / compile
    }
