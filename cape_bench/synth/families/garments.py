"""Garment families (tops, bottoms), flat and frontal: their left side is at +x (the left of the wearer)."""

from __future__ import annotations

import math

import numpy as np

from cape_bench.synth.families.base import Family, KeypointSpec, ViewSpec
from cape_bench.synth.families.furniture import _SIDES, K
from cape_bench.synth.geometry import Rig

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
