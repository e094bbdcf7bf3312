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
