"""What a template family is: keypoints, skeleton, pose ranges, view ranges and a rig builder.

A *family* (quadruped, bird, chair-like furniture, ...) owns the geometry shared by its
categories; a *template* (one category: ``horse_body``, ``sofa``) only fixes the family's free
numbers (proportions, pose biases, discrete style) and its names. Instances then jitter
proportions and draw pose angles around the template's values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cape_bench.synth.geometry import Rig


@dataclass(frozen=True)
class KeypointSpec:
    """One keypoint of a category.

    Attributes:
        node: rig node it sits on.
        name: family-specific description ("left front hoof", "top left side of the backrest").
        generic: the cross-family word used when the category is polysemous ("left front leg"),
            or None when the keypoint keeps ``name`` either way.
    """

    node: str
    name: str
    generic: str | None = None

    def text(self, polysemous: bool) -> str:
        return self.generic if polysemous and self.generic else self.name


@dataclass(frozen=True)
class ViewSpec:
    """How a family is looked at (degrees).

    Attributes:
        yaw, pitch: canonical view; ``*_range``: ± spread at full variation.
        flippable: instances may be seen from the opposite side (yaw + 180°), e.g. an animal
            walking to the left instead of to the right.
        roll: extra ± in-plane rotation at full variation, for families photographed in any
            orientation (insects from above, hands).
    """

    yaw: float = 0.0
    yaw_range: float = 0.0
    pitch: float = 0.0
    pitch_range: float = 0.0
    flippable: bool = False
    roll: float = 0.0


@dataclass(frozen=True)
class Template:
    """One category's parametric template.

    Attributes:
        name: category name (also the image folder).
        family: the :class:`Family` that builds it.
        proportions: base lengths (object units) and shape factors, by key.
        pose_bias: overrides of the family's pose centres, by key (degrees).
        style: discrete choices (ear shape, foot type, pattern, ...).
    """

    name: str
    family: Family
    proportions: Mapping[str, float]
    pose_bias: Mapping[str, float] = field(default_factory=dict)
    style: Mapping[str, Any] = field(default_factory=dict)

    @property
    def supercategory(self) -> str:
        return self.family.supercategory

    @property
    def keypoints(self) -> tuple[KeypointSpec, ...]:
        return self.family.keypoints(self.style)

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(k.node for k in self.keypoints)

    def descriptions(self, polysemous: bool) -> tuple[str, ...]:
        return tuple(k.text(polysemous) for k in self.keypoints)

    def skeleton(self) -> tuple[tuple[int, int], ...]:
        """0-based keypoint index pairs."""
        index = {n: i for i, n in enumerate(self.node_names)}
        return tuple((index[a], index[b]) for a, b in self.family.skeleton(self.style))


class Family:
    """Base class of template families (subclasses set the class attributes and override
    :meth:`keypoints`, :meth:`skeleton` and :meth:`build`).

    Attributes:
        name: family key. supercategory: the MP-100-style supercategory of its categories.
        view: :class:`ViewSpec`.
        pose: pose parameter -> (centre, half range) at full variation (degrees unless noted).
        defaults: default proportions (object units).
        natural: draw colours from the earthy animal palette.
    """

    name: str = ""
    supercategory: str = ""
    natural: bool = False
    view: ViewSpec = ViewSpec()
    pose: Mapping[str, tuple[float, float]] = {}
    defaults: Mapping[str, float] = {}

    def keypoints(self, style: Mapping[str, Any]) -> tuple[KeypointSpec, ...]:
        raise NotImplementedError

    def skeleton(self, style: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
        raise NotImplementedError

    def build(self, p: Mapping[str, float], q: Mapping[str, float], style: Mapping[str, Any]) -> Rig:
        """Rig of one instance from proportions ``p`` and pose ``q`` (degrees)."""
        raise NotImplementedError

    def template(self, name: str, style: Mapping[str, Any] | None = None,
                 pose: Mapping[str, float] | None = None, **proportions: float) -> Template:
        unknown = set(proportions) - set(self.defaults)
        if unknown:
            raise KeyError(f"{self.name}: unknown proportions {sorted(unknown)}")
        unknown_pose = set(pose or {}) - set(self.pose)
        if unknown_pose:
            raise KeyError(f"{self.name}: unknown pose parameters {sorted(unknown_pose)}")
        return Template(name, self, {**self.defaults, **proportions}, dict(pose or {}), dict(style or {}))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def sample_pose(template: Template, rng: np.random.Generator, amount: float) -> dict[str, float]:
    """Pose angles: the template's centre plus a uniform draw in ± half range × ``amount``.

    Draws one number per family pose key, in sorted key order, whatever ``amount`` is, so the
    random stream (and everything drawn after it) does not depend on the knob values.
    """
    out = {}
    for key in sorted(template.family.pose):
        centre, half = template.family.pose[key]
        centre = template.pose_bias.get(key, centre)
        out[key] = float(centre + rng.uniform(-1.0, 1.0) * half * amount)
    return out


def sample_proportions(template: Template, rng: np.random.Generator, spread: float) -> dict[str, float]:
    """Per-instance proportions: base × exp(N(0, spread)) clipped to ±2σ, one draw per key."""
    out = {}
    for key in sorted(template.proportions):
        z = min(max(float(rng.standard_normal()), -2.0), 2.0)
        out[key] = float(template.proportions[key] * np.exp(z * spread))
    return out
