"""``bench.toml`` → strict, frozen config objects.

TOML is read with :mod:`tomllib` (duplicate keys are a parse error). Every table maps onto a
frozen dataclass; an unknown key is an error naming its dotted path, a value of the wrong type
too. One override mechanism: ``--set section.key=VALUE`` where VALUE is a TOML value
(``--set protocol.shots=[1]``, ``--set methods.capex.preset="quick"``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key."""


@dataclass(frozen=True)
class RunSection:
    """``[run]``: what to run and where results go."""

    methods: tuple[str, ...] = ("support-copy", "oracle")
    out_dir: str = "runs"  # run directories are created under it
    name: str = ""  # run directory name; empty → timestamp
    device: str = "cpu"
    seed: int = 1
    report: bool = True  # render the HTML report at the end of `run`
    feature_cache_mb: float = 2048.0  # memory for per-instance features (spills to disk beyond); 0 → off, uncached
    # where the cells run (cape_bench/executors.py); none of these changes a result, so none is in the config hash
    executor: str = "local"  # local: this process, one cell after another | ray: one Ray task per cell
    ray_address: str = ""  # ray: empty → start Ray on this machine; "auto" → the cluster `ray start` runs here
    cpus_per_cell: float = 1.0  # ray: CPUs each cell's task reserves
    gpus_per_cell: float = 0.0  # ray: GPUs each cell's task reserves (set 1 with device = "cuda")
    cell_resources: dict[str, Any] = field(default_factory=dict)  # ray: per method label, e.g. {capex = {gpus = 1}}
    cell_retries: int = 1  # ray: times a cell whose worker process died is submitted again
    train_jobs: int = 1  # local, cpu: models trained at once before the grid evaluates (0 = one per core)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"run.device: {self.device!r} is not a device here; use cpu, cuda or cuda:N")
        if self.name and (self.name in (".", "..") or "/" in self.name or "\\" in self.name):
            raise ConfigError(f"run.name: {self.name!r} must be a plain folder name inside run.out_dir (no '/', '..')")
        if self.executor not in ("local", "ray"):
            raise ConfigError(f"run.executor: {self.executor!r}; use local or ray")
        for key in ("feature_cache_mb", "cpus_per_cell", "gpus_per_cell", "cell_retries", "train_jobs"):
            if getattr(self, key) < 0:
                raise ConfigError(f"run.{key}: {getattr(self, key)!r} must not be negative")


# [run] keys that say where and how cells run, not what they compute: left out of the config hash, so a run
# started locally can be resumed on a Ray cluster and the other way round
EXECUTION_KEYS = ("executor", "ray_address", "cpus_per_cell", "gpus_per_cell", "cell_resources", "cell_retries",
                  "train_jobs")


@dataclass(frozen=True)
class DatasetSection:
    """``[dataset]``: which MP-100-format files to evaluate on."""

    name: str = "cape-synth"  # "cape-synth" (generated on first use) or "mp100"
    ann_dir: str = ""  # folder with mp100_split{k}_{train,val,test}.json (mp100)
    image_root: str = ""  # folder the file_name entries are relative to; empty → no images
    descriptions: str = ""  # keypoint descriptions file (format of keypoint_descriptions.json)
    text_variant: str = "regular"  # regular | synonyms | translated | typo
    # category id → indices of descriptions-file entries dropped before texts pair with keypoints by position,
    # e.g. {66 = [6]} for MP-100's fly (33 texts for 32 keypoints); empty → the official pairing (texts past K unread)
    description_drop: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        choices = {"name": ("cape-synth", "mp100"), "text_variant": ("regular", "synonyms", "translated", "typo"),
                   "subset": ("test", "val")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"dataset.{key}: {getattr(self, key)!r}; use one of {', '.join(allowed)}")
    subset: str = "test"  # test (200 episodes) | val (100 episodes)
    categories: tuple[str, ...] = ()  # restrict to these category ids or names


