"""The CAPE-Synth catalogue: 100 category templates in 9 MP-100-like supercategories.

Categories within a family share a rig but differ in proportions, pose biases, topology
details (horns, a trunk, armrests, a swivel base, wings, 3 or 4 leg pairs, sleeves...) and
names ("paw" / "hoof" / "foot"; "top" / "seat").

The catalogue order interleaves the families, so any prefix of it (``num_categories`` < 100)
still spans every supercategory; category ids are positions in that order, starting at 1.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from cape_bench.synth.families.animals import AnimalFace, Bird, Insect, Quadruped
from cape_bench.synth.families.base import Template
from cape_bench.synth.families.furniture import Bed, Cabinet, Chair, Table
from cape_bench.synth.families.garments import Bottom, Top
from cape_bench.synth.families.vehicles import Bike, Car
from cape_bench.synth.families.people import Hand, Humanoid

_Q, _F, _B, _I = Quadruped(), AnimalFace(), Bird(), Insect()
_HU, _HA = Humanoid(), Hand()
_TA, _CH, _BE, _CA, _CAR, _BI, _TO, _BO = Table(), Chair(), Bed(), Cabinet(), Car(), Bike(), Top(), Bottom()

PAW, HOOF, FOOT = {"foot": "paw"}, {"foot": "hoof"}, {"foot": "foot"}


def _quadrupeds() -> list[Template]:
    q = _Q.template
    return [
        q("dog_body", {**PAW, "ears": "floppy"}),
        q("wolf_body", {**PAW, "tail": "bushy"}, lf=0.75, lb=0.77, tl=0.55),
        q("fox_body", {**PAW, "tail": "bushy"}, lf=0.55, lb=0.57, tl=0.75, hh=0.2, ear=0.13),
        q("horse_body", {**HOOF, "extra": "mane", "tail": "tuft"}, lf=1.0, lb=1.0, nl=0.6, hl=0.5, hh=0.2,
          tl=0.55, ear=0.07, pose={"neck": 60.0, "head": -40.0, "tail": -60.0}),
        q("zebra_body", {**HOOF, "pattern": "stripes", "tail": "tuft"}, lf=0.85, lb=0.85, nl=0.5, hl=0.48, hh=0.22,
          ear=0.09, pose={"neck": 55.0, "head": -40.0, "tail": -60.0}),
        q("deer_body", {**HOOF, "extra": "antlers"}, lf=1.0, lb=1.05, nl=0.5, bh=0.38, tl=0.12, lw=0.07,
          pose={"neck": 65.0}),
        q("giraffe_body", {**HOOF, "extra": "ossicones", "pattern": "spots", "tail": "tuft"}, lf=1.3, lb=1.2,
          nl=1.2, hl=0.4, hh=0.2, tl=0.45, lw=0.08, pose={"neck": 70.0, "head": -30.0, "tail": -70.0}),
        q("cow_body", {**HOOF, "extra": "horns", "tail": "tuft"}, bh=0.55, lf=0.6, lb=0.62, nl=0.3, hl=0.42,
          hh=0.28, tl=0.6, lw=0.13, pose={"neck": 25.0, "tail": -70.0}),
        q("bison_body", {**HOOF, "extra": "horns", "tail": "tuft"}, bh=0.62, lf=0.55, lb=0.55, nl=0.2, hl=0.4,
          hh=0.34, nw=0.4, lw=0.14, pose={"neck": 15.0, "head": -50.0, "tail": -70.0}),
        q("sheep_body", {**HOOF, "ears": "floppy"}, bh=0.55, lf=0.5, lb=0.52, nl=0.25, tl=0.15, tw=0.1, lw=0.09),
        q("pig_body", {**HOOF, "ears": "floppy", "tail": "thin"}, bh=0.55, lf=0.38, lb=0.4, nl=0.12, hl=0.38,
          hh=0.3, tl=0.15, nw=0.35, pose={"neck": 15.0, "head": -10.0, "tail_curl": 90.0}),
        q("cat_body", PAW, bh=0.38, lf=0.6, lb=0.65, nl=0.25, hl=0.3, hh=0.25, tl=0.8, lw=0.09,
          pose={"tail": 20.0}),
        q("lion_body", {**PAW, "extra": "mane", "tail": "tuft"}, bh=0.48, lf=0.7, lb=0.72, hl=0.4, hh=0.34,
          lw=0.13, tl=0.7),
        q("cheetah_body", {**PAW, "pattern": "spots"}, bh=0.36, lf=0.85, lb=0.9, tl=0.8, hh=0.2, lw=0.08),
        q("bear_body", {**FOOT, "ears": "round"}, bh=0.6, lf=0.55, lb=0.55, nl=0.2, hl=0.38, hh=0.3, tl=0.1,
          lw=0.17, nw=0.35, pose={"neck": 20.0}),
        q("elephant_body", {**FOOT, "ears": "round", "extra": "trunk"}, bh=0.8, lf=0.8, lb=0.8, lw=0.25, nl=0.1,
          hl=0.55, hh=0.5, tl=0.35, ear=0.3, nw=0.5, pose={"neck": 10.0, "head": -15.0, "tail": -70.0}),
        q("rhino_body", {**FOOT, "extra": "horn", "ears": "pointy"}, bh=0.65, lf=0.5, lb=0.5, lw=0.2, nl=0.15,
          hl=0.5, hh=0.35, tl=0.25, nw=0.45, pose={"neck": 10.0, "head": -30.0, "tail": -70.0}),
        q("hippo_body", {**FOOT, "ears": "round"}, bh=0.7, lf=0.35, lb=0.35, lw=0.22, nl=0.12, hl=0.5, hh=0.4,
          tl=0.15, ear=0.06, nw=0.5, pose={"neck": 10.0, "head": -10.0}),
        q("rabbit_body", {**PAW, "ears": "long"}, bl=0.8, bh=0.5, lf=0.35, lb=0.5, nl=0.15, hl=0.35, hh=0.28,
          tl=0.1, tw=0.12, lw=0.1, ear=0.12, pose={"lb_bend": 40.0, "rb_bend": 40.0}),
        q("squirrel_body", {**PAW, "tail": "bushy"}, bh=0.4, lf=0.35, lb=0.45, tl=1.0, tw=0.1, nl=0.2,
          hl=0.3, hh=0.22, lw=0.08, pose={"tail": 70.0, "tail_curl": -40.0}),
        q("rat_body", {**PAW, "ears": "round"}, bh=0.35, lf=0.3, lb=0.35, tl=1.1, tw=0.035, nl=0.15, hl=0.35,
          hh=0.2, lw=0.06, pose={"neck": 25.0, "tail": -10.0}),
        q("otter_body", {**PAW, "ears": "round", "tail": "bushy"}, bl=1.3, bh=0.32, lf=0.3, lb=0.33, tl=0.8,
          hl=0.3, hh=0.22, lw=0.09, ear=0.05, nl=0.25, pose={"neck": 30.0}),
    ]


def _faces() -> list[Template]:
    f = _F.template
    return [
        f("fox_face", {"ears": "pointy"}, hw=0.45, hh=0.5, sn=0.35, sw=0.2, ear=0.38),
        f("wolf_face", {"ears": "pointy"}, hw=0.5, hh=0.55, sn=0.38, sw=0.24, ear=0.32),
        f("cat_face", {"ears": "pointy"}, hw=0.52, hh=0.48, sn=0.15, sw=0.22, ear=0.28, eye=0.08),
        f("lion_face", {"ears": "round", "cheeks": True}, hw=0.6, hh=0.62, sn=0.25, sw=0.3, ear=0.18),
        f("bear_face", {"ears": "round"}, hw=0.58, hh=0.55, sn=0.28, sw=0.28, ear=0.2),
        f("monkey_face", {"ears": "round", "cheeks": True}, hw=0.48, hh=0.55, sn=0.12, sw=0.3, ear=0.16, es=0.22),
        f("deer_face", {"ears": "pointy"}, hw=0.42, hh=0.6, sn=0.35, sw=0.22, ear=0.36, ey=0.18),
        f("goat_face", {"ears": "pointy", "horns": True}, hw=0.42, hh=0.6, sn=0.3, sw=0.24, ear=0.25),
        f("buffalo_face", {"ears": "pointy", "horns": True, "cheeks": True}, hw=0.6, hh=0.55, sn=0.25, sw=0.35,
          ear=0.22),
        f("horse_face", {"ears": "pointy"}, hw=0.38, hh=0.7, sn=0.3, sw=0.26, ear=0.25, ey=0.25),
        f("rabbit_face", {"ears": "long"}, hw=0.45, hh=0.45, sn=0.15, sw=0.2, ear=0.45),
        f("mouse_face", {"ears": "round"}, hw=0.45, hh=0.42, sn=0.2, sw=0.16, ear=0.3),
        f("panda_face", {"ears": "round"}, hw=0.58, hh=0.52, sn=0.2, sw=0.26, ear=0.2, eye=0.09),
        f("pig_face", {"ears": "pointy", "cheeks": True}, hw=0.55, hh=0.5, sn=0.3, sw=0.32, ear=0.3),
    ]


def _birds() -> list[Template]:
    b = _B.template
    return [
        b("sparrow", {}, bl=0.8, bh=0.5, hr=0.2, bk=0.12, tl=0.35, ll=0.2),
        b("gull", {}, bl=1.0, bh=0.45, hr=0.17, bk=0.2, tl=0.4, wl=0.8, ll=0.25),
        b("tern", {}, bl=0.9, bh=0.35, hr=0.15, bk=0.22, tl=0.6, tw=0.15, wl=0.85),
        b("woodpecker", {"crest": True}, bk=0.28, tl=0.45, pose={"pitch": 40.0}),
        b("kingfisher", {}, bk=0.35, hr=0.25, tl=0.25, ll=0.12, bkw=0.07),
        b("heron", {}, bl=0.9, bh=0.35, nl=0.6, ll=0.75, bk=0.4, hr=0.13, bkw=0.05, pose={"neck": 75.0}),
        b("duck", {}, bl=1.1, bh=0.55, hr=0.2, bk=0.2, bkw=0.1, tl=0.2, ll=0.15, pose={"pitch": 0.0}),
        b("owl", {}, bl=0.75, bh=0.7, hr=0.32, bk=0.08, tl=0.25, nl=0.05, pose={"neck": 85.0, "pitch": 50.0}),
        b("parrot", {"crest": True}, bk=0.15, bkw=0.12, tl=0.7, tw=0.12, hr=0.24, pose={"pitch": 45.0}),
        b("crow", {}, bl=1.0, bh=0.45, hr=0.2, bk=0.22, tl=0.5),
    ]


def _humanoids() -> list[Template]:
    h = _HU.template
    return [
        h("person", {}),
        h("child", {}, tl=0.4, hr=0.14, ua=0.22, fa=0.2, th=0.3, sh=0.3, sw=0.3, hw=0.22),
        h("gorilla", {"taper": False}, sw=0.5, hw=0.32, ua=0.38, fa=0.36, th=0.3, sh=0.28, lw=0.12, hr=0.12,
          pose={"lean": 8.0, "l_arm": 15.0, "r_arm": 15.0}),
        h("chimpanzee", {}, sw=0.4, ua=0.34, fa=0.32, th=0.32, sh=0.3, lw=0.09),
        h("robot", {"boxy": True, "taper": False}, lw=0.1, sw=0.42, hr=0.12),
        h("astronaut", {"helmet": True, "taper": False}, lw=0.14, sw=0.44, hw=0.3, hr=0.12),
        h("dancer", {}, lw=0.06, sw=0.32, th=0.45, sh=0.44, pose={"l_arm": 80.0, "r_arm": 80.0}),
        h("knight", {"boxy": True}, sw=0.44, lw=0.11, hw=0.28),
    ]


def _hands() -> list[Template]:
    h = _HA.template
    return [
        h("human_hand", {}),
        h("child_hand", {}, pw=0.4, ph=0.36, thumb=0.28, index=0.3, middle=0.33, ring=0.31, pinky=0.25, fw=0.09),
        h("glove", {}, pw=0.48, ph=0.44, fw=0.12, thumb=0.34, index=0.38, middle=0.41, ring=0.39, pinky=0.31),
        h("robot_hand", {"robot": True}, fw=0.07),
        h("cartoon_hand", {"fingers": 4}, fw=0.13, pw=0.46, index=0.36, middle=0.38, ring=0.35),
        h("gauntlet", {"robot": True}, fw=0.11, pw=0.5, ph=0.48),
    ]


def _insects() -> list[Template]:
    i = _I.template
    return [
        i("locust", {"waist": True, "leg_points": 4, "antenna_base": True}, ab=0.55, waist=0.12, leg=0.6),
        i("fly", {"leg_points": 4, "antennae": False, "wings": 1}, head=0.13, ab=0.35, abw=0.26, wing=0.55),
        i("ant", {"waist": True}, head=0.14, th=0.2, thw=0.1, ab=0.3, abw=0.22, waist=0.1, leg=0.55),
        i("beetle", {}, th=0.2, thw=0.3, ab=0.5, abw=0.42, leg=0.45, lw=0.045),
        i("spider", {"pairs": 4, "antennae": False}, head=0.08, th=0.25, thw=0.24, ab=0.4, abw=0.36, leg=0.65),
        i("bee", {"wings": 2, "leg_points": 2}, ab=0.4, abw=0.28, wing=0.45, leg=0.4),
        i("dragonfly", {"wings": 2, "leg_points": 2, "antennae": False}, ab=0.9, abw=0.08, wing=0.8, leg=0.3,
          head=0.1),
        i("cockroach", {}, th=0.18, thw=0.28, ab=0.5, abw=0.36, ant=0.6, leg=0.5),
    ]


def _furniture() -> list[Template]:
    return [
        _TA.template("table", {"part": "top"}),
        _CH.template("dining_chair", {}),
        _BE.template("bed", {}),
        _TA.template("coffee_table", {"part": "top", "shelf": True}, w=1.1, d=0.6, h=0.4, t=0.05),
        _CH.template("armchair", {"arms": True}, w=0.75, d=0.7, hs=0.42, t=0.15, hb=0.45, bt=0.15, aw=0.14,
                     ha=0.22, lw=0.05),
        _CA.template("cabinet", {"doors": 2}),
        _TA.template("desk", {"part": "top", "drawers": True}, w=1.2, d=0.6, h=0.72, t=0.05),
        _CH.template("sofa", {"arms": True}, w=1.6, d=0.75, hs=0.4, t=0.18, hb=0.4, bt=0.18, aw=0.16, ha=0.2,
                     lw=0.05),
        _TA.template("stool", {"part": "seat"}, w=0.4, d=0.4, h=0.5, t=0.05, lw=0.045, inset=0.04),
        _CH.template("swivelchair", {"swivel": True}, w=0.5, d=0.48, hs=0.5, t=0.08, hb=0.5, bt=0.07, base=0.32),
        _TA.template("bar_stool", {"part": "seat", "footrest": True}, w=0.36, d=0.36, h=0.8, t=0.05, lw=0.04,
                     inset=0.03, pose={"splay": 6.0}),
        _CH.template("park_bench", {}, w=1.4, d=0.45, hs=0.45, t=0.05, hb=0.4, bt=0.04, lw=0.06),
    ]


def _vehicles() -> list[Template]:
    c = _CAR.template
    return [
        c("car", {}),
        _BI.template("bicycle", {}),
        c("suv", {}, h1=0.25, h2=0.18, cf=0.22, cb=0.05, rb=0.02, r=0.12),
        c("sports_car", {}, h1=0.14, h2=0.12, cf=0.38, cb=0.2, rf=0.18, rb=0.12, r=0.09, W=0.5),
        c("van", {}, h1=0.25, h2=0.3, cf=0.12, cb=0.02, rf=0.08, rb=0.0, r=0.1),
        _BI.template("motorcycle", {"motor": True}, r=0.25, wb=0.9, sh=0.5, bh=0.55, hw=0.2, tw=0.04),
        c("bus", {}, W=0.3, h1=0.3, h2=0.28, cf=0.02, cb=0.02, rf=0.03, rb=0.0, r=0.07, wb=0.7),
        c("pickup", {"cargo": "open"}, h1=0.22, h2=0.17, cf=0.25, cb=0.42, rf=0.08, rb=0.02, r=0.11),
        c("truck", {"cargo": "box"}, W=0.4, h1=0.25, h2=0.25, cf=0.08, cb=0.62, rf=0.04, rb=0.0, r=0.1, wb=0.7),
        c("jeep", {}, h1=0.24, h2=0.2, cf=0.25, cb=0.1, rf=0.05, rb=0.0, r=0.13),
    ]


def _garments() -> list[Template]:
    t, b = _TO.template, _BO.template
    return [
        t("short_sleeved_shirt", {"sleeves": "short"}),
        b("skirt", {"kind": "skirt"}),
        t("long_sleeved_shirt", {"sleeves": "long"}, sl=0.75, so=0.22),
        b("trousers", {"kind": "trousers"}, L=1.2, lo=0.22, cr=0.3),
        t("vest", {"sleeves": "none"}, ah=0.38, sw=0.62),
        t("jacket", {"sleeves": "long", "placket": True, "noun": "jacket"}, sl=0.78, so=0.24, bl=0.95, hw=0.82),
        b("shorts", {"kind": "shorts"}, L=0.45, lo=0.34, cr=0.3),
        t("sling_dress", {"sleeves": "none", "straps": True, "waist": True, "noun": "dress"}, sw=0.42, nw=0.24,
          nd=0.3, ah=0.28, bl=1.5, hw=1.1, wa=0.56, ww=0.62),
        t("short_sleeved_dress", {"sleeves": "short", "waist": True, "noun": "dress"}, bl=1.5, hw=1.2, wa=0.58),
        t("long_sleeved_dress", {"sleeves": "long", "waist": True, "noun": "dress"}, bl=1.5, hw=1.15, wa=0.58,
          sl=0.75, so=0.22),
    ]


FAMILY_GROUPS = (_quadrupeds, _faces, _birds, _humanoids, _hands, _insects, _furniture, _vehicles, _garments)


@lru_cache(maxsize=1)
def catalog() -> tuple[Template, ...]:
    """All templates in id order (id = position + 1), families interleaved.

    Each group's i-th of n categories sits at (i + 0.5) / n; sorting by that key spreads
    every supercategory evenly along the order.
    """
    keyed = []
    for g, group in enumerate(FAMILY_GROUPS):
        items = group()
        for i, tpl in enumerate(items):
            keyed.append(((i + 0.5) / len(items), g, tpl))
    keyed.sort(key=lambda t: (t[0], t[1]))
    out = tuple(t[2] for t in keyed)
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise AssertionError("duplicate category names in the catalogue")
    return out


def polysemous_flags(templates: tuple[Template, ...] | list[Template], polysemy: float, seed: int) -> list[bool]:
    """Which categories use the shared cross-family vocabulary.

    Within each supercategory a seeded random order is fixed and its first
    ``round(polysemy × n)`` categories are polysemous, so raising ``polysemy`` only ever adds
    categories (the set at 0.3 is a subset of the set at 0.6).
    """
    flags = [False] * len(templates)
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(templates):
        groups.setdefault(t.supercategory, []).append(i)
    for sc in sorted(groups):
        idx = groups[sc]
        rng = np.random.default_rng([seed, 4242, sum(map(ord, sc))])
        order = rng.permutation(len(idx))
        for j in order[: int(round(polysemy * len(idx)))]:
            flags[idx[j]] = True
    return flags
