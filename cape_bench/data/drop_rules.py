"""The official loader's instance-drop rules, once: which annotations MP-100's pipeline never sees, and why.

mmpose's ``_load_coco_keypoint_annotation_kernel`` (../shared/spec/official_code.md §1.2), after
``getAnnIds(iscrowd=False)``: no bbox, ``area <= 0``, an empty clean bbox, all-zero keypoints, ``num_keypoints
== 0`` — checked in that order, the first that applies names the drop. The loader
(:func:`cape_bench.data.mp100.load_annotation_set`) skips what this returns; the doctor
(:mod:`cape_bench.data.doctor`) reports it as the finding ``code``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from cape_bench.data.geometry import clean_bbox


class Drop(NamedTuple):
    code: str  # the doctor's finding code (W-drop-*)
    reason: str  # what the loader saw, with the values


def official_drop(*, iscrowd: float, bbox: Sequence[float] | None, area: float | None, width: float, height: float,
                  keypoints: Sequence[float], num_keypoints: float | None) -> Drop | None:
    """Why the official loader skips an annotation (the first rule that applies), or None when it keeps it.

    Args:
        iscrowd: the annotation's ``iscrowd`` (0 when absent). bbox: ``[x, y, w, h]`` px, None when absent.
        area: ``area``, None when absent (then not checked). width, height: its image's size, px.
        keypoints: the flat ``[x, y, v] × K`` list. num_keypoints: ``num_keypoints``, None when absent.
    """
    if iscrowd != 0:
        return Drop("W-drop-crowd", f"iscrowd={iscrowd:g}: getAnnIds(iscrowd=False) never returns it")
    if bbox is None:
        return Drop("W-drop-no-bbox", "no bbox")
    if area is not None and area <= 0:
        return Drop("W-drop-area", f"area={area:g} <= 0")
    if clean_bbox(bbox, width, height) is None:
        box = ", ".join(f"{v:.1f}" for v in bbox)
        return Drop("W-drop-clean-bbox",
                    f"clean bbox of [{box}] in the {width:g}x{height:g} image is empty (x2 <= x1 or y2 <= y1)")
    if max(keypoints) == 0:
        return Drop("W-drop-zero-kpts", "keypoints are all zero (max == 0)")
    if num_keypoints == 0:
        return Drop("W-drop-num-kpts", "num_keypoints == 0")
    return None