@dataclass(frozen=True)
class ProtocolSection:
    """``[protocol]``: the episode protocol and the metrics."""

    splits: tuple[int, ...] = (1, 2, 3, 4, 5)
    shots: tuple[int, ...] = (1, 5)
    num_episodes: int = 0  # per category; 0 → official (200 test, 100 val)
    num_queries: int = 15
    pck_thresholds: tuple[float, ...] = (0.05, 0.10, 0.15, 0.20, 0.25)  # scored; mPCK averages these

    @property
    def is_official(self) -> bool:
        """All five splits, 1- and 5-shot, the official episode count and 15 queries per episode."""
        return (tuple(sorted(self.splits)) == (1, 2, 3, 4, 5) and tuple(sorted(self.shots)) == (1, 5)
                and not self.num_episodes and self.num_queries == 15)

    def describe(self) -> str:
        """One line: which slice of the protocol runs, and whether it is the official one."""
        splits = ", ".join(map(str, self.splits))
        shots = "/".join(map(str, self.shots))
        episodes = f"{self.num_episodes} episodes" if self.num_episodes else "the official episodes (200 test, 100 val)"
        text = (f"split{'s' if len(self.splits) > 1 else ''} {splits}, {shots}-shot, {episodes} × "
                f"{self.num_queries} queries per category")
        if self.is_official:
            return f"protocol: {text} — the official protocol"
        return (f"protocol: {text} — a slice for this machine, NOT the official protocol (5 splits × 1/5-shot × "
                f"200 episodes; `--protocol official` runs it)")

    def __post_init__(self) -> None:
        bad_splits = [s for s in self.splits if s not in range(1, 6)]
        if not self.splits or bad_splits:
            raise ConfigError(f"protocol.splits: {list(self.splits)!r}; MP-100 splits are 1..5")
        if not self.shots or any(s < 1 for s in self.shots):
            raise ConfigError(f"protocol.shots: {list(self.shots)!r}; each shot count must be at least 1")
        if self.num_episodes < 0:
            raise ConfigError(f"protocol.num_episodes: {self.num_episodes}; 0 = official, else a positive count")
        if self.num_queries < 1:
            raise ConfigError(f"protocol.num_queries: {self.num_queries}; at least 1 query per episode")
        thresholds = self.pck_thresholds
        if not thresholds or any(not 0 < t <= 1 for t in thresholds) or len(set(thresholds)) != len(thresholds):
            raise ConfigError(f"protocol.pck_thresholds: {list(thresholds)!r}; distinct values in (0, 1]")
        if 0.2 not in thresholds:
            raise ConfigError(f"protocol.pck_thresholds: {list(thresholds)!r} must include 0.2 (the headline PCK)")


@dataclass(frozen=True)
class SynthSection:
    """``[synth]``: the CAPE-Synth dataset generated when ``dataset.name = "cape-synth"``."""

    cache_dir: str = ""  # empty → $CAPE_BENCH_CACHE or ~/.cache/cape-bench
    seed: int = 0
    num_categories: int = 100
    instances_per_category: int = 0  # 0 → the generator's default
    image_size: int = 0  # 0 → the generator's default
    knobs: dict[str, Any] = field(default_factory=dict)  # overrides of cape_bench.synth.Knobs, e.g. {polysemy = 1.0}


@dataclass(frozen=True)
class MethodSection:
    """``[methods.<name>]``: per-method settings.

    ``<name>`` is the label results are stored and shown under. It is a registered method, or a
    variant of one named by ``method`` — e.g. ``[methods.capenext-no-class-text]`` with
    ``method = "capenext"`` and ``options = {use_category_text = false}`` runs an ablation beside
    the regular model in one table.
    """

    method: str = ""  # registered method this entry instantiates; empty → the section name
    checkpoint: str = ""  # a checkpoint path; "{split}" and "{shots}" are substituted
    preset: str = ""  # training preset when no checkpoint is given: budget | quick | official; empty → "budget"
    backbone: str = ""  # empty → the method's default
    text_encoder: str = ""  # text-based methods; empty → the method's default
    batch_size: int = 0  # queries per forward; 0 → the method's default
    train: dict[str, Any] = field(default_factory=dict)  # preset overrides, e.g. {iterations = 2000}
    options: dict[str, Any] = field(default_factory=dict)  # method-specific extras


@dataclass(frozen=True)
class BenchConfig:
    run: RunSection = RunSection()
    dataset: DatasetSection = DatasetSection()
    protocol: ProtocolSection = ProtocolSection()
    synth: SynthSection = SynthSection()
    methods: dict[str, MethodSection] = field(default_factory=dict)

    def method(self, name: str) -> MethodSection:
        return self.methods.get(name, MethodSection())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def sha256(self) -> str:
        """Digest of the resolved config (canonical JSON), without the execution-only ``[run]`` keys."""
        data = self.to_dict()
        for key in EXECUTION_KEYS:
            data["run"].pop(key, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a type hint, converting lists to tuples; raise ConfigError naming ``where``."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        item = typing.get_args(hint)[0]
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
        _, item = typing.get_args(hint)
        if item is Any:
            return dict(value)
        return {k: _coerce(v, item, f"{where}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not match {hint}")
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where or '<root>'}: expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            path = f"{where}.{key}" if where else key
            close = [n for n in names if n.startswith(key[:3])]
            hint = f" (did you mean {', '.join(sorted(close))}?)" if close else ""
            raise ConfigError(f"unknown config key {path!r}{hint}; allowed here: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {part!r} is not a table")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"protocol.shots=[1]"`` → ``("protocol.shots", [1])``; a bare word is taken as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. protocol.shots=[1]")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> BenchConfig:
    """Read ``bench.toml`` (or the built-in defaults when ``path`` is None) and apply ``--set`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError as err:
            raise ConfigError(f"{path}: config file not found") from err
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: {err}") from err
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(data, key, value)
    try:
        return _build(BenchConfig, data, "")
    except ConfigError as err:
        raise ConfigError(f"{path or 'config'}: {err}") from None


def find_config(start: Path | None = None) -> Path | None:
    """``bench.toml`` in the current directory, if any."""
    candidate = (start or Path.cwd()) / "bench.toml"
    return candidate if candidate.exists() else None
