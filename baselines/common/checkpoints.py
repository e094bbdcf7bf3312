"""Official CAPE checkpoints -> timm backbones: key maps, conversion and manifest coverage reports.

The official repositories (POMNet, CapeFormer, PoseAnything/GraphCape, CapeX, CapeNext) store their image
backbone inside the full-model ``state_dict`` under one of three prefixes:

* ``encoder_query.`` / ``encoder_sample.`` -- mmpose ``ResNet(depth=50)``; POMNet has two independent copies,
  CapeFormer registers one shared module twice (identical tensors under both prefixes);
* ``backbone.`` -- Microsoft's ``SwinTransformerV2`` (PoseAnything ``models/models/backbones/swin_transformer_v2.py``),
  shared by support and query.

This module maps those keys onto the timm modules that :mod:`baselines.common.backbones` builds, and reports for
every official key whether it is *mapped*, *deliberately ignored* (with the reason) or *unmapped*. The key maps are
pure string functions; torch is imported only inside the functions that read or compare tensors.

SwinV2 key map (official Microsoft layout -> timm >= 0.9 layout), see ``official_swinv2_key_to_timm``:

==========================================================  ==================================================
official key (relative to ``backbone.``)                    timm key / decision
==========================================================  ==================================================
``patch_embed.{proj,norm}.*``                               same
``layers.S.blocks.B.{norm1,norm2}.*``                       same
``layers.S.blocks.B.attn.{qkv.weight,proj.*}``              same
``layers.S.blocks.B.attn.{q_bias,v_bias,logit_scale}``      same (timm adds a zero ``k_bias`` buffer itself)
``layers.S.blocks.B.attn.cpb_mlp.{0.weight,0.bias,2.weight}`` same
``layers.S.blocks.B.mlp.{fc1,fc2}.*``                       same
``layers.S.downsample.{reduction.weight,norm.*}``           ``layers.{S+1}.downsample.*`` (official merges at the
                                                            *end* of stage S, timm at the *start* of stage S+1;
                                                            the 2x2 concat order x0,x1,x2,x3 is the same)
``norm.*``                                                  same
``layers.S.blocks.B.attn.relative_coords_table``            ignored: recomputed (timm non-persistent buffer)
``layers.S.blocks.B.attn.relative_position_index``          ignored: recomputed (timm non-persistent buffer)
``layers.S.blocks.B.attn_mask``                             ignored: recomputed (timm non-persistent buffer)
``head.{weight,bias}``                                      ignored: ImageNet classifier never used
                                                            (official forward uses ``forward_features`` only)
==========================================================  ==================================================

ResNet key map (mmpose ``ResNet(depth=50, style='pytorch')`` -> timm ``resnet50``): identity. Both follow the
torchvision naming (``conv1``, ``bn1``, ``layerL.B.{conv,bn}{1,2,3}``, ``layerL.B.downsample.{0,1}``), BN buffers
included; mmpose's ResNet has no ``fc``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------------------------------------------
# Decisions


@dataclass(frozen=True)
class KeyDecision:
    """What happens to one official state-dict key.

    Attributes:
        official: the official key, full (with its model prefix, e.g. ``backbone.norm.weight``).
        status: ``"mapped"`` (copied to ``target_module``/``target_key``) or ``"ignored"`` (deliberately dropped).
        target_module: slot of the re-implementation that receives it, e.g. ``"backbone"``, ``"query_backbone"``.
        target_key: key inside that slot's timm module (``module.body``), e.g. ``layers.1.downsample.norm.weight``.
        reason: why a key is ignored (empty for mapped keys).
    """

    official: str
    status: str
    target_module: str | None = None
    target_key: str | None = None
    reason: str = ""

    @property
    def target(self) -> str | None:
        """``"<module>:<key>"`` or None when ignored."""
        if self.status != "mapped":
            return None
        return f"{self.target_module}:{self.target_key}"


MAPPED = "mapped"
IGNORED = "ignored"
UNMAPPED = "unmapped"

# ----------------------------------------------------------------------------------------------------------------
# Per-family key maps (keys relative to the backbone prefix)

_SWIN_RECOMPUTED_BUFFERS = ("relative_coords_table", "relative_position_index")
_SWIN_BLOCK_KEY = re.compile(
    r"^layers\.(\d+)\.blocks\.(\d+)\."
    r"(norm1\.(weight|bias)|norm2\.(weight|bias)"
    r"|attn\.(qkv\.weight|proj\.(weight|bias)|q_bias|v_bias|logit_scale"
    r"|cpb_mlp\.0\.(weight|bias)|cpb_mlp\.2\.weight)"
    r"|mlp\.fc[12]\.(weight|bias))$"
)
_SWIN_DOWNSAMPLE_KEY = re.compile(r"^layers\.(\d+)\.downsample\.(reduction\.weight|norm\.(weight|bias))$")
_SWIN_TOP_KEY = re.compile(r"^(patch_embed\.(proj|norm)\.(weight|bias)|norm\.(weight|bias))$")


def official_swinv2_key_to_timm(key: str) -> tuple[str | None, str]:
    """Map one official (Microsoft-layout) SwinV2 key onto timm's ``SwinTransformerV2``.

    Mirrors the layout of PoseAnything ``models/models/backbones/swin_transformer_v2.py`` (``BasicLayer`` with
    ``downsample`` at the end of the stage) against timm ``swin_transformer_v2.py`` (``SwinTransformerV2Stage``
    with ``downsample`` at the start).

    Args:
        key: key relative to the backbone (no ``backbone.`` prefix).

    Returns:
        ``(timm_key, "")`` when mapped, ``(None, reason)`` when deliberately ignored, ``(None, "")`` when the key
        is not part of the known layout (unmapped).
    """
    if key.startswith("head."):
        return None, "unused ImageNet classifier (official forward_features never calls it)"
    if key.endswith("attn_mask"):
        return None, "non-learned shifted-window mask, recomputed by timm (non-persistent buffer)"
    if any(key.endswith("attn." + b) for b in _SWIN_RECOMPUTED_BUFFERS):
        return None, "non-learned relative-position buffer, recomputed by timm (non-persistent buffer)"
    if _SWIN_BLOCK_KEY.match(key) or _SWIN_TOP_KEY.match(key):
        return key, ""
    m = _SWIN_DOWNSAMPLE_KEY.match(key)
    if m:
        # official: PatchMerging closes stage S; timm: it opens stage S+1
        return f"layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}", ""
    return None, ""


_RESNET_KEY = re.compile(
    r"^(conv1\.weight|bn1\.(weight|bias|running_mean|running_var|num_batches_tracked)"
    r"|layer[1-4]\.\d+\.(conv[1-3]\.weight"
    r"|(bn[1-3]|downsample\.1)\.(weight|bias|running_mean|running_var|num_batches_tracked)"
    r"|downsample\.0\.weight))$"
)


def official_resnet_key_to_timm(key: str) -> tuple[str | None, str]:
    """Map one mmpose ResNet key onto timm ``resnet50`` (identity on the torchvision naming).

    Args:
        key: key relative to the encoder prefix (no ``encoder_query.``).

    Returns:
        ``(timm_key, "")`` when mapped, ``(None, "")`` when not part of the known layout.
    """
    if _RESNET_KEY.match(key):
        return key, ""
    return None, ""


_FAMILY_MAPS = {"swinv2": official_swinv2_key_to_timm, "resnet": official_resnet_key_to_timm}


@dataclass(frozen=True)
class PrefixRule:
    """How one backbone prefix of an official checkpoint is treated.

    Attributes:
        prefix: official prefix, with the trailing dot.
        family: key-map family (``"resnet"`` or ``"swinv2"``).
        target_module: slot of the re-implementation that receives the tensors, or None when the whole prefix is
            deliberately ignored.
        duplicate_of: for an ignored prefix that repeats another one tensor for tensor (CapeFormer's shared
            backbone), the prefix it repeats; conversion checks the tensors are equal.
        reason: why an ignored prefix is ignored.
    """

    prefix: str
    family: str
    target_module: str | None
    duplicate_of: str | None = None
    reason: str = ""


_SHARED_RESNET_REASON = (
    "share_backbone=True: encoder_sample is the same module as encoder_query, its tensors are identical "
    "(CapeFormer detr_two_stage.py L43-50); loaded once from encoder_query"
)
_SWIN_RULE = (PrefixRule("backbone.", "swinv2", "backbone"),)

# official model family -> backbone prefixes (spec sections 2.1, 3.1, 4.1, 5, 10)
BACKBONE_LAYOUTS: dict[str, tuple[PrefixRule, ...]] = {
    "pomnet": (
        PrefixRule("encoder_query.", "resnet", "query_backbone"),
        PrefixRule("encoder_sample.", "resnet", "support_backbone"),
    ),
    "capeformer": (
        PrefixRule("encoder_query.", "resnet", "backbone"),
        PrefixRule("encoder_sample.", "resnet", None, duplicate_of="encoder_query.", reason=_SHARED_RESNET_REASON),
    ),
    "poseanything": _SWIN_RULE,
    "capex": _SWIN_RULE,
    "capenext": _SWIN_RULE,
}


def backbone_prefixes(layout: str) -> tuple[str, ...]:
    """Official backbone prefixes of a model family, e.g. ``("encoder_query.", "encoder_sample.")``."""
    return tuple(rule.prefix for rule in _layout(layout))


def _layout(layout: str) -> tuple[PrefixRule, ...]:
    try:
        return BACKBONE_LAYOUTS[layout]
    except KeyError:
        raise ValueError(f"unknown checkpoint layout {layout!r}; known: {sorted(BACKBONE_LAYOUTS)}") from None


def map_backbone_keys(keys: Iterable[str], layout: str) -> dict[str, KeyDecision]:
    """Decide every backbone key of an official checkpoint.

    Keys outside the layout's backbone prefixes (``keypoint_head.*``, ``text_backbone.*`` ...) get no decision:
    the head converters own them. A backbone key that the family map does not know gets no decision either, so
    ``check_manifest`` lists it as unmapped.

    Args:
        keys: official state-dict keys (full, with prefixes).
        layout: model family, one of ``BACKBONE_LAYOUTS``.

    Returns:
        official key -> decision, for the decided backbone keys.
    """
    rules = _layout(layout)
    decisions: dict[str, KeyDecision] = {}
    for key in keys:
        rule = next((r for r in rules if key.startswith(r.prefix)), None)
        if rule is None:
            continue
        rel = key[len(rule.prefix):]
        target, reason = _FAMILY_MAPS[rule.family](rel)
        if target is None and not reason:
            continue  # unknown to the map: left unmapped on purpose
        if rule.target_module is None:
            decisions[key] = KeyDecision(key, IGNORED, reason=rule.reason)
        elif target is None:
            decisions[key] = KeyDecision(key, IGNORED, reason=reason)
        else:
            decisions[key] = KeyDecision(key, MAPPED, rule.target_module, target)
    return decisions


# ----------------------------------------------------------------------------------------------------------------
# Manifests


def load_manifest(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Read a ``golden/*_manifest.json`` into official key -> shape.

    Accepts both formats found in ``golden/``: ``{"state_dict_shapes": {key: [dims]}}`` and
    ``{"state_dict": {key: {"shape": [dims], ...}}}`` (CapeNext).
    """
    data = json.loads(Path(path).read_text())
    if "state_dict_shapes" in data:
        return {k: tuple(v) for k, v in data["state_dict_shapes"].items()}
    if "state_dict" in data:
        return {k: tuple(v["shape"]) for k, v in data["state_dict"].items()}
    raise ValueError(f"{path}: no 'state_dict_shapes' or 'state_dict' entry")


