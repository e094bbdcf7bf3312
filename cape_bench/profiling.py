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

import argparse
import contextlib
import dataclasses
import gc
import io
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cape_bench.api import Category, InstanceView

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


# ----------------------------------------------------------------------------------------------------------------
# Machine stamp, device helpers


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def machine_stamp(device: str = "cpu") -> dict[str, Any]:
    """Where a profile was measured: the fields every row carries (see :data:`STAMP_KEYS`)."""
    import torch  # noqa: PLC0415

    cuda = device.startswith("cuda")
    if cuda:
        index = torch.device(device).index or 0
        name = torch.cuda.get_device_name(index)
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    else:
        name = _cpu_name()
        cudnn = None
    return {
        "device": "cuda" if cuda else "cpu",
        "device_name": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": cudnn,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "host": platform.node(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git": _git_label(),
        "load_avg": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,  # noise: other work
        "weights": WEIGHTS_NOTE,
    }


def _git_label() -> str | None:
    """``<sha12>`` or ``<sha12>+dirty`` of the code that was profiled (None outside a checkout)."""
    from cape_bench.runner import git_state  # noqa: PLC0415  (torch-free)

    state = git_state()
    if not state.get("sha"):
        return None
    return state["sha"][:12] + ("+dirty" if state.get("dirty") else "")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch  # noqa: PLC0415

        torch.cuda.synchronize(device)


def autocast_context(device: str, amp: bool):
    """``torch.autocast`` with bfloat16 on CPU and float16 on CUDA, or a no-op context."""
    if not amp:
        return contextlib.nullcontext()
    import torch  # noqa: PLC0415

    if device.startswith("cuda"):
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast("cpu", dtype=torch.bfloat16)


def amp_dtype(device: str, amp: bool) -> str:
    if not amp:
        return "float32"
    return "float16" if device.startswith("cuda") else "bfloat16"


class MemoryProbe:
    """Peak memory of one call: reset before, read after.

    CUDA: ``reset_peak_memory_stats`` / ``max_memory_allocated`` (bytes the caching allocator handed out).
    CPU (Linux): ``VmHWM`` after writing 5 to ``/proc/self/clear_refs`` (resets the high-water mark to the current
    RSS). Elsewhere: ``ru_maxrss``, a process-lifetime maximum that cannot be reset (``peak_work_mb`` is then None).
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.cuda = device.startswith("cuda")
        self.resettable = self.cuda or self._try_reset_hwm()
        if self.cuda:
            self.source = "cuda max_memory_allocated"
        elif self.resettable:
            self.source = "VmHWM (Linux RSS high-water mark, reset per call)"
        else:
            self.source = "ru_maxrss (process high-water mark, not resettable)"
        self._base = 0.0

    @staticmethod
    def _try_reset_hwm() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            return _proc_status_kb("VmHWM") is not None
        except OSError:
            return False

    def reset(self) -> None:
        if self.cuda:
            import torch  # noqa: PLC0415

            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device) / 2**20
        elif self.resettable:
            self._try_reset_hwm()
            self._base = (_proc_status_kb("VmRSS") or 0) / 1024
        else:
            self._base = _current_rss_mb()

    def read(self) -> tuple[float, float | None]:
        """(peak total MB, peak added by the call MB or None)."""
        if self.cuda:
            import torch  # noqa: PLC0415

            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
            return peak, max(0.0, peak - self._base)
        if self.resettable:
            peak = (_proc_status_kb("VmHWM") or 0) / 1024
            return peak, max(0.0, peak - self._base)
        usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = usage / 2**20 if sys.platform == "darwin" else usage / 1024  # bytes on macOS, KiB on Linux
        return peak, None


def _proc_status_kb(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _current_rss_mb() -> float:
    try:
        import psutil  # noqa: PLC0415  (optional)

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        kb = _proc_status_kb("VmRSS")
        return kb / 1024 if kb is not None else 0.0


# ----------------------------------------------------------------------------------------------------------------
# Synthetic inputs


def keypoint_names(k: int) -> tuple[str, ...]:
    """K keypoint names: COCO's 17, then ``extra_point_<i>``."""
    return tuple(COCO_KEYPOINTS[i] if i < len(COCO_KEYPOINTS) else f"extra_point_{i}" for i in range(k))


