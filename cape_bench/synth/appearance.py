"""Colours and textures: appearance presets, texture images and backgrounds.

An *appearance* is a preset of five role colours (body, limb, accent, dark, light) plus a
texture kind for the large parts. Presets are numbered; an instance records the id of the one
it uses, so an analysis can ask whether support and query looked alike. Textures live in
image space (they do not follow the parts), which keeps them cheap and still breaks any
"keypoint = colour" shortcut: every role colour is shared by many keypoints.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw

NUM_APPEARANCES = 48
TEXTURES = ("solid", "stripes", "spots", "checker", "noise")
ROLES = ("body", "limb", "accent", "dark", "light")


@dataclass(frozen=True)
class Appearance:
    """One appearance preset.

    Attributes:
        id: preset number (0..NUM_APPEARANCES-1).
        colours: role -> RGB uint8 triple.
        texture: kind used on the body and limb roles.
        secondary: RGB of the texture's second colour.
        period: texture period, as a fraction of the image side.
        angle: stripe angle (degrees).
    """

    id: int
    colours: dict[str, tuple[int, int, int]]
    texture: str
    secondary: tuple[int, int, int]
    period: float
    angle: float


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def make_appearance(seed: int, appearance_id: int, natural: bool, texture: str | None = None) -> Appearance:
    """Preset ``appearance_id`` for a family palette.

    Args:
        seed: dataset seed (presets differ between seeds).
        appearance_id: 0..NUM_APPEARANCES-1.
        natural: earthy animal palette (browns, greys, tans) instead of a free man-made one.
        texture: force a texture kind (a category's signature pattern, e.g. zebra stripes).
    """
    rng = np.random.default_rng([seed, 7919, appearance_id, int(natural)])
    if natural:
        hue = rng.uniform(0.02, 0.14) if rng.random() < 0.8 else rng.uniform(0.0, 1.0)
        sat = rng.uniform(0.1, 0.65)
        val = rng.uniform(0.35, 0.95)
    else:
        hue = rng.uniform(0.0, 1.0)
        sat = rng.uniform(0.3, 0.9)
        val = rng.uniform(0.45, 0.95)
    # limbs close to the body colour, accent a clearly different hue/value: parts stay distinct
    colours = {
        "body": _rgb(hue, sat, val),
        "limb": _rgb(hue + rng.uniform(-0.03, 0.03), sat * rng.uniform(0.8, 1.1), val * rng.uniform(0.75, 0.95)),
        "accent": _rgb(hue + rng.uniform(0.25, 0.75) if not natural else hue + rng.uniform(-0.05, 0.05),
                       rng.uniform(0.2, 0.8), rng.uniform(0.3, 1.0) if not natural else val * rng.uniform(0.5, 0.75)),
        "dark": _rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.4), rng.uniform(0.05, 0.22)),
        "light": _rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.35), rng.uniform(0.8, 1.0)),
    }
    kind = texture or TEXTURES[int(rng.integers(len(TEXTURES)))]
    if texture is None and rng.random() < 0.35:
        kind = "solid"
    secondary = _rgb(hue + rng.uniform(-0.1, 0.1), sat * rng.uniform(0.3, 1.2), val * rng.uniform(0.25, 0.6))
    if texture == "stripes":
        secondary = _rgb(0.0, 0.0, 0.1)
    return Appearance(
        id=appearance_id, colours=colours, texture=kind, secondary=secondary,
        period=float(rng.uniform(0.05, 0.14)), angle=float(rng.uniform(0.0, 180.0)),
    )


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def texture_weights(app: Appearance, size: int, rng: np.random.Generator) -> np.ndarray:
    """float32[size, size] in [0, 1]: where the texture's second colour shows.

    The pattern's phase is drawn from ``rng`` so two instances with the same preset differ in
    detail but not in kind, colour or scale.
    """
    yy, xx = _grid(size)
    period = max(app.period * size, 3.0)
    phase = rng.uniform(0.0, period, size=2).astype(np.float32)
    kind = app.texture
    if kind == "stripes":
        a = np.radians(app.angle + rng.uniform(-15.0, 15.0))
        t = ((xx + phase[0]) * np.float32(np.cos(a)) + (yy + phase[1]) * np.float32(np.sin(a))) / np.float32(period)
        return (np.sin(np.float32(2 * np.pi) * t) > 0.15).astype(np.float32)
    if kind == "checker":
        cells = np.floor((xx + phase[0]) / period) + np.floor((yy + phase[1]) / period)
        return (cells % 2).astype(np.float32) * np.float32(0.6)
    if kind == "spots":
        n = max(4, int((size / period) ** 2 * 0.35))
        cx, cy = rng.uniform(0, size, n), rng.uniform(0, size, n)
        r = rng.uniform(0.2, 0.4, n) * period
        img = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(img)
        for x0, y0, rr in zip(cx, cy, r):
            draw.ellipse([x0 - rr, y0 - rr, x0 + rr, y0 + rr], fill=255)
        return np.asarray(img, np.float32) / np.float32(255.0)
    if kind == "noise":
        return low_frequency_noise(size, max(2, int(size / period / 2)), rng)
    return np.zeros((size, size), np.float32)  # solid


@lru_cache(maxsize=8)
def _light(size: int) -> Image.Image:
    """RGB multiplier image: light from above (brightness 1.0 at the top, 0.84 at the bottom)."""
    ramp = (255 * (1.0 - 0.16 * np.arange(size, dtype=np.float32) / size)).astype(np.uint8)
    return Image.fromarray(np.repeat(ramp[:, None], size, axis=1), mode="L").convert("RGB")


def texture_image(weights: np.ndarray, base: tuple[int, int, int], secondary: tuple[int, int, int],
                  out_size: int | None = None) -> Image.Image:
    """RGB image: ``base`` and ``secondary`` mixed by ``weights`` (float[S, S] in [0, 1]), lit from
    above, enlarged (nearest) to ``out_size`` when given."""
    size = weights.shape[0]
    mask = Image.fromarray((weights * np.float32(255.0) + np.float32(0.5)).astype(np.uint8), mode="L")
    img = Image.composite(Image.new("RGB", (size, size), tuple(secondary)), Image.new("RGB", (size, size), tuple(base)),
                          mask)
    img = ImageChops.multiply(img, _light(size))
    if out_size is not None and out_size != size:
        img = img.resize((out_size, out_size), Image.NEAREST)
    return img


def low_frequency_noise(size: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """float32[size, size] smooth noise in [0, 1]: a cells×cells random grid, bilinearly upsampled."""
    grid = (rng.random((cells, cells)) * 255).astype(np.uint8)
    img = Image.fromarray(grid, mode="L").resize((size, size), Image.BILINEAR)
    return np.asarray(img, np.float32) / 255.0


def background(size: int, rng: np.random.Generator) -> Image.Image:
    """RGB image of side ``size``: a two-colour gradient with smooth noise (ground/sky-like).

    Built on a 32×32 grid and upsampled: the background has no detail finer than that.
    """
    h = rng.uniform(0, 1)
    c1 = np.asarray(_rgb(h, rng.uniform(0.05, 0.5), rng.uniform(0.3, 0.95)), np.float32)
    c2 = np.asarray(_rgb(h + rng.uniform(-0.2, 0.2), rng.uniform(0.05, 0.5), rng.uniform(0.3, 0.95)), np.float32)
    a = np.radians(rng.uniform(0, 360))
    small = 32
    yy, xx = _grid(small)
    t = np.clip(0.5 + (xx / small - 0.5) * np.cos(a) + (yy / small - 0.5) * np.sin(a), 0, 1)
    noise = low_frequency_noise(small, int(rng.integers(3, 9)), rng) - 0.5
    img = c1 * (1 - t[..., None]) + c2 * t[..., None] + noise[..., None] * rng.uniform(10, 50)
    img = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), mode="RGB")
    return img.resize((size, size), Image.BILINEAR)


def random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return _rgb(rng.uniform(0, 1), rng.uniform(0.0, 0.9), rng.uniform(0.15, 0.95))