@dataclass
class ManifestReport:
    """Coverage of an official state dict by a set of key decisions.

    Attributes:
        mapped: official key -> decision, for mapped keys present in the manifest.
        ignored: official key -> decision, for deliberately ignored keys present in the manifest.
        unmapped: official keys of the manifest with no decision.
        shape_mismatches: ``(official, official_shape, target, target_shape)`` for mapped keys whose target shape
            differs (only when target shapes were given).
        missing_targets: mapped targets (``module:key``) absent from the given target modules.
        uncovered_targets: module -> keys of the target modules that no official key fills.
        stale: decisions for keys that are not in the manifest.
    """

    mapped: dict[str, KeyDecision] = field(default_factory=dict)
    ignored: dict[str, KeyDecision] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)
    shape_mismatches: list[tuple[str, tuple[int, ...], str, tuple[int, ...]]] = field(default_factory=list)
    missing_targets: list[str] = field(default_factory=list)
    uncovered_targets: dict[str, list[str]] = field(default_factory=dict)
    stale: list[str] = field(default_factory=list)

    def unmapped_under(self, prefixes: Iterable[str]) -> list[str]:
        """Unmapped keys that start with one of ``prefixes``."""
        prefixes = tuple(prefixes)
        return [k for k in self.unmapped if k.startswith(prefixes)]

    def ok(self, prefixes: Iterable[str] | None = None) -> bool:
        """True when nothing is unmapped (under ``prefixes`` if given) and every target check passed."""
        unmapped = self.unmapped if prefixes is None else self.unmapped_under(prefixes)
        uncovered = any(self.uncovered_targets.values())
        return not (unmapped or self.shape_mismatches or self.missing_targets or uncovered)

    def summary(self) -> str:
        """A few human-readable lines (counts, ignore reasons, first problems)."""
        lines = [f"mapped {len(self.mapped)}, ignored {len(self.ignored)}, unmapped {len(self.unmapped)}"]
        reasons: dict[str, int] = {}
        for d in self.ignored.values():
            reasons[d.reason] = reasons.get(d.reason, 0) + 1
        lines += [f"  ignored x{n}: {r}" for r, n in sorted(reasons.items())]
        for title, items in (
            ("unmapped", self.unmapped),
            ("shape mismatch", self.shape_mismatches),
            ("missing target", self.missing_targets),
            ("not in manifest", self.stale),
        ):
            if items:
                lines.append(f"  {title} ({len(items)}): {items[:5]}{' ...' if len(items) > 5 else ''}")
        for module, keys in self.uncovered_targets.items():
            if keys:
                lines.append(f"  {module}: {len(keys)} target keys never filled: {keys[:5]}")
        return "\n".join(lines)


