"""Shape vocabulary of the doodle models: :class:`Part` and the polygon/ellipse/arc/curve helpers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class Part:
    """One piece of an object, in normalised coordinates (x right, y down).

    ``closed`` only concerns sketches (is the outline drawn as a loop?); ``fill`` only concerns photos (is the
    region filled, or is the polyline drawn as a thick line ``width`` wide?). An open polyline can still be
    filled: the photo closes it with a straight edge that a later part covers (a tree trunk under its crown),
    which is how a person draws it too, without the hidden edge.
    """

    points: np.ndarray
    closed: bool = True
    fill: bool = True
    role: str = "body"  # colour role, looked up in the class palette
    width: float = 0.06  # photo line width for fill=False parts, in the same units as points
    optional: float = 0.0  # probability that this detail is left out (independently in sketches and photos)
    sketch: bool = True  # drawn in sketches
    photo: bool = True  # drawn in photos


def _pts(*xy) -> np.ndarray:
    return np.asarray(xy, dtype=np.float64).reshape(-1, 2)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return _pts((x0, y0), (x1, y0), (x1, y1), (x0, y1))


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 48, rot: float = 0.0) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    p = np.stack([rx * np.cos(t), ry * np.sin(t)], 1)
    if rot:
        c, s = math.cos(rot), math.sin(rot)
        p = p @ np.array([[c, s], [-s, c]])
    return p + (cx, cy)


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 24) -> np.ndarray:
    """Elliptic arc from angle a0 to a1 (radians; with y down, increasing angles turn clockwise on screen)."""
    t = np.linspace(a0, a1, n)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _bezier(p0, p1, p2, n: int = 16) -> np.ndarray:
    """Quadratic Bezier curve from p0 to p2 pulled towards p1."""
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2 = (np.asarray(p, dtype=np.float64) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _lens(p0, p1, bulge_a: float, bulge_b: float, n: int = 18) -> np.ndarray:
    """Pointed-oval outline (leaf, fish body) between p0 and p1; bulges are the half-widths on either side."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    mid, d = (p0 + p1) / 2, p1 - p0
    normal = np.array([d[1], -d[0]]) / (np.linalg.norm(d) + 1e-9)
    # A quadratic Bezier reaches half-way to its control point, hence the factor 2.
    a = _bezier(p0, mid + 2 * bulge_a * normal, p1, n)
    b = _bezier(p1, mid - 2 * bulge_b * normal, p0, n)
    return np.concatenate([a, b[1:-1]])


def _regular(n: int, r: float = 1.0, start: float = -np.pi / 2) -> np.ndarray:
    t = start + np.arange(n) * 2 * np.pi / n
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _keep_contiguous(points: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The points of a closed loop where ``keep`` holds, as one run in loop order (keep must be one run)."""
    if keep.all():
        return points
    start = int(np.argmax(~keep))  # roll so the kept run does not wrap around the end
    points, keep = np.roll(points, -start, 0), np.roll(keep, -start)
    return points[keep]
