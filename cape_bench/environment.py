"""Where a result was computed: the git state of the code and the machine (device, CUDA, threads, versions).

One stamp for every stored result: ``run.json`` (``environment``), profile rows (:func:`cape_bench.profile.machine.
machine_stamp`) and trained-model ``meta.json`` (``git``). torch is imported here only when a stamp is asked for
and torch is installed (a run of the torch-free reference methods on a machine without it still gets a stamp).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from cape_bench import __version__

#: packages whose versions run.json records
PACKAGES = ("numpy", "pandas", "pyarrow", "pycocotools", "scipy", "torch", "torchvision", "timm",
            "opencv-python-headless")


def git_state(root: Path | None = None) -> dict[str, Any]:
    """The git sha and dirty flag of the code that ran (None outside a checkout)."""
    root = root or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True,
                             timeout=5).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                    capture_output=True, text=True, timeout=5).stdout.strip())
        return {"sha": sha, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def git_label(root: Path | None = None) -> str | None:
    """``<sha12>`` or ``<sha12>+dirty`` of the code that ran (None outside a checkout)."""
    state = git_state(root)
    if not state.get("sha"):
        return None
    return state["sha"][:12] + ("+dirty" if state.get("dirty") else "")


def cpu_name() -> str:
    """The CPU model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def machine_facts(device: str = "cpu") -> dict[str, Any]:
    """Device, device name, torch / CUDA / cuDNN versions, thread counts, CPU count, host, load.

    ``device`` is the configured one (``cpu``, ``cuda`` or ``cuda:N``); torch fields are None without torch.
    """
    cuda = device.startswith("cuda")
    facts: dict[str, Any] = {"device": "cuda" if cuda else "cpu", "device_name": None if cuda else cpu_name(),
                             "torch": None, "cuda": None, "cudnn": None, "threads": None, "interop_threads": None}
    if importlib.util.find_spec("torch") is not None:
        import torch  # noqa: PLC0415

        facts.update(torch=torch.__version__, threads=torch.get_num_threads(),
                     interop_threads=torch.get_num_interop_threads())
        if cuda and torch.cuda.is_available():
            index = torch.device(device).index or 0
            facts.update(device_name=torch.cuda.get_device_name(index), cuda=torch.version.cuda,
                         cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
    return {
        **facts,
        "cpu_count": os.cpu_count(),
        "host": platform.node(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_avg": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,  # noise: other work
    }


def environment(device: str = "cpu") -> dict[str, Any]:
    """The ``environment`` block of run.json: cape-bench and package versions plus :func:`machine_facts`."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    return {"cape_bench": __version__, **machine_facts(device), "machine": platform.machine(),
            "processor": platform.processor(), "packages": packages}