def synthetic_category(k: int = 17, category_id: int = 1, name: str = "profile_person") -> Category:
    """A category of K keypoints (COCO names, descriptions with ``_`` → space, a chain skeleton)."""
    names = keypoint_names(k)
    return Category(id=category_id, name=name, supercategory="profile", keypoint_names=names,
                    descriptions=tuple(n.replace("_", " ") for n in names),
                    skeleton=np.array([[j, j + 1] for j in range(k - 1)], dtype=np.int64).reshape(-1, 2))


class SyntheticInputs:
    """Support and query views of one synthetic category, crops of ``input_size`` px (random pixels).

    Every query view gets fresh annotation ids, so per-instance caches never serve a timed call.

    Args:
        category: the category.
        input_size: crop side S (the method's ``info.input_size``).
        needs_images: attach crops.
        max_queries: largest query batch.
        shots: support instances.
        seed: pixels and keypoints.
    """

    IMAGE_SIDE = 256.0  # the frame the boxes live in
    BBOX = (32.0, 32.0, 192.0, 192.0)

    def __init__(self, category: Category, input_size: int, needs_images: bool, max_queries: int, shots: int = 1,
                 seed: int = 0) -> None:
        self.category = category
        self.input_size = input_size
        self.needs_images = needs_images
        self.shots = shots
        rng = np.random.default_rng(seed)
        k = category.num_keypoints
        n = max_queries + shots
        self.crops = rng.integers(0, 256, size=(n, input_size, input_size, 3), dtype=np.uint8) if needs_images \
            else None
        x, y, w, h = self.BBOX
        self.keypoints = np.stack([rng.uniform(x, x + w, size=(n, k)), rng.uniform(y, y + h, size=(n, k))],
                                  axis=-1).astype(np.float32)
        self._next_id = 10**9 + seed * 10**6

    def _ids(self, n: int) -> np.ndarray:
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._next_id += n
        return ids

    def _view(self, rows: slice, n: int, ground_truth: bool) -> InstanceView:
        x, y, w, h = self.BBOX
        side = max(w, h) * 1.25 / 200.0
        return InstanceView(
            category=self.category, ann_ids=self._ids(n), image_files=tuple(f"profile/{i}.jpg" for i in range(n)),
            bbox_px=np.tile(np.array(self.BBOX, dtype=np.float64), (n, 1)),
            center_px=np.tile(np.array([x + w / 2, y + h / 2], dtype=np.float32), (n, 1)),
            scale=np.tile(np.array([side, side], dtype=np.float32), (n, 1)),
            crops=None if self.crops is None else self.crops[rows],
            keypoints_px=self.keypoints[rows] if ground_truth else None,
            visible=np.ones((n, self.category.num_keypoints), dtype=bool) if ground_truth else None,
        )

    def support(self) -> InstanceView:
        return self._view(slice(0, self.shots), self.shots, True)

    def queries(self, n: int, ground_truth: bool = False) -> InstanceView:
        return self._view(slice(self.shots, self.shots + n), n, ground_truth)


