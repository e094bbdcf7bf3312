"""Released official CAPE checkpoints -> our full models (backbone + head), with a key-by-key report.

An official checkpoint is an mmcv ``.pth`` (``{"state_dict": ..., "meta": ...}``, keys possibly behind a
DataParallel ``module.`` prefix; see ../shared/spec/official_code.md §6). Every key of it is either *mapped* onto a
tensor of our model or *deliberately ignored* with a reason; any other key is an error, and so is any tensor of
our model that the checkpoint does not fill (strict loading).

================  ======================================  ==============================================
layout            official prefix                         our model (attribute path)
================  ======================================  ==============================================
``capeformer``    ``encoder_query.*`` (mmpose ResNet-50)  ``backbone.body.*`` (timm resnet50, same names)
                  ``encoder_sample.*``                    ignored: the same shared module (checked equal)
                  ``keypoint_head.*``                     ``head.*`` (:class:`CapeFormerHead`, same names)
``poseanything``  ``backbone.*`` (Microsoft SwinV2)       ``backbone.body.*`` (timm SwinV2, downsample moved
                                                          one stage on; buffers recomputed; classifier dropped)
                  ``keypoint_head.*``                     ``head.*`` (:class:`GraphCapeHead`)
``pomnet``        ``encoder_query.*``                     ``backbone.query.body.*``
                  ``encoder_sample.*``                    ``backbone.support.body.*`` (a second ResNet-50)
                  ``keypoint_head.*``                     ``head.*`` (:class:`TransformerHead`)
``capex``         ``backbone.*``                          as ``poseanything``
                  ``keypoint_head.*``                     ``keypoint_head.*`` (:class:`CapeXHead`)
                  ``text_backbone.*``                     ignored: the frozen pretrained text encoder (the
                                                          method runs its own, outside the state dict)
``capenext``      ``backbone.*``                          as ``poseanything``
                  ``additional_module.*``                 ``head.additional_module.*`` (fusion module)
                  ``keypoint_head.*``                     ``head.keypoint_head.*`` (:class:`CapeXHead`)
                  ``text_backbone.*``                     ignored: frozen CLIP ViT-B/32 (as ``capex``)
================  ======================================  ==============================================

The backbone key maps live in :mod:`baselines.common.checkpoints`; this module adds the head prefix, places the
tensors in the model, checks names, shapes and recomputed buffers, and loads with ``strict=True``. The golden
full-model manifests (``golden/*_full_state_dict_manifest.json``) are the reference key sets (tests/unit/test_convert.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from baselines.common.checkpoints import (
    IGNORED,
    MAPPED,
    backbone_prefixes,
    convert_backbone_state_dict,
    read_official_state_dict,
)

#: layout -> backbone slot of :func:`baselines.common.checkpoints.convert_backbone_state_dict` -> our model path
SLOT_PATHS: dict[str, dict[str, str]] = {
    "capeformer": {"backbone": "backbone.body."},
    "poseanything": {"backbone": "backbone.body."},
    "capex": {"backbone": "backbone.body."},
    "capenext": {"backbone": "backbone.body."},
    "pomnet": {"query_backbone": "backbone.query.body.", "support_backbone": "backbone.support.body."},
}

#: layout -> (official prefix, our model prefixes tried in order: the first sub-module the model has wins)
HEAD_RULES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "capeformer": (("keypoint_head.", ("head.", "keypoint_head.")),),
    "poseanything": (("keypoint_head.", ("head.", "keypoint_head.")),),
    "pomnet": (("keypoint_head.", ("head.", "keypoint_head.")),),
    # baselines/capex/method.py CapeXModel keeps the official name ``keypoint_head``
    "capex": (("keypoint_head.", ("keypoint_head.", "head.")),),
    # capenext/method.py CapeNextModel: ``head`` = CapeNextHead(additional_module, keypoint_head)
    "capenext": (("additional_module.", ("head.additional_module.",)),
                 ("keypoint_head.", ("head.keypoint_head.",))),
}

_TEXT_REASON = ("frozen pretrained text encoder, never trained ({what}): our model runs its own frozen text "
                "encoder outside the state dict")
#: layout -> official prefixes dropped as a whole, with the reason
IGNORED_PREFIXES: dict[str, dict[str, str]] = {
    "capex": {"text_backbone.": _TEXT_REASON.format(what="gte-base, finetune_text_pretrained=False, capex.py L58-93")},
    "capenext": {"text_backbone.": _TEXT_REASON.format(what="CLIP ViT-B/32 text and visual towers")},
}

#: SwinV2 buffers ignored because timm recomputes them (official_swinv2_key_to_timm)
_SWIN_RECOMPUTED_BUFFERS = ("relative_coords_table", "relative_position_index", "attn_mask")


def _head_targets(model: nn.Module, layout: str) -> list[tuple[str, str]]:
    """(official prefix, our prefix) pairs for the non-backbone modules of ``layout`` present in ``model``."""
    out = []
    for official, candidates in HEAD_RULES[layout]:
        for ours in candidates:
            try:
                model.get_submodule(ours.rstrip("."))
            except AttributeError:
                continue
            out.append((official, ours))
            break
        else:
            raise ConversionError(f"the model has none of the sub-modules {candidates} that receive {official}*")
    return out


@dataclass
class ConversionReport:
    """What happened to every key of an official checkpoint.

    Attributes:
        layout: official model family (a key of :data:`SLOT_PATHS`).
        path: the checkpoint file.
        mapped: official key -> our model key, for every tensor copied into the model.
        ignored: official key -> reason, for every key deliberately not loaded.
    """

    layout: str
    path: str
    mapped: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)

    @property
    def num_official_keys(self) -> int:
        return len(self.mapped) + len(self.ignored)

    def ignored_lines(self) -> list[str]:
        """The ignored keys, compactly and completely: one line per (key pattern, reason).

        A reason that covers every official key under a top-level prefix prints as ``prefix.*``; other keys
        print with their numeric indices replaced by ``*`` and a count, e.g.
        ``ignored 8 x backbone.layers.*.blocks.*.attn.relative_position_index: <reason>``.
        """
        tops: dict[str, int] = {}
        for key in (*self.mapped, *self.ignored):
            top = key.split(".", 1)[0]
            tops[top] = tops.get(top, 0) + 1
        by_reason: dict[str, list[str]] = {}
        for key, reason in self.ignored.items():
            by_reason.setdefault(reason, []).append(key)
        lines = []
        for reason, keys in by_reason.items():
            counts: dict[str, int] = {}
            for top in dict.fromkeys(k.split(".", 1)[0] for k in keys):
                under = [k for k in keys if k.split(".", 1)[0] == top]
                if len(under) == tops[top]:
                    counts[f"{top}.*"] = len(under)
                else:
                    for k in under:
                        pattern = re.sub(r"(?<=\.)\d+(?=\.)", "*", k)
                        counts[pattern] = counts.get(pattern, 0) + 1
            lines += [f"ignored {n} x {pattern}: {reason}" for pattern, n in counts.items()]
        return lines

    def provenance(self) -> dict[str, Any]:
        """Entries for ``run.json`` (``Method.provenance``)."""
        out: dict[str, Any] = {
            "converted_from": f"official {self.layout} checkpoint {self.path}",
            "official_keys": self.num_official_keys,
            "mapped_keys": len(self.mapped),
            "ignored_keys": len(self.ignored),
            "ignored": self.ignored_lines(),
        }
        return out


class ConversionError(ValueError):
    """An official checkpoint does not fit the model (names the offending keys)."""


def _fmt(items, n: int = 6) -> str:
    items = list(items)
    return f"{items[:n]}{' ...' if len(items) > n else ''} ({len(items)})"


def convert_official_state_dict(
    state_dict: Mapping[str, Any], model: nn.Module, layout: str, path: str = "<memory>"
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Map an official full-model state dict onto ``model``'s keys and check it fits.

    Args:
        state_dict: official key -> tensor, ``module.`` already stripped (:func:`read_official_state_dict`).
        model: our full model: ``backbone`` (a ``FeatureBackbone``; for POMNet a pair with ``query`` / ``support``
            ``FeatureBackbone`` s) and the head sub-modules of :data:`HEAD_RULES` (``head`` or ``keypoint_head``).
        layout: one of :data:`SLOT_PATHS`.
        path: where the state dict came from (for the report).

    Returns:
        ``(converted, report)``: our model key -> tensor for every tensor of ``model.state_dict()``, and the
        report.

    Raises:
        ConversionError: an official key that is neither mapped nor deliberately ignored, a model tensor no
            official key fills, a shape mismatch, a recomputed buffer of a different shape (architecture
            mismatch, e.g. window size), or a CapeFormer ``encoder_sample`` that differs from ``encoder_query``.
    """
    if layout not in SLOT_PATHS:
        raise ValueError(f"unknown layout {layout!r}; known: {sorted(SLOT_PATHS)}")
    slot_paths = SLOT_PATHS[layout]
    report = ConversionReport(layout, str(path))
    try:
        _, decisions = convert_backbone_state_dict(state_dict, layout)  # checkpoints.BACKBONE_LAYOUTS
    except ValueError as err:
        raise ConversionError(str(err)) from err

    converted: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    dropped_prefixes = IGNORED_PREFIXES.get(layout, {})
    bb_prefixes = backbone_prefixes(layout)
    heads = _head_targets(model, layout)
    for key, value in state_dict.items():
        decision = decisions.get(key)
        if decision is not None:
            if decision.status == MAPPED:
                target = slot_paths[decision.target_module] + decision.target_key
                converted[target] = value
                report.mapped[key] = target
            elif decision.status == IGNORED:
                report.ignored[key] = decision.reason
            continue
        if key.startswith(bb_prefixes):
            unknown.append(key)  # convert_backbone_state_dict already rejects these; kept for safety
        elif (head := next(((o, m) for o, m in heads if key.startswith(o)), None)) is not None:
            target = head[1] + key[len(head[0]):]
            converted[target] = value
            report.mapped[key] = target
        else:
            prefix = next((p for p in dropped_prefixes if key.startswith(p)), None)
            if prefix is None:
                unknown.append(key)
            else:
                report.ignored[key] = dropped_prefixes[prefix]
    if unknown:
        raise ConversionError(f"{path}: official keys neither mapped nor deliberately ignored: {_fmt(unknown)}")

    own = model.state_dict()
    missing = sorted(k for k in own if k not in converted)
    unexpected = sorted(k for k in converted if k not in own)
    if unexpected:
        hint = ""
        if layout == "pomnet" and any(k.startswith("backbone.support.") for k in unexpected):
            hint = " (official POMNet has two encoders: build the model with separate query/support backbones)"
        raise ConversionError(f"{path}: converted keys the model does not have{hint}: {_fmt(unexpected)}")
    if missing:
        raise ConversionError(f"{path}: model tensors the checkpoint does not fill: {_fmt(missing)}")
    bad = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in converted.items()
           if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise ConversionError(f"{path}: shape mismatches (key, official, ours): {_fmt(bad, 4)}")
    _check_recomputed_buffers(state_dict, model, report, slot_paths)
    return converted, report


