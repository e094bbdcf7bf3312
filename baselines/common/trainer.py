"""One episodic trainer for every method.

A method's model is an ``nn.Module`` with ``training_losses(batch) -> dict[str, Tensor]`` (every
entry whose name contains "loss" is summed, as mmcv's ``parse_losses`` does). The trainer owns
the sampler, augmentation, optimisation schedule, checkpoints, resume and progress display.

Checkpoints are ``model.safetensors`` + ``meta.json`` (method, preset, config, data digest,
git sha, iterations, final loss). While training, ``train_state.pt`` holds the optimiser and the
position in the schedule; an interrupted run resumes from it. One process at a time trains into a model folder
(a lock file): a second one waiting for it then loads the model the first one trained.

Under torchrun (``torchrun --nproc-per-node N ...``) the same ``train`` runs DistributedDataParallel: each process
takes its share of every step's batch, rank 0 alone writes (:mod:`baselines.common.distributed`).
"""

from __future__ import annotations

import json
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from baselines.common.episodic_data import Augmentation, EpisodeBatch, InstanceLoader, class_balanced_epoch, collate
from cape_bench.data.mp100 import AnnotationSet
from cape_bench.store import write_json


@dataclass(frozen=True)
class Preset:
    """An optimisation schedule (Adam, linear warm-up, step decay), sized in iterations.

    ``official`` presets follow each method's config (../shared/spec/official_code.md §2.3, 3.3, 4.3);
    ``quick`` presets are sized for CAPE-Synth on a 2-core CPU.
    """

    name: str
    iterations: int  # 0 with ``epochs`` > 0: sized from the dataset by :meth:`resolve`
    batch_size: int
    lr: float
    warmup_iters: int
    warmup_ratio: float = 0.001
    milestones: tuple[int, ...] = ()  # iterations (or epochs, with ``epochs``) at which lr ×= gamma
    epochs: int = 0
    gamma: float = 0.1
    input_size: int = 256
    backbone: str = "resnet50"
    weight_decay: float = 0.0
    grad_clip: float | None = None
    log_every: int = 20
    checkpoint_every: int = 200
    freeze_backbone: bool = False  # train the head only (ImageNet features kept as they are)
    #: head hyper-parameters replaced in the method's official head configuration (e.g. ``{d_model = 128}``):
    #: part of the preset, so of the trained-model digest; :func:`sized_head` applies and checks them
    head: Mapping[str, Any] = field(default_factory=dict)

    def resolve(self, steps_per_epoch: int) -> Preset:
        """An iteration-sized copy: epochs and epoch milestones × ``steps_per_epoch`` (official schedules)."""
        if not self.epochs:
            return self
        return replace(self, iterations=self.epochs * steps_per_epoch, epochs=0,
                       milestones=tuple(m * steps_per_epoch for m in self.milestones))

    def with_overrides(self, overrides: Mapping[str, Any], where: str = "train") -> Preset:
        """A copy with some fields replaced (``[methods.<name>.train]``), each checked against its type.

        The name stays: the trained-model cache keys on every field, not on the name alone.
        """
        if not overrides:
            return self
        kinds = {f.name: f.type for f in fields(self)}
        changes: dict[str, Any] = {}
        for key, value in overrides.items():
            if key == "name" or key not in kinds:
                allowed = ", ".join(sorted(k for k in kinds if k != "name"))
                raise ValueError(f"{where}.{key}: not a preset field; allowed: {allowed}")
            kind = kinds[key]
            if kind.startswith("Mapping"):
                if not isinstance(value, Mapping) or not all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()):
                    raise ValueError(f"{where}.{key}: expected a table of numbers, e.g. {{d_model = 128}}, "
                                     f"got {value!r}")
                value = {**getattr(self, key), **value}
            elif "tuple" in kind:
                if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) for v in value):
                    raise ValueError(f"{where}.{key}: expected a list of integers, got {value!r}")
                value = tuple(value)
            elif kind == "bool":
                if not isinstance(value, bool):
                    raise ValueError(f"{where}.{key}: expected true or false, got {value!r}")
            elif kind.startswith("int"):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"{where}.{key}: expected an integer, got {value!r}")
            elif kind.startswith("float"):
                if isinstance(value, bool) or (not isinstance(value, (int, float)) and value is not None):
                    raise ValueError(f"{where}.{key}: expected a number, got {value!r}")
                value = None if value is None else float(value)
            elif kind == "str" and not isinstance(value, str):
                raise ValueError(f"{where}.{key}: expected a string, got {value!r}")
            changes[key] = value
        return replace(self, **changes)

    def lr_at(self, it: int) -> float:
        """mmcv ``StepLrUpdaterHook`` with linear warm-up."""
        lr = self.lr * self.gamma ** sum(it >= m for m in self.milestones)
        if it < self.warmup_iters:
            k = (1 - it / self.warmup_iters) * (1 - self.warmup_ratio)
            lr *= 1 - k
        return lr


