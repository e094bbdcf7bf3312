"""The machine stamp every profile row carries, device helpers (sync, autocast) and the memory probe."""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from pathlib import Path
from typing import Any

from cape_bench.environment import git_label, machine_facts
from cape_bench.profile.spec import WEIGHTS_NOTE

# ----------------------------------------------------------------------------------------------------------------
# Machine stamp, device helpers


def machine_stamp(device: str = "cpu") -> dict[str, Any]:
    """Where a profile was measured: the fields every row carries (see :data:`STAMP_KEYS`)."""
    return {**machine_facts(device), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "git": git_label(),
            "weights": WEIGHTS_NOTE}


def sync(device: str) -> None:
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
