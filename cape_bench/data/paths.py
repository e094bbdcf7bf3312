"""Where an annotation's ``file_name`` may point: inside the image root, unless the user opts in."""

from __future__ import annotations

import os
from pathlib import Path

#: set to 1 to let ``file_name`` entries reach outside the image root (a trusted file that needs it)
ALLOW_OUTSIDE_ENV = "CAPE_BENCH_ALLOW_OUTSIDE_IMAGE_ROOT"


def leaves_root(file_name: str) -> bool:
    """True when ``file_name`` is absolute or climbs out through ``..`` (relative to any image root)."""
    name = Path(file_name)
    return name.is_absolute() or ".." in name.parts


def outside_allowed() -> bool:
    return os.environ.get(ALLOW_OUTSIDE_ENV) == "1"