def sized_head(config: Any, sizes: Mapping[str, float], where: str, prefix: str = "") -> Any:
    """``config`` (a head-configuration dataclass) with the values of ``sizes`` (a preset's ``head``) replaced.

    Args:
        config: the official configuration.
        sizes: field → value; with ``prefix``, the keys are ``prefix + field`` (e.g. ``fusion_dropout``).
        where: config path for messages (e.g. ``methods.capex.train``).
        prefix: what the keys of this configuration start with in ``sizes``.

    Raises:
        ValueError: a key that is not a field of ``config``, a fraction for an integer field, or a combination
            the configuration rejects, each named with ``where``.
    """
    if not sizes:
        return config
    known = {f.name for f in fields(config)}
    changes = {}
    for key, value in sizes.items():
        name = key[len(prefix):]
        if name not in known:
            raise ValueError(f"{where}.head.{key}: not a field of {type(config).__name__}; allowed: "
                             f"{', '.join(prefix + k for k in sorted(known))}")
        current = getattr(config, name)
        if isinstance(current, int) and not isinstance(current, bool) and float(value) != int(value):
            raise ValueError(f"{where}.head.{key}: expected an integer, got {value!r}")
        changes[name] = int(value) if isinstance(current, int) else float(value)
    try:
        return replace(config, **changes)
    except ValueError as err:  # the configuration's own checks (e.g. d_model divisible by nhead)
        raise ValueError(f"{where}.head {dict(sizes)}: {err}") from None


@dataclass
class TrainResult:
    checkpoint: Path
    meta: dict


def batch_to_torch(batch: EpisodeBatch, device: str) -> dict[str, Any]:
    """Tensors on ``device`` for the array fields; lists stay lists."""
    out: dict[str, Any] = {}
    for key, value in batch.__dict__.items():
        if isinstance(value, np.ndarray) and value.dtype != object:
            out[key] = torch.from_numpy(np.ascontiguousarray(value)).to(device)
        else:
            out[key] = value
    return out


class EpisodeStream:
    """Endless stream of training batches, prepared one batch ahead on a worker thread."""

    def __init__(self, ann: AnnotationSet, image_root: str, shots: int, preset: Preset, sigma: float, seed: int,
                 pad_to: int | None = None, augment: Augmentation = Augmentation()) -> None:
        self.ann = ann
        self.loader = InstanceLoader(ann, image_root, preset.input_size, sigma)
        self.shots = shots
        self.batch_size = preset.batch_size
        self.seed = seed
        self.pad_to = pad_to
        self.augment = augment
        self.rank, self.world_size = 0, 1
        self._pool = ThreadPoolExecutor(max_workers=1)

    def shard(self, rank: int, world_size: int) -> EpisodeStream:
        """Make this stream yield only process ``rank``'s episodes ``rank::world_size`` of every batch.

        The batch of a step stays the single-process one (same episodes, same augmentation draws, keypoints padded
        to the whole batch's largest K): the shards of all ranks, interleaved, are exactly that batch.
        """
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} of {world_size} processes")
        if self.batch_size % world_size:
            raise ValueError(f"batch_size {self.batch_size} does not split evenly over {world_size} processes: "
                             "choose a batch size that is a multiple of the number of processes")
        self.rank, self.world_size = rank, world_size
        return self

    def steps_per_epoch(self) -> int:
        return len(class_balanced_epoch(self.ann.cat2obj, self.shots, self.seed, 0)) // self.batch_size

    def batch_at(self, step: int) -> EpisodeBatch:
        """The batch of global step ``step`` (a pure function of seed and step: resumable)."""
        per_epoch = self.steps_per_epoch()
        epoch, index = divmod(step, per_epoch)
        samples = class_balanced_epoch(self.ann.cat2obj, self.shots, self.seed, epoch)
        chosen = samples[index * self.batch_size : (index + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, step])
        if self.world_size == 1:
            prepared = [[self.loader.prepare(o, rng, self.augment) for o in sample] for sample in chosen]
            return collate(self.ann, chosen, prepared, pad_to=self.pad_to)
        prepared = []
        for i, sample in enumerate(chosen):
            if i % self.world_size == self.rank:
                prepared.append([self.loader.prepare(o, rng, self.augment) for o in sample])
            else:  # another rank's episode: draw its augmentation only, so ours see the single-process draws
                for _ in sample:
                    self.augment.draw(rng)
        widest = max(self.ann.categories[self.ann.instances[s[-1]].category_id].num_keypoints for s in chosen)
        return collate(self.ann, chosen[self.rank :: self.world_size], prepared, pad_to=self.pad_to or widest)

    def iterate(self, start: int, stop: int):
        """Yield ``(step, batch)``; the next batch is prepared on the worker thread meanwhile. ``wait_s`` adds up
        the seconds the training loop waited for a batch that was not ready (the data pipeline's cost to it)."""
        self.wait_s = 0.0
        future = self._pool.submit(self.batch_at, start)
        for step in range(start, stop):
            t0 = time.perf_counter()
            batch = future.result()
            self.wait_s += time.perf_counter() - t0
            if step + 1 < stop:
                future = self._pool.submit(self.batch_at, step + 1)
            yield step, batch


