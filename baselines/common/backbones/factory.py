"""Building a backbone by name (and SwinV2 from an official config); the catalog of ``cape-bench ls backbones``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from baselines.common.backbones.info import BackboneInfo
from baselines.common.backbones.module import FeatureBackbone, _renormalize_affine
from baselines.common.backbones.specs import BACKBONE_SPECS, RANDOM_INIT, BackboneSpec, get_spec
from baselines.common.backbones.weights import file_sha256, find_genuine_weights, load_backbone_weights

# ----------------------------------------------------------------------------------------------------------------
# Factory


def _out_size(spec: BackboneSpec, input_size: int, body: nn.Module) -> int:
    if spec.kind == "vit":
        return int(body.patch_embed.grid_size[0])
    if spec.kind == "swinv2":
        return (input_size // 32) * 2  # patch 4, three 2x merges, then bilinear x2
    # CNN / HRNet: stride-2 convs and pools with 'same'-style padding give ceil at each step
    size = input_size
    for _ in range(int(math.log2(spec.stride))):
        size = math.ceil(size / 2)
    return size


def _create_body(spec: BackboneSpec, input_size: int, timm_kwargs: Mapping[str, Any]) -> nn.Module:
    import timm

    kwargs: dict[str, Any] = dict(spec.timm_kwargs)
    if not kwargs.get("features_only"):
        kwargs["num_classes"] = 0
    if spec.kind == "swinv2":
        kwargs["img_size"] = input_size  # timm swinv2 (like the official one) is built for one input size
    kwargs.update(timm_kwargs)
    # pretrained=False always: weights come only from local files, loaded by load_backbone_weights
    return timm.create_model(spec.timm_name, pretrained=False, **kwargs)


def build_backbone(
    name: str,
    weights: str | Path | None = None,
    *,
    input_size: int = 256,
    checkpoint_prefix: str | None = None,
    **timm_kwargs: Any,
) -> tuple[FeatureBackbone, BackboneInfo]:
    """Build a named backbone and load genuine weights when they are available offline.

    Args:
        name: one of ``available_backbones()``.
        weights: None = auto (package-shipped file, then timm/HF/torch-hub cache, else random init);
            ``"random"`` = random init; otherwise a local file path (must exist).
        input_size: S of the square input (px). Swin is built for exactly this size (multiple of 32); ViTs
            resize any input to their native side; CNNs accept any size.
        checkpoint_prefix: for official CAPE checkpoints, the prefix to take the backbone from.
        **timm_kwargs: forwarded to ``timm.create_model`` (e.g. ``drop_path_rate``).

    Returns:
        ``(module, info)``; the module is in eval mode (call ``.train()`` to fine-tune).

    Raises:
        ValueError: unknown name or weights that do not fit. FileNotFoundError: missing weight file.
    """
    spec = get_spec(name)
    if spec.kind == "swinv2" and input_size % 32:
        raise ValueError(f"{name} needs an input size that is a multiple of 32, got {input_size}")
    body = _create_body(spec, input_size, timm_kwargs)
    affine = _renormalize_affine(spec.weights_mean, spec.weights_std) if spec.renormalize else None
    module = FeatureBackbone(
        body, spec.kind, upsample=2 if spec.kind == "swinv2" else 1, resize_to=spec.resize_to, input_affine=affine,
        feature_index=spec.feature_index,
    )
    notes: list[str] = []
    if spec.resize_to is not None:
        notes.append(f"input resized to {spec.resize_to} (bilinear, align_corners=False)")
    if affine is not None:
        notes.append(f"ImageNet-normalised input converted to mean {spec.weights_mean} std {spec.weights_std}")

    path: Path | None = None
    if weights is None:
        found = find_genuine_weights(name)
        if found is not None:
            path, where = found
            notes.append(f"auto-discovered: {where}")
    elif str(weights) != "random":
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights not found: {path}")

    digest = None
    if path is not None:
        notes += load_backbone_weights(module, spec, path, checkpoint_prefix)
        digest = file_sha256(path)
        provenance = f"genuine: {path.resolve()} sha256 {digest[:16]}"
    else:
        provenance = RANDOM_INIT
    if spec.feature_index is not None:  # after loading: the weight files hold the whole network
        body.prune_intermediate_layers(indices=[spec.feature_index], prune_head=True)
        notes.append(f"stages after feature {spec.feature_index} ({spec.out_channels} channels, stride "
                     f"{spec.stride}) pruned")
    module.eval()
    out_size = _out_size(spec, input_size, body)
    info = BackboneInfo(
        name=name,
        timm_name=spec.timm_name,
        out_channels=spec.out_channels,
        input_size=input_size,
        out_size=out_size,
        stride=input_size / out_size,
        weights=provenance,
        weights_file=str(path.resolve()) if path is not None else None,
        weights_sha256=digest,
        num_params=sum(p.numel() for p in module.parameters()),
        notes=tuple(notes),
    )
    return module, info


def build_swinv2_from_official_config(cfg: Mapping[str, Any]) -> FeatureBackbone:
    """A timm SwinV2 with the official PoseAnything/CapeX constructor arguments, random init.

    Args:
        cfg: the official ``SwinTransformerV2`` keyword arguments, e.g. the ``swin_cfg`` of
            ``golden/swinv2_backbone_reduced.json``: ``img_size``, ``embed_dim``, ``depths``, ``num_heads``,
            ``window_size``, optional ``drop_path_rate``, ``upsample`` (``"bilinear"`` or ``"none"``) and
            ``num_classes`` (ignored: the classifier is never used).

    Returns:
        The module (eval mode); load official tensors with
        ``module.body.load_state_dict(extract_backbone_state_dict(sd, "", "swinv2"))``.
    """
    from timm.models.swin_transformer_v2 import SwinTransformerV2

    known = {"img_size", "embed_dim", "depths", "num_heads", "window_size", "drop_path_rate", "upsample", "num_classes"}
    unknown = set(cfg) - known
    if unknown:
        raise ValueError(f"unsupported SwinV2 options {sorted(unknown)}")
    upsample = cfg.get("upsample", "bilinear")
    if upsample not in ("bilinear", "none"):
        raise ValueError(f"only upsample='bilinear' (official CAPE configs) or 'none' is supported, got {upsample!r}")
    body = SwinTransformerV2(
        img_size=cfg["img_size"],
        embed_dim=cfg["embed_dim"],
        depths=tuple(cfg["depths"]),
        num_heads=tuple(cfg["num_heads"]),
        window_size=cfg["window_size"],
        drop_path_rate=cfg.get("drop_path_rate", 0.0),
        num_classes=0,
    )
    return FeatureBackbone(body, "swinv2", upsample=2 if upsample == "bilinear" else 1).eval()



def catalog() -> list[dict[str, str]]:
    """One row per named backbone for ``cape-bench ls backbones``: what it is, whether genuine pretrained weights
    are on this machine and where, and where the official CAPE code uses it. Builds nothing."""
    rows = []
    for spec in BACKBONE_SPECS.values():
        found = find_genuine_weights(spec.name)
        rows.append({
            "name": spec.name,
            "timm model": spec.timm_name,
            "channels": str(spec.out_channels),
            "genuine weights here": f"yes: {found[0]} ({found[1]})" if found else "no (random init only)",
            "official use": spec.official,
        })
    return rows
