"""Animal families: side-view quadrupeds, frontal animal faces, side-view birds, top-view insects."""

from __future__ import annotations

import numpy as np

from cape_bench.synth.families.base import Family, KeypointSpec, ViewSpec
from cape_bench.synth.geometry import Rig, chain, direction

K = KeypointSpec


def _xy(p2, z: float = 0.0) -> np.ndarray:
    return np.array([p2[0], p2[1], z], dtype=np.float64)


def _rot2(v, deg: float) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


# ------------------------------------------------------------------------------------------------
# quadrupeds (MP-100's 17-keypoint animal bodies)
# ------------------------------------------------------------------------------------------------


class Quadruped(Family):
    """Four-legged animal seen from the side, facing +x (its right side, +z, towards the viewer)."""

    name = "quadruped"
    supercategory = "quadruped"
    natural = True
    view = ViewSpec(yaw=0.0, yaw_range=30.0, pitch=5.0, pitch_range=10.0, flippable=True)
    pose = {
        "neck": (45.0, 20.0), "head": (-25.0, 25.0), "tail": (-30.0, 40.0), "tail_curl": (0.0, 35.0),
        "lf_up": (0.0, 28.0), "lf_bend": (-15.0, 30.0), "rf_up": (0.0, 28.0), "rf_bend": (-15.0, 30.0),
        "lb_up": (0.0, 28.0), "lb_bend": (15.0, 30.0), "rb_up": (0.0, 28.0), "rb_bend": (15.0, 30.0),
        "ears": (0.0, 20.0),
    }
    defaults = {
        "bl": 1.0, "bh": 0.42, "lf": 0.7, "lb": 0.72, "nl": 0.35, "nw": 0.22, "hl": 0.38, "hh": 0.24,
        "tl": 0.5, "tw": 0.06, "lw": 0.11, "ear": 0.1, "sep": 0.14,
    }

    def keypoints(self, style):
        foot = style.get("foot", "paw")
        return (
            K("l_eye", "left eye"), K("r_eye", "right eye"), K("nose", "nose"), K("neck", "neck"),
            K("tail", "root of tail", "tail"),
            K("l_sh", "left shoulder"), K("l_el", "left elbow"), K("l_fp", f"left front {foot}", "left front leg"),
            K("r_sh", "right shoulder"), K("r_el", "right elbow"), K("r_fp", f"right front {foot}", "right front leg"),
            K("l_hip", "left hip"), K("l_kn", "left knee"), K("l_bp", f"left back {foot}", "left back leg"),
            K("r_hip", "right hip"), K("r_kn", "right knee"), K("r_bp", f"right back {foot}", "right back leg"),
        )

    def skeleton(self, style):
        return (("l_eye", "r_eye"), ("l_eye", "nose"), ("r_eye", "nose"), ("nose", "neck"), ("neck", "tail"),
                ("neck", "l_sh"), ("l_sh", "l_el"), ("l_el", "l_fp"), ("neck", "r_sh"), ("r_sh", "r_el"),
                ("r_el", "r_fp"), ("tail", "l_hip"), ("l_hip", "l_kn"), ("l_kn", "l_bp"), ("tail", "r_hip"),
                ("r_hip", "r_kn"), ("r_kn", "r_bp"))

    def build(self, p, q, style):
        rig = Rig()
        bl, bh = p["bl"], p["bh"]
        # body
        rig.ellipse([0.0, 0.0, 0.0], [0.55 * bl, 0.0, 0.0], bh / 2, role="body")
        # legs: left side is far (-z), right side near (+z)
        for side, z in (("l", -p["sep"]), ("r", p["sep"])):
            sh = rig.node(f"{side}_sh", [0.36 * bl, -0.05 * bh, z])
            up, bend = q[f"{side}f_up"], q[f"{side}f_bend"]
            _, el, fp = chain(sh, [up, up + bend], [0.5 * p["lf"], 0.5 * p["lf"]])
            rig.node(f"{side}_el", el)
            rig.node(f"{side}_fp", fp)
            hip = rig.node(f"{side}_hip", [-0.36 * bl, -0.02 * bh, z])
            up, bend = q[f"{side}b_up"], q[f"{side}b_bend"]
            _, kn, bp = chain(hip, [up, up + bend], [0.5 * p["lb"], 0.5 * p["lb"]])
            rig.node(f"{side}_kn", kn)
            rig.node(f"{side}_bp", bp)
            for a, b, c in ((sh, el, fp), (hip, kn, bp)):
                rig.capsule([a, b, c], p["lw"], role="limb")
                if style.get("foot") == "hoof":
                    rig.capsule([c + [0, 0.03, 0], c + [0.02, -0.01, 0]], p["lw"] * 1.05, role="dark", z_bias=0.01)
        # neck and head
        neck = rig.node("neck", [0.42 * bl, 0.3 * bh, 0.0])
        nd = direction(q["neck"])
        top = neck[:2] + nd * p["nl"]
        rig.capsule([[0.3 * bl, 0.05 * bh, 0.0], neck, _xy(top)], p["nw"], role="body")
        hd = direction(q["head"])
        hc = top + hd * 0.25 * p["hl"]
        hh, hl = p["hh"], p["hl"]
        up = _rot2(hd, 90.0)
        extra = style.get("extra")
        if extra == "mane":
            rig.ellipse(_xy(top - nd * 0.05), _xy(top + up * 0.9 * hh), 0.75 * hh, role="accent", z_bias=-0.02)
        self._ears(rig, hc, hd, up, p, q, style)
        rig.ellipse(_xy(hc), _xy(hc + hd * 0.45 * hl), hh / 2, role="body", z_bias=0.01)
        if extra == "trunk":
            trunk = [hc + hd * 0.35 * hl, hc + hd * 0.55 * hl - up * 0.4 * hh, hc + hd * 0.6 * hl - up * 1.4 * hh]
            rig.capsule([_xy(t) for t in trunk], 0.3 * hh, role="body", z_bias=0.03)
            nose = trunk[-1]
        else:
            nose = hc + hd * 0.72 * hl - up * 0.05 * hh
            rig.capsule([_xy(hc + hd * 0.2 * hl), _xy(nose - hd * 0.05 * hl)], 0.55 * hh, role="body", z_bias=0.02)
        rig.node("nose", _xy(nose))
        rig.dot(_xy(nose), 0.1 * hh, role="dark", z_bias=0.1)
        if extra in ("horns", "antlers", "horn", "ossicones"):
            self._horns(rig, hc, hd, up, hh, hl, extra)
        for side, z in (("l", -0.3 * hh), ("r", 0.3 * hh)):
            eye = hc + hd * 0.12 * hl + up * 0.2 * hh
            # an eye looks sideways and a bit forwards: the far one hides in profile
            normal = [0.6 * hd[0], 0.6 * hd[1], np.sign(z)]
            rig.node(f"{side}_eye", _xy(eye, z), normal=normal)
            rig.dot(_xy(eye, z), 0.085 * hh, role="dark", z_bias=0.2, normal=normal)
        # tail
        root = rig.node("tail", [-0.52 * bl, 0.22 * bh, 0.0])
        t1 = root[:2] + _rot2(np.array([-1.0, 0.0]), -q["tail"]) * 0.5 * p["tl"]
        t2 = t1 + _rot2(np.array([-1.0, 0.0]), -q["tail"] - q["tail_curl"]) * 0.5 * p["tl"]
        kind = style.get("tail", "thin")
        width = p["tw"] * (2.2 if kind == "bushy" else 1.0)
        rig.capsule([root, _xy(t1), _xy(t2)], width, role="limb", z_bias=-0.05)
        if kind == "tuft":
            rig.dot(_xy(t2), 0.06, role="dark", z_bias=-0.04)
        return rig

    @staticmethod
    def _ears(rig, hc, hd, up, p, q, style):
        ears = style.get("ears", "pointy")
        size = p["ear"]
        for z, dz in ((-0.15 * p["hh"], -0.01), (0.15 * p["hh"], 0.01)):
            base = hc - hd * 0.12 * p["hl"] + up * 0.35 * p["hh"]
            if ears == "pointy":
                tip = base + _rot2(up, 15 + q["ears"]) * size * 1.6
                tri = [base - hd * size * 0.5, base + hd * size * 0.4, tip]
                rig.polygon([_xy(t, z) for t in tri], role="accent", z_bias=dz)
            elif ears in ("long", "floppy"):
                ang = 20 + q["ears"] if ears == "long" else 150 + q["ears"]
                tip = base + _rot2(up, ang) * size * (2.5 if ears == "long" else 1.5)
                rig.capsule([_xy(base, z), _xy(tip, z)], size * 0.7, role="accent", z_bias=dz)
            else:  # round
                rig.ellipse(_xy(base + up * size * 0.3, z), _xy(base + up * size * 1.0, z), size * 0.7,
                            role="accent", z_bias=dz)

    @staticmethod
    def _horns(rig, hc, hd, up, hh, hl, kind):
        if kind == "horn":  # rhino
            base = hc + hd * 0.6 * hl + up * 0.25 * hh
            rig.polygon([_xy(base - hd * 0.08), _xy(base + hd * 0.08), _xy(base + up * 0.35 * hh + hd * 0.02)],
                        role="light", z_bias=0.05)
            return
        for z in (-0.1 * hh, 0.1 * hh):
            base = hc + up * 0.45 * hh
            if kind == "antlers":
                a = base + _rot2(up, 20) * 0.35
                b = a + _rot2(up, -25) * 0.2
                rig.capsule([_xy(base, z), _xy(a, z), _xy(b, z)], 0.03, role="light", z_bias=-0.01)
                rig.capsule([_xy(a - (a - base) * 0.4, z), _xy(a - (a - base) * 0.4 + _rot2(up, -40) * 0.15, z)],
                            0.03, role="light", z_bias=-0.01)
            elif kind == "ossicones":
                rig.capsule([_xy(base, z), _xy(base + up * 0.35 * hh, z)], 0.12 * hh, role="dark", z_bias=-0.01)
            else:
                tip = base + _rot2(up, 35) * 0.7 * hh
                rig.capsule([_xy(base, z), _xy(tip, z)], 0.15 * hh, role="light", z_bias=-0.01)