def train(model: torch.nn.Module, stream: EpisodeStream, preset: Preset, out_dir: str | Path, *, meta: dict,
          device: str = "cpu", log=print, console=None) -> TrainResult:
    """Train ``model`` for ``preset.iterations`` steps; resume from ``out_dir/train_state.pt`` when present.

    When ``out_dir`` already holds a trained model (or another process finishes one while this one waits for the
    folder's lock), ``model`` gets its weights and nothing is trained. Under torchrun every process calls this
    with the same arguments (see :mod:`baselines.common.distributed`).
    """
    from safetensors.torch import save_file  # noqa: PLC0415

    from baselines.common import distributed  # noqa: PLC0415

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / "model.safetensors"
    # under torchrun the ranks decide together, below, once rank 0 holds the folder
    if final.exists() and (out_dir / "meta.json").exists() and not distributed.info_from_env().enabled:
        return TrainResult(final, load_checkpoint(model, final))
    dist_info, device = distributed.setup(device)
    if not dist_info.is_main:  # rank 0 speaks and writes for all
        from rich.console import Console  # noqa: PLC0415

        log, console = (lambda *_a, **_k: None), Console(quiet=True)
    with _exclusive(out_dir / ".train.lock", dist_info.is_main, log):
        distributed.barrier(dist_info)  # the other ranks go on once rank 0 holds the folder
        if final.exists() and (out_dir / "meta.json").exists():  # trained by the process we waited for
            log(f"{out_dir}: trained by another process meanwhile; loading it")
            return TrainResult(final, load_checkpoint(model, final))
        return _train_here(model, stream, preset, out_dir, meta, device, log, console, dist_info, save_file)


