"""Furniture families (tables, chairs, beds, cabinets), facing the viewer (+z): their left side is at +x (the left of someone sitting on the chair); the shared keypoint helpers of the man-made families."""

from __future__ import annotations

import math

import numpy as np

from cape_bench.synth.families.base import Family, KeypointSpec, ViewSpec
from cape_bench.synth.geometry import Rig

K = KeypointSpec
_SIDES = (("l", "left", 1.0), ("r", "right", -1.0))  # furniture / garments: left at +x
_ENDS = (("f", "front", 1.0), ("b", "back", -1.0))  # furniture: front at +z


def _leg(rig: Rig, top, floor_y: float, splay_deg: float, sx: float, sz: float, width: float, role="limb",
         z_bias: float = 0.0) -> np.ndarray:
    """A leg from ``top`` down to the floor, splayed outwards; returns its floor end."""
    top = np.asarray(top, dtype=np.float64)
    drop = top[1] - floor_y
    out = math.tan(math.radians(splay_deg)) * drop
    end = np.array([top[0] + sx * out, floor_y, top[2] + sz * out])
    rig.capsule([top, end], width, role=role, z_bias=z_bias)
    return end


# ------------------------------------------------------------------------------------------------
# furniture
# ------------------------------------------------------------------------------------------------

_FURNITURE_VIEW = ViewSpec(yaw=0.0, yaw_range=45.0, pitch=22.0, pitch_range=12.0)


class Table(Family):
    """Four-legged flat-topped furniture: tables, desks, stools, benches (8 keypoints)."""

    name = "table"
    supercategory = "furniture"
    view = _FURNITURE_VIEW
    pose = {"splay": (3.0, 6.0)}
    defaults = {"w": 1.0, "d": 0.6, "h": 0.7, "t": 0.06, "lw": 0.06, "inset": 0.06}

    def keypoints(self, style):
        part = style.get("part", "top")
        kps = []
        for s, word, _ in _SIDES:
            for e, end, _ in _ENDS:
                kps.append(K(f"t{s}{e}", f"{word} and {end} side of the {part}", f"{end} {word} top corner"))
        for s, word, _ in _SIDES:
            for e, end, _ in _ENDS:
                kps.append(K(f"g{s}{e}", f"{word} and {end} leg", f"{word} {end} leg"))
        return tuple(kps)

    def skeleton(self, style):
        return (("tlf", "tlb"), ("tlb", "trb"), ("trb", "trf"), ("trf", "tlf"), ("tlf", "glf"), ("tlb", "glb"),
                ("trf", "grf"), ("trb", "grb"))

    def build(self, p, q, style):
        rig = Rig()
        w, d, h, t = p["w"], p["d"], p["h"], p["t"]
        big = w + d  # top and drawers are drawn after every leg: legs hang under them
        rig.box([0, h - t / 2, 0], [w, t, d], role="body", z_bias=big)
        for s, _, sx in _SIDES:
            for e, _, sz in _ENDS:
                rig.node(f"t{s}{e}", [sx * w / 2, h, sz * d / 2])
                top = [sx * (w / 2 - p["inset"]), h - t, sz * (d / 2 - p["inset"])]
                rig.node(f"g{s}{e}", _leg(rig, top, 0.0, q["splay"], sx, sz, p["lw"]))
        if style.get("drawers"):
            dw = 0.35 * w
            rig.box([-(w / 2 - dw / 2 - p["inset"]), h - t - 0.18, 0], [dw, 0.36, d * 0.85], role="accent",
                    z_bias=big / 2)
        if style.get("footrest"):
            y = 0.3 * h
            ring = [np.array([sx * (w / 2 - p["inset"]), y, sz * (d / 2 - p["inset"])])
                    for sx, sz in ((1, 1), (-1, 1), (-1, -1), (1, -1))]
            for a, b in zip(ring, ring[1:] + ring[:1]):
                rig.capsule([a, b], 0.6 * p["lw"], role="limb")
        if style.get("shelf"):
            rig.box([0, 0.25 * h, 0], [w - 2 * p["inset"], 0.6 * t, d - 2 * p["inset"]], role="accent",
                    z_bias=big / 3)
        return rig


