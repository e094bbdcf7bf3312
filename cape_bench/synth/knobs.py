"""The knobs of CAPE-Synth: how ambiguous the names are and how much instances vary."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class Knobs:
    """Generation knobs; the defaults are the benchmark's (recorded in every file's ``info``).

    Attributes:
        polysemy: fraction of each family's categories that name keypoints with the shared
            cross-family vocabulary ("left front leg" for a table, a quadruped and an insect
            alike) instead of family-specific words ("left and front leg", "left front paw").
            0 leaves only the naturally shared words (eyes, nose, shoulders, ...); 1 uses the
            shared word wherever one exists.
        variation: global multiplier of geometric intra-category variation: pose, proportions,
            viewpoint, in-plane rotation and side flips. 0 makes all instances of a category
            the same shape up to scale and translation.
        pose: multiplier of the joint-angle ranges (on top of ``variation``).
        proportions: standard deviation of the log-normal per-instance jitter of every length
            (times ``variation``).
        view: multiplier of the families' yaw / pitch ranges (on top of ``variation``).
        rotation: largest in-plane rotation in degrees (times ``variation``); families seen in
            any orientation (insects from above, hands, garments) add their own extra range.
        flip: probability that an instance of a side-view family (animals, birds, vehicles,
            hands) is seen from the other side (times ``min(1, variation)``).
        scale: range of the object's longest side as a fraction of the image side.
        appearance: probability that an instance draws a random appearance preset (colours +
            texture) instead of its category's own; 0 gives every instance of a category the
            same colours and texture kind.
        clutter: mean number of background clutter shapes (Poisson).
        occlusion: probability of a foreground occluder; keypoints under it get v = 0.
        truncation: probability that the object is shifted partly out of frame; keypoints
            outside get v = 0.
        jpeg_quality: JPEG quality of the written images.
    """

    polysemy: float = 0.5
    variation: float = 1.0
    pose: float = 1.0
    proportions: float = 0.1
    view: float = 1.0
    rotation: float = 30.0
    flip: float = 0.4
    scale: tuple[float, float] = (0.55, 0.9)
    appearance: float = 0.75
    clutter: float = 5.0
    occlusion: float = 0.2
    truncation: float = 0.1
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        for name in ("polysemy", "flip", "appearance", "occlusion", "truncation"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"knob {name} must be in [0, 1], got {value}")
        for name in ("variation", "pose", "proportions", "view", "rotation", "clutter"):
            if getattr(self, name) < 0:
                raise ValueError(f"knob {name} must be >= 0, got {getattr(self, name)}")
        lo, hi = self.scale
        if not 0.05 <= lo <= hi <= 1.0:
            raise ValueError(f"knob scale must satisfy 0.05 <= lo <= hi <= 1, got {self.scale}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scale"] = list(self.scale)
        return d

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Knobs:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise KeyError(f"unknown knobs {sorted(unknown)}; known: {sorted(known)}")
        values = dict(values)
        if "scale" in values:
            values["scale"] = tuple(float(v) for v in values["scale"])
        return cls(**values)

    def replace(self, **changes: Any) -> Knobs:
        return replace(self, **changes)
