"""What a profile measures (:class:`ProfileSpec`), its file constants, and the statistics of its samples."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

PROFILE_FORMAT = "cape-bench-profile"
PROFILE_VERSION = 1
WEIGHTS_NOTE = "random init weights; speed only"
PROFILE_FILE = "profile.csv"  # the name the report looks for in a run directory

#: stamp fields that must agree before two profiles are compared (a number measured elsewhere is another number)
MACHINE_KEYS = ("device", "device_name", "torch", "cuda", "threads", "interop_threads")
#: every stamp field written on each row
STAMP_KEYS = ("device", "device_name", "torch", "cuda", "cudnn", "threads", "interop_threads", "cpu_count", "host",
              "python", "platform", "created", "git", "load_avg", "weights")
#: what identifies the same measurement in two profiles
ROW_KEYS = ("method", "preset", "backbone", "batch_size", "amp", "compile", "keypoints", "shots")
SAMPLE_COLUMNS = ("support_samples_ms", "predict_samples_ms", "text_samples_ms", "bare_samples_ms")

#: COCO's 17 keypoint names: realistic description lengths for the text encoders
COCO_KEYPOINTS = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle")


class ProfileMismatchError(ValueError):
    """Two profiles that cannot be compared (different machines, software or thread counts)."""


# ----------------------------------------------------------------------------------------------------------------
# Configuration and statistics


@dataclass(frozen=True)
class ProfileSpec:
    """What ``cape-bench profile`` measures.

    Attributes:
        methods: registry names.
        preset: the methods' preset (``quick`` or ``official``): the architecture and crop size profiled.
        backbone: backbone override (empty: each preset's own).
        batch_sizes: query batch sizes B.
        device: ``cpu`` or ``cuda`` (``cuda:N`` accepted).
        amp: autocast (bfloat16 on CPU, float16 on CUDA) around every timed call.
        compile: ``torch.compile`` the modules a forward calls (see :func:`compile_model`).
        compile_backend: torch.compile backend (``inductor``; ``eager`` traces without code generation).
        repeats: timed repeats (every one a full round over methods and batch sizes).
        warmup: untimed calls per (method, batch size) before the first repeat.
        keypoints: K of the synthetic category.
        shots: support instances S.
        seed: weights and synthetic inputs.
        harness: measure the harness overhead and the official-style reference loop too.
        harness_categories / harness_episodes: size of the evaluation-loop dataset (categories, episodes each).
        queries: queries per episode (the protocol's 15); the harness batch size.
        reference_pairs: pairs the official-style reference loop runs (at most the harness's pairs).
        image_size: side of the harness dataset's images, px.
    """

    methods: tuple[str, ...]
    preset: str = "quick"
    backbone: str = ""
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    device: str = "cpu"
    amp: bool = False
    compile: bool = False
    compile_backend: str = "inductor"
    repeats: int = 5
    warmup: int = 1
    keypoints: int = 17
    shots: int = 1
    seed: int = 0
    harness: bool = True
    harness_categories: int = 2
    harness_episodes: int = 2
    queries: int = 15
    reference_pairs: int = 30
    image_size: int = 256

    def __post_init__(self) -> None:
        if not self.methods:
            raise ValueError("profile: no method given")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ValueError(f"profile: batch sizes must be positive, got {self.batch_sizes}")
        if self.repeats < 1 or self.warmup < 0:
            raise ValueError("profile: repeats must be ≥ 1 and warmup ≥ 0")
        if self.keypoints < 1 or self.shots < 1 or self.queries < 1:
            raise ValueError("profile: keypoints, shots and queries must be ≥ 1")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"profile: device must be cpu or cuda, got {self.device!r}")


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """Median, quartiles and interquartile range of timing samples (linear interpolation, numpy's default)."""
    arr = np.asarray(samples, dtype=np.float64)
    if arr.size == 0:
        nan = float("nan")
        return {"median": nan, "q25": nan, "q75": nan, "iqr": nan, "n": 0}
    q25, med, q75 = np.percentile(arr, [25, 50, 75])
    return {"median": float(med), "q25": float(q25), "q75": float(q75), "iqr": float(q75 - q25), "n": int(arr.size)}


def round_robin(methods: Sequence[str], repeats: int) -> Iterator[tuple[int, str]]:
    """``(repeat, method)`` in the order the timed calls run: every repeat visits each method once, the first
    method rotating, so no method always runs first (cold) or right after a heavy one."""
    n = len(methods)
    for r in range(repeats):
        for i in range(n):
            yield r, methods[(r + i) % n]
