"""Man-made families: furniture (tables, chairs, beds, cabinets), vehicles (cars, bikes), garments.

Furniture and garments face the viewer (+z), so their left side is at +x (the left of someone
sitting on the chair or wearing the shirt). Vehicles face +x, so their left side is at -z.
"""

from __future__ import annotations

import math

import numpy as np

from cape_bench.synth.families.base import Family, KeypointSpec, ViewSpec
from cape_bench.synth.geometry import Rig, circle3d

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


# ------------------------------------------------------------------------------------------------
# vehicles (facing +x: left side at -z)
# ------------------------------------------------------------------------------------------------

_VEHICLE_VIEW = ViewSpec(yaw=20.0, yaw_range=40.0, pitch=8.0, pitch_range=8.0, flippable=True)


class Car(Family):
    """Cars, vans, buses, trucks: a lower body box, a cabin and four wheels (13 keypoints)."""

    name = "car"
    supercategory = "vehicle"
    view = _VEHICLE_VIEW
    pose = {"steer": (0.0, 20.0)}
    defaults = {"L": 1.0, "W": 0.45, "gc": 0.07, "h1": 0.2, "h2": 0.17, "cf": 0.3, "cb": 0.12, "rf": 0.12,
                "rb": 0.05, "r": 0.1, "wb": 0.62}

    def keypoints(self, style):
        kps = []
        for e, end, gend in (("f", "front", "front"), ("b", "rear", "back")):
            for s, word in (("r", "right"), ("l", "left")):
                kps.append(K(f"w{e}{s}", f"{end} and {word} wheel", f"{gend} {word} wheel"))
        kps += [K("hr", "right headlight"), K("hl", "left headlight"), K("tr", "right taillight"),
                K("tl", "left taillight"), K("ws", "windshield")]
        for e, end, gend in (("f", "front", "front"), ("b", "rear", "back")):
            for s, word in (("r", "right"), ("l", "left")):
                kps.append(K(f"r{e}{s}", f"{end} and {word} side of the top", f"{gend} {word} top corner"))
        return tuple(kps)

    def skeleton(self, style):
        return (("wfr", "wbr"), ("wfl", "wbl"), ("wfr", "wfl"), ("wbr", "wbl"), ("hr", "hl"), ("tr", "tl"),
                ("hr", "wfr"), ("hl", "wfl"), ("tr", "wbr"), ("tl", "wbl"), ("ws", "rfr"), ("ws", "rfl"),
                ("rfr", "rfl"), ("rfr", "rbr"), ("rfl", "rbl"), ("rbr", "rbl"))

    def build(self, p, q, style):
        rig = Rig()
        L, W, gc, h1, h2, r = p["L"], p["W"], p["gc"], p["h1"], p["h2"], p["r"]
        y0, y1 = gc, gc + h1
        rig.box([0, (y0 + y1) / 2, 0], [L, h1, W], role="body", z_bias=0.0)
        # cabin: a frustum (sheared box) sitting on the body; glass everywhere but the roof
        xb, xf = -L / 2 + p["cb"], L / 2 - p["cf"]
        y2 = y1 + h2
        corners = []
        for i in range(8):
            top = bool(i & 2)
            x = (xf - (p["rf"] if top else 0.0)) if i & 1 else (xb + (p["rb"] if top else 0.0))
            zw = W / 2 * (0.82 if top else 0.95)
            corners.append([x, y2 if top else y1, zw if i & 4 else -zw])
        glass = ("light", "light", "body", "body", "light", "light")
        rig.hexa(corners, roles=glass, z_bias=1.0)
        c = np.array(corners)
        rig.node("rfr", c[7])
        rig.node("rfl", c[3])
        rig.node("rbr", c[6])
        rig.node("rbl", c[2])
        ws = (c[1] + c[3] + c[5] + c[7]) / 4
        ws_normal = np.array([y2 - y1, p["rf"], 0.0])
        rig.node("ws", ws, normal=ws_normal)
        if style.get("cargo"):  # truck / pickup: a cargo box or an open bed behind the cab
            cl = xb + L / 2 - 0.02
            top = y2 if style["cargo"] == "box" else y1 + 0.06
            rig.box([-L / 2 + cl / 2, (y1 + top) / 2, 0], [cl, top - y1, W * 0.96], role="accent", z_bias=1.0)
        for e, sx, normal in (("h", 1.0, [1.0, 0, 0]), ("t", -1.0, [-1.0, 0, 0])):
            for s, sz in (("r", 1.0), ("l", -1.0)):
                pos = [sx * (L / 2 + 1e-3), y0 + 0.65 * h1, sz * 0.32 * W]
                rig.node(f"{e}{s}", pos, normal=normal)
                rig.dot(pos, 0.045, role="light" if e == "h" else "accent", normal=normal, z_bias=0.5,
                        outline=True)
        for e, sx in (("f", 1.0), ("b", -1.0)):
            for s, sz in (("r", 1.0), ("l", -1.0)):
                centre = np.array([sx * p["wb"] / 2, r, sz * (W / 2 + 0.01)])
                rig.node(f"w{e}{s}", centre)
                side = [0.0, 0.0, 2.0 * sz]  # far wheels peek from under the body, near ones cover it
                rig.polygon(circle3d(centre, r, 2), role="dark", side=side)
                rig.dot(centre, 0.45 * r, role="light", z_bias=0.01, outline=True, normal=[0.0, 0.0, sz],
                        side=side)
        return rig