def _train_here(model, stream, preset, out_dir, meta, device, log, console, dist_info, save_file) -> TrainResult:
    from baselines.common import distributed  # noqa: PLC0415

    final = out_dir / "model.safetensors"
    preset = preset.resolve(stream.steps_per_epoch())
    if dist_info.enabled:
        stream.shard(dist_info.rank, dist_info.world_size)
        log(f"DistributedDataParallel: {dist_info.world_size} processes, {preset.batch_size // dist_info.world_size} "
            f"of the {preset.batch_size} episodes of every batch each")
    torch.manual_seed(meta.get("seed", 1))
    model.to(device).train()
    if preset.freeze_backbone:
        backbone = model.get_submodule("backbone")
        backbone.eval()
        backbone.requires_grad_(False)
        to_inference_device(backbone, device)  # it only runs forward, as at evaluation
        model.train = _train_keeping_frozen(model.train, backbone)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=preset.lr, weight_decay=preset.weight_decay)
    state_path = out_dir / "train_state.pt"
    start, history = 0, []
    if state_path.exists():
        # tensors, numbers and lists only (weights_only): a shared cache folder can run no pickled code here
        state = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history = state["step"], state["history"]
        torch.set_rng_state(state["torch_rng"])
        log(f"resuming training at step {start}/{preset.iterations} from {state_path}")
    forward = distributed.loss_function(model, dist_info, device)
    t0 = time.perf_counter()
    compute_s = 0.0  # forward + backward + optimiser step (the model's own cost)
    running: dict[str, float] = {}
    with _progress(console, f"train {meta.get('method', '')}", preset.iterations, start) as advance:
        for step, batch in stream.iterate(start, preset.iterations):
            t_step = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = preset.lr_at(step)
            losses = forward(batch_to_torch(batch, device))
            total = sum(v for k, v in losses.items() if "loss" in k)
            seen = distributed.mean_over_processes(losses, dist_info)  # the global batch's losses (all ranks agree)
            seen_total = sum(v for k, v in seen.items() if "loss" in k)
            if not torch.isfinite(seen_total):
                raise FloatingPointError(f"non-finite training loss at step {step}: "
                                         + ", ".join(f"{k}={float(v):.4g}" for k, v in seen.items()))
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if preset.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, preset.grad_clip)
            optimizer.step()
            compute_s += time.perf_counter() - t_step
            for k, v in seen.items():
                value = float(v)
                running[k] = 0.9 * running.get(k, value) + 0.1 * value
            if (step + 1) % preset.log_every == 0 or step + 1 == preset.iterations:
                history.append({"step": step + 1, "lr": preset.lr_at(step), **{k: round(v, 6) for k, v in running.items()}})
                if not sys.stdout.isatty():  # logs and CI see no live progress bar: print the curve instead
                    elapsed = time.perf_counter() - t0
                    eta = elapsed / (step + 1 - start) * (preset.iterations - step - 1)
                    log(f"step {step + 1}/{preset.iterations} loss {sum(v for k, v in running.items() if 'loss' in k):.4f}"
                        f" lr {preset.lr_at(step):.2e} ({elapsed:.0f} s, ETA {eta:.0f} s)")
            advance(float(seen_total))
            if (step + 1) % preset.checkpoint_every == 0 and step + 1 < preset.iterations and dist_info.is_main:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1,
                            "history": history, "torch_rng": torch.get_rng_state()}, state_path)
    model.eval()
    wall = time.perf_counter() - t0
    steps = preset.iterations - start
    throughput = {
        "steps": steps, "wall_s": round(wall, 2), "steps_per_s": round(steps / wall, 4) if wall else None,
        "images_per_s": round(steps * preset.batch_size * (stream.shots + 1) / wall, 2) if wall else None,
        "compute_s": round(compute_s, 2),  # forward + backward + step: what a bare training loop would pay
        "data_wait_s": round(getattr(stream, "wait_s", 0.0), 2),  # waiting for a batch the worker had not finished
        "overhead": round(wall / compute_s, 4) if compute_s else None,  # wall ÷ bare compute (1 = no overhead)
    }
    if steps:
        log(f"trained {steps} steps in {wall:.0f} s: {throughput['steps_per_s']:.3f} it/s, "
            f"{throughput['images_per_s']:.1f} images/s; forward+backward+step {compute_s:.0f} s, waiting for data "
            f"{throughput['data_wait_s']:.0f} s (wall / compute = {throughput['overhead']:.3f})")
    full_meta = {**meta, "preset": asdict(preset), "iterations": preset.iterations,
                 "train_seconds_this_session": round(wall, 1), "throughput": throughput, "history": history,
                 "final_loss": history[-1] if history else None}
    if dist_info.enabled:
        full_meta["distributed"] = {"world_size": dist_info.world_size, "backend": _backend()}
    if dist_info.is_main:
        tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(final))
        write_json(out_dir / "meta.json", full_meta)
        state_path.unlink(missing_ok=True)
    distributed.barrier(dist_info)  # every rank returns once the trained model is on disk
    return TrainResult(final, full_meta)


def _backend() -> str:
    import torch.distributed as dist  # noqa: PLC0415

    return str(dist.get_backend())


@contextmanager
def _exclusive(path: Path, enabled: bool, log):
    """Hold an exclusive lock on ``path`` (a lock file) for the block: one trainer per model folder at a time."""
    if not enabled:
        yield
        return
    import fcntl  # noqa: PLC0415

    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{path.parent}: another process is training this model; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def to_inference_device(module: torch.nn.Module, device) -> torch.nn.Module:
    """``module`` moved to ``device``, channels-last on CPU: its convolutions run 1.5–3x faster so here
    (docs/results.md, "The second (cached) default run"). Returns the module."""
    module.to(device)
    if str(device) == "cpu":
        module.to(memory_format=torch.channels_last)
    return module


def _train_keeping_frozen(train_fn, frozen):
    """``model.train()`` that leaves a frozen submodule in eval mode (BatchNorm statistics untouched)."""

    def train_mode(mode: bool = True):
        result = train_fn(mode)
        frozen.eval()
        return result

    return train_mode


def _progress(console, label: str, total: int, start: int):
    from contextlib import contextmanager  # noqa: PLC0415

    @contextmanager
    def bar():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn  # noqa: PLC0415

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), console=console) as progress:
            task = progress.add_task(label, total=total, completed=start, loss="—")

            def advance(loss: float) -> None:
                progress.update(task, advance=1, loss=f"{loss:.4f}" if math.isfinite(loss) else "nan")

            yield advance

    return bar()


def load_checkpoint(model: torch.nn.Module, path: str | Path) -> dict:
    """Load ``model.safetensors`` (strict) and return its ``meta.json``."""
    from safetensors.torch import load_file  # noqa: PLC0415

    path = Path(path)
    model.load_state_dict(load_file(str(path)), strict=True)
    meta_path = path.with_name("meta.json")
    return json.loads(meta_path.read_text()) if meta_path.exists() else {}