# ------------------------------------------------------------------------------------------------
# animal faces (frontal, 9 or 11 keypoints)
# ------------------------------------------------------------------------------------------------


class AnimalFace(Family):
    """An animal head seen from the front (it looks along +z, so its left side is at +x)."""

    name = "animal_face"
    supercategory = "animal_face"
    natural = True
    view = ViewSpec(yaw=0.0, yaw_range=50.0, pitch=0.0, pitch_range=25.0)
    pose = {"jaw": (0.0, 1.0), "ears": (0.0, 35.0), "squint": (0.0, 1.0)}
    defaults = {"hw": 0.5, "hh": 0.55, "sn": 0.3, "sw": 0.26, "ear": 0.3, "eye": 0.06, "es": 0.2, "ey": 0.12}

    def keypoints(self, style):
        kps = [
            K("l_eye", "left eye"), K("r_eye", "right eye"), K("nose", "nose tip", "nose"),
            K("l_mouth", "left side of the mouth"), K("r_mouth", "right side of the mouth"),
            K("upper_lip", "top side of the lip", "mouth"), K("chin", "chin"),
            K("l_ear", "tip of the left ear", "left ear"), K("r_ear", "tip of the right ear", "right ear"),
        ]
        if style.get("cheeks"):
            kps += [K("l_cheek", "left cheek"), K("r_cheek", "right cheek")]
        if style.get("horns"):
            kps += [K("l_horn", "tip of the left horn", "left horn"),
                    K("r_horn", "tip of the right horn", "right horn")]
        return tuple(kps)

    def skeleton(self, style):
        edges = [("l_eye", "r_eye"), ("l_eye", "nose"), ("r_eye", "nose"), ("nose", "upper_lip"),
                 ("upper_lip", "l_mouth"), ("upper_lip", "r_mouth"), ("l_mouth", "chin"), ("r_mouth", "chin"),
                 ("l_eye", "l_ear"), ("r_eye", "r_ear")]
        if style.get("cheeks"):
            edges += [("l_cheek", "l_mouth"), ("r_cheek", "r_mouth"), ("l_cheek", "l_eye"), ("r_cheek", "r_eye")]
        if style.get("horns"):
            edges += [("l_horn", "l_ear"), ("r_horn", "r_ear")]
        return tuple(edges)

    def build(self, p, q, style):
        rig = Rig()
        hw, hh, sn = p["hw"], p["hh"], p["sn"]
        jaw = max(0.0, q["jaw"]) * 0.12 * hh
        # ears behind the head
        for side, sx in (("l", 1.0), ("r", -1.0)):
            base = np.array([sx * 0.55 * hw, 0.6 * hh])
            out = _rot2(np.array([sx * 0.55, 0.84]), -sx * q["ears"])
            tip = base + out * p["ear"] * (1.6 if style.get("ears") == "long" else 1.0)
            rig.node(f"{side}_ear", _xy(tip, -0.1))
            perp = np.array([-out[1], out[0]])
            if style.get("ears") == "round":
                rig.ellipse(_xy(base + out * p["ear"] * 0.5, -0.12), _xy(tip, -0.12), 0.5 * p["ear"], role="accent")
            else:
                rig.polygon([_xy(base - perp * 0.35 * p["ear"], -0.12), _xy(base + perp * 0.35 * p["ear"], -0.12),
                             _xy(tip, -0.12)], role="accent")
        if style.get("horns"):
            for side, sx in (("l", 1.0), ("r", -1.0)):
                base = np.array([sx * 0.35 * hw, 0.85 * hh])
                mid = base + np.array([sx * 0.35 * hw, 0.25 * hh])
                tip = mid + np.array([sx * 0.05 * hw, 0.35 * hh])
                rig.capsule([_xy(base, -0.05), _xy(mid, -0.05), _xy(tip, -0.05)], 0.09 * hw, role="light")
                rig.node(f"{side}_horn", _xy(tip, -0.05))
        rig.ellipse([0, 0, 0], [0, hh, 0], hw, role="body")
        if style.get("cheeks"):
            for side, sx in (("l", 1.0), ("r", -1.0)):
                rig.node(f"{side}_cheek", [sx * 0.8 * hw, -0.2 * hh, 0.25])
        # snout sticks out towards the viewer so yaw moves it more than the eyes
        sy = -0.35 * hh
        rig.ellipse([0, sy, 0.5 * sn], [0, sy + 0.5 * p["sw"], 0.5 * sn], p["sw"], role="accent",
                    normal=np.array([0.0, 0.0, 1.0]), z_bias=0.2)
        nose = rig.node("nose", [0, sy + 0.12 * hh, sn])
        rig.dot(nose, 0.35 * p["sw"], role="dark", normal=np.array([0.0, 0.0, 1.0]), z_bias=0.3)
        ul = rig.node("upper_lip", [0, sy - 0.15 * hh, 0.9 * sn])
        for side, sx in (("l", 1.0), ("r", -1.0)):
            rig.node(f"{side}_mouth", [sx * 0.55 * p["sw"], sy - 0.2 * hh - 0.5 * jaw, 0.6 * sn])
        chin = rig.node("chin", [0, -0.85 * hh - jaw, 0.3 * sn])
        rig.capsule([rig.nodes["l_mouth"], ul, rig.nodes["r_mouth"]], 0.03, role="dark",
                    normal=np.array([0.0, 0.0, 1.0]), z_bias=0.3)
        if jaw > 0.02 * hh:
            rig.ellipse((ul + chin) / 2 + [0, 0, 0.05], ul + [0, -0.02, 0.05], 0.3 * p["sw"], role="dark",
                        normal=np.array([0.0, 0.0, 1.0]), z_bias=0.25)
        for side, sx in (("l", 1.0), ("r", -1.0)):
            e = rig.node(f"{side}_eye", [sx * p["es"] * 2 * hw, p["ey"], 0.35 * hw])
            r = p["eye"] * (1.0 - 0.4 * max(0.0, q["squint"]))
            rig.dot(e, r, role="dark", normal=np.array([sx * 0.4, 0.0, 1.0]), z_bias=0.3)
        return rig