class Bike(Family):
    """Bicycles and motorcycles, side view facing +x (9 or 10 keypoints)."""

    name = "bike"
    supercategory = "vehicle"
    view = _VEHICLE_VIEW
    pose = {"crank": (0.0, 180.0), "steer": (0.0, 25.0)}
    defaults = {"wb": 1.0, "r": 0.33, "sh": 0.55, "bh": 0.62, "crank": 0.16, "tw": 0.035, "hw": 0.22}

    def keypoints(self, style):
        kps = [K("wf", "center of the front wheel", "front wheel"), K("wb", "center of the back wheel", "back wheel"),
               K("seat", "seat", "center of the seat"),
               K("hl", "left end of the handlebar", "left hand"), K("hr", "right end of the handlebar", "right hand")]
        if style.get("motor"):
            kps += [K("light", "headlight"), K("tail", "taillight"), K("tank", "top of the fuel tank"),
                    K("pl", "left footrest", "left foot"), K("pr", "right footrest", "right foot")]
        else:
            kps += [K("bb", "center of the crank"), K("pl", "left pedal", "left foot"),
                    K("pr", "right pedal", "right foot"), K("fork", "top of the fork")]
        return tuple(kps)

    def skeleton(self, style):
        edges = [("wb", "seat"), ("hl", "hr")]
        if style.get("motor"):
            edges += [("seat", "tank"), ("tank", "light"), ("light", "wf"), ("seat", "tail"), ("tank", "hl"),
                      ("tank", "hr"), ("pl", "pr"), ("pl", "wb"), ("pr", "wb")]
        else:
            edges += [("seat", "bb"), ("bb", "wb"), ("bb", "fork"), ("seat", "fork"), ("fork", "wf"), ("fork", "hl"),
                      ("fork", "hr"), ("bb", "pl"), ("bb", "pr")]
        return tuple(edges)

    def build(self, p, q, style):
        rig = Rig()
        wb, r, tw = p["wb"], p["r"], p["tw"]
        motor = bool(style.get("motor"))
        wf = rig.node("wf", [wb / 2, r, 0.0])
        wr = rig.node("wb", [-wb / 2, r, 0.0])
        for centre in (wf, wr):
            ring = circle3d(centre, r, 2, n=18)
            rig.capsule(np.vstack([ring, ring[:1]]), (0.09 if motor else 0.045) * r / 0.33, role="dark", z_bias=0.0)
            rig.dot(centre, 0.12 * r, role="light", z_bias=0.01, outline=True)
        bb = np.array([-0.05 * wb, 0.95 * r, 0.0])
        seat = rig.node("seat", [-0.22 * wb, r + p["sh"], 0.0])
        fork = np.array([0.36 * wb, r + 0.85 * p["bh"], 0.0])
        bar = np.array([0.33 * wb, r + p["bh"], 0.0])
        st = math.radians(q["steer"])
        half = np.array([math.sin(st), 0.0, math.cos(st)]) * p["hw"]
        rig.node("hr", bar + half)
        rig.node("hl", bar - half)
        rig.capsule([bar - half, bar + half], tw, role="dark", z_bias=0.2)
        if motor:
            engine = np.array([0.0, 0.9 * r, 0.0])
            rig.ellipse(engine, engine + [0.18 * wb, 0, 0], 0.55 * r, role="accent", z_bias=0.05)
            tank = rig.node("tank", [0.12 * wb, r + 0.8 * p["sh"], 0.0])
            rig.ellipse(tank - [0, 0.08, 0], tank - [0.0, 0.08, 0] + [0.2 * wb, 0.0, 0.0], 0.09, role="body",
                        z_bias=0.1)
            rig.capsule([seat - [0.12 * wb, 0, 0], seat + [0.1 * wb, 0, 0]], 0.08, role="dark", z_bias=0.08)
            rig.capsule([wf, fork, bar], 1.5 * tw, role="light", z_bias=0.03)
            rig.capsule([wr, engine, tank - [0, 0.1, 0]], 2.0 * tw, role="body", z_bias=0.02)
            light = rig.node("light", fork + [0.06, -0.02, 0.0], normal=[1.0, 0.0, 0.0])
            rig.dot(light, 0.06, role="light", z_bias=0.3, outline=True, normal=[1.0, 0.0, 0.0])
            tail = rig.node("tail", seat + [-0.22 * wb, 0.02, 0.0], normal=[-1.0, 0.0, 0.0])
            rig.dot(tail, 0.04, role="accent", z_bias=0.3, outline=True, normal=[-1.0, 0.0, 0.0])
            for s, sz in (("l", -1.0), ("r", 1.0)):
                peg = rig.node(f"p{s}", [-0.08 * wb, 0.75 * r, sz * 0.15])
                rig.capsule([peg - [0.04, 0, 0], peg + [0.04, 0, 0]], 0.03, role="dark", side=[0, 0, 0.4 * sz])
        else:
            rig.node("bb", bb)
            rig.node("fork", fork)
            frame = [wr, bb, seat - [0, 0.06, 0], wr]
            rig.capsule(frame, tw, role="body", z_bias=0.05)
            rig.capsule([seat - [0, 0.06, 0], fork - [0.02, 0.0, 0.0], bb], tw, role="body", z_bias=0.05)
            rig.capsule([wf, fork, bar], tw, role="light", z_bias=0.06)
            rig.capsule([seat - [0.06, 0, 0], seat + [0.07, 0, 0]], 0.05, role="dark", z_bias=0.07)
            a = math.radians(q["crank"])
            arm = np.array([math.cos(a), math.sin(a), 0.0]) * p["crank"]
            for s, sign, sz in (("r", 1.0, 1.0), ("l", -1.0, -1.0)):
                pedal = bb + sign * arm + [0.0, 0.0, sz * 0.12]
                rig.node(f"p{s}", pedal)
                rig.capsule([bb + [0, 0, sz * 0.06], pedal], 0.6 * tw, role="dark", side=[0, 0, 0.3 * sz])
                rig.capsule([pedal - [0.04, 0, 0], pedal + [0.04, 0, 0]], 0.03, role="dark", side=[0, 0, 0.3 * sz])
        return rig


