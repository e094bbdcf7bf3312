"""Training on several processes (GPUs) with torchrun and DistributedDataParallel.

``torchrun --nproc-per-node N -m cape_bench.cli train ...`` starts N copies of the command with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. The trainer then:

* joins the process group once per process (NCCL on CUDA, each process on GPU ``LOCAL_RANK``; gloo on CPU);
* keeps the *global* batch of the single-process run: every process takes its share ``rank::world_size`` of the
  episodes of each step's batch (:meth:`baselines.common.trainer.EpisodeStream.shard`), DDP averages the
  gradients, and the losses it logs are averaged over the processes;
* writes checkpoints, ``model.safetensors``, ``meta.json`` and log lines from rank 0 only; the other ranks wait
  at a barrier until those files exist.

Without torchrun (``WORLD_SIZE`` unset or 1) nothing here does anything and the trainer runs as before.
"""

from __future__ import annotations

import atexit
import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """This process's place among the processes torchrun started (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def info_from_env(env=None) -> DistInfo:
    """Read torchrun's ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistInfo()
    rank = int(env["RANK"])
    return DistInfo(rank=rank, world_size=world, local_rank=int(env.get("LOCAL_RANK", rank)))


def setup(device: str = "cpu") -> tuple[DistInfo, str]:
    """Join torchrun's process group (once per process); returns this process's info and the device it trains on."""
    info = info_from_env()
    if not info.enabled:
        return info, device
    import torch.distributed as dist  # noqa: PLC0415

    cuda = str(device).startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} was asked for but CUDA is not available on rank {info.rank}")
        torch.cuda.set_device(info.local_rank)
        device = f"cuda:{info.local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        atexit.register(cleanup)
    if dist.get_world_size() != info.world_size or dist.get_rank() != info.rank:
        raise RuntimeError(f"the process group ({dist.get_rank()} of {dist.get_world_size()}) does not match "
                           f"RANK={info.rank} WORLD_SIZE={info.world_size}")
    return info, device


def cleanup() -> None:
    """Leave the process group (registered at exit by :func:`setup`)."""
    import torch.distributed as dist  # noqa: PLC0415

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist  # noqa: PLC0415

        dist.barrier()


@contextmanager
def main_process_first(device: str = "cpu"):
    """Rank 0 runs the block first (e.g. generating a dataset into a shared cache), then the others."""
    info, _ = setup(device)
    if info.enabled and not info.is_main:
        barrier(info)
    try:
        yield info
    finally:
        if info.enabled and info.is_main:
            barrier(info)


class _Losses(nn.Module):
    """``forward(batch) = model.training_losses(batch)``: DDP synchronises gradients of what runs in forward."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict) -> dict:
        return self.model.training_losses(batch)


def loss_function(model: nn.Module, info: DistInfo, device: str):
    """``batch → losses``: ``model.training_losses`` itself, or under torchrun its DDP-wrapped equivalent.

    DDP broadcasts rank 0's weights and buffers at construction and averages gradients over the processes during
    ``backward``. ``find_unused_parameters`` lets a model leave some trainable parameters out of a step.
    """
    if not info.enabled:
        return model.training_losses
    from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415

    cuda = str(device).startswith("cuda")
    return DistributedDataParallel(_Losses(model), device_ids=[info.local_rank] if cuda else None,
                                   find_unused_parameters=True)


def mean_over_processes(values: dict[str, torch.Tensor], info: DistInfo) -> dict[str, torch.Tensor]:
    """Detached scalars averaged over the processes (the loss of the global batch when each process has an equal
    share); the values themselves, detached, without torchrun."""
    detached = {k: v.detach() for k, v in values.items()}
    if not info.enabled or not detached:
        return detached
    import torch.distributed as dist  # noqa: PLC0415

    keys = sorted(detached)
    stacked = torch.stack([detached[k].float().reshape(()) for k in keys])
    dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
    stacked /= info.world_size
    return {k: stacked[keys.index(k)] for k in detached}