# ------------------------------------------------------------------------------------------------
# birds (CUB's 15 keypoints)
# ------------------------------------------------------------------------------------------------


class Bird(Family):
    """A bird seen from the side, facing +x (right side, +z, towards the viewer)."""

    name = "bird"
    supercategory = "bird"
    natural = True
    view = ViewSpec(yaw=0.0, yaw_range=25.0, pitch=0.0, pitch_range=10.0, flippable=True)
    pose = {"pitch": (10.0, 20.0), "neck": (60.0, 25.0), "beak": (-5.0, 20.0), "wings": (0.3, 0.7),
            "wing_gap": (10.0, 15.0), "tail": (-10.0, 20.0), "l_leg": (0.0, 25.0), "r_leg": (0.0, 25.0)}
    defaults = {"bl": 1.0, "bh": 0.5, "hr": 0.2, "nl": 0.2, "bk": 0.22, "bkw": 0.08, "tl": 0.45, "tw": 0.2,
                "ll": 0.3, "wl": 0.65, "ww": 0.22}

    def keypoints(self, style):
        return (
            K("back", "back"), K("beak", "beak", "nose"), K("belly", "belly"), K("breast", "breast", "chest"),
            K("crown", "crown", "top of the head"), K("forehead", "forehead"), K("l_eye", "left eye"),
            K("l_leg", "left leg", "left foot"), K("l_wing", "left wing"), K("nape", "nape", "neck"),
            K("r_eye", "right eye"), K("r_leg", "right leg", "right foot"), K("r_wing", "right wing"),
            K("tail", "tail"), K("throat", "throat", "chin"),
        )

    def skeleton(self, style):
        return (("beak", "forehead"), ("forehead", "crown"), ("crown", "nape"), ("nape", "back"), ("back", "tail"),
                ("beak", "throat"), ("throat", "breast"), ("breast", "belly"), ("belly", "tail"), ("l_eye", "r_eye"),
                ("back", "l_wing"), ("back", "r_wing"), ("belly", "l_leg"), ("belly", "r_leg"),
                ("forehead", "l_eye"), ("forehead", "r_eye"))

    def build(self, p, q, style):
        rig = Rig()
        bl, bh = p["bl"], p["bh"]
        pitch = q["pitch"]

        def body(v, z=0.0):  # body-frame point -> object frame, body pitched nose-up by `pitch`
            return _xy(_rot2(np.asarray(v, float), pitch), z)

        rig.ellipse(body([0, 0]), body([0.5 * bl, 0]), bh / 2, role="body")
        rig.node("back", body([-0.05 * bl, 0.5 * bh]))
        rig.node("belly", body([-0.1 * bl, -0.5 * bh]))
        rig.node("breast", body([0.33 * bl, -0.3 * bh]))
        # tail fan
        tb = _rot2(np.array([-0.45 * bl, 0.05 * bh]), pitch)
        td = _rot2(np.array([-1.0, 0.0]), pitch - q["tail"])
        tip = tb + td * p["tl"]
        side = np.array([-td[1], td[0]]) * p["tw"] / 2
        rig.polygon([_xy(tb + side * 0.4), _xy(tb - side * 0.4), _xy(tip - side), _xy(tip + side)], role="accent",
                    z_bias=-0.3)
        rig.node("tail", _xy(tip))
        # head on a short neck
        nb = _rot2(np.array([0.38 * bl, 0.18 * bh]), pitch)
        hc = nb + direction(q["neck"]) * p["nl"]
        rig.capsule([_xy(nb), _xy(hc)], 1.4 * p["hr"], role="body")
        hr = p["hr"]
        rig.node("crown", _xy(hc + direction(95) * hr))
        rig.node("forehead", _xy(hc + direction(45) * hr))
        rig.node("nape", _xy(hc + direction(160) * hr))
        rig.node("throat", _xy(hc + direction(-55) * hr))
        bd = direction(q["beak"])
        beak = hc + bd * (0.85 * hr + p["bk"])
        rig.node("beak", _xy(beak))
        perp = np.array([-bd[1], bd[0]])
        rig.polygon([_xy(hc + bd * 0.7 * hr + perp * p["bkw"]), _xy(hc + bd * 0.7 * hr - perp * p["bkw"]),
                     _xy(beak)], role="light", z_bias=0.05)
        rig.ellipse(_xy(hc), _xy(hc + direction(90) * hr), hr, role="body", z_bias=0.02)
        if style.get("crest"):
            rig.polygon([_xy(hc + direction(120) * hr), _xy(hc + direction(70) * hr),
                         _xy(hc + direction(140) * hr * 1.9)], role="accent", z_bias=0.01)
        for s, z in (("l", -0.3 * hr), ("r", 0.3 * hr)):
            eye = hc + direction(25) * 0.4 * hr
            normal = [0.4, 0.0, np.sign(z)]
            rig.node(f"{s}_eye", _xy(eye, z), normal=normal)
            rig.dot(_xy(eye, z), 0.17 * hr, role="dark", z_bias=0.3, normal=normal)
        # wings: folded along the back (wings≈0) or raised (wings≈1); far (left) wing behind the body
        for s, z in (("l", -0.25 * bh), ("r", 0.25 * bh)):
            spread = float(np.clip(q["wings"], 0.0, 1.0))
            gap = q["wing_gap"] if s == "l" else 0.0
            ang = 195.0 - 100.0 * spread + gap + pitch
            base = _rot2(np.array([0.2 * bl, 0.2 * bh]), pitch)
            tipw = base + direction(ang) * p["wl"]
            wd = direction(ang)
            wp = np.array([-wd[1], wd[0]])
            if wp[1] < 0:
                wp = -wp
            poly = [base + wp * p["ww"] * 0.3, base - wp * p["ww"] * 0.6,
                    base + wd * p["wl"] * 0.55 - wp * p["ww"] * 0.6, tipw,
                    base + wd * p["wl"] * 0.5 + wp * p["ww"] * 0.4]
            rig.polygon([_xy(v, z) for v in poly], role="accent", z_bias=0.0)
            rig.node(f"{s}_wing", _xy(base + wd * p["wl"] * 0.8, z))
        # legs
        for s, z in (("l", -0.12 * bh), ("r", 0.12 * bh)):
            hip = _rot2(np.array([0.0, -0.35 * bh]), pitch)
            _, foot = chain(_xy(hip, z), [q[f"{s}_leg"]], [p["ll"] + 0.15 * bh])
            rig.node(f"{s}_leg", foot)
            side = [0.0, 0.0, 0.2 * np.sign(z)]
            rig.capsule([_xy(hip, z), foot], 0.035, role="dark", side=side)
            rig.capsule([foot, foot + [0.08, 0.0, 0.0]], 0.03, role="dark", side=side)
        return rig


