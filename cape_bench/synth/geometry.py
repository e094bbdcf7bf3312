"""3-D rigs of drawable primitives and their projection to the image plane.

Every CAPE-Synth object is built in its own *object frame*: x right, y up, z towards the
viewer, lengths in arbitrary "object units" (the object is rescaled to the image later). A
family's builder returns a :class:`Rig`: named 3-D nodes (keypoints and helpers) plus a list of
:class:`Shape` primitives. The renderer never sees a family: it only projects rigs.

Handedness: with forward ``f`` and up ``u``, an object's *right* side is ``f × u``. A body facing
+x with y up therefore shows its right side (+z) to the viewer; a body facing the viewer (+z)
has its left side at +x. Families follow this rule so that "left"/"right" keypoint names stay
intrinsic to the object, as in MP-100.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SHAPE_KINDS = ("capsule", "polygon", "ellipse", "dot")


@dataclass(frozen=True)
class Shape:
    """One drawable primitive in the object frame.

    Attributes:
        kind: ``"capsule"`` (thick polyline with round caps), ``"polygon"`` (filled),
            ``"ellipse"`` (view-facing ellipse) or ``"dot"`` (view-facing disc).
        points: float[n, 3] object-frame points: the polyline (capsule), the vertices
            (polygon), ``[centre, end of the major semi-axis]`` (ellipse) or ``[centre]`` (dot).
        width: capsule thickness, ellipse minor semi-axis or dot radius (object units).
        role: appearance slot: ``body``, ``limb``, ``accent``, ``dark`` or ``light``.
        normal: optional float[3] outward normal; the shape is hidden when it faces away
            from the viewer (box faces, head lights, eyes on a face).
        z_bias: added to the mean depth when sorting (painter's algorithm).
        outline: draw a dark rim (makes part boundaries visible).
        shade: None = shade from depth / normal; else a fixed brightness factor.
        side: optional float[3]; its rotated z is added to the depth, so a part fixed to one
            side of the object (a wheel, a pedal) stays in front of or behind the body
            whichever way the object is turned.
    """

    kind: str
    points: np.ndarray
    width: float = 0.0
    role: str = "body"
    normal: np.ndarray | None = None
    z_bias: float = 0.0
    outline: bool = True
    shade: float | None = None
    side: np.ndarray | None = None


@dataclass
class Rig:
    """Nodes and primitives of one object instance (mutable while a builder fills it)."""

    nodes: dict[str, np.ndarray] = field(default_factory=dict)
    shapes: list[Shape] = field(default_factory=list)
    normals: dict[str, np.ndarray] = field(default_factory=dict)

    def node(self, name: str, xyz, normal=None) -> np.ndarray:
        """Register a named point (float[3]) and return it.

        Args:
            normal: optional outward normal of the surface the point lies on; the point counts
                as self-occluded when that surface faces away from the viewer (a headlight seen
                from behind, the far eye of a head in profile).
        """
        p = np.asarray(xyz, dtype=np.float64).reshape(3)
        self.nodes[name] = p
        if normal is not None:
            self.normals[name] = np.asarray(normal, dtype=np.float64).reshape(3)
        return p

    def capsule(self, points, width: float, role: str = "limb", **kw) -> None:
        self.shapes.append(Shape("capsule", _pts(points), float(width), role, **kw))

    def polygon(self, points, role: str = "body", **kw) -> None:
        self.shapes.append(Shape("polygon", _pts(points), 0.0, role, **kw))

    def ellipse(self, centre, axis_end, minor: float, role: str = "body", **kw) -> None:
        self.shapes.append(Shape("ellipse", _pts([centre, axis_end]), float(minor), role, **kw))

    def dot(self, centre, radius: float, role: str = "dark", **kw) -> None:
        kw.setdefault("outline", False)
        self.shapes.append(Shape("dot", _pts([centre]), float(radius), role, **kw))

    def box(self, centre, size, role: str = "body", z_bias: float = 0.0, shade: float | None = None,
            roles: tuple[str, ...] | None = None) -> None:
        """Axis-aligned cuboid (back faces are culled at projection time).

        Args:
            centre: float[3] box centre. size: float[3] full extents along x, y, z.
        """
        self.hexa(box_corners(centre, size), role, z_bias, shade, roles)

    def hexa(self, corners, role: str = "body", z_bias: float = 0.0, shade: float | None = None,
             roles: tuple[str, ...] | None = None) -> None:
        """Convex hexahedron from 8 corners indexed ``x + 2*y + 4*z`` (bit = high side).

        Normals are computed from the corners and turned outwards, so a sheared box (a
        reclined backrest, a car cabin) culls correctly.

        Args:
            roles: optional role per face, in the order -x, +x, -y, +y, -z, +z.
        """
        c = np.asarray(corners, dtype=np.float64).reshape(8, 3)
        centre = c.mean(axis=0)
        quads = ((0, 2, 6, 4), (1, 3, 7, 5), (0, 1, 5, 4), (2, 3, 7, 6), (0, 1, 3, 2), (4, 5, 7, 6))
        for i, quad in enumerate(quads):
            face_role = roles[i] if roles else role
            face = c[list(quad)]
            normal = np.cross(face[1] - face[0], face[3] - face[0])
            if np.dot(normal, face.mean(axis=0) - centre) < 0:
                normal = -normal
            norm = np.linalg.norm(normal)
            if norm < 1e-12:
                continue
            self.shapes.append(Shape("polygon", face, 0.0, face_role, normal=normal / norm, z_bias=z_bias,
                                     shade=shade))

    def keypoints(self, names: tuple[str, ...]) -> np.ndarray:
        """float[K, 3] positions of the named nodes, in order."""
        return np.stack([self.nodes[n] for n in names])


def _pts(points) -> np.ndarray:
    return np.asarray(points, dtype=np.float64).reshape(-1, 3)


def box_corners(centre, size) -> np.ndarray:
    """float[8, 3] corners of an axis-aligned box, indexed ``x + 2*y + 4*z`` (bit = high side)."""
    c = np.asarray(centre, dtype=np.float64)
    h = np.asarray(size, dtype=np.float64) / 2.0
    bits = np.array([[i & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], dtype=np.float64)
    return c + (bits * 2.0 - 1.0) * h


def circle3d(centre, radius: float, normal_axis: int, n: int = 14) -> np.ndarray:
    """float[n, 3] points of a circle of ``radius`` around ``centre``, perpendicular to an axis."""
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    pts = np.tile(np.asarray(centre, dtype=np.float64), (n, 1))
    u, v = [a for a in range(3) if a != normal_axis]
    pts[:, u] += radius * np.cos(t)
    pts[:, v] += radius * np.sin(t)
    return pts


def direction(angle_deg: float) -> np.ndarray:
    """float[2] unit vector at ``angle_deg`` counter-clockwise from +x."""
    a = math.radians(angle_deg)
    return np.array([math.cos(a), math.sin(a)])


def chain(start, angles_deg, lengths, z: float | None = None) -> list[np.ndarray]:
    """Points of a planar limb chain hanging from ``start``.

    Angles are absolute, measured from straight down (-y) and positive towards +x, so a leg
    standing straight has angle 0 and a leg swung forward (for a body facing +x) is positive.

    Args:
        start: float[3] (or [2], then ``z`` is required) first joint.
        angles_deg: one absolute angle per segment (degrees).
        lengths: one length per segment (object units).
        z: depth for every point (defaults to ``start``'s).

    Returns:
        len(lengths) + 1 points float[3], ``start`` first.
    """
    s = np.asarray(start, dtype=np.float64)
    zz = float(s[2]) if z is None else float(z)
    pts = [np.array([s[0], s[1], zz])]
    for ang, length in zip(angles_deg, lengths):
        a = math.radians(ang)
        prev = pts[-1]
        pts.append(np.array([prev[0] + length * math.sin(a), prev[1] - length * math.cos(a), zz]))
    return pts


def view_rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """float[3, 3] rotation: yaw about the vertical (y) axis, then pitch about x.

    Positive pitch tilts the top of the object towards the viewer (we look down on it).
    """
    y, p = math.radians(yaw_deg), math.radians(pitch_deg)
    ry = np.array([[math.cos(y), 0.0, math.sin(y)], [0.0, 1.0, 0.0], [-math.sin(y), 0.0, math.cos(y)]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(p), -math.sin(p)], [0.0, math.sin(p), math.cos(p)]])
    return rx @ ry


@dataclass(frozen=True)
class Projected:
    """A shape after the view rotation, in 2-D object units with y pointing down.

    Attributes:
        kind, role, width, outline, shade: as in :class:`Shape`.
        points: float[n, 2] image-oriented coordinates (y down).
        depth: sort key (larger = closer to the viewer).
        facing: cosine between the rotated normal and the view direction (1 without normal).
    """

    kind: str
    role: str
    points: np.ndarray
    width: float
    depth: float
    outline: bool
    shade: float | None
    facing: float


def project_rig(rig: Rig, rotation: np.ndarray, keypoint_names: tuple[str, ...]):
    """Rotate a rig into the view and flatten it orthographically.

    Args:
        rig: the instance's rig.
        rotation: float[3, 3] from :func:`view_rotation`.
        keypoint_names: nodes to return, in keypoint order.

    Returns:
        (shapes, keypoints, self_occluded): visible shapes sorted back to front (list of
        :class:`Projected`), float[K, 2] keypoints (y down), bool[K] keypoints whose surface
        faces away from the viewer.
    """
    out = []
    for order, s in enumerate(rig.shapes):
        p = s.points @ rotation.T
        facing = 1.0
        if s.normal is not None:
            facing = float((rotation @ s.normal)[2]) / max(float(np.linalg.norm(s.normal)), 1e-12)
            if facing <= 1e-6:
                continue  # faces away from the viewer
        depth = float(p[:, 2].mean()) + s.z_bias
        if s.side is not None:
            depth += float((rotation @ np.asarray(s.side, np.float64))[2])
        xy = np.column_stack([p[:, 0], -p[:, 1]])
        out.append((depth, order, Projected(s.kind, s.role, xy, s.width, depth, s.outline, s.shade, facing)))
    # ties keep the builder's order, so equal-depth parts layer deterministically
    out.sort(key=lambda t: (t[0], t[1]))
    kp3 = rig.keypoints(keypoint_names) @ rotation.T
    hidden = np.array([n in rig.normals and float((rotation @ rig.normals[n])[2]) < 0.0 for n in keypoint_names],
                      dtype=bool)
    return [t[2] for t in out], np.column_stack([kp3[:, 0], -kp3[:, 1]]), hidden


def shape_extent(shapes: list[Projected]) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounds (float[2] min, float[2] max) of projected shapes, widths included."""
    lo = np.full(2, np.inf)
    hi = np.full(2, -np.inf)
    for s in shapes:
        pad = s.width / 2.0 if s.kind == "capsule" else (s.width if s.kind == "dot" else 0.0)
        if s.kind == "ellipse":
            major = np.linalg.norm(s.points[1] - s.points[0])
            pad = max(major, s.width)
            pts = s.points[:1]
        else:
            pts = s.points
        lo = np.minimum(lo, pts.min(axis=0) - pad)
        hi = np.maximum(hi, pts.max(axis=0) + pad)
    return lo, hi