# ------------------------------------------------------------------------------------------------
# garments (flat, frontal)
# ------------------------------------------------------------------------------------------------


class Top(Family):
    """Shirts, jackets, vests and dresses laid flat, front towards the viewer."""

    name = "top"
    supercategory = "garment"
    view = ViewSpec(yaw=0.0, yaw_range=30.0, pitch=0.0, pitch_range=15.0, roll=10.0)
    pose = {"l_sleeve": (40.0, 35.0), "r_sleeve": (40.0, 35.0), "l_elbow": (15.0, 35.0), "r_elbow": (15.0, 35.0),
            "flare": (0.0, 0.15), "sway": (0.0, 0.1)}
    defaults = {"sw": 0.8, "nw": 0.28, "nd": 0.14, "ah": 0.32, "ww": 0.72, "wa": 0.72, "hw": 0.8, "bl": 1.0,
                "sl": 0.32, "so": 0.26}

    @staticmethod
    def _side(style, s: str) -> list[str]:
        """Node names down one side of the contour, from the shoulder to the hem corner."""
        sleeves = style.get("sleeves", "short")
        names = ["sh"]
        if sleeves == "long":
            names += ["eo", "so", "si", "ei"]
        elif sleeves == "short":
            names += ["so", "si"]
        names += ["ap"] + (["wa"] if style.get("waist") else []) + ["lo", "he"]
        return [n + s for n in names]

    @staticmethod
    def _hem(style) -> list[str]:
        return ["pl", "pr"] if style.get("placket") else ["hc"]

    def keypoints(self, style):
        noun = style.get("noun", "shirt")
        strap = style.get("straps", False)
        kps = [K("cb", "back side of the collar", "neck"), K("cl", "left side of the collar"),
               K("cfl", "front left side of the collar"), K("cf", "front side of the collar"),
               K("cfr", "front right side of the collar"), K("cr", "right side of the collar")]
        texts = {
            "sh": ("{w} strap" if strap else "{w} side of the shoulder seam", "{w} shoulder"),
            "eo": ("outer side of the {w} sleeve at the elbow", "{w} elbow"),
            "so": ("outer side of the {w} sleeve opening", None),
            "si": ("inner side of the {w} sleeve opening", None),
            "ei": ("inner side of the {w} sleeve at the elbow", None),
            "ap": ("{w} armpit", None),
            "wa": ("{w} side of the waist of the " + noun, "{w} hip"),
            "lo": ("{w} and lower body of the " + noun, None),
            "he": ("bottom {w} side of the " + noun, "bottom {w} corner"),
        }

        def spec(node: str) -> KeypointSpec:
            word = "left" if node.endswith("l") else "right"
            name, generic = texts[node[:-1]]
            return K(node, name.format(w=word), generic.format(w=word) if generic else None)

        kps += [spec(n) for n in self._side(style, "l")]
        if style.get("placket"):
            kps += [K("pl", f"bottom left side of the {noun} placket"),
                    K("pr", f"bottom right side of the {noun} placket")]
        else:
            kps.append(K("hc", f"bottom side of the {noun}"))
        kps += [spec(n) for n in self._side(style, "r")[::-1]]
        return tuple(kps)

    def skeleton(self, style):
        ring = (["cl"] + self._side(style, "l") + self._hem(style) + self._side(style, "r")[::-1]
                + ["cr", "cfr", "cf", "cfl"])
        return tuple(zip(ring, ring[1:] + ring[:1])) + (("cb", "cl"), ("cb", "cr"))

    def build(self, p, q, style):
        rig = Rig()
        sleeves = style.get("sleeves", "short")
        nw, nd, sw = p["nw"], p["nd"], p["sw"]
        flare = q["flare"]
        sway = q["sway"]
        rig.node("cb", [0.0, 0.03, 0.0])
        rig.node("cf", [0.0, -nd, 0.0])
        pts = {}
        for s, _, sx in _SIDES:
            pts[f"c{s}"] = np.array([sx * nw / 2, 0.0])
            pts[f"cf{s}"] = np.array([sx * nw / 4, -nd * 0.75])
            sh = np.array([sx * sw / 2, -0.07])
            pts[f"sh{s}"] = sh
            ap = np.array([sx * (p["ww"] / 2 + 0.02), -p["ah"]])
            pts[f"ap{s}"] = ap
            if sleeves != "none":
                a = math.radians(q[f"{s}_sleeve"])
                d = np.array([sx * math.sin(a), -math.cos(a)])
                inner = np.array([-sx * math.cos(a), -math.sin(a)])
                if sleeves == "long":
                    eo = sh + d * p["sl"] * 0.5
                    b = a - math.radians(q[f"{s}_elbow"])
                    d2 = np.array([sx * math.sin(b), -math.cos(b)])
                    inner2 = np.array([-sx * math.cos(b), -math.sin(b)])
                    so = eo + d2 * p["sl"] * 0.5
                    si = so + inner2 * p["so"]
                    ei = eo + (inner + inner2) / np.linalg.norm(inner + inner2) * p["so"] * 1.15
                    pts[f"eo{s}"], pts[f"ei{s}"] = eo, ei
                    sleeve = [sh, eo, so, si, ei, ap]
                else:
                    so = sh + d * p["sl"]
                    si = so + inner * p["so"]
                    sleeve = [sh, so, si, ap]
                pts[f"so{s}"], pts[f"si{s}"] = so, si
                rig.polygon([[v[0], v[1], -0.01] for v in sleeve], role="body", z_bias=-0.1)
            if style.get("waist"):
                pts[f"wa{s}"] = np.array([sx * p["wa"] / 2, -0.5 * p["bl"]])
            pts[f"lo{s}"] = np.array([sx * (p["ww"] / 2 + 0.25 * (p["hw"] - p["ww"])) + sway / 2, -0.75 * p["bl"]])
            pts[f"he{s}"] = np.array([sx * (p["hw"] / 2 + flare) + sway, -p["bl"]])
        pts["cf"] = np.array([0.0, -nd])
        hem = []
        if style.get("placket"):
            pts["pl"] = np.array([0.02 + sway, -p["bl"] - 0.01])
            pts["pr"] = np.array([-0.02 + sway, -p["bl"] - 0.01])
            hem = ["pl", "pr"]
        else:
            pts["hc"] = np.array([sway, -p["bl"] - 0.02])
            hem = ["hc"]
        for name, v in pts.items():
            rig.node(name, [v[0], v[1], 0.0])
        # sleeves are separate polygons: the body outline goes straight from shoulder to armpit
        left = [n for n in self._side(style, "l") if n[:-1] not in ("eo", "so", "si", "ei")]
        right = [n for n in self._side(style, "r") if n[:-1] not in ("eo", "so", "si", "ei")][::-1]
        outline = ["cl"] + left + hem + right + ["cr", "cfr", "cf", "cfl"]
        rig.polygon([[pts[n][0], pts[n][1], 0.0] for n in outline], role="body", z_bias=0.0)
        # the inside of the back shows through the neck opening
        inside = [pts["cl"], [nw / 2 * 0.9, 0.03], [-nw / 2 * 0.9, 0.03], pts["cr"], pts["cfr"], pts["cf"],
                  pts["cfl"]]
        rig.polygon([[v[0], v[1], -0.02] for v in inside], role="accent", z_bias=-0.2)
        if style.get("placket"):
            mid = (pts["pl"] + pts["pr"]) / 2
            rig.capsule([[0.0, -nd, 0.01], [mid[0], mid[1], 0.01]], 0.025, role="dark", z_bias=0.1)
        if style.get("straps"):
            for s, _, sx in _SIDES:
                top = pts[f"sh{s}"]
                rig.capsule([[top[0], top[1], 0.01], [top[0], top[1] + 0.12, 0.01], [sx * 0.02, 0.1, 0.01]],
                            0.03, role="accent", z_bias=0.1)
        return rig