class Chair(Family):
    """Seats with a backrest: chairs, armchairs, sofas, benches, swivel chairs."""

    name = "chair"
    supercategory = "furniture"
    view = _FURNITURE_VIEW
    pose = {"recline": (8.0, 8.0), "splay": (3.0, 5.0), "swivel": (0.0, 15.0)}
    defaults = {"w": 0.5, "d": 0.5, "hs": 0.45, "t": 0.07, "hb": 0.45, "bt": 0.06, "lw": 0.05, "inset": 0.04,
                "aw": 0.08, "ha": 0.2, "base": 0.3}

    def keypoints(self, style):
        kps = []
        if style.get("swivel"):
            for i, where in enumerate(("front", "front left", "back left", "back right", "front right")):
                kps.append(K(f"wheel{i}", f"{where} wheel of the base", f"{where} wheel"))
            kps += [K("hub", "center of the wheels"), K("seat_c", "center of the seat")]
        else:
            for s, word, _ in _SIDES:
                for e, end, _ in _ENDS:
                    kps.append(K(f"g{s}{e}", f"{word} and {end} leg", f"{word} {end} leg"))
        for s, word, _ in _SIDES:
            for e, end, _ in _ENDS:
                kps.append(K(f"s{s}{e}", f"{word} and {end} side of the seat"))
        if style.get("arms"):
            for s, word, _ in _SIDES:
                kps += [K(f"a{s}f", f"front side of the {word} armrest", f"{word} arm"),
                        K(f"a{s}b", f"back side of the {word} armrest")]
        for s, word, _ in _SIDES:
            kps.append(K(f"b{s}", f"top {word} side of the backrest", f"top {word} corner"))
        return tuple(kps)

    def skeleton(self, style):
        edges = [("slf", "srf"), ("srf", "srb"), ("srb", "slb"), ("slb", "slf"), ("slb", "bl"), ("srb", "br"),
                 ("bl", "br")]
        if style.get("swivel"):
            edges += [("hub", f"wheel{i}") for i in range(5)] + [("hub", "seat_c")]
        else:
            edges += [("slf", "glf"), ("srf", "grf"), ("slb", "glb"), ("srb", "grb")]
        if style.get("arms"):
            edges += [("alf", "alb"), ("arf", "arb"), ("alf", "slf"), ("arf", "srf")]
        return tuple(edges)

    def build(self, p, q, style):
        rig = Rig()
        w, d, hs, t = p["w"], p["d"], p["hs"], p["t"]
        big = w + d
        rig.box([0, hs - t / 2, 0], [w, t, d], role="body", z_bias=big)
        for s, _, sx in _SIDES:
            for e, _, sz in _ENDS:
                rig.node(f"s{s}{e}", [sx * w / 2, hs, sz * d / 2])
        # backrest: a sheared box leaning back by `recline`
        r = math.radians(q["recline"])
        y0, y1 = hs, hs + p["hb"] * math.cos(r)
        shift = p["hb"] * math.sin(r)
        zb = -d / 2
        corners = []
        for i in range(8):
            x = (w / 2) * (1 if i & 1 else -1)
            top = bool(i & 2)
            z = zb + (p["bt"] if i & 4 else 0.0) - (shift if top else 0.0)
            corners.append([x, y1 if top else y0, z])
        rig.hexa(corners, role="body", z_bias=0.0)
        for s, _, sx in _SIDES:
            rig.node(f"b{s}", [sx * w / 2, y1, zb + p["bt"] - shift])
        if style.get("arms"):
            for s, _, sx in _SIDES:
                cx = sx * (w / 2 - p["aw"] / 2)
                rig.box([cx, hs + p["ha"] / 2, 0.0], [p["aw"], p["ha"], d * 0.95], role="accent", z_bias=big + 0.01)
                rig.node(f"a{s}f", [cx, hs + p["ha"], d * 0.475])
                rig.node(f"a{s}b", [cx, hs + p["ha"], -d * 0.475])
        if style.get("swivel"):
            hub_y = 0.1 * hs
            rig.node("hub", [0.0, hub_y, 0.0])
            rig.node("seat_c", [0.0, hs, 0.0])
            rig.capsule([[0, hs - t, 0], [0, hub_y, 0]], 1.2 * p["lw"], role="dark", z_bias=0.0)
            for i in range(5):
                phi = math.radians(q["swivel"] + 72.0 * i)
                foot = np.array([p["base"] * math.sin(phi), 0.045, p["base"] * math.cos(phi)])
                rig.capsule([[0, hub_y, 0], foot + [0, 0.03, 0]], p["lw"], role="dark")
                rig.node(f"wheel{i}", foot)
                rig.dot(foot, 0.045, role="dark", outline=True, z_bias=0.01)
        else:
            for s, _, sx in _SIDES:
                for e, _, sz in _ENDS:
                    top = [sx * (w / 2 - p["inset"]), hs - t, sz * (d / 2 - p["inset"])]
                    rig.node(f"g{s}{e}", _leg(rig, top, 0.0, q["splay"], sx, sz, p["lw"]))
        return rig


