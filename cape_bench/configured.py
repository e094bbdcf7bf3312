"""Methods as a configuration describes them: the instance (``[methods.<name>]``, variants included), the
:class:`~cape_bench.api.RunContext` of one cell, and training them exactly as ``run`` would before evaluating."""

from __future__ import annotations

from cape_bench.api import RunContext
from cape_bench.config import BenchConfig, ConfigError
from cape_bench.datasets import DatasetRef, cache_root, resolve_dataset


def create_configured_method(cfg: BenchConfig, name: str):
    """The method ``[methods.<name>]`` describes (a registered method or a variant of one)."""
    from cape_bench.registry import create_method  # noqa: PLC0415

    section = cfg.method(name)
    options = dict(section.options)
    for key in ("checkpoint", "backbone", "text_encoder", "batch_size", "preset", "train"):
        value = getattr(section, key)
        if value:
            options[key] = value
    return create_method(section.method or name, **options)


def make_context(cfg: BenchConfig, name: str, ds: DatasetRef, split: int, shots: int, log) -> RunContext:
    """What method ``name`` may use to get ready for one (split, shots) cell."""
    return RunContext(
        dataset=ds.name,
        split=split,
        shots=shots,
        ann_dir=str(ds.ann_dir),
        image_root=str(ds.image_root) if ds.image_root else None,
        cache_dir=str(cache_root(cfg)),
        options=dict(cfg.method(name).options),
        device=cfg.run.device,
        seed=cfg.run.seed,
        log=log,
        descriptions=str(ds.descriptions) if ds.descriptions else None,
        text_variant=cfg.dataset.text_variant,
        description_drop=dict(cfg.dataset.description_drop),
        subset=cfg.dataset.subset,
    )


def train_methods(cfg: BenchConfig, names: list[str], split: int, log=print) -> list[dict]:
    """Train (or find already trained) each method for ``split`` exactly as ``run`` would before evaluating.

    Returns each method's provenance (checkpoint path, training time, final loss).
    """
    from cape_bench.registry import resolve  # noqa: PLC0415

    for name in names:
        resolve(cfg.method(name).method or name)
    ds = resolve_dataset(cfg, log)  # under torchrun the first rank generates a missing dataset, the rest wait (flock)
    out = []
    for name in names:
        if cfg.method(name).checkpoint:
            raise ConfigError(f"methods.{name}.checkpoint is set: the method would load it, not train")
        try:
            method = create_configured_method(cfg, name)
        except ValueError as err:  # an unknown preset, a bad preset override
            raise ConfigError(str(err)) from err
        if not getattr(method, "trainable", False):
            raise ConfigError(f"method {name!r} has nothing to train (it has no learned weights)")
        method.prepare(make_context(cfg, name, ds, split, 1, log))
        out.append({"method": name, "split": split, **method.provenance()})
    return out