def _check_recomputed_buffers(state_dict, model: nn.Module, report: ConversionReport, slot_paths) -> None:
    """Non-learned SwinV2 buffers are ignored because timm recomputes them: require the same shapes."""
    buffers = {k: tuple(v.shape) for k, v in model.named_buffers() if v is not None}
    bad = []
    for key in report.ignored:
        if not (key.startswith("backbone.") and key.endswith(_SWIN_RECOMPUTED_BUFFERS)) or "backbone" not in slot_paths:
            continue
        rel = key[len("backbone."):]
        ours = buffers.get(slot_paths["backbone"] + rel)
        if ours != tuple(state_dict[key].shape):
            bad.append((key, tuple(state_dict[key].shape), ours))
    if bad:
        raise ConversionError(
            f"{report.path}: buffers the model should recompute differ (key, official shape, ours; None = absent), "
            f"the SwinV2 geometry does not match: {_fmt(bad, 4)}")


def load_official_checkpoint(
    model: nn.Module, path: str | Path, layout: str, *, allow_pickle: bool = False,
    log: Callable[[str], Any] | None = None,
) -> ConversionReport:
    """Read an official checkpoint file, convert it and load it into ``model`` with ``strict=True``.

    Args:
        model: our full model (see :func:`convert_official_state_dict`).
        path: mmcv ``.pth`` (``state_dict`` + ``meta``; a ``module.`` prefix is stripped) or a plain state dict.
        layout: one of :data:`SLOT_PATHS`.
        allow_pickle: ``torch.load`` with arbitrary pickled objects (an mmcv ``meta`` with numpy scalars needs
            it); only for a file you trust.
        log: called with a summary line and every line of :meth:`ConversionReport.ignored_lines`.

    Returns:
        The report.
    """
    try:
        state = read_official_state_dict(path, allow_pickle=allow_pickle)
    except ValueError as err:
        raise ConversionError(f"{err} (method option allow_pickle=true)") from err
    converted, report = convert_official_state_dict(state, model, layout, str(path))
    model.load_state_dict(converted, strict=True)
    if log is not None:
        log(f"{path}: {len(report.mapped)} official tensors loaded, {len(report.ignored)} keys ignored")
        for line in report.ignored_lines():
            log("  " + line)
    return report