class Bottom(Family):
    """Skirts, shorts and trousers laid flat, front towards the viewer."""

    name = "bottom"
    supercategory = "garment"
    view = ViewSpec(yaw=0.0, yaw_range=30.0, pitch=0.0, pitch_range=15.0, roll=10.0)
    pose = {"l_leg": (6.0, 12.0), "r_leg": (6.0, 12.0), "flare": (0.0, 0.15), "sway": (0.0, 0.1)}
    defaults = {"ww": 0.7, "hw": 0.9, "L": 0.8, "lo": 0.32, "cr": 0.3, "band": 0.06}

    def keypoints(self, style):
        kind = style.get("kind", "skirt")
        noun = "skirt" if kind == "skirt" else "pants"
        kps = [K("wl", f"top left side of the {noun}", "top left corner"), K("wc", f"top side of the {noun}"),
               K("wr", f"top right side of the {noun}", "top right corner")]
        if kind == "skirt":
            kps += [K("hl", "left side of the skirt", "left hip"),
                    K("bl", "bottom left side of the skirt", "bottom left corner"),
                    K("bc", "bottom side of the skirt"),
                    K("br", "bottom right side of the skirt", "bottom right corner"),
                    K("hr", "right side of the skirt", "right hip")]
            return tuple(kps)
        long_ = kind == "trousers"
        kps.append(K("hl", f"upper left side of the {noun}", "left hip"))
        if long_:
            kps.append(K("kol", f"outer side of the left knee of the {noun}", "left knee"))
        kps += [K("lol", "outer side of the left leg opening", "left foot" if long_ else None),
                K("lil", "inner side of the left leg opening")]
        if long_:
            kps.append(K("kil", f"inner side of the left knee of the {noun}"))
        kps.append(K("crotch", "crotch"))
        if long_:
            kps.append(K("kir", f"inner side of the right knee of the {noun}"))
        kps += [K("lir", "inner side of the right leg opening"),
                K("lor", "outer side of the right leg opening", "right foot" if long_ else None)]
        if long_:
            kps.append(K("kor", f"outer side of the right knee of the {noun}", "right knee"))
        kps.append(K("hr", f"upper right side of the {noun}", "right hip"))
        return tuple(kps)

    def skeleton(self, style):
        names = [k.node for k in self.keypoints(style)]
        ring = names[:1] + names[3:] + [names[2], names[1]]
        return tuple(zip(ring, ring[1:] + ring[:1]))

    def build(self, p, q, style):
        rig = Rig()
        kind = style.get("kind", "skirt")
        ww, L = p["ww"], p["L"]
        sway = q["sway"]
        pts = {"wl": np.array([ww / 2, 0.0]), "wc": np.array([0.0, 0.0]), "wr": np.array([-ww / 2, 0.0])}
        if kind == "skirt":
            hw = p["hw"] / 2 + q["flare"]
            pts.update(hl=np.array([ww / 2 + 0.04, -0.25 * L]), hr=np.array([-ww / 2 - 0.04, -0.25 * L]),
                       bl=np.array([hw + sway, -L]), bc=np.array([sway, -L - 0.03]), br=np.array([-hw + sway, -L]))
            ring = ["wl", "hl", "bl", "bc", "br", "hr", "wr"]
        else:
            long_ = kind == "trousers"
            crotch = np.array([0.0, -p["cr"]])
            pts["crotch"] = crotch
            for s, _, sx in _SIDES:
                a = math.radians(q[f"{s}_leg"])
                hip = np.array([sx * (ww / 2 + 0.03), -0.18 * L])
                pts[f"h{s}"] = hip
                axis_top = np.array([sx * ww / 4, -p["cr"]])
                d = np.array([sx * math.sin(a), -math.cos(a)])
                bottom = axis_top + d * (L - p["cr"]) + [sway, 0.0]
                perp = np.array([-d[1], d[0]]) * sx  # points outwards
                pts[f"lo{s}"] = bottom + perp * p["lo"] / 2
                pts[f"li{s}"] = bottom - perp * p["lo"] / 2
                if long_:
                    pts[f"ko{s}"] = (hip + pts[f"lo{s}"]) / 2 + perp * 0.02
                    pts[f"ki{s}"] = (crotch + pts[f"li{s}"]) / 2
            if long_:
                ring = ["wl", "hl", "kol", "lol", "lil", "kil", "crotch", "kir", "lir", "lor", "kor", "hr", "wr"]
            else:
                ring = ["wl", "hl", "lol", "lil", "crotch", "lir", "lor", "hr", "wr"]
        for name, v in pts.items():
            rig.node(name, [v[0], v[1], 0.0])
        rig.polygon([[pts[n][0], pts[n][1], 0.0] for n in ring], role="body")
        band = p["band"]
        rig.polygon([[ww / 2, 0.0, 0.01], [-ww / 2, 0.0, 0.01], [-ww / 2 - 0.005, -band, 0.01],
                     [ww / 2 + 0.005, -band, 0.01]], role="accent", z_bias=0.1)
        if kind != "skirt":
            rig.capsule([[0.0, -band, 0.01], [0.0, -p["cr"] * 0.8, 0.01]], 0.015, role="dark", z_bias=0.1)
        return rig
