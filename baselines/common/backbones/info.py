"""What a built backbone reports: name, weights provenance, output channels and feature size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