def load_official_capeformer(model: nn.Module, path: str | Path, *, allow_pickle: bool = False,
                             log: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Load a released CapeFormer checkpoint (``flyinglynx/CapeFormer`` ``checkpoints-mp100``) into ``model``.

    ``model`` is a :class:`~baselines.capeformer.method.LineageImageModel` with a ``resnet50`` backbone at 256 px
    and a :class:`~baselines.capeformer.model.CapeFormerHead` with the official sizes (preset ``official``).

    Returns:
        Provenance entries (:meth:`ConversionReport.provenance`).
    """
    return load_official_checkpoint(model, path, "capeformer", allow_pickle=allow_pickle, log=log).provenance()


def load_official_graphcape(model: nn.Module, path: str | Path, *, allow_pickle: bool = False,
                            log: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Load a released PoseAnything/GraphCape checkpoint (tiny: ``swinv2_tiny``, small: ``swinv2_small``).

    Returns:
        Provenance entries (:meth:`ConversionReport.provenance`).
    """
    return load_official_checkpoint(model, path, "poseanything", allow_pickle=allow_pickle, log=log).provenance()


def load_official_pomnet(model: nn.Module, path: str | Path, *, allow_pickle: bool = False,
                         log: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Load an official POMNet checkpoint (two ResNet-50 encoders + ``TransformerHead``).

    ``model.backbone`` must hold two encoders, ``query`` and ``support`` (the ``official`` preset).

    Returns:
        Provenance entries (:meth:`ConversionReport.provenance`).
    """
    return load_official_checkpoint(model, path, "pomnet", allow_pickle=allow_pickle, log=log).provenance()


def load_official_capex(model: nn.Module, path: str | Path, *, allow_pickle: bool = False,
                        log: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Load a released CapeX checkpoint into :class:`~baselines.capex.method.CapeXModel`: ``backbone.*`` (SwinV2)
    -> ``model.backbone.body``, ``keypoint_head.*`` -> ``model.keypoint_head`` (or ``model.head``);
    ``text_backbone.*`` is ignored (frozen public text encoder, run by the method outside the state dict).

    Returns:
        Provenance entries (:meth:`ConversionReport.provenance`).
    """
    return load_official_checkpoint(model, path, "capex", allow_pickle=allow_pickle, log=log).provenance()


def load_official_capenext(model: nn.Module, path: str | Path, *, allow_pickle: bool = False,
                           log: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Load a CapeNext checkpoint into :class:`~capenext.method.CapeNextModel`: ``backbone.*`` (SwinV2) ->
    ``model.backbone.body``, ``additional_module.*`` / ``keypoint_head.*`` -> ``model.head.additional_module`` /
    ``model.head.keypoint_head``; ``text_backbone.*`` (frozen CLIP) is ignored.

    Returns:
        Provenance entries (:meth:`ConversionReport.provenance`).
    """
    return load_official_checkpoint(model, path, "capenext", allow_pickle=allow_pickle, log=log).provenance()