class Bed(Family):
    """A bed, headboard at the back (-z), foot towards the viewer (10 keypoints)."""

    name = "bed"
    supercategory = "furniture"
    view = ViewSpec(yaw=0.0, yaw_range=45.0, pitch=25.0, pitch_range=12.0)
    pose = {"splay": (0.0, 4.0), "pillow": (0.0, 1.0)}
    defaults = {"w": 1.0, "l": 1.5, "hm": 0.45, "tm": 0.2, "hh": 0.5, "ht": 0.07, "lw": 0.07, "inset": 0.05}

    def keypoints(self, style):
        kps = []
        for s, word, _ in _SIDES:
            kps += [K(f"g{s}b", f"{word} and back leg", f"{word} back leg"),
                    K(f"g{s}f", f"{word} and front leg", f"{word} front leg"),
                    K(f"m{s}b", f"{word} and back side of the mattress"),
                    K(f"m{s}f", f"{word} and front side of the mattress"),
                    K(f"h{s}", f"top {word} side of the headboard", f"top {word} corner")]
        return tuple(kps)

    def skeleton(self, style):
        return (("mlb", "mlf"), ("mlf", "mrf"), ("mrf", "mrb"), ("mrb", "mlb"), ("mlb", "hl"), ("mrb", "hr"),
                ("hl", "hr"), ("glb", "mlb"), ("glf", "mlf"), ("grb", "mrb"), ("grf", "mrf"))

    def build(self, p, q, style):
        rig = Rig()
        w, length, hm, tm = p["w"], p["l"], p["hm"], p["tm"]
        frame_top = hm - tm
        big = w + length
        rig.box([0, frame_top - 0.05, 0], [w, 0.1, length], role="accent", z_bias=big)
        rig.box([0, hm - tm / 2, 0], [w * 0.98, tm, length * 0.98], role="light", z_bias=big + 0.01)
        # blanket over the foot two thirds, pillow near the head
        rig.box([0, hm - tm / 2 + 0.01, length * 0.15], [w, tm + 0.03, length * 0.72], role="body", z_bias=big + 0.02)
        px = 0.22 * w * float(np.clip(q["pillow"], -1, 1))
        rig.box([px, hm + 0.04, -length * 0.36], [w * 0.5, 0.08, length * 0.16], role="light", z_bias=big + 0.03)
        top = hm + p["hh"]
        rig.box([0, top / 2, -length / 2 - p["ht"] / 2], [w + 0.04, top, p["ht"]], role="accent", z_bias=big / 2)
        for s, _, sx in _SIDES:
            rig.node(f"h{s}", [sx * (w / 2 + 0.02), top, -length / 2])
            for e, _, sz in _ENDS:
                rig.node(f"m{s}{e}", [sx * w * 0.49, hm, sz * length * 0.49])
                leg_top = [sx * (w / 2 - p["inset"]), frame_top - 0.1, sz * (length / 2 - p["inset"])]
                rig.node(f"g{s}{e}", _leg(rig, leg_top, 0.0, q["splay"], sx, sz, p["lw"]))
        return rig


class Cabinet(Family):
    """A cabinet or wardrobe on short legs, doors towards the viewer (10 keypoints)."""

    name = "cabinet"
    supercategory = "furniture"
    view = _FURNITURE_VIEW
    pose = {"door": (0.0, 1.0), "splay": (0.0, 4.0)}
    defaults = {"w": 0.8, "h": 1.1, "d": 0.45, "lh": 0.08, "lw": 0.05}

    def keypoints(self, style):
        kps = []
        for s, word, _ in _SIDES:
            kps += [K(f"tf{s}", f"top {word} side of the front", f"front {word} top corner"),
                    K(f"bf{s}", f"bottom {word} side of the front", f"bottom {word} corner"),
                    K(f"tb{s}", f"{word} and back side of the top", f"back {word} top corner"),
                    K(f"g{s}", f"{word} and front leg", f"{word} front leg")]
        return tuple(kps)

    def skeleton(self, style):
        return (("tfl", "tfr"), ("tfr", "bfr"), ("bfr", "bfl"), ("bfl", "tfl"), ("tfl", "tbl"), ("tfr", "tbr"),
                ("tbl", "tbr"), ("bfl", "gl"), ("bfr", "gr"))

    def build(self, p, q, style):
        rig = Rig()
        w, h, d, lh = p["w"], p["h"], p["d"], p["lh"]
        rig.box([0, lh + h / 2, 0], [w, h, d], role="body", z_bias=w + d)
        front = np.array([0.0, 0.0, 1.0])
        doors = style.get("doors", 2)
        gap = 0.02
        for i in range(doors):
            x0 = -w / 2 + gap + i * (w - gap) / doors
            x1 = x0 + (w - gap) / doors - gap
            y0, y1 = lh + gap, lh + h - gap
            rig.polygon([[x0, y0, d / 2 + 1e-3], [x1, y0, d / 2 + 1e-3], [x1, y1, d / 2 + 1e-3],
                         [x0, y1, d / 2 + 1e-3]], role="accent", normal=front, z_bias=w + d + 0.01)
            knob_x = x1 - 0.05 if i % 2 == 0 else x0 + 0.05
            if doors == 1:
                knob_x = x1 - 0.05 + 0.05 * float(np.clip(q["door"], -1, 1))
            rig.dot([knob_x, lh + h / 2, d / 2 + 2e-3], 0.025, role="dark", normal=front, z_bias=w + d + 0.02)
        for s, _, sx in _SIDES:
            rig.node(f"tf{s}", [sx * w / 2, lh + h, d / 2], normal=front)
            rig.node(f"bf{s}", [sx * w / 2, lh, d / 2], normal=front)
            rig.node(f"tb{s}", [sx * w / 2, lh + h, -d / 2])
            for e, _, sz in _ENDS:
                top = [sx * (w / 2 - 0.05), lh, sz * (d / 2 - 0.05)]
                end = _leg(rig, top, 0.0, q["splay"], sx, sz, p["lw"], role="dark")
                if e == "f":
                    rig.node(f"g{s}", end)
        return rig