# ------------------------------------------------------------------------------------------------
# insects and spiders (top view)
# ------------------------------------------------------------------------------------------------

_PAIR_NAMES = {3: ("front", "middle", "back"), 4: ("first", "second", "third", "fourth")}
_GENERIC_PAIR = {"front": "front", "back": "back"}


class Insect(Family):
    """An arthropod seen from above, head towards +y (so its right side is at +x)."""

    name = "insect"
    supercategory = "insect"
    natural = True
    view = ViewSpec(yaw=0.0, yaw_range=15.0, pitch=0.0, pitch_range=15.0, roll=50.0)
    pose = {
        **{f"{s}{i}_{j}": (0.0, 28.0) for s in "lr" for i in range(4) for j in ("base", "knee")},
        "abdomen": (0.0, 15.0), "antennae": (0.0, 20.0), "wings": (0.0, 1.0),
    }
    defaults = {"head": 0.12, "th": 0.22, "thw": 0.16, "ab": 0.45, "abw": 0.2, "leg": 0.5, "lw": 0.035,
                "ant": 0.3, "wing": 0.55, "waist": 0.0}

    def _legs(self, style) -> tuple[str, ...]:
        return _PAIR_NAMES[style.get("pairs", 3)]

    def keypoints(self, style):
        kps = [K("head", "head"), K("neck", "neck"), K("thorax", "thorax", "middle part")]
        if style.get("waist"):
            kps.append(K("waist", "waist"))
        kps.append(K("tail", "tip of the abdomen", "tail"))
        if style.get("eyes", True):
            kps += [K("l_eye", "left eye"), K("r_eye", "right eye")]
        if style.get("antennae", True):
            kps += [K("l_ant", "tip of the left antenna"), K("r_ant", "tip of the right antenna")]
            if style.get("antenna_base"):
                kps += [K("l_antb", "base of the left antenna"), K("r_antb", "base of the right antenna")]
        wings = style.get("wings", 0)
        for w in range(wings):
            kind = "" if wings == 1 else ("fore" if w == 0 else "hind")
            for s, word in (("l", "left"), ("r", "right")):
                generic = f"{word} wing" if w == 0 else None
                kps.append(K(f"{s}_wing{w}", f"tip of the {word} {kind}wing", generic))
        points = style.get("leg_points", 3)
        labels = {4: ("start point", "middle point", "almost the end point", "end point"),
                  3: ("middle point", "almost the end point", "end point"),
                  2: ("middle point", "end point")}[points]
        for pair in self._legs(style):
            for s, word in (("l", "left"), ("r", "right")):
                for j, label in enumerate(labels):
                    last = j == len(labels) - 1
                    generic = f"{word} {_GENERIC_PAIR[pair]} leg" if last and pair in _GENERIC_PAIR else None
                    kps.append(K(f"{s}_{pair}_{4 - len(labels) + j}", f"{label} of the {pair} {word} leg", generic))
        return tuple(kps)

    def skeleton(self, style):
        body = ["head", "neck", "thorax"] + (["waist"] if style.get("waist") else []) + ["tail"]
        edges = list(zip(body[:-1], body[1:]))
        if style.get("eyes", True):
            edges += [("head", "l_eye"), ("head", "r_eye")]
        if style.get("antennae", True):
            if style.get("antenna_base"):
                edges += [("head", "l_antb"), ("l_antb", "l_ant"), ("head", "r_antb"), ("r_antb", "r_ant")]
            else:
                edges += [("head", "l_ant"), ("head", "r_ant")]
        for w in range(style.get("wings", 0)):
            edges += [("thorax", f"l_wing{w}"), ("thorax", f"r_wing{w}")]
        points = style.get("leg_points", 3)
        for pair in self._legs(style):
            for s in "lr":
                names = [f"{s}_{pair}_{j}" for j in range(4 - points, 4)]
                edges.append(("thorax", names[0]))
                edges += list(zip(names[:-1], names[1:]))
        return tuple(edges)

    def build(self, p, q, style):
        rig = Rig()
        th, ab = p["th"], p["ab"]
        pairs = self._legs(style)
        thorax = rig.node("thorax", [0, 0, 0])
        neck = rig.node("neck", [0, 0.5 * th, 0])
        head_c = np.array([0, 0.5 * th + p["head"]])
        rig.node("head", _xy(head_c + [0, p["head"]]))
        # abdomen hangs behind the thorax and bends sideways
        ad = _rot2(np.array([0.0, -1.0]), q["abdomen"])
        a0 = np.array([0, -0.5 * th])
        if style.get("waist"):
            w = a0 + ad * p["waist"]
            rig.node("waist", _xy(w))
            rig.capsule([_xy(a0), _xy(w)], 0.25 * p["abw"], role="body")
            a0 = w
        tail = a0 + ad * ab
        rig.node("tail", _xy(tail))
        wings = style.get("wings", 0)
        for w in range(wings):
            for s, sx in (("l", -1.0), ("r", 1.0)):
                open_ = 15 + 35 * float(np.clip(q["wings"], 0, 1)) + 12 * w
                wd = _rot2(np.array([0.0, -1.0]), -sx * open_)
                base = np.array([sx * 0.3 * p["thw"], 0.1 * th - 0.15 * th * w])
                tip = base + wd * p["wing"] * (1.0 - 0.15 * w)
                perp = np.array([-wd[1], wd[0]])
                rig.polygon([_xy(base), _xy(base + wd * 0.5 * p["wing"] + perp * 0.12 * p["wing"], 0.05),
                             _xy(tip, 0.05), _xy(base + wd * 0.5 * p["wing"] - perp * 0.12 * p["wing"], 0.05)],
                            role="light", z_bias=0.4 + 0.05 * w)
                rig.node(f"{s}_wing{w}", _xy(tip, 0.05))
        rig.ellipse(_xy((a0 + tail) / 2), _xy(tail), p["abw"] / 2, role="body", z_bias=0.1)
        rig.ellipse(thorax, [0, 0.5 * th, 0], p["thw"] / 2, role="accent", z_bias=0.15)
        rig.ellipse(_xy(head_c), _xy(head_c + [0, p["head"]]), 0.85 * p["head"], role="body", z_bias=0.2)
        if style.get("eyes", True):
            for s, sx in (("l", -1.0), ("r", 1.0)):
                e = rig.node(f"{s}_eye", _xy(head_c + [sx * 0.6 * p["head"], 0.35 * p["head"]], 0.05))
                rig.dot(e, 0.3 * p["head"], role="dark", z_bias=0.3)
        if style.get("antennae", True):
            for s, sx in (("l", -1.0), ("r", 1.0)):
                b = head_c + [sx * 0.35 * p["head"], 0.8 * p["head"]]
                d1 = _rot2(np.array([0.0, 1.0]), sx * (-25 + q["antennae"] * sx))
                m = b + d1 * 0.5 * p["ant"]
                t = m + _rot2(d1, -sx * 20) * 0.5 * p["ant"]
                if style.get("antenna_base"):
                    rig.node(f"{s}_antb", _xy(b))
                rig.node(f"{s}_ant", _xy(t))
                rig.capsule([_xy(b), _xy(m), _xy(t)], 0.6 * p["lw"], role="dark", z_bias=0.05)
        # legs: coxa on the thorax rim, then femur / tibia / tarsus in the ground plane
        n = len(pairs)
        for i, pair in enumerate(pairs):
            for s, sx in (("l", -1.0), ("r", 1.0)):
                spread = (i - (n - 1) / 2) / max(n - 1, 1)  # -0.5 front .. 0.5 back
                base_ang = 90 - 70 * spread * 2 * 0.6  # degrees from "backwards"
                start = np.array([sx * 0.45 * p["thw"], 0.3 * th * (-spread * 2)])
                ang = base_ang + q[f"{s}{i}_base"]
                d = _rot2(np.array([0.0, -1.0]), sx * ang)
                L = p["leg"]
                knee = start + d * 0.4 * L
                # front legs bend forwards, back legs backwards (the sign of `spread`)
                bend = 35.0 if spread < 0 else (-35.0 if spread > 0 else -15.0)
                d2 = _rot2(d, sx * (bend + q[f"{s}{i}_knee"]))
                ankle = knee + d2 * 0.4 * L
                d3 = _rot2(d2, sx * 0.3 * bend)
                end = ankle + d3 * 0.25 * L
                pts = [start, knee, ankle, end]
                for j, v in enumerate(pts):
                    rig.node(f"{s}_{pair}_{j}", _xy(v, 0.02))
                rig.capsule([_xy(v, 0.02) for v in pts], p["lw"], role="dark", z_bias=-0.1)
        return rig
