"""Shared fixtures (the data builders they use live in :mod:`tests.helpers`, which test files import).

``../shared`` (MP-100 annotations, golden fixtures, spec) sits beside the checkout on developer machines
and in CI. Tests that need it use the ``shared_dir`` fixture: they skip with a clear reason when it is
absent, except under CI (``CI=true``), where its absence is a failure.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import write_tiny_mp100

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("CAPE_BENCH_SHARED", REPO_ROOT.parent / "shared"))


def _require(path: Path) -> Path:
    if path.exists():
        return path
    message = f"{path} is missing (set CAPE_BENCH_SHARED or place the shared/ folder beside the checkout)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(SHARED_DIR)


@pytest.fixture(scope="session")
def golden_dir(shared_dir: Path) -> Path:
    return _require(shared_dir / "golden")


@pytest.fixture(scope="session")
def mp100_ann_dir(shared_dir: Path) -> Path:
    return _require(shared_dir / "mp100" / "annotations")


@pytest.fixture()
def tiny_mp100(tmp_path: Path) -> Path:
    return write_tiny_mp100(tmp_path / "tiny")


#: the layers ``pytest -m "not slow"`` (the quick loop) leaves out whole: they train models, run the pipeline end to
#: end, start Ray or render reports in Chromium. The quick loop is the unit and golden layers and the import contract.
SLOW_LAYERS = ("integration", "contract")
#: tests of those layers that stay in the quick loop
QUICK_IN_SLOW_LAYERS = ("test_imports.py",)
#: golden tests left out of the quick loop (the golden files themselves stay as they were checked in)
SLOW_GOLDEN = ("test_official_loop_parity.py",)


def pytest_collection_modifyitems(config, items):
    slow = pytest.mark.slow
    for item in items:
        parts = item.path.parts
        layer = parts[parts.index("tests") + 1] if "tests" in parts and parts.index("tests") + 1 < len(parts) else ""
        if (layer in SLOW_LAYERS and item.path.name not in QUICK_IN_SLOW_LAYERS) or item.path.name in SLOW_GOLDEN:
            item.add_marker(slow)
