"""One CAPE-Synth instance: sample parameters, render the image, derive its annotation.

Each instance owns four independent random streams (geometry, appearance, background,
occlusion) spawned from ``(seed, category id, index)``. Each stream draws the same count of
numbers whatever the knob values, so turning one knob changes only what that knob controls:
with ``occlusion=0`` the object, its colours and its background stay exactly as they were.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from cape_bench.synth.appearance import (
    NUM_APPEARANCES, Appearance, background, make_appearance, random_colour, texture_image, texture_weights,
)
from cape_bench.synth.families.base import Template, sample_pose, sample_proportions
from cape_bench.synth.geometry import Projected, project_rig, shape_extent, view_rotation
from cape_bench.synth.knobs import Knobs
from cape_bench.synth.render import SUPERSAMPLE, Canvas, PixelShape, coverage_of, to_canvas

# reasons a keypoint is not plainly visible (recorded per keypoint in annotation["synth"])
VISIBLE, SELF_OCCLUDED, OCCLUDED, OUT_OF_FRAME = 0, 1, 2, 3
_MIN_VISIBLE_FRACTION = 0.5  # occluders / truncation never hide more than half the keypoints
_SHADES = (1.0, 0.86, 0.74, 0.62)


@dataclass(frozen=True)
class CategoryPlan:
    """What the generator fixed for one category.

    Attributes:
        id: category id. template: its template. appearance_id: the category's own preset.
        polysemous: whether its keypoints use the shared vocabulary.
    """

    id: int
    template: Template
    appearance_id: int
    polysemous: bool


@dataclass(frozen=True)
class Instance:
    """A rendered instance.

    Attributes:
        jpeg: the encoded image.
        keypoints: float64[K, 3] COCO triplets (x, y, v), pixel-centre coordinates; v = 0 rows
            are (0, 0, 0) as in MP-100.
        bbox: [x, y, w, h] tight box of the object's pixels (widened to hold every visible
            keypoint), inside the image.
        area: object area in pixels.
        synth: generation record for analyses (see :func:`render_instance`).
    """

    jpeg: bytes
    keypoints: np.ndarray
    bbox: list[float]
    area: float
    synth: dict


@lru_cache(maxsize=512)
def _appearance(seed: int, appearance_id: int, natural: bool, pattern: str | None) -> Appearance:
    return make_appearance(seed, appearance_id, natural, pattern)


def _rotate(points: np.ndarray, deg: float) -> np.ndarray:
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return points @ np.array([[c, s], [-s, c]])


def _shade(s: Projected) -> float:
    """Brightness factor: faces lit by their normal, free parts by depth (far side darker)."""
    if s.shade is not None:
        return s.shade
    if s.facing < 1.0:
        level = 0.62 + 0.38 * s.facing
    else:
        level = 1.0 - min(max(-2.5 * s.depth, 0.0), 0.4)
    # quantise so at most len(_SHADES) shaded texture copies are made per role
    return min(_SHADES, key=lambda v: abs(v - level))


def _darker(rgb, factor: float) -> tuple[int, int, int]:
    return tuple(int(c * factor) for c in rgb)


def render_instance(plan: CategoryPlan, index: int, *, seed: int, image_size: int, knobs: Knobs) -> Instance:
    """Render instance ``index`` of a category.

    The ``synth`` record holds: ``appearance_id``, ``texture``, ``pose`` (family pose
    parameters, degrees or fractions), ``proportions`` (instance / category ratio per length),
    ``yaw``, ``pitch``, ``flipped``, ``rotation`` (in-plane, degrees), ``scale`` (object side /
    image side), ``clutter`` (number of background shapes), ``occluder``, ``truncated``,
    ``hidden`` (one digit per keypoint: 0 visible, 1 self-occluded, 2 under the occluder,
    3 out of frame) and ``hidden_xy`` (true x, y of the keypoints stored as (0, 0, 0), in
    keypoint order).
    """
    tpl = plan.template
    fam = tpl.family
    g_geom, g_app, g_bg, g_occ = (np.random.default_rng(s)
                                  for s in np.random.SeedSequence([seed, plan.id, index]).spawn(4))
    size = image_size
    canvas_size = size * SUPERSAMPLE
    var = knobs.variation

    # --- geometry ---------------------------------------------------------------------------
    pose = sample_pose(tpl, g_geom, var * knobs.pose)
    props = sample_proportions(tpl, g_geom, var * knobs.proportions)
    v = fam.view
    yaw = v.yaw + g_geom.uniform(-1, 1) * v.yaw_range * var * knobs.view
    pitch = v.pitch + g_geom.uniform(-1, 1) * v.pitch_range * var * knobs.view
    flipped = bool(g_geom.random() < knobs.flip * min(1.0, var)) and v.flippable
    if flipped:
        yaw += 180.0
    rotation = float(g_geom.uniform(-1, 1) * (knobs.rotation + v.roll) * var)
    frac = float(g_geom.uniform(*knobs.scale))
    place = g_geom.random(2)

    rig = fam.build(props, pose, tpl.style)
    shapes, kp, self_occ = project_rig(rig, view_rotation(yaw, pitch), tpl.node_names)
    shapes = [Projected(s.kind, s.role, _rotate(s.points, rotation), s.width, s.depth, s.outline, s.shade,
                        s.facing) for s in shapes]
    kp = _rotate(kp, rotation)
    lo, hi = shape_extent(shapes)
    lo, hi = np.minimum(lo, kp.min(axis=0)), np.maximum(hi, kp.max(axis=0))
    px_per_unit = frac * (size - 1) / float(max(hi - lo))
    extent = (hi - lo) * px_per_unit
    offset = place * np.maximum(size - 1 - extent, 0.0)

    # --- occlusion stream: truncation shift and the occluder --------------------------------
    truncated = bool(g_occ.random() < knobs.truncation)
    t_side = int(g_occ.integers(4))
    t_cut = g_occ.uniform(0.1, 0.4)
    has_occ = bool(g_occ.random() < knobs.occlusion)

    def to_px(pts: np.ndarray, shift: np.ndarray) -> np.ndarray:
        return (pts - lo) * px_per_unit + offset + shift

    shift = np.zeros(2)
    if truncated:
        shift = _truncation_shift(to_px(kp, shift), t_side, t_cut, size)
        truncated = bool(np.any(shift))
    kp_px = to_px(kp, shift)

    # --- appearance -------------------------------------------------------------------------
    r_app = g_app.random()
    cand = int(g_app.integers(NUM_APPEARANCES))
    app_id = cand if r_app < knobs.appearance else plan.appearance_id
    app = _appearance(seed, app_id, fam.natural, tpl.style.get("pattern"))
    # textures are made at output resolution: the canvas is reduced back to it at the end
    weights = texture_weights(app, size, g_app)
    textures = {role: texture_image(weights, app.colours[role], app.secondary, canvas_size)
                for role in ("body", "limb")}

    # --- background and clutter -------------------------------------------------------------
    canvas = Canvas(background(canvas_size, g_bg))
    n_clutter = int(g_bg.poisson(knobs.clutter)) if knobs.clutter > 0 else 0
    for _ in range(n_clutter):
        shape, colour = _clutter_shape(g_bg, size)
        canvas.paint(shape, colour, outline=None, is_object=False)

    # --- object -----------------------------------------------------------------------------
    pixel_shapes = [PixelShape(s.kind, to_canvas(to_px(s.points, shift)), s.width * px_per_unit * SUPERSAMPLE)
                    for s in shapes]
    _paint_object(canvas, shapes, pixel_shapes, app, textures)

    # --- occluder ---------------------------------------------------------------------------
    hidden = np.where(self_occ, SELF_OCCLUDED, VISIBLE)
    hidden = np.where(_in_frame(kp_px, size), hidden, OUT_OF_FRAME)
    occ_params = (g_occ.integers(3), g_occ.uniform(0.25, 0.5), g_occ.integers(1 << 30), g_occ.uniform(0, 180),
                  random_colour(g_occ), g_occ.uniform(-0.3, 0.3, 2))
    placed_occ = False
    if has_occ:
        placed_occ, hidden = _place_occluder(canvas, occ_params, kp_px, hidden, extent, size)

    image, coverage = canvas.finish()
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=knobs.jpeg_quality)

    # --- annotation -------------------------------------------------------------------------
    labelled = hidden <= SELF_OCCLUDED
    v = np.where(hidden == VISIBLE, 2, np.where(hidden == SELF_OCCLUDED, 1, 0))
    kps = np.zeros((len(kp_px), 3))
    kps[labelled, :2] = kp_px[labelled]
    kps[:, 2] = v
    bbox, area = _bbox(coverage, kp_px[labelled], size)
    unlabelled = ~labelled
    synth = {
        "appearance_id": app_id,
        "texture": app.texture,
        "pose": {k: _compact(val, fam.pose[k][1]) for k, val in pose.items()},
        "proportions": {k: round(props[k] / tpl.proportions[k], 2) if tpl.proportions[k] else 1.0
                        for k in sorted(props)},
        "yaw": round(yaw, 1),
        "pitch": round(pitch, 1),
        "flipped": flipped,
        "rotation": round(rotation, 1),
        "scale": round(frac, 3),
        "clutter": n_clutter,
        "occluder": placed_occ,
        "truncated": truncated,
        "hidden": "".join(str(int(h)) for h in hidden),
        "hidden_xy": [round(float(c), 1) for c in kp_px[unlabelled].reshape(-1)],
    }
    return Instance(buf.getvalue(), kps, bbox, area, synth)


def _paint_object(canvas: Canvas, shapes: list[Projected], pixel_shapes: list[PixelShape], app: Appearance,
                  textures: dict[str, Image.Image]) -> None:
    """Paint the object's shapes back to front: textured body / limbs, flat other roles, dark rims."""
    shaded: dict[tuple[str, float], Image.Image] = {}
    rim = _darker(app.colours["dark"], 0.6)
    for s, px in zip(shapes, pixel_shapes):
        level = _shade(s)
        if s.role in textures:
            key = (s.role, level)
            if key not in shaded:
                base = textures[s.role]
                shaded[key] = base if level == 1.0 else Image.eval(base, lambda c, f=level: int(c * f))
            fill = shaded[key]
        else:
            fill = _darker(app.colours[s.role], level)
        canvas.paint(px, fill, outline=rim if s.outline else None)