def check_manifest(
    mapped_keys: Mapping[str, KeyDecision],
    manifest: Mapping[str, Iterable[int]] | str | Path,
    target_shapes: Mapping[str, Mapping[str, Iterable[int]]] | None = None,
) -> ManifestReport:
    """List every official key as mapped / deliberately ignored / unmapped, and check the targets.

    Args:
        mapped_keys: official key -> decision (e.g. ``map_backbone_keys(...)`` merged with a head converter's).
        manifest: official key -> shape, or a manifest file path (see ``load_manifest``).
        target_shapes: optional module slot -> (timm key -> shape) of the re-implementation, e.g.
            ``{"backbone": {k: v.shape for k, v in module.body.state_dict().items()}}``. When given, mapped shapes
            must equal target shapes and every target key must be filled by some official key.

    Returns:
        The report; ``report.ok(prefixes)`` is the pass/fail verdict.
    """
    if isinstance(manifest, (str, Path)):
        manifest = load_manifest(manifest)
    shapes = {k: tuple(v) for k, v in manifest.items()}
    report = ManifestReport()
    for key in shapes:
        decision = mapped_keys.get(key)
        if decision is None:
            report.unmapped.append(key)
        elif decision.status == MAPPED:
            report.mapped[key] = decision
        elif decision.status == IGNORED:
            report.ignored[key] = decision
        else:
            raise ValueError(f"{key}: unknown status {decision.status!r}")
    report.stale = [k for k in mapped_keys if k not in shapes]
    if target_shapes is None:
        return report

    targets = {m: {k: tuple(s) for k, s in sd.items()} for m, sd in target_shapes.items()}
    filled: dict[str, set[str]] = {m: set() for m in targets}
    for key, d in report.mapped.items():
        module = targets.get(d.target_module)
        if module is None or d.target_key not in module:
            report.missing_targets.append(d.target)
            continue
        filled[d.target_module].add(d.target_key)
        if module[d.target_key] != shapes[key]:
            report.shape_mismatches.append((key, shapes[key], d.target, module[d.target_key]))
    report.uncovered_targets = {m: sorted(set(sd) - filled[m]) for m, sd in targets.items()}
    return report