def write_profile_dataset(root: str | Path, *, categories: int = 2, instances: int = 20, keypoints: int = 17,
                          image_size: int = 256, seed: int = 0) -> Path:
    """A small MP-100-format dataset with JPEG images: ``root/annotations/mp100_split1_test.json`` + ``images/``.

    Content is random (noise and blobs); only the shapes matter: it exists so the evaluation loop can run end to
    end (decode, crop, episodes, scoring) without MP-100 or CAPE-Synth.

    Returns:
        ``root``.
    """
    import cv2  # noqa: PLC0415

    root = Path(root)
    rng = np.random.default_rng(seed)
    ann_dir = root / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    names = keypoint_names(keypoints)
    cats, imgs, anns = [], [], []
    for c in range(categories):
        cid = c + 1
        cats.append({"id": cid, "name": f"profile_thing_{cid}", "supercategory": "profile", "keypoints": list(names),
                     "skeleton": [[j, j + 1] for j in range(keypoints - 1)]})
        for i in range(instances):
            image_id = cid * 10_000 + i
            side = rng.uniform(0.4, 0.8) * image_size
            x0, y0 = rng.uniform(0, image_size - side, size=2)
            pts = np.stack([rng.uniform(x0, x0 + side, keypoints), rng.uniform(y0, y0 + side, keypoints)], axis=1)
            kp = np.concatenate([pts, np.full((keypoints, 1), 2.0)], axis=1)
            file_name = f"profile_thing_{cid}/{i:04d}.jpg"
            path = root / "images" / file_name
            path.parent.mkdir(parents=True, exist_ok=True)
            img = rng.integers(0, 256, size=(image_size, image_size, 3), dtype=np.uint8)
            for (px, py) in pts:
                cv2.circle(img, (int(px), int(py)), 3, (240, 200, 40), -1)
            cv2.imwrite(str(path), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
            imgs.append({"id": image_id, "file_name": file_name, "width": image_size, "height": image_size})
            anns.append({"id": image_id * 10, "image_id": image_id, "category_id": cid, "iscrowd": 0,
                         "keypoints": [round(float(v), 3) for v in kp.ravel()], "num_keypoints": keypoints,
                         "bbox": [float(x0), float(y0), float(side), float(side)], "area": float(side * side)})
    data = {"info": {"description": "cape-bench profile dataset (random content; speed only)"}, "images": imgs,
            "annotations": anns, "categories": cats}
    (ann_dir / "mp100_split1_test.json").write_text(json.dumps(data))
    return root


# ----------------------------------------------------------------------------------------------------------------
# Building methods with random-init weights


def is_torch_method(cls) -> bool:
    """A method built by ``build_model()`` from presets (:class:`baselines.common.plugin.TorchMethod`)."""
    return callable(getattr(cls, "build_model", None)) and isinstance(getattr(cls, "presets", None), dict)


def method_options(cls, preset: str, backbone: str, batch_size: int) -> dict[str, Any]:
    """Constructor options that build ``cls`` at ``preset``'s architecture with random-init weights and no
    download (text / image encoders: genuine where on disk, else random init of the same architecture)."""
    if not is_torch_method(cls):
        return {}
    opts: dict[str, Any] = {"preset": preset, "batch_size": batch_size, "backbone_weights": "random"}
    if backbone:
        opts["backbone"] = backbone
    if callable(getattr(cls, "load_encoders", None)):
        opts["allow_random_encoders"] = True
    return opts


def random_init_checkpoint(method, ctx, path: Path, seed: int = 0, log: Callable[[str], None] = print) -> Path:
    """Write ``model.safetensors`` of ``method.build_model()`` with seeded random-init weights.

    The method then loads it through its ordinary ``prepare`` (checkpoint path), so profiling runs exactly the
    code an evaluation runs, without training.
    """
    import torch  # noqa: PLC0415
    from safetensors.torch import save_file  # noqa: PLC0415

    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):  # messages a method prints before prepare() gives it ctx.log
        if callable(getattr(method, "load_encoders", None)):
            method.load_encoders(ctx)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = method.build_model()
    for line in captured.getvalue().splitlines():
        if line.strip():
            log(line)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def build_method(name: str, *, preset: str, backbone: str, device: str, batch_size: int, workdir: Path,
                 shots: int = 1, seed: int = 0, log: Callable[[str], None] = print):
    """A registered method, prepared on ``device`` with random-init weights at ``preset``'s architecture.

    Returns:
        (method, checkpoint path or None for methods without a model).
    """
    from cape_bench.api import RunContext  # noqa: PLC0415
    from cape_bench.registry import create_method, load_method_class  # noqa: PLC0415

    cls = load_method_class(name)
    method = create_method(name, **method_options(cls, preset, backbone, batch_size))
    ctx = RunContext(dataset="profile", split=1, shots=shots, ann_dir=str(workdir), image_root=None,
                     cache_dir=str(workdir / "cache"), options={}, device=device, seed=seed, log=log)
    checkpoint = None
    if is_torch_method(cls):
        tag = f"{name}-{preset}-{backbone or 'default'}-{seed}"
        checkpoint = random_init_checkpoint(method, ctx, workdir / "weights" / tag / "model.safetensors", seed, log)
        method.checkpoint = str(checkpoint)
    method.prepare(ctx)
    return method, checkpoint


# ----------------------------------------------------------------------------------------------------------------
# Parameters, FLOPs, text encoders, compile


def _tensors_of(obj, exclude: tuple[str, ...] = ()) -> list:
    """Weight tensors an encoder object holds: an ``nn.Module``'s parameters and buffers, a dict of tensors, or
    the usual attributes (``model``, ``features``, ``params``, ``proj``)."""
    import torch  # noqa: PLC0415

    if obj is None:
        return []
    if isinstance(obj, torch.nn.Module):
        skip = set()
        for name in exclude:
            sub = getattr(obj, name, None)
            if isinstance(sub, torch.nn.Module):
                skip |= {id(t) for t in sub.parameters()} | {id(t) for t in sub.buffers()}
        return [t for t in [*obj.parameters(), *obj.buffers()] if id(t) not in skip]
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [v for v in obj.values() if isinstance(v, torch.Tensor)]
    out = []
    for attr in ("model", "features", "params", "proj"):
        out += _tensors_of(getattr(obj, attr, None), exclude)
    return out