def _compact(value: float, half_range: float) -> float:
    """Round a pose value for the record: whole degrees, or 2 decimals for fractional knobs."""
    return round(value, 2) if half_range <= 1.5 else round(value)


def _truncation_shift(kp_px: np.ndarray, side: int, cut: float, size: int) -> np.ndarray:
    """Shift (float[2] px) that pushes a fraction ``cut`` of the keypoints out over one image edge.

    The edge is ``side`` (0 left, 1 right, 2 top, 3 bottom). The frame boundary is put midway
    between the last keypoint pushed out and the first kept, so the count is exact unless
    keypoints tie; at least one and at most half of the keypoints leave the frame.
    """
    axis, towards_high = side // 2, side % 2 == 1
    coord = kp_px[:, axis] if towards_high else (size - 1) - kp_px[:, axis]
    order = np.sort(coord)[::-1]  # the keypoints nearest the chosen edge first
    k = len(order)
    m = int(min(max(1, round(cut * k)), k // 2))
    if m < 1:
        return np.zeros(2)
    boundary = (order[m - 1] + order[m]) / 2 if m < k else order[-1] - 1.0
    amount = (size - 1) - boundary
    if amount <= 0.5:  # ties or keypoints already at the edge: leave the instance alone
        return np.zeros(2)
    shift = np.zeros(2)
    shift[axis] = amount if towards_high else -amount
    return shift


def _in_frame(kp_px: np.ndarray, size: int) -> np.ndarray:
    """bool[K]: inside the image, pixel centres 0..size-1 (the official clean-box limits)."""
    return np.all((kp_px >= 0.0) & (kp_px <= size - 1), axis=1)


def _clutter_shape(rng: np.random.Generator, size: int) -> tuple[PixelShape, tuple[int, int, int]]:
    """A random background shape: a blob, a polygon, a bar or a limb-like stroke."""
    kind = int(rng.integers(4))
    centre = rng.uniform(-0.1, 1.1, 2) * size
    r = rng.uniform(0.05, 0.3) * size
    colour = random_colour(rng)
    if kind == 0:
        axis = centre + _rotate(np.array([[r, 0.0]]), rng.uniform(0, 180))[0]
        shape = PixelShape("ellipse", to_canvas(np.stack([centre, axis])), r * rng.uniform(0.3, 1.0) * SUPERSAMPLE)
    elif kind == 1:
        n = int(rng.integers(3, 7))
        ang = np.sort(rng.uniform(0, 2 * math.pi, n))
        rad = r * rng.uniform(0.5, 1.0, n)
        pts = centre + np.column_stack([np.cos(ang) * rad, np.sin(ang) * rad])
        shape = PixelShape("polygon", to_canvas(pts), 0.0)
    else:
        # strokes look like limbs: they make "thick line = part" an unreliable cue
        n = int(rng.integers(2, 4))
        steps = _rotate(np.array([[r, 0.0]]), rng.uniform(0, 360))[0]
        pts = [centre]
        for _ in range(n - 1):
            steps = _rotate(steps[None], rng.uniform(-60, 60))[0]
            pts.append(pts[-1] + steps)
        width = rng.uniform(0.02, 0.08) * size * SUPERSAMPLE
        shape = PixelShape("capsule", to_canvas(np.array(pts)), width)
    return shape, colour


def _place_occluder(canvas: Canvas, params, kp_px, hidden, extent, size):
    """Draw a foreground occluder over part of the object; mark the keypoints under it.

    The occluder lands near a visible keypoint; when it covers none, or hides more than half,
    it is centred on that keypoint and shrunk; after a few tries it is dropped (nothing drawn).

    Returns:
        (placed, hidden) with ``hidden`` updated.
    """
    kind, rel, pick, angle, colour, jitter = params
    candidates = np.flatnonzero(hidden == VISIBLE)
    if len(candidates) == 0:
        return False, hidden
    anchor = kp_px[candidates[int(pick) % len(candidates)]]
    target = anchor + jitter * extent
    side = rel * float(max(extent))
    for attempt in range(4):
        if attempt > 0:
            target = anchor  # missed or hid too much: centre it on the keypoint, then shrink
            if attempt > 1:
                side *= 0.7
        shape = _occluder_shape(int(kind), target, side, angle)
        probe = Image.new("L", (canvas.size, canvas.size), 0)
        got = canvas.mask(shape)
        if got is not None:
            probe.paste(255, got[0], got[1])
        cov = coverage_of(probe)
        idx = np.clip(np.round(kp_px).astype(int), 0, size - 1)
        under = cov[idx[:, 1], idx[:, 0]] >= 0.5
        new_hidden = np.where(under & (hidden <= SELF_OCCLUDED), OCCLUDED, hidden)
        labelled = new_hidden <= SELF_OCCLUDED
        if labelled.mean() >= _MIN_VISIBLE_FRACTION and under.any():
            fill = tuple(int(c) for c in colour)
            canvas.paint(shape, fill, outline=_darker(fill, 0.45), is_object=False)
            return True, new_hidden
    return False, hidden


def _occluder_shape(kind: int, centre: np.ndarray, side: float, angle: float) -> PixelShape:
    if kind == 0:  # a post / bar
        d = _rotate(np.array([[side, 0.0]]), angle)[0]
        return PixelShape("capsule", to_canvas(np.stack([centre - d, centre + d])), 0.45 * side * SUPERSAMPLE)
    if kind == 1:  # a bush / rock
        axis = centre + _rotate(np.array([[side * 0.6, 0.0]]), angle)[0]
        return PixelShape("ellipse", to_canvas(np.stack([centre, axis])), 0.4 * side * SUPERSAMPLE)
    half = side / 2  # a box
    pts = _rotate(np.array([[-half, -half * 0.7], [half, -half * 0.7], [half, half * 0.7], [-half, half * 0.7]]),
                  angle) + centre
    return PixelShape("polygon", to_canvas(pts), 0.0)


def _bbox(coverage: np.ndarray, labelled_xy: np.ndarray, size: int) -> tuple[list[float], float]:
    """Tight pixel box of the object, widened to hold every labelled keypoint.

    Returns ``[x, y, w, h]`` with ``x + w - 1`` the last object column (so the official clean
    box ``[x, y, w - 1, h - 1]`` spans exactly the object's pixel centres) and the area.
    """
    on = coverage >= 0.5
    ys, xs = np.nonzero(on)
    if len(xs) == 0:  # cannot happen with a placed object; keep a valid box anyway
        xs, ys = np.array([size // 2]), np.array([size // 2])
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    if len(labelled_xy):
        x0 = min(x0, int(math.floor(labelled_xy[:, 0].min())))
        x1 = max(x1, int(math.ceil(labelled_xy[:, 0].max())))
        y0 = min(y0, int(math.floor(labelled_xy[:, 1].min())))
        y1 = max(y1, int(math.ceil(labelled_xy[:, 1].max())))
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(size - 1, x1), min(size - 1, y1)
    # the official loader drops a box whose clean extent is empty: keep at least 2 px
    x0, y0 = min(x0, x1 - 1), min(y0, y1 - 1)
    area = float(max(on.sum(), 1))
    return [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)], area
