"""The run directory: where each stage writes and the next one reads.

Layout (every file is written atomically: a temporary name, then a rename, so an
interrupted run never leaves a half-written table that a resumed run would trust)::

    RUN_DIR/
      run.json                               envelope: config + hash, versions, git, cells
      categories/split{k}.json                          names, descriptions, skeletons
      episodes/split{k}_{subset}_{shots}shot.csv        the manifest of each cell
      predictions/{method}/split{k}_{shots}shot.parquet one row per pair × keypoint
      cells/{method}/split{k}_{shots}shot.json          finished-cell record (timings, provenance)
      scores/{method}/split{k}_{shots}shot.parquet      per-keypoint distances (``score``)
      summary.csv  intervals.csv  ceiling.csv  per_category.csv  per_keypoint.csv
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

PROTOCOL_VERSION = "mp100-episodes-1"  # sampler, masks and normaliser of the official protocol
RUN_FORMAT_VERSION = 1


def cell_stem(split: int, shots: int) -> str:
    return f"split{split}_{shots}shot"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all, with the permissions of an ordinary new file (0666 less the umask: a
    team sharing a file system can read the results; mkstemp's own temporary files are 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@functools.cache
def _umask() -> int:
    """The process umask, read once (reading it means setting it, so not on every write)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj):
    import numpy as np  # noqa: PLC0415

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_frame(path: Path, frame) -> None:
    """Write a pandas DataFrame as parquet (zstd) or CSV, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        if path.suffix == ".parquet":
            frame.to_parquet(tmp, index=False, compression="zstd")
        else:
            frame.to_csv(tmp, index=False)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunDir:
    """Paths inside one run directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    def episodes(self, split: int, subset: str, shots: int) -> Path:
        return self.root / "episodes" / f"split{split}_{subset}_{shots}shot.csv"

    def predictions(self, method: str, split: int, shots: int) -> Path:
        return self.root / "predictions" / method / f"{cell_stem(split, shots)}.parquet"

    def cell(self, method: str, split: int, shots: int) -> Path:
        return self.root / "cells" / method / f"{cell_stem(split, shots)}.json"

    def scores(self, method: str, split: int, shots: int) -> Path:
        return self.root / "scores" / method / f"{cell_stem(split, shots)}.parquet"

    def categories_file(self, split: int) -> Path:
        return self.root / "categories" / f"split{split}.json"

    def categories(self) -> dict[int, dict]:
        """category id → name, supercategory, keypoint names, descriptions, skeleton (all splits)."""
        out: dict[int, dict] = {}
        for path in sorted((self.root / "categories").glob("split*.json")):
            for cid, entry in json.loads(path.read_text()).items():
                out[int(cid)] = entry
        return out

    def table(self, name: str) -> Path:
        return self.root / name

    def read_run_json(self) -> dict:
        try:
            return json.loads(self.run_json.read_text())
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{self.root} is not a cape-bench run directory (no run.json)") from err

    def finished_cells(self) -> list[dict]:
        """Records of every finished cell (record and a readable prediction table), sorted by method, split, shots."""
        return [rec for rec, problem in self._cells() if not problem]

    def damaged_cells(self) -> list[tuple[dict, str]]:
        """Cells with a record whose prediction table is missing or unreadable, with what is wrong: a resumed run
        computes them again; ``score`` names them."""
        return [(rec, problem) for rec, problem in self._cells() if problem]

    def _cells(self) -> list[tuple[dict, str]]:
        out = []
        for path in sorted((self.root / "cells").glob("*/*.json")):
            try:
                rec = json.loads(path.read_text())
                table = self.predictions(rec["method"], rec["split"], rec["shots"])
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                out.append(({"method": path.parent.name, "split": 0, "shots": 0, "file": str(path)},
                            f"{path}: unreadable cell record ({err})"))
                continue
            out.append((rec, _table_problem(table)))
        return sorted(out, key=lambda item: (item[0]["method"], item[0]["split"], item[0]["shots"]))


def _table_problem(path: Path) -> str:
    """Empty when ``path`` is a readable parquet table, else what is wrong with it."""
    import pyarrow.parquet as pq  # noqa: PLC0415

    if not path.exists():
        return f"{path}: prediction table missing"
    try:
        pq.read_metadata(path)
    except (OSError, ValueError) as err:  # pyarrow.ArrowInvalid is a ValueError
        return f"{path}: prediction table unreadable ({err})"
    return ""