def count_parameters(method) -> dict[str, Any]:
    """Parameter counts of a prepared method.

    Returns:
        ``params_total`` (model + frozen encoders, shared tensors once), ``params_trainable`` (model parameters the
        preset trains: all but a frozen backbone), ``params_frozen``, ``params_backbone``, ``params_text_encoder``,
        ``params_image_encoder`` and ``weights_mb`` (bytes of every weight tensor, buffers included).
    """
    import torch  # noqa: PLC0415

    model = getattr(method, "model", None)
    groups: dict[str, list] = {"model": [], "backbone": [], "text": [], "image": []}
    if isinstance(model, torch.nn.Module):
        groups["model"] = list(model.parameters())
        backbone = getattr(model, "backbone", None)
        if isinstance(backbone, torch.nn.Module):
            groups["backbone"] = list(backbone.parameters())
    text = getattr(method, "text", None)
    image = getattr(method, "image", None)
    # CLIP's text encoder holds the whole CLIP model: its image tower belongs to the image-token count
    groups["text"] = _tensors_of(text, exclude=("visual",))
    groups["image"] = _tensors_of(getattr(image, "model", None).visual if image is not None and hasattr(
        getattr(image, "model", None), "visual") else image)

    def numel(tensors, seen: set) -> int:
        total = 0
        for t in tensors:
            key = (t.data_ptr(), t.numel()) if t.numel() else id(t)
            if key not in seen:
                seen.add(key)
                total += t.numel()
        return total

    model_params = numel(groups["model"], set())
    backbone_params = numel(groups["backbone"], set())
    seen: set = set()
    total = numel(groups["model"], seen)
    text_params = numel(groups["text"], seen)
    image_params = numel(groups["image"], seen)
    total += text_params + image_params
    preset = getattr(method, "preset", None)
    frozen_backbone = bool(getattr(preset, "freeze_backbone", False))
    trainable = model_params - (backbone_params if frozen_backbone else 0)
    weight_tensors = [*groups["model"], *groups["text"], *groups["image"]]
    if isinstance(model, torch.nn.Module):
        weight_tensors += list(model.buffers())
    seen_bytes: set = set()
    nbytes = 0
    for t in weight_tensors:
        key = (t.data_ptr(), t.numel()) if t.numel() else id(t)
        if key not in seen_bytes:
            seen_bytes.add(key)
            nbytes += t.numel() * t.element_size()
    return {
        "params_total": int(total), "params_trainable": int(trainable), "params_frozen": int(total - trainable),
        "params_backbone": int(backbone_params), "params_text_encoder": int(text_params),
        "params_image_encoder": int(image_params), "backbone_frozen": frozen_backbone,
        "weights_mb": nbytes / 2**20,
    }


