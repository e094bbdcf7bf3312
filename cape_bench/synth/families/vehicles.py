"""Vehicle families (cars, bikes), facing +x: their left side is at -z."""

from __future__ import annotations

import math

import numpy as np

from cape_bench.synth.families.base import Family, ViewSpec
from cape_bench.synth.families.furniture import K
from cape_bench.synth.geometry import Rig, circle3d

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
