"""Rasterising projected primitives with PIL at 2× supersampling.

Coordinates handed to this module are *output* pixel coordinates in the pixel-centre
convention of OpenCV / mmpose (pixel ``j`` spans ``[j - 0.5, j + 0.5]``), the convention the
keypoint annotations use. The canvas is ``SUPERSAMPLE`` times larger; output pixel ``j`` covers
canvas pixels ``2j`` and ``2j + 1``, whose centres average to ``2j + 0.5``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 2
RIM = 0.9 * SUPERSAMPLE  # rim width, canvas px (~1 output pixel)
_ELLIPSE_STEPS = 28


def to_canvas(xy: np.ndarray) -> np.ndarray:
    """Output pixel coordinates -> canvas coordinates."""
    return np.asarray(xy, np.float64) * SUPERSAMPLE + (SUPERSAMPLE - 1) / 2.0


@dataclass(frozen=True)
class PixelShape:
    """A primitive ready to draw, in canvas pixels.

    Attributes:
        kind: ``capsule``, ``polygon``, ``ellipse`` or ``dot``.
        points: float[n, 2] canvas coordinates (ellipse: centre and end of the major semi-axis).
        width: capsule thickness / ellipse minor semi-axis / dot radius (canvas px).
    """

    kind: str
    points: np.ndarray
    width: float

    @cached_property
    def outline(self) -> np.ndarray:
        """float[m, 2] points whose bounds (plus :meth:`pad`) cover the shape."""
        if self.kind == "ellipse":
            return self._ellipse_polygon()
        return self.points

    @cached_property
    def bounds(self) -> tuple[float, float, float, float]:
        """(x min, y min, x max, y max) of :attr:`outline`."""
        lo, hi = self.outline.min(axis=0), self.outline.max(axis=0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    def pad(self) -> float:
        if self.kind == "capsule":
            return self.width / 2.0
        if self.kind == "dot":
            return self.width
        return 0.0

    def _ellipse_polygon(self) -> np.ndarray:
        c, a = self.points[0], self.points[1] - self.points[0]
        major = float(np.hypot(*a))
        if major < 1e-9:
            a, major = np.array([self.width, 0.0]), self.width
        u = a / major
        v = np.array([-u[1], u[0]]) * self.width
        t = np.linspace(0, 2 * math.pi, _ELLIPSE_STEPS, endpoint=False)
        return c + np.cos(t)[:, None] * a + np.sin(t)[:, None] * v

    def draw(self, draw: ImageDraw.ImageDraw, offset: np.ndarray, fill: int = 255, grow: float = 0.0) -> None:
        """Fill the shape, enlarged by ``grow`` canvas pixels all round (for rims)."""
        pts = self.outline - offset
        xy = [tuple(p) for p in pts.tolist()]
        if self.kind == "polygon" or self.kind == "ellipse":
            if len(pts) >= 3:
                draw.polygon(xy, fill=fill)
                if grow > 0:
                    draw.line(xy + xy[:1], fill=fill, width=max(1, int(round(2 * grow))), joint="curve")
        elif self.kind == "capsule":
            w = max(1, int(round(self.width + 2 * grow)))
            r = self.width / 2.0 + grow
            if len(pts) >= 2:
                draw.line(xy, fill=fill, width=w, joint="curve")
            for p in (pts[0], pts[-1]):
                draw.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=fill)
        elif self.kind == "dot":
            r = max(self.width, 0.75) + grow
            p = pts[0]
            draw.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=fill)
        else:
            raise ValueError(f"unknown shape kind {self.kind!r}")


class Canvas:
    """An RGB canvas plus a coverage mask of what was drawn as "object".

    Args:
        background: RGB image of side R = output size × SUPERSAMPLE.
    """

    def __init__(self, background: Image.Image) -> None:
        self.image = background.copy()
        self.size = background.size[0]
        self.object_mask = Image.new("L", (self.size, self.size), 0)

    def mask(self, shape: PixelShape, grow: float = 0.0, margin: float = RIM + 1):
        """(box, L-mode mask of the shape grown by ``grow`` px, inside box) or None when the shape
        misses the canvas. ``box`` has ``margin`` px of room around the shape (for its rim)."""
        bx0, by0, bx1, by1 = shape.bounds
        pad = shape.pad() + margin + 1
        x0 = max(0, int(math.floor(bx0 - pad)))
        y0 = max(0, int(math.floor(by0 - pad)))
        x1 = min(self.size, int(math.ceil(bx1 + pad)) + 1)
        y1 = min(self.size, int(math.ceil(by1 + pad)) + 1)
        if x1 <= x0 or y1 <= y0:
            return None
        m = Image.new("L", (x1 - x0, y1 - y0), 0)
        shape.draw(ImageDraw.Draw(m), np.array([x0, y0], np.float64), grow=grow)
        return (x0, y0, x1, y1), m

    def paint(self, shape: PixelShape, fill, outline: tuple[int, int, int] | None = None,
              is_object: bool = True, coverage: Image.Image | None = None) -> None:
        """Draw one shape.

        Args:
            fill: RGB triple, or an RGB :class:`PIL.Image.Image` of canvas size (a texture).
            outline: rim colour, or None for no rim.
            is_object: add the shape (and its rim) to :attr:`object_mask`.
            coverage: an extra L-mode canvas-size mask to add the shape to (occluders).
        """
        got = self.mask(shape)
        if got is None:
            return
        box, m = got
        full = m
        if outline is not None:
            full = self.mask(shape, grow=RIM)[1]
            self.image.paste(outline, box, full)
        if isinstance(fill, Image.Image):
            self.image.paste(fill.crop(box), box, m)
        else:
            self.image.paste(tuple(int(c) for c in fill), box, m)
        if is_object:
            self.object_mask.paste(255, box, full)
        if coverage is not None:
            coverage.paste(255, box, full)

    def finish(self) -> tuple[Image.Image, np.ndarray]:
        """(output RGB image, float32[S, S] object coverage in [0, 1])."""
        out = self.image.reduce(SUPERSAMPLE)
        cov = np.asarray(self.object_mask.reduce(SUPERSAMPLE), np.float32) / 255.0
        return out, cov


def coverage_of(mask: Image.Image) -> np.ndarray:
    """float32[S, S] output-resolution coverage of a canvas-size L mask."""
    return np.asarray(mask.reduce(SUPERSAMPLE), np.float32) / 255.0