def count_flops(fn: Callable[[], Any]) -> int:
    """Floating-point operations of one call of ``fn`` (``FlopCounterMode``: matmuls, convolutions, attention;
    element-wise operations are not counted)."""
    from torch.utils.flop_counter import FlopCounterMode  # noqa: PLC0415

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def uncached_text_encoder(method) -> Callable[[Sequence[str]], np.ndarray] | None:
    """The method's frozen text encoder network with **no** embedding cache (every call runs the network), or None
    for a method without one. The call counts the strings it encodes in its ``.encoded`` attribute."""
    encoder = getattr(method, "text", None)
    if encoder is None or not callable(getattr(encoder, "_encode_all", None)):
        return None

    def encode(texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        encode.encoded += len(texts)
        if not texts:
            return np.zeros((0, encoder.dim), np.float32)
        return encoder._encode_all(texts)  # noqa: SLF001  (the network itself, bypassing the cache on purpose)

    encode.encoded = 0
    return encode


@contextlib.contextmanager
def text_cache_bypassed(method):
    """Inside the block the method's model calls the text encoder uncached (the official behaviour).

    Yields the uncached encoder (``.encoded`` counts strings) or None when the method reads no text.
    """
    model = getattr(method, "model", None)
    encode = uncached_text_encoder(method)
    if encode is None or model is None or not hasattr(model, "encode_text"):
        yield None
        return
    previous = model.encode_text
    model.encode_text = encode
    try:
        yield encode
    finally:
        model.encode_text = previous


def outermost_modules(model, calls: Sequence[Callable[[], Any]]) -> list[tuple[str, Any]]:
    """The submodules of ``model`` that ``calls`` invoke while no other submodule of it is running (the entry
    points of a forward that goes through plain methods, e.g. ``head.predict``), in first-call order."""
    import torch  # noqa: PLC0415

    names = {id(m): n for n, m in model.named_modules()}
    depth = [0]
    found: dict[int, tuple[str, Any]] = {}
    handles = []

    def pre(module, _args):
        if depth[0] == 0 and id(module) not in found:
            found[id(module)] = (names[id(module)] or "<model>", module)
        depth[0] += 1

    def post(_module, _args, _out):
        depth[0] -= 1

    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    try:
        with torch.inference_mode():
            for call in calls:
                depth[0] = 0
                call()
    finally:
        for h in handles:
            h.remove()
    return list(found.values())


def compile_model(method, calls: Sequence[Callable[[], Any]], backend: str = "inductor") -> list[str]:
    """``nn.Module.compile`` (in place) on every outermost module the calls run (see :func:`outermost_modules`).

    Returns:
        the compiled modules' names (empty for a method without a model).
    """
    import torch  # noqa: PLC0415

    model = getattr(method, "model", None)
    if not isinstance(model, torch.nn.Module):
        return []
    compiled = []
    for name, module in outermost_modules(model, calls):
        module.compile(backend=backend)
        compiled.append(name)
    return compiled


# ----------------------------------------------------------------------------------------------------------------
# The latency profile


@dataclass
class _Subject:
    """One method under measurement."""

    name: str
    method: Any = None
    inputs: SyntheticInputs | None = None
    checkpoint: Path | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    support: dict[int, list[float]] = field(default_factory=dict)
    predict: dict[int, list[float]] = field(default_factory=dict)
    peak: dict[int, float] = field(default_factory=dict)
    peak_work: dict[int, float | None] = field(default_factory=dict)
    text: list[float] = field(default_factory=list)
    error: str = ""


@dataclass
class ProfileResult:
    """Rows of one profile: ``rows`` (kind ``model``: one per method × batch size) and ``harness`` (kind
    ``harness``: one per method), each carrying the machine stamp."""

    machine: dict[str, Any]
    spec: dict[str, Any]
    rows: list[dict[str, Any]]
    harness: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def _timed(device: str, fn: Callable[[], Any]) -> tuple[float, Any]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def _episode_unit(subject: _Subject, batch: int, spec: ProfileSpec, probe: MemoryProbe | None) -> tuple[float, float]:
    """One timed (support, predict) pair at ``batch``: seconds of each. Views are built before the timer."""
    method = subject.method
    support = subject.inputs.support()
    queries = subject.inputs.queries(batch, ground_truth=method.info.reads_query_ground_truth)
    if probe is not None:
        probe.reset()
    with autocast_context(spec.device, spec.amp):
        t_support, state = _timed(spec.device, lambda: method.encode_support(support))
        t_predict, out = _timed(spec.device, lambda: method.predict(state, queries))
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


def _prepare_subject(subject: _Subject, spec: ProfileSpec, workdir: Path, log) -> None:
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
        subjects = [_Subject(name) for name in spec.methods]
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
                        subject.text.append(_timed("cpu", lambda e=encode, d=descriptions: e(d))[0])
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


def _identity(subject: _Subject, spec: ProfileSpec) -> dict[str, Any]:
    return {"method": subject.name, "preset": spec.preset,
            "backbone": subject.facts.get("backbone") or spec.backbone or "",
            "amp": spec.amp, "amp_dtype": amp_dtype(spec.device, spec.amp), "compile": spec.compile,
            "keypoints": spec.keypoints, "shots": spec.shots}


def _ms(samples: Sequence[float]) -> list[float]:
    return [round(s * 1e3, 6) for s in samples]


def _rows_of(subject: _Subject, spec: ProfileSpec, machine: dict, probe: MemoryProbe) -> list[dict[str, Any]]:
    rows = []
    text = summarize(_ms(subject.text)) if subject.text else None
    for batch in spec.batch_sizes:
        sup = summarize(_ms(subject.support.get(batch, [])))
        pred = summarize(_ms(subject.predict.get(batch, [])))
        per_sample = [batch / (t / 1e3) for t in _ms(subject.predict.get(batch, [])) if t > 0]
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
            "support_samples_ms": _ms(subject.support.get(batch, [])),
            "predict_samples_ms": _ms(subject.predict.get(batch, [])),
            "text_samples_ms": _ms(subject.text),
            **machine,
        }
        rows.append(row)
    return rows


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
        _sync(device)
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
        _sync(device)
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
        return [_timed(device, lambda i=i: call(i))[0] for i in range(1, repeats + 1)]


