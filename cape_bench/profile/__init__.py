"""``cape-bench profile``: latency, throughput, memory, parameters and FLOPs of CAPE methods, CPU and CUDA.

What is measured, per method (the :class:`~cape_bench.api.Method` contract, nothing method-specific):

* **support encoding** (``encode_support`` of an S-shot support set) and **query prediction** (``predict`` of B
  queries) are timed separately, at every batch size B; ``pairs/s`` is B over the median prediction time;
* every sample is kept; the median and the interquartile range are reported; warm-up calls come first; on CUDA
  the timed region is closed by ``torch.cuda.synchronize()`` on both sides;
* methods are interleaved: repeat r runs every method once, starting at method r mod n (round robin), so machine
  noise (other processes, frequency changes) hits all methods alike;
* peak memory of each (method, batch) call: CUDA ``max_memory_allocated`` after ``reset_peak_memory_stats``; CPU
  the resident-set high-water mark (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``; elsewhere
  ``getrusage`` ``ru_maxrss``, which cannot be reset). ``peak_work_mb`` is the part the call itself added;
  ``peak_mem_mb`` is the process / device total (every profiled method is loaded at once);
* parameters: total, trainable (what the preset trains: the backbone is frozen when the preset says so), and the
  frozen encoders (backbone, text encoder, image encoder) — shared tensors counted once;
* FLOPs of one query forward (``predict`` of one query) with ``torch.utils.flop_counter.FlopCounterMode``, and of
  the text encoder on the category's K descriptions (text methods);
* ``text_ms``: the text encoder on the K descriptions with no embedding cache (what the official code pays in
  every forward; the harness pays it once per distinct string).

Profiling never trains: each method is built with **random-init weights** at its preset's architecture (speed does
not depend on the values) and fed synthetic inputs: random crops and one synthetic category of K keypoints (COCO
names, K = 17 by default). Every query carries a fresh annotation id, so per-instance caches (CapeNext's query-image
token) never serve a timed call; keypoint-text embeddings are cached after the warm-up, as in an evaluation.

Harness overhead (``--no-harness`` skips it): the evaluation loop (:class:`cape_bench.runner.Runner`, end to end
on a small MP-100-format dataset with JPEG images written here) against the bare model forward
(``predict_normalized`` on device tensors) at the same batch size (the queries of one episode), and against
:func:`official_style_reference_loop`: batch 1, images read per pair, support re-encoded per pair and the text
encoder run inside every forward with no cache — the way the official code evaluates.

Rows carry the machine stamp (device, torch / CUDA / cuDNN versions, thread counts); :func:`compare_profiles`
refuses two profiles whose stamps differ. Module import is torch-free; torch is imported when profiling runs.
"""

from __future__ import annotations

from cape_bench.profile.command import add_profile_parser, cmd_profile, default_methods, main, spec_from_args  # noqa: F401
from cape_bench.profile.files import clean_value, compare_profiles, machine_key, read_profile, row_key, write_profile  # noqa: F401
from cape_bench.profile.harness import bare_forward_samples, measure_harness, official_style_reference_loop  # noqa: F401
from cape_bench.profile.inputs import SyntheticInputs, keypoint_names, synthetic_category, write_profile_dataset  # noqa: F401
from cape_bench.profile.machine import MemoryProbe, amp_dtype, autocast_context, machine_stamp, sync  # noqa: F401
from cape_bench.profile.measure import profile_methods  # noqa: F401
from cape_bench.profile.models import (  # noqa: F401
    build_method,
    compile_model,
    count_flops,
    count_parameters,
    method_options,
    outermost_modules,
    text_cache_bypassed,
    uncached_text_encoder,
)
from cape_bench.profile.render import fmt, print_comparison, print_profile, stamp_line  # noqa: F401
from cape_bench.profile.spec import (  # noqa: F401
    COCO_KEYPOINTS,
    MACHINE_KEYS,
    PROFILE_FILE,
    PROFILE_FORMAT,
    PROFILE_VERSION,
    ROW_KEYS,
    SAMPLE_COLUMNS,
    STAMP_KEYS,
    WEIGHTS_NOTE,
    ProfileMismatchError,
    ProfileSpec,
    round_robin,
    summarize,
)
from cape_bench.profile.timing import ProfileResult, Subject, timed, to_ms  # noqa: F401

__all__ = [
    "COCO_KEYPOINTS",
    "MACHINE_KEYS",
    "MemoryProbe",
    "PROFILE_FILE",
    "PROFILE_FORMAT",
    "PROFILE_VERSION",
    "ProfileMismatchError",
    "ProfileResult",
    "ProfileSpec",
    "ROW_KEYS",
    "SAMPLE_COLUMNS",
    "STAMP_KEYS",
    "Subject",
    "SyntheticInputs",
    "WEIGHTS_NOTE",
    "add_profile_parser",
    "amp_dtype",
    "autocast_context",
    "bare_forward_samples",
    "build_method",
    "clean_value",
    "cmd_profile",
    "compare_profiles",
    "compile_model",
    "count_flops",
    "count_parameters",
    "default_methods",
    "fmt",
    "keypoint_names",
    "machine_key",
    "machine_stamp",
    "main",
    "measure_harness",
    "method_options",
    "official_style_reference_loop",
    "outermost_modules",
    "print_comparison",
    "print_profile",
    "profile_methods",
    "read_profile",
    "round_robin",
    "row_key",
    "spec_from_args",
    "stamp_line",
    "summarize",
    "sync",
    "synthetic_category",
    "text_cache_bypassed",
    "timed",
    "to_ms",
    "uncached_text_encoder",
    "write_profile",
    "write_profile_dataset",
]
