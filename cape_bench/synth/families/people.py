"""Human-like families: frontal humanoid bodies (COCO's 17 keypoints) and hands (21 keypoints)."""

from __future__ import annotations

import math

import numpy as np

from cape_bench.synth.families.base import Family, KeypointSpec, ViewSpec
from cape_bench.synth.geometry import Rig, chain

K = KeypointSpec


class Humanoid(Family):
    """A standing body facing the viewer (+z); its left side is at +x."""

    name = "humanoid"
    supercategory = "humanoid"
    view = ViewSpec(yaw=0.0, yaw_range=40.0, pitch=0.0, pitch_range=10.0)
    pose = {"l_arm": (40.0, 55.0), "r_arm": (40.0, 55.0), "l_elbow": (15.0, 60.0), "r_elbow": (15.0, 60.0),
            "l_leg": (10.0, 20.0), "r_leg": (10.0, 20.0), "l_knee": (0.0, 35.0), "r_knee": (0.0, 35.0),
            "head": (0.0, 15.0), "lean": (0.0, 15.0)}
    defaults = {"tl": 0.5, "sw": 0.36, "hw": 0.24, "ua": 0.28, "fa": 0.26, "th": 0.42, "sh": 0.4, "hr": 0.11,
                "nl": 0.06, "lw": 0.08, "ll": 0.1}

    def keypoints(self, style):
        return (
            K("nose", "nose"), K("l_eye", "left eye"), K("r_eye", "right eye"), K("l_ear", "left ear"),
            K("r_ear", "right ear"), K("l_sh", "left shoulder"), K("r_sh", "right shoulder"),
            K("l_el", "left elbow"), K("r_el", "right elbow"), K("l_wr", "left wrist", "left hand"),
            K("r_wr", "right wrist", "right hand"), K("l_hip", "left hip"), K("r_hip", "right hip"),
            K("l_kn", "left knee"), K("r_kn", "right knee"), K("l_an", "left ankle", "left foot"),
            K("r_an", "right ankle", "right foot"),
        )

    def skeleton(self, style):
        return (("l_an", "l_kn"), ("l_kn", "l_hip"), ("r_an", "r_kn"), ("r_kn", "r_hip"), ("l_hip", "r_hip"),
                ("l_sh", "l_hip"), ("r_sh", "r_hip"), ("l_sh", "r_sh"), ("l_sh", "l_el"), ("r_sh", "r_el"),
                ("l_el", "l_wr"), ("r_el", "r_wr"), ("l_eye", "r_eye"), ("nose", "l_eye"), ("nose", "r_eye"),
                ("l_eye", "l_ear"), ("r_eye", "r_ear"), ("l_ear", "l_sh"), ("r_ear", "r_sh"))

    def build(self, p, q, style):
        rig = Rig()
        lean = math.radians(q["lean"])

        def up(v):  # torso lean: rotate points above the pelvis about the pelvis
            c, s = math.cos(lean), math.sin(lean)
            return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1], v[2]])

        boxy = style.get("boxy", False)
        for side, sx in (("l", 1.0), ("r", -1.0)):
            hip = rig.node(f"{side}_hip", [sx * p["hw"] / 2, 0.0, 0.0])
            a, b = sx * q[f"{side}_leg"], sx * (q[f"{side}_leg"] - q[f"{side}_knee"])
            _, kn, an = chain(hip, [a, b], [p["th"], p["sh"]])
            rig.node(f"{side}_kn", kn)
            rig.node(f"{side}_an", an)
            rig.capsule([hip, kn, an], p["lw"] * 1.15, role="limb", z_bias=-0.05)
            rig.capsule([an, an + [sx * 0.02, -0.02, 0.06]], p["lw"] * 1.2, role="dark", z_bias=0.02)
        shl = up([p["sw"] / 2, p["tl"], 0.0])
        shr = up([-p["sw"] / 2, p["tl"], 0.0])
        rig.node("l_sh", shl)
        rig.node("r_sh", shr)
        waist = 0.8 if style.get("taper", True) else 1.0
        torso = [shl, up([p["hw"] * 0.55 * waist + 0.02, p["tl"] * 0.45, 0]), [p["hw"] / 2 + 0.03, -0.03, 0],
                 [-p["hw"] / 2 - 0.03, -0.03, 0], up([-p["hw"] * 0.55 * waist - 0.02, p["tl"] * 0.45, 0]), shr]
        rig.polygon(torso, role="body", z_bias=0.0)
        neck = up([0.0, p["tl"] + p["nl"], 0.0])
        rig.capsule([up([0, p["tl"] - 0.02, 0]), neck], 0.7 * p["hr"], role="accent", z_bias=-0.01)
        tilt = math.radians(q["head"]) + lean
        hd = np.array([-math.sin(tilt), math.cos(tilt), 0.0])
        hx = np.array([math.cos(tilt), math.sin(tilt), 0.0])
        hc = neck + hd * p["hr"] * 1.05
        for side, sx in (("l", 1.0), ("r", -1.0)):
            ear = rig.node(f"{side}_ear", hc + hx * sx * p["hr"] * 0.95)
            rig.dot(ear, 0.25 * p["hr"], role="accent", z_bias=-0.03, outline=True)
        if boxy:
            c = [hc + hx * sx * p["hr"] + hd * sy * p["hr"] for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
            rig.polygon(c, role="accent", z_bias=0.01)
        else:
            rig.ellipse(hc, hc + hd * p["hr"] * 1.15, p["hr"] * 0.9, role="accent", z_bias=0.01)
        if style.get("helmet"):
            rig.ellipse(hc + hd * 0.05, hc + hd * p["hr"] * 1.5, p["hr"] * 1.35, role="light", z_bias=0.005)
        fwd = np.array([0.0, 0.0, 1.0])
        rig.node("nose", hc - hd * 0.2 * p["hr"] + fwd * p["hr"])
        rig.dot(rig.nodes["nose"], 0.12 * p["hr"], role="dark", z_bias=0.1, normal=fwd)
        for side, sx in (("l", 1.0), ("r", -1.0)):
            eye = rig.node(f"{side}_eye", hc + hx * sx * 0.38 * p["hr"] + hd * 0.15 * p["hr"] + fwd * 0.8 * p["hr"])
            rig.dot(eye, 0.13 * p["hr"], role="dark", z_bias=0.1, normal=fwd + hx * sx * 0.3)
        for side, sx, sh in (("l", 1.0, shl), ("r", -1.0, shr)):
            a = sx * q[f"{side}_arm"]
            b = sx * (q[f"{side}_arm"] + q[f"{side}_elbow"])
            _, el, wr = chain(sh + [0, 0, 0.05], [math.degrees(lean) + a, math.degrees(lean) + b], [p["ua"], p["fa"]])
            rig.node(f"{side}_el", el)
            rig.node(f"{side}_wr", wr)
            rig.capsule([sh + [0, 0, 0.05], el, wr], p["lw"], role="limb", z_bias=0.1)
            rig.dot(wr + (wr - el) / max(np.linalg.norm(wr - el), 1e-9) * 0.03, 0.75 * p["lw"], role="accent",
                    z_bias=0.11, outline=True)
            if boxy:
                rig.dot(el, 0.6 * p["lw"], role="dark", z_bias=0.12)
        return rig


_FINGERS = ("thumb", "index", "middle", "ring", "pinky")


class Hand(Family):
    """A hand, palm towards the viewer (+z), fingers up (+y), thumb at -x."""

    name = "hand"
    supercategory = "hand"
    view = ViewSpec(yaw=0.0, yaw_range=30.0, pitch=0.0, pitch_range=20.0, flippable=True, roll=25.0)
    pose = {**{f"{f}_flex": (20.0, 25.0) for f in _FINGERS}, **{f"{f}_splay": (0.0, 8.0) for f in _FINGERS},
            "spread": (5.0, 10.0), "thumb": (35.0, 20.0), "wrist": (0.0, 15.0)}
    defaults = {"pw": 0.42, "ph": 0.42, "thumb": 0.36, "index": 0.4, "middle": 0.44, "ring": 0.41, "pinky": 0.32,
                "fw": 0.085}

    def _fingers(self, style) -> tuple[str, ...]:
        return _FINGERS[: style.get("fingers", 5)]

    def keypoints(self, style):
        kps = [K("wrist", "wrist")]
        labels = ("base", "lower part", "middle part", "top part")
        for f in self._fingers(style):
            what = "thumb" if f == "thumb" else f"{f} finger"
            kps += [K(f"{f}{j}", f"{lab} of the {what}") for j, lab in enumerate(labels)]
        return tuple(kps)

    def skeleton(self, style):
        edges = []
        for f in self._fingers(style):
            edges += [("wrist", f"{f}0"), (f"{f}0", f"{f}1"), (f"{f}1", f"{f}2"), (f"{f}2", f"{f}3")]
        return tuple(edges)

    def build(self, p, q, style):
        rig = Rig()
        pw, ph = p["pw"], p["ph"]
        wrist = rig.node("wrist", [0.0, 0.0, 0.0])
        fingers = self._fingers(style)
        others = [f for f in fingers if f != "thumb"]
        bases = []
        for i, f in enumerate(others):
            t = (i + 0.5) / len(others)
            x = (-0.5 + t) * pw * 0.95
            y = ph * (1.0 - 0.12 * abs(t - 0.45) * 2)
            bases.append((f, np.array([x, y, 0.0]), (t - 0.5) * 2))
        palm = [[-0.5 * pw, 0.15 * ph, 0], [-0.28 * pw, 0.0, 0], [0.28 * pw, 0.0, 0], [0.5 * pw, 0.2 * ph, 0],
                [0.5 * pw, 0.9 * ph, 0], [0.35 * pw, 1.02 * ph, 0], [-0.35 * pw, 1.02 * ph, 0],
                [-0.5 * pw, 0.9 * ph, 0]]
        rig.polygon(palm, role="body", z_bias=0.0)
        rig.capsule([wrist + [0, -0.05, 0], wrist + [0, -0.25, 0]], 0.55 * pw, role="accent", z_bias=-0.1)
        segs = (0.45, 0.3, 0.25)
        style_robot = style.get("robot", False)
        width = p["fw"]
        for f, base, t in bases:
            ang = math.radians(t * q["spread"] + q[f"{f}_splay"])
            d = np.array([math.sin(ang), math.cos(ang), 0.0])
            self._finger(rig, f, base, d, p[f], q[f"{f}_flex"], segs, width, style_robot)
        if "thumb" in fingers:
            base = np.array([-0.42 * pw, 0.18 * ph, 0.02])
            ang = math.radians(q["thumb"] + q["thumb_splay"])
            d = np.array([-math.sin(ang), math.cos(ang), 0.25])
            d /= np.linalg.norm(d)
            self._finger(rig, "thumb", base, d, p["thumb"], q["thumb_flex"], (0.38, 0.34, 0.28), width * 1.1,
                         style_robot)
        return rig

    @staticmethod
    def _finger(rig, name, base, d, length, flex_deg, segs, width, robot):
        pts = [base]
        phi = 0.0
        out = np.array([0.0, 0.0, 1.0])
        for frac in segs:
            phi += math.radians(max(flex_deg, -10.0))
            step = math.cos(phi) * d + math.sin(phi) * out
            pts.append(pts[-1] + step * frac * length)
        for j, v in enumerate(pts):
            rig.node(f"{name}{j}", v)
        if robot:
            for a, b in zip(pts[:-1], pts[1:]):
                rig.capsule([a, b], width * 0.8, role="limb", z_bias=0.05)
            for v in pts[:-1]:
                rig.dot(v, width * 0.55, role="dark", z_bias=0.1)
        else:
            rig.capsule(pts, width, role="limb", z_bias=0.05)
            tip_dir = pts[-1] - pts[-2]
            tip_dir = tip_dir / max(np.linalg.norm(tip_dir), 1e-9)
            rig.dot(pts[-1] - tip_dir * 0.25 * width, 0.3 * width, role="light", z_bias=0.06)