# ----------------------------------------------------------------------------------------------------------------
# Reading and converting tensors


def read_official_state_dict(path: str | Path, allow_pickle: bool = False) -> dict[str, Any]:
    """Load a checkpoint file as a flat key -> tensor dict (CPU).

    Handles mmcv/mmpose checkpoints (``{"state_dict": ..., "meta": ...}``), Microsoft Swin releases
    (``{"model": ...}``), plain state dicts and ``.safetensors``; strips a DataParallel ``module.`` prefix.

    Args:
        path: checkpoint file.
        allow_pickle: by default ``torch.load(weights_only=True)`` runs no pickled code; an mmcv checkpoint whose
            ``meta`` holds other objects (numpy scalars, configs) then fails, and only for a file you trust may
            this be set to True.

    Raises:
        ValueError: the file is not a state dict, or needs ``allow_pickle=True``.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        import pickle

        import torch

        try:
            state = torch.load(str(path), map_location="cpu", weights_only=not allow_pickle)
        except pickle.UnpicklingError as err:
            raise ValueError(
                f"{path}: holds objects beyond tensors ({err.__class__.__name__}); pass allow_pickle=True "
                "only if you trust the file"
            ) from err
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(state, Mapping) and wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
            break
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: not a state dict (got {type(state).__name__})")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def _tensors_equal(a: Any, b: Any) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.equal(torch.as_tensor(a), torch.as_tensor(b)))


def convert_backbone_state_dict(
    state_dict: Mapping[str, Any], layout: str
) -> tuple[dict[str, dict[str, Any]], dict[str, KeyDecision]]:
    """Split an official full-model state dict into timm state dicts, one per backbone slot.

    Args:
        state_dict: official key -> tensor (see ``read_official_state_dict``).
        layout: model family, one of ``BACKBONE_LAYOUTS``.

    Returns:
        ``(slots, decisions)``: slot (``"backbone"`` / ``"query_backbone"`` / ``"support_backbone"``) -> timm
        key -> tensor, ready for ``module.body.load_state_dict(slots[slot], strict=...)``; and the decisions.

    Raises:
        ValueError: a backbone key is unknown to the key map, or a duplicate prefix (CapeFormer
            ``encoder_sample.``) holds tensors different from the prefix it should repeat.
    """
    decisions = map_backbone_keys(state_dict, layout)
    rules = _layout(layout)
    prefixes = tuple(r.prefix for r in rules)
    unknown = [k for k in state_dict if k.startswith(prefixes) and k not in decisions]
    if unknown:
        raise ValueError(f"{len(unknown)} backbone keys unknown to the {layout} key map: {unknown[:5]}")
    for rule in rules:
        if rule.duplicate_of is None:
            continue
        for key in state_dict:
            if not key.startswith(rule.prefix):
                continue
            twin = rule.duplicate_of + key[len(rule.prefix):]
            if twin in state_dict and not _tensors_equal(state_dict[key], state_dict[twin]):
                raise ValueError(f"{key} differs from {twin}: the backbone is not shared as {layout} expects")
    slots: dict[str, dict[str, Any]] = {}
    for key, d in decisions.items():
        if d.status == MAPPED:
            slots.setdefault(d.target_module, {})[d.target_key] = state_dict[key]
    return slots, decisions


def extract_backbone_state_dict(state_dict: Mapping[str, Any], prefix: str, family: str) -> dict[str, Any]:
    """Take one backbone out of an official checkpoint and map it to timm keys.

    Args:
        state_dict: official key -> tensor.
        prefix: e.g. ``"backbone."``, ``"encoder_query."`` or ``"encoder_sample."`` (POMNet's support encoder).
        family: ``"resnet"`` or ``"swinv2"``.

    Returns:
        timm key -> tensor; ignored keys (buffers, classifier) are dropped.

    Raises:
        ValueError: no key under ``prefix``, or a key the family map does not know.
    """
    key_map = _FAMILY_MAPS[family]
    out: dict[str, Any] = {}
    unknown = []
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        target, reason = key_map(key[len(prefix):])
        if target is not None:
            out[target] = value
        elif not reason:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{len(unknown)} keys under {prefix!r} unknown to the {family} key map: {unknown[:5]}")
    if not out:
        raise ValueError(f"no {family} keys under {prefix!r}")
    return out


def is_official_swinv2_layout(keys: Iterable[str]) -> bool:
    """True for the Microsoft layout (a ``layers.0.downsample`` exists), False for timm's (stage 0 has none)."""
    return any(re.match(r"^(backbone\.)?layers\.0\.downsample\.", k) for k in keys)