def measure_harness(subject: _Subject, spec: ProfileSpec, data_root: Path, workdir: Path, log) -> dict[str, Any]:
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
    _sync(spec.device)
    t0 = time.perf_counter()
    outcomes = runner.execute()
    _sync(spec.device)
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
        "bare_samples_ms": _ms(bare_samples),
        "harness_over_bare": harness_pps / bare_pps,
        "loop_over_bare": (loop_pps / bare_pps) if loop_pps else None,
        "reference_pairs": ref["pairs"], "reference_pairs_per_s": ref["pairs_per_s"],
        "reference_text_strings": ref["text_strings_encoded"],
        "harness_over_reference": harness_pps / ref["pairs_per_s"],
        "amp": False, "amp_dtype": "float32", "compile": False,  # the evaluation loop: no autocast / compile
    }


# ----------------------------------------------------------------------------------------------------------------
# Profile files


def _cell(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return " ".join(repr(float(v)) for v in value)
    return value


def write_profile(result: ProfileResult, path: str | Path) -> Path:
    """Write a profile: ``.json`` (machine, spec, notes and every row) or CSV (one row per measurement, the
    machine stamp and every timing sample on each row). Returns the path."""
    import pandas as pd  # noqa: PLC0415

    from cape_bench.store import atomic_write_text, write_json  # noqa: PLC0415

    path = Path(path)
    rows = [*result.rows, *result.harness]
    if path.suffix.lower() == ".json":
        write_json(path, {"format": PROFILE_FORMAT, "version": PROFILE_VERSION, "machine": result.machine,
                          "spec": result.spec, "notes": result.notes, "rows": rows})
        return path
    frame = pd.DataFrame([{k: _cell(v) for k, v in row.items()} for row in rows])
    atomic_write_text(path, frame.to_csv(index=False))
    return path


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_profile(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a profile file written by :func:`write_profile` (CSV or JSON); samples as lists of ms.

    Raises:
        FileNotFoundError: no such file. ValueError: not a cape-bench profile.
    """
    import pandas as pd  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: profile file not found")
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
            raise ValueError(f"{path}: not a cape-bench profile (format {data.get('format')!r})")
        return [dict(r) for r in data["rows"]]
    frame = pd.read_csv(path)
    missing = {"kind", "method", "batch_size", *MACHINE_KEYS} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: not a cape-bench profile (columns missing: {', '.join(sorted(missing))})")
    rows = []
    for rec in frame.to_dict("records"):
        row = {k: _clean(v) for k, v in rec.items()}
        for key in SAMPLE_COLUMNS:
            if key in row:
                text = row[key]
                row[key] = [float(t) for t in str(text).split()] if text not in (None, "") else []
        for key in ("amp", "compile", "backbone_frozen"):
            if isinstance(row.get(key), str):
                row[key] = row[key].strip().lower() == "true"
        for key in ("batch_size", "keypoints", "shots", "threads", "interop_threads", "repeats", "warmup", "pairs",
                    "episodes", "reference_pairs", "reference_text_strings", "cpu_count"):
            if isinstance(row.get(key), float) and row[key].is_integer():
                row[key] = int(row[key])
        rows.append(row)
    return rows


def _norm(value: Any) -> Any:
    value = _clean(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None if value is None else str(value) if not isinstance(value, (int, bool)) else value


def machine_key(row: dict[str, Any]) -> tuple:
    """The fields that must agree before two rows are compared (:data:`MACHINE_KEYS`)."""
    return tuple(_norm(row.get(k)) for k in MACHINE_KEYS)


def row_key(row: dict[str, Any]) -> tuple:
    return tuple(_norm(row.get(k)) for k in ROW_KEYS)


def compare_profiles(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> dict[str, Any]:
    """Compare the latency rows of two profiles measured on the same machine.

    Rows are matched on method, preset, backbone, batch size, AMP, compile, K and shots. A matched pair whose
    machine stamps differ (device, torch, CUDA, thread counts) refuses the whole comparison.

    Returns:
        ``rows`` (one per matched measurement: old / new medians, ``speedup`` = old / new prediction time,
        ``distinct``: the two interquartile ranges do not overlap), ``only_old`` and ``only_new`` (keys).

    Raises:
        ProfileMismatchError: rows from different machines.
    """
    def latency(rows):
        return {row_key(r): r for r in rows if r.get("kind", "model") == "model" and r.get("status", "ok") == "ok"}

    a, b = latency(old), latency(new)
    out = []
    for key in [k for k in a if k in b]:
        ra, rb = a[key], b[key]
        if machine_key(ra) != machine_key(rb):
            diffs = [f"{name}: {x!r} vs {y!r}" for name, x, y in zip(MACHINE_KEYS, machine_key(ra), machine_key(rb),
                                                                        strict=True) if x != y]
            raise ProfileMismatchError(
                f"refusing to compare {ra['method']} batch {ra['batch_size']}: the profiles were measured on different "
                f"machines or software ({'; '.join(diffs)}). Re-run both on one machine with the same torch, CUDA "
                "and thread settings.")
        pa, pb = summarize(ra.get("predict_samples_ms") or []), summarize(rb.get("predict_samples_ms") or [])
        med_a = pa["median"] if pa["n"] else ra["predict_ms"]
        med_b = pb["median"] if pb["n"] else rb["predict_ms"]
        distinct = bool(pa["n"] and pb["n"] and (pa["q75"] < pb["q25"] or pb["q75"] < pa["q25"]))
        out.append({"method": ra["method"], "backbone": ra.get("backbone"), "batch_size": ra["batch_size"],
                    "amp": ra.get("amp"), "compile": ra.get("compile"),
                    "predict_ms_old": med_a, "predict_ms_new": med_b, "speedup": med_a / med_b if med_b else None,
                    "support_ms_old": ra.get("support_ms"), "support_ms_new": rb.get("support_ms"),
                    "pairs_per_s_old": ra.get("pairs_per_s"), "pairs_per_s_new": rb.get("pairs_per_s"),
                    "distinct": distinct})
    return {"rows": out, "only_old": [k for k in a if k not in b], "only_new": [k for k in b if k not in a]}


# ----------------------------------------------------------------------------------------------------------------
# Printing


def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (thousands separated), ``—`` when missing."""
    value = _clean(value)
    if value is None:
        return "—"
    value = float(value)
    if value == 0:
        return "0"
    mag = int(math.floor(math.log10(abs(value))))
    decimals = max(0, digits - 1 - mag)
    return f"{value:,.{decimals}f}"


def _millions(n: Any) -> str:
    n = _clean(n)
    return "—" if n is None else f"{float(n) / 1e6:.2f}"


def stamp_line(row: dict[str, Any]) -> str:
    """One line naming where a profile row was measured."""
    cuda = f" · CUDA {row['cuda']}" if _clean(row.get("cuda")) else ""
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


# ----------------------------------------------------------------------------------------------------------------
# Command line


def _csv_list(text: str) -> list[str]:
    return [t for t in text.replace(" ", ",").split(",") if t]


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv_list(text)]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from err


def add_profile_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``profile`` command to ``cape-bench``'s sub-parsers (``set_defaults(func=cmd_profile)``)."""
    p = subparsers.add_parser(
        "profile", help="latency, throughput, memory, parameters and FLOPs of methods (random-init weights)",
        description="Time support encoding and query prediction of each method (random-init weights at the preset's "
                    "architecture, synthetic inputs; speed only), interleaved round robin; report median and IQR, "
                    "pairs/s per batch size, peak memory, parameters and FLOPs; then the evaluation loop's overhead "
                    "against the bare forward and against an official-style batch-1 loop.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  cape-bench profile --methods capenext,capex,capeformer\n"
               "  cape-bench profile --methods capex --device cuda --preset official --amp --out prof.csv\n"
               "  cape-bench profile --methods capex,capeformer --run-dir runs/NAME   # the report's Speed section\n"
               "  cape-bench profile --compare old.csv new.csv")
    p.add_argument("--methods", type=_csv_list, help="comma-separated method names (default: every PyTorch method)")
    p.add_argument("--backbone", default="", help="backbone override (default: each preset's)")
    p.add_argument("--batch-sizes", type=_int_list, default=[1, 8, 32], help="query batch sizes (default 1,8,32)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    p.add_argument("--amp", action="store_true", help="autocast: bfloat16 on CPU, float16 on CUDA")
    p.add_argument("--compile", action="store_true", help="torch.compile the modules a forward calls (slow on CPU)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default inductor)")
    p.add_argument("--preset", default="quick", help="architecture preset: quick or official (default quick)")
    p.add_argument("--repeats", type=int, help="timed repeats (default: 5 on CPU, 20 on CUDA)")
    p.add_argument("--warmup", type=int, help="warm-up calls per method and batch size (default: 1 CPU, 3 CUDA)")
    p.add_argument("--keypoints", type=int, default=17, help="K of the synthetic category (default 17)")
    p.add_argument("--shots", type=int, default=1, help="support instances (default 1)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--no-harness", action="store_true", help="skip the evaluation-loop overhead measurement")
    p.add_argument("--harness-episodes", type=int, default=2, help="episodes per category in the overhead run")
    p.add_argument("--reference-pairs", type=int, default=30, help="pairs of the official-style reference loop")
    p.add_argument("--out", type=Path, help="write the profile here (.csv, or .json with every field)")
    p.add_argument("--run-dir", type=Path, help=f"write RUN_DIR/{PROFILE_FILE} (read by the report's Speed section)")
    p.add_argument("--compare", type=Path, nargs=2, metavar=("OLD", "NEW"),
                   help="compare two profile files (same machine only) instead of profiling")
    p.set_defaults(func=cmd_profile)
    return p


def default_methods() -> list[str]:
    """Every registered method built from presets (the PyTorch methods)."""
    from cape_bench.registry import list_methods, load_method_class  # noqa: PLC0415

    out = []
    for name in list_methods():
        try:
            if is_torch_method(load_method_class(name)):
                out.append(name)
        except Exception:  # noqa: BLE001 — a broken plug-in is not profiled by default
            continue
    return out


def spec_from_args(args) -> ProfileSpec:
    cuda = str(args.device).startswith("cuda")
    return ProfileSpec(
        methods=tuple(args.methods or default_methods()), preset=args.preset, backbone=args.backbone,
        batch_sizes=tuple(args.batch_sizes), device=args.device, amp=args.amp, compile=args.compile,
        compile_backend=args.compile_backend, repeats=args.repeats or (20 if cuda else 5),
        warmup=args.warmup if args.warmup is not None else (3 if cuda else 1), keypoints=args.keypoints,
        shots=args.shots, harness=not args.no_harness, harness_episodes=args.harness_episodes,
        reference_pairs=args.reference_pairs)


def cmd_profile(args) -> int:
    """``cape-bench profile``: exit status 0, 1 when a method could not be profiled, 2 on refused input."""
    from rich.console import Console  # noqa: PLC0415

    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 180)  # whole table rows in logs
    if args.compare:
        try:
            cmp = compare_profiles(read_profile(args.compare[0]), read_profile(args.compare[1]))
        except (ProfileMismatchError, ValueError, FileNotFoundError) as err:
            print(f"cape-bench: error: {err}", file=sys.stderr)
            return 2
        print_comparison(cmp, console, str(args.compare[0]), str(args.compare[1]))
        return 0
    if args.threads:
        import torch  # noqa: PLC0415

        torch.set_num_threads(args.threads)
    try:
        spec = spec_from_args(args)
        result = profile_methods(spec, log=lambda m: console.print(m, highlight=False))
    except (ValueError, RuntimeError) as err:
        print(f"cape-bench: error: {err}", file=sys.stderr)
        return 2
    print_profile(result, console)
    targets = []
    if args.out:
        targets.append(Path(args.out))
    if args.run_dir:
        targets.append(Path(args.run_dir) / PROFILE_FILE)
    for target in targets:
        console.print(f"profile: {write_profile(result, target)}")
    if not targets:
        console.print("not saved: add --out FILE (.csv / .json) or --run-dir RUN_DIR to keep it")
    bad = [r for r in [*result.rows, *result.harness] if r.get("status") != "ok"]
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m cape_bench.profiling [profile options]`` (the same as ``cape-bench profile``)."""
    parser = argparse.ArgumentParser(prog="cape-bench")
    sub = parser.add_subparsers(dest="command")
    add_profile_parser(sub)
    args = parser.parse_args(["profile", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
