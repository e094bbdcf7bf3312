"""Benchmarks run only when asked for: ``python -m pytest tests/benchmarks --benchmark-only --benchmark-enable``.

The project's pytest config passes ``--benchmark-disable``; without this hook the ordinary test run
would still execute every benchmark body once, including a 60,000-pair official-style scoring loop.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):
    if config.getoption("benchmark_only", False) or config.getoption("benchmark_enable", False):
        return
    skip = pytest.mark.skip(reason="benchmark: run with --benchmark-only --benchmark-enable")
    for item in items:
        if "benchmarks" in item.path.parts:
            item.add_marker(skip)
