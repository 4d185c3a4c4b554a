"""The embedded doodle benchmark: a small zero-shot SBIR dataset generated on the spot, with nothing to download.

Every class is a *parametric shape model*: a function that draws fresh proportions from a random generator and
returns the object as a list of :class:`Part` (polygons, ellipses, arcs and lines in normalised coordinates,
x to the right, y down). Both modalities are rendered from the same model but never from the same instance:

- **sketches** follow the model's outlines the way a person draws them: wobbly strokes with per-point jitter,
  shuffled stroke order and direction, closed loops that stop short or overshoot, strokes broken in two, small
  details left out, a little rotation / shear / aspect change. They are stored in Google's QuickDraw
  "simplified" ndjson format (aligned to the top-left, longer side scaled to 0-255, RDP-simplified with
  epsilon 2), one ``sketch/<class>.ndjson`` per class.
- **photos** fill the same kind of shapes with colour, texture and shading (light gradient, rim darkening,
  highlight, drop shadow) and put them on varied backgrounds (gradients, noise, stripes, table tops, clutter),
  at another pose, scale and aspect: ``photo/<class>/<class>_<i:04d>.png``. There are no drawn outlines in a
  photo, so a model has to bridge a real sketch-to-photo domain gap.

Class word vectors come from the shipped asset ``ray_sbir/assets/doodle_class_vectors.txt`` (all-MiniLM-L6-v2
embeddings of the class names, made once by ``scripts/make_class_vectors.py``); :func:`make_doodles` copies the
rows of the generated classes to ``class_vectors.txt`` in word2vec text format.

Everything is deterministic: each item's random generator is seeded by ``(seed, crc32(class name), modality,
item index)``, so the same arguments give byte-identical files, and adding or removing classes leaves the
other classes' items unchanged.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import time
import zlib
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ray_sbir import fs

# ----------------------------------------------------------------------------------------------------------
# Shape vocabulary
# ----------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------
# Class models. Each takes a numpy Generator and returns the parts of one fresh instance, roughly in [-1, 1]^2
# (they are re-centred and re-scaled afterwards). Part order is the photo's z-order (later parts on top).
# ----------------------------------------------------------------------------------------------------------


def _apple(r):
    w, h, dip = r.uniform(0.9, 1.05), r.uniform(0.85, 1.0), r.uniform(0.12, 0.22)
    phi = np.linspace(-np.pi, np.pi, 80, endpoint=False)  # 0 = top
    rad = 1 - dip * np.exp(-((phi / 0.4) ** 2)) - r.uniform(0.02, 0.07) * np.exp(-(((np.abs(phi) - np.pi) / 0.45) ** 2))
    rad *= 1 + 0.05 * np.cos(phi)  # apples are a little wider above the middle
    body = np.stack([w * rad * np.sin(phi), -h * rad * np.cos(phi)], 1)
    top = -h * (1 - dip) * 1.05  # the bottom of the dip, where the stem goes in
    lean, length = r.uniform(-0.05, 0.2), r.uniform(0.25, 0.38)
    stem = _bezier((0, top + 0.06), (0.0, top - length * 0.6), (lean, top - length), 8)
    base = stem[3]
    ang = r.uniform(-0.6, 0.1)
    tip = base + r.uniform(0.4, 0.55) * np.array([math.cos(ang), math.sin(ang)])
    return [
        Part(body, role="body"),
        Part(stem, closed=False, fill=False, role="stem", width=0.08),
        Part(_lens(base, tip, 0.09, 0.12), role="leaf", optional=0.35),
    ]


def _pear(r):
    big, small = r.uniform(0.5, 0.6), r.uniform(0.22, 0.3)
    cb, ct = 1 - big, -0.72 + small
    ys = (ct - small) + (cb + big - (ct - small)) * (1 - np.cos(np.linspace(0, np.pi, 64))) / 2
    wb = np.sqrt(np.clip(big**2 - (ys - cb) ** 2, 0, None))
    wt = np.sqrt(np.clip(small**2 - (ys - ct) ** 2, 0, None))
    s = np.clip((ys - ct) / (cb - ct), 0, 1)
    neck = np.where((ys > ct) & (ys < cb), small * 0.95 + (big - small) * s**2.2, 0)  # concave waist
    w = np.maximum.reduce([wb, wt, neck])
    right = np.stack([w, ys], 1)
    body = np.concatenate([right, right[-2:0:-1] * (-1, 1)])
    top = ct - small
    lean = r.uniform(-0.15, 0.15)
    stem = _bezier((0, top + 0.05), (lean * 0.3, top - 0.15), (lean, top - r.uniform(0.22, 0.32)), 8)
    base = stem[4]
    ang = r.uniform(-0.5, 0.2)
    tip = base + r.uniform(0.35, 0.5) * np.array([math.cos(ang), math.sin(ang)])
    return [
        Part(body, role="body"),
        Part(stem, closed=False, fill=False, role="stem", width=0.07),
        Part(_lens(base, tip, 0.08, 0.1), role="leaf", optional=0.5),
    ]


def _house(r):
    wb, yr = r.uniform(0.65, 0.9), r.uniform(-0.3, 0.0)
    ov, ax = r.uniform(0.0, 0.15), r.uniform(-0.08, 0.08)
    parts = [Part(_rect(-wb, yr, wb, 1.0), role="wall")]
    if r.random() < 0.5:  # chimney on the right slope, behind the roof
        slope = lambda x: -1 + (x - ax) / (wb + ov - ax) * (yr + 1)  # noqa: E731
        x0 = ax + r.uniform(0.3, 0.5) * (wb - ax)
        x1 = x0 + r.uniform(0.14, 0.2)
        top = slope(x0) - r.uniform(0.15, 0.3)
        parts.append(Part(_pts((x0, slope(x0)), (x0, top), (x1, top), (x1, slope(x1))), closed=False, role="chimney"))
    parts.append(Part(_pts((-wb - ov, yr), (ax, -1.0), (wb + ov, yr)), role="roof"))
    dw, dh = wb * r.uniform(0.16, 0.24), (1 - yr) * r.uniform(0.45, 0.62)
    dx = r.choice([-1, 1]) * wb * r.uniform(0.0, 0.45)
    parts.append(Part(_pts((dx - dw, 1), (dx - dw, 1 - dh), (dx + dw, 1 - dh), (dx + dw, 1)), closed=False,
                      role="door", optional=0.1))
    ws = wb * r.uniform(0.18, 0.26)
    wx = -np.sign(dx or 1) * wb * 0.55
    wy = yr + (1 - yr) * 0.35
    parts.append(Part(_rect(wx - ws, wy - ws, wx + ws, wy + ws), role="window", optional=0.3))
    return parts


def _star(r):
    inner = r.uniform(0.38, 0.5)
    t = -np.pi / 2 + r.uniform(-0.1, 0.1) + np.arange(10) * np.pi / 5
    rad = np.where(np.arange(10) % 2 == 0, 1.0, inner) * r.uniform(0.93, 1.07, 10)
    return [Part(np.stack([rad * np.cos(t), rad * np.sin(t)], 1), role="body")]


def _fish(r):
    back, nose = (-0.45, 0.0), (1.0, r.uniform(-0.05, 0.05))
    up, down = r.uniform(0.38, 0.52), r.uniform(0.32, 0.45)
    body = _lens(back, nose, up, down, 24)
    upper = body[:24]  # the upper curve, from the tail joint to the nose
    top_at = lambda x: float(np.interp(x, upper[:, 0], upper[:, 1]))  # noqa: E731
    th, tb, notch = r.uniform(0.35, 0.5), r.uniform(0.35, 0.5), r.uniform(0.0, 0.14)
    tail = _pts((-0.4, 0.0), (-1.0, -th), (-1.0 + notch, 0.0), (-1.0, tb))
    fx = r.uniform(-0.1, 0.15)
    fin = _pts((fx, top_at(fx) + 0.04), (fx + 0.05, top_at(fx) - r.uniform(0.18, 0.28)),
               (fx + 0.35, top_at(fx + 0.35) + 0.04))
    return [
        Part(fin, closed=False, role="fin", optional=0.5),
        Part(tail, role="tail"),
        Part(body, role="body"),
        Part(_ellipse(0.6, -0.07 + nose[1], 0.08, 0.08, 16), role="eye", optional=0.2),
    ]


def _tree(r):
    R, ry, cy = 0.7, r.uniform(0.85, 1.05), -0.3
    k, amp, ph = int(r.integers(6, 10)), r.uniform(0.1, 0.18), r.uniform(0, np.pi)
    phi = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    rad = R * (1 + amp * (np.abs(np.sin(k * phi / 2 + ph)) - 0.6))
    crown = np.stack([rad * np.cos(phi), cy + ry * rad * np.sin(phi)], 1)
    tw = r.uniform(0.1, 0.18)
    y_in = cy + ry * R * 0.75  # the trunk starts inside the crown
    trunk = _pts((-tw, y_in), (-tw * r.uniform(1.0, 1.3), 1.0), (tw * r.uniform(1.0, 1.3), 1.0), (tw, y_in))
    return [Part(trunk, closed=False, role="trunk"), Part(crown, role="crown")]


def _car(r):
    y0, bottom = r.uniform(-0.05, 0.1), 0.45
    roof = y0 - r.uniform(0.4, 0.55)
    xa, xb = r.uniform(-0.65, -0.5), r.uniform(0.35, 0.55)
    ra, rb = xa + r.uniform(0.12, 0.25), xb - r.uniform(0.15, 0.3)
    body = _pts((-1, bottom), (-1, y0 + 0.06), (xa, y0), (ra, roof), (rb, roof), (xb, y0), (1, y0 + 0.08), (1, bottom))
    wr, wx = r.uniform(0.18, 0.24), r.uniform(0.5, 0.62)
    window = _pts((xa + 0.12, y0 - 0.04), (ra + 0.06, roof + 0.08), (rb - 0.06, roof + 0.08), (xb - 0.12, y0 - 0.04))
    parts = [Part(body, role="body"), Part(window, role="window", optional=0.35)]
    for x in (-wx, wx):
        parts.append(Part(_ellipse(x, bottom, wr, wr, 32), role="tire"))
        parts.append(Part(_ellipse(x, bottom, wr * 0.45, wr * 0.45, 16), role="hub", optional=0.6))
    return parts


def _cup(r):
    xl, xr, taper = -0.6, r.uniform(0.2, 0.35), r.uniform(0.0, 0.09)
    top, bot = -0.75, 0.75
    body = np.concatenate([
        _pts((xl, top), (xr, top)),
        _arc(xr - taper - 0.12, bot - 0.12, 0.12, 0.12, 0, np.pi / 2, 5),
        _arc(xl + taper + 0.12, bot - 0.12, 0.12, 0.12, np.pi / 2, np.pi, 5),
    ])
    hx, hy = xr - taper / 2, r.uniform(-0.1, 0.05)
    handle = _arc(hx, hy, r.uniform(0.3, 0.42), r.uniform(0.3, 0.42), -np.pi / 2 + 0.25, np.pi / 2 - 0.25, 16)
    handle = np.concatenate([[(hx - 0.03, handle[0, 1])], handle, [(hx - 0.03, handle[-1, 1])]])  # touch the body
    rim = _ellipse((xl + xr) / 2, top, (xr - xl) / 2, r.uniform(0.06, 0.1), 32)
    return [
        Part(handle, closed=False, fill=False, role="body", width=r.uniform(0.1, 0.14)),
        Part(body, role="body"),
        Part(rim, role="inside", optional=0.5),
    ]


def _umbrella(r):
    h, k = r.uniform(0.55, 0.75), int(r.integers(3, 6))
    dome = _arc(0, 0, 1, h, np.pi, 2 * np.pi, 32)
    ry = r.uniform(0.1, 0.18)
    edges = np.linspace(1, -1, k + 1)
    scallops = [_arc((a + b) / 2, 0, (a - b) / 2, ry, 0, -np.pi, 10)[1:] for a, b in zip(edges[:-1], edges[1:])]
    canopy = np.concatenate([dome] + scallops)[:-1]
    edge = np.concatenate(scallops)
    y_top = float(np.interp(0.0, edge[::-1, 0], edge[::-1, 1]))
    hr, yb = r.uniform(0.12, 0.18), r.uniform(0.75, 0.9)
    shaft = np.concatenate([_pts((0, y_top), (0, yb)), _arc(-hr, yb, hr, hr, 0, np.pi, 10)[1:]])
    return [
        Part(canopy, role="canopy"),
        Part(shaft, closed=False, fill=False, role="shaft", width=0.06),
        Part(_pts((0, -h), (0, -h - r.uniform(0.08, 0.15))), closed=False, fill=False, role="shaft", width=0.05,
             optional=0.5),
    ]


def _key(r):
    br, bt = r.uniform(0.3, 0.4), r.uniform(0.06, 0.1)
    bx = -1 + br
    x0 = bx + br * 0.9
    blade = [(x0, -bt), (1.0, -bt), (1.0, bt)]
    x = 1.0
    for _ in range(int(r.integers(2, 4))):
        tw, depth, gap = r.uniform(0.1, 0.16), r.uniform(0.15, 0.28), r.uniform(0.04, 0.12)
        blade += [(x - gap, bt), (x - gap, bt + depth), (x - gap - tw, bt + depth), (x - gap - tw, bt)]
        x -= gap + tw
    blade.append((x0, bt))
    return [
        Part(_pts(*blade), closed=False, role="metal"),
        Part(_ellipse(bx, 0, br, br * r.uniform(0.9, 1.1), 36), role="metal"),
        Part(_ellipse(bx - br * 0.2, 0, br * 0.35, br * 0.35, 16), role="hole", optional=0.35),
    ]


def _bicycle(r):
    wr, wx, yw = r.uniform(0.33, 0.42), r.uniform(0.55, 0.65), 0.35
    rear, front = np.array((-wx, yw)), np.array((wx, yw))
    bb = np.array((r.uniform(-0.15, 0.05), yw + r.uniform(-0.05, 0.05)))
    seat = np.array((bb[0] - r.uniform(0.12, 0.22), yw - r.uniform(0.55, 0.7)))
    head = np.array((wx - r.uniform(0.15, 0.25), seat[1] + r.uniform(-0.08, 0.05)))
    line = lambda *p, w=0.05, opt=0.0: Part(_pts(*p), closed=False, fill=False, role="frame", width=w,  # noqa: E731
                                             optional=opt)
    return [
        Part(_ellipse(*rear, wr, wr, 36), fill=False, role="tire", width=0.07),
        Part(_ellipse(*front, wr, wr, 36), fill=False, role="tire", width=0.07),
        line(rear, bb, seat, rear),
        line(seat, head, bb),
        line(head, front),
        line(seat + (-0.12, -0.08), seat + (0.12, -0.08), w=0.07, opt=0.2),  # saddle
        line(head, head + (-0.05, -0.18), head + (-0.22, -0.2), opt=0.15),  # handlebar
    ]


def _sun(r):
    rd, n = r.uniform(0.45, 0.55), int(r.integers(8, 13))
    parts = [Part(_ellipse(0, 0, rd, rd, 40), role="disc")]
    a0 = r.uniform(0, 2 * np.pi)
    for i in range(n):
        a = a0 + i * 2 * np.pi / n + r.uniform(-0.08, 0.08)
        r0, r1 = rd * r.uniform(1.15, 1.3), rd * r.uniform(1.7, 2.0)
        d = np.array((math.cos(a), math.sin(a)))
        parts.append(Part(np.stack([r0 * d, r1 * d]), closed=False, fill=False, role="ray", width=0.07))
    return parts


def _moon(r):
    d, dy, r2 = r.uniform(0.35, 0.55), r.uniform(-0.2, 0.05), r.uniform(0.85, 1.0)
    outer, inner = _ellipse(0, 0, 1, 1, 360), _ellipse(d, dy, r2, r2, 360)
    arc_out = _keep_contiguous(outer, np.hypot(outer[:, 0] - d, outer[:, 1] - dy) > r2)
    arc_in = _keep_contiguous(inner, np.hypot(inner[:, 0], inner[:, 1]) < 1)[::-1]
    crescent = np.concatenate([arc_out[::6], arc_in[::6]])
    return [Part(crescent, role="body")]


def _cloud(r):
    # Puffs on a low arch over a flat base: the end puffs sit on the base, the middle ones rise.
    base, n = 0.35, int(r.integers(4, 7))
    re_ = r.uniform(0.22, 0.3)
    width, rise = 1 - re_, r.uniform(0.45, 0.65)
    centres = []
    for j, t in enumerate(np.linspace(np.pi, 2 * np.pi, n)):
        rad = re_ if j in (0, n - 1) else r.uniform(0.3, 0.42)
        cx = width * math.cos(t) * (1 if j in (0, n - 1) else 0.92)
        cy = base - re_ + rise * math.sin(t) + (0 if j in (0, n - 1) else rad - re_)
        centres.append((cx + (0 if j in (0, n - 1) else r.uniform(-0.04, 0.04)), cy, rad))
    for j in range(1, n - 1):  # neighbouring puffs must overlap, or the outline would dip to the base
        gap = max(math.dist(centres[j][:2], centres[k][:2]) for k in (j - 1, j + 1))
        centres[j] = (centres[j][0], centres[j][1], max(centres[j][2], 0.62 * gap))
    xs = np.linspace(-1, 1, 142)[1:-1]  # open ends: the outermost points come from the side arcs below
    ys = np.full_like(xs, base)
    for cx, cy, rad in centres:  # upper envelope of the puffs
        inside = np.abs(xs - cx) < rad
        ys[inside] = np.minimum(ys[inside], cy - np.sqrt(rad**2 - (xs[inside] - cx) ** 2))
    (lx, ly, lr), (rx, ry_, rr) = centres[0], centres[-1]
    outline = np.concatenate([
        np.stack([xs, ys], 1),
        _arc(rx, ry_, rr, rr, 0, np.pi / 2, 8),
        _arc(lx, ly, lr, lr, np.pi / 2, np.pi, 8),
    ])
    return [Part(outline, role="body")]


def _flower(r):
    cy, rc = -0.4, r.uniform(0.14, 0.2)
    n, pl = int(r.integers(5, 9)), r.uniform(0.32, 0.42)
    pw = min(pl * 0.5, (rc + pl / 2) * math.sin(np.pi / n) * 1.25)
    a0 = r.uniform(0, 2 * np.pi)
    parts = [Part(_pts((0, cy + rc), (r.uniform(-0.12, 0.12), 0.3), (r.uniform(-0.08, 0.08), 1.0)), closed=False,
                  fill=False, role="stem", width=0.06)]
    parts[0].points = _bezier(*parts[0].points, 12)
    side = r.choice([-1, 1])
    base = parts[0].points[7]
    tip = base + (side * r.uniform(0.3, 0.4), -r.uniform(0.1, 0.25))
    parts.append(Part(_lens(base, tip, 0.08, 0.08), role="leaf", optional=0.4))
    for i in range(n):
        a = a0 + i * 2 * np.pi / n
        d = rc + pl * 0.42
        petal = _ellipse(d * math.cos(a), cy + d * math.sin(a), pl / 2, pw, 32, rot=a)
        petal = _keep_contiguous(petal, np.hypot(petal[:, 0], petal[:, 1] - cy) > rc * 0.95)
        parts.append(Part(petal, closed=False, role="petal"))
    parts.append(Part(_ellipse(0, cy, rc, rc, 24), role="center"))
    return parts


def _envelope(r):
    h, apex = r.uniform(0.55, 0.72), r.uniform(-0.05, 0.25)
    parts = [Part(_rect(-1, -h, 1, h), role="paper"),
             Part(_pts((-1, -h), (0, apex), (1, -h)), closed=False, role="flap")]
    if r.random() > 0.4:  # the lower folds
        y = h * r.uniform(0.0, 0.3)
        parts.append(Part(_pts((-1, h), (-0.25, y)), closed=False, fill=False, role="fold", width=0.03))
        parts.append(Part(_pts((1, h), (0.25, y)), closed=False, fill=False, role="fold", width=0.03))
    return parts


def _clock(r):
    parts = [Part(_ellipse(0, 0, 1, 1, 48), role="face"),
             Part(_ellipse(0, 0, 1, 1, 48), fill=False, role="rim", width=r.uniform(0.08, 0.16), sketch=False)]
    ticks = int(r.choice([0, 4, 12], p=[0.35, 0.3, 0.35]))
    for i in range(ticks):
        d = np.array((math.cos(i * 2 * np.pi / ticks), math.sin(i * 2 * np.pi / ticks)))
        parts.append(Part(np.stack([0.72 * d, 0.86 * d]), closed=False, fill=False, role="hand", width=0.05))
    for length, width in ((r.uniform(0.4, 0.5), 0.09), (r.uniform(0.62, 0.75), 0.065)):
        a = r.uniform(0, 2 * np.pi)
        parts.append(Part(_pts((0, 0), (length * math.cos(a), length * math.sin(a))), closed=False, fill=False,
                          role="hand", width=width))
    return parts


def _door(r):
    w, kx = r.uniform(0.42, 0.55), r.uniform(0.6, 0.8)
    parts = [Part(_rect(-w, -1, w, 1), role="door")]
    if r.random() < 0.45:
        m = w * 0.22
        parts.append(Part(_rect(-w + m, -1 + m * 1.5, w - m, -0.12), role="panel"))
        parts.append(Part(_rect(-w + m, 0.12, w - m, 1 - m * 1.5), role="panel"))
    kr = r.uniform(0.05, 0.08)
    parts.append(Part(_ellipse(w * kx * r.choice([-1, 1]), r.uniform(-0.05, 0.1), kr, kr, 12), role="knob",
                      optional=0.1))
    return parts


def _ladder(r):
    wt, wb = r.uniform(0.26, 0.36), r.uniform(0.32, 0.42)
    n = int(r.integers(4, 7))
    parts = [Part(_pts((-wt, -1), (-wb, 1)), closed=False, fill=False, role="wood", width=0.09),
             Part(_pts((wt, -1), (wb, 1)), closed=False, fill=False, role="wood", width=0.09)]
    for y in np.linspace(-1, 1, n + 2)[1:-1] + r.uniform(-0.04, 0.04):
        w = wt + (wb - wt) * (y + 1) / 2
        parts.append(Part(_pts((-w, y), (w, y)), closed=False, fill=False, role="wood", width=0.07))
    return parts


def _hat(r):
    ch, cw = r.uniform(0.7, 1.2), r.uniform(0.42, 0.55)
    by, bw, bh = 0.4, 1.0, r.uniform(0.13, 0.2)
    top = by - ch
    dent = r.uniform(0.0, 0.1)
    crown = np.concatenate([
        _pts((-cw, by), (-cw * 0.92, top + 0.12)),
        _bezier((-cw * 0.85, top), (0, top + dent * 2), (cw * 0.85, top), 10),
        _pts((cw * 0.92, top + 0.12), (cw, by)),
    ])
    bandh = ch * r.uniform(0.15, 0.25)
    band = _pts((-cw, by), (-cw * 0.97, by - bandh), (cw * 0.97, by - bandh), (cw, by))
    return [
        Part(_ellipse(0, by, bw, bh, 40), role="brim"),
        Part(crown, closed=False, role="hat"),
        Part(band, closed=False, role="band", optional=0.4),
    ]


def _bowtie(r):
    kw, kh, wh = r.uniform(0.12, 0.2), r.uniform(0.15, 0.25), r.uniform(0.5, 0.7)
    bulge = r.uniform(-0.05, 0.12)
    left = np.concatenate([_pts((-kw, -kh * 0.8), (-1, -wh)), _bezier((-1, -wh), (-1 - bulge, 0), (-1, wh), 8)[1:],
                           _pts((-kw, kh * 0.8))])
    right = left * (-1, 1)
    return [Part(left, closed=False, role="wing"), Part(right, closed=False, role="wing"),
            Part(_rect(-kw, -kh, kw, kh), role="knot")]


def _candle(r):
    w, top = r.uniform(0.22, 0.34), r.uniform(-0.45, -0.25)
    fy, fh, fw = top - 0.35, r.uniform(0.3, 0.45), r.uniform(0.12, 0.2)
    t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    flame = np.stack([fw * np.sin(t) * np.abs(np.sin(t / 2)) ** 0.8, fy - fh * np.cos(t) * 0.9], 1) + (0, fh * 0.1)
    return [
        Part(_rect(-w, top, w, 1.0), role="wax"),
        Part(_pts((0, top), (r.uniform(-0.03, 0.03), top - 0.18)), closed=False, fill=False, role="wick", width=0.04),
        Part(flame, role="flame"),
    ]


def _mushroom(r):
    cw, chh, sw = 1.0, r.uniform(0.55, 0.8), r.uniform(0.18, 0.3)
    sag = r.uniform(0.0, 0.12)
    underside = _bezier((cw, 0), (0, sag * 2), (-cw, 0), 10)[1:-1]
    cap = np.concatenate([_arc(0, 0, cw, chh, np.pi, 2 * np.pi, 32), underside])
    stem = _pts((-sw, sag * 0.5), (-sw * r.uniform(1.0, 1.3), 1.0), (sw * r.uniform(1.0, 1.3), 1.0), (sw, sag * 0.5))
    parts = [Part(stem, closed=False, role="stem"), Part(cap, role="cap")]
    for _ in range(int(r.integers(0, 5))):
        a = r.uniform(np.pi * 1.15, np.pi * 1.85)
        d, sr = r.uniform(0.3, 0.65), r.uniform(0.07, 0.13)
        parts.append(Part(_ellipse(d * cw * math.cos(a), d * chh * math.sin(a), sr, sr * 0.85, 14), role="spot",
                          optional=0.3))
    return parts


def _leaf(r):
    tip, base = (r.uniform(-0.08, 0.08), -1.0), (0.0, 0.65)
    a, b = r.uniform(0.4, 0.6), r.uniform(0.4, 0.6)
    blade = _lens(base, tip, a, b, 22)
    parts = [Part(_pts(base, (r.uniform(-0.05, 0.1), 1.0)), closed=False, fill=False, role="stem", width=0.06),
             Part(blade, role="leaf"),
             Part(_pts(base, (tip[0] * 0.8, -0.8)), closed=False, fill=False, role="vein", width=0.03)]
    for y in np.linspace(0.35, -0.45, int(r.integers(2, 5))):
        for side in (-1, 1):
            parts.append(Part(_pts((0, y), (side * 0.3, y - 0.25)), closed=False, fill=False, role="vein",
                              width=0.022, optional=0.6))
    return parts


def _lightning(r):
    j = lambda x, y, s=0.06: (x + r.uniform(-s, s), y + r.uniform(-s, s))  # noqa: E731
    bolt = _pts(j(-0.1, -1), j(0.55, -1), j(0.1, -0.12), j(0.45, -0.12), j(-0.45, 1.0, 0.03), j(-0.05, 0.2),
                j(-0.45, 0.2))
    return [Part(bolt, role="bolt")]


def _heart(r):
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    x = 16 * np.sin(t) ** 3 * r.uniform(0.9, 1.15)
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)) * r.uniform(0.9, 1.1)
    return [Part(np.stack([x, y], 1) / 16, role="body")]


def _diamond(r):
    tw, gy, gw = r.uniform(0.4, 0.6), r.uniform(-0.45, -0.25), 1.0
    top = -0.8
    outline = _pts((-tw, top), (tw, top), (gw, gy), (0, 1), (-gw, gy))
    parts = [Part(outline, role="gem"),
             Part(_pts((-gw, gy), (gw, gy)), closed=False, fill=False, role="facet", width=0.03)]
    for x0, x1 in ((-tw, -tw * 0.35), (tw, tw * 0.35)):  # crown facets
        parts.append(Part(_pts((x0 * 0.4 + x1 * 0.6, top), (x1 * 1.6, gy)), closed=False, fill=False, role="facet",
                          width=0.025, optional=0.5))
    for x in (-0.45, 0.45):  # pavilion facets
        parts.append(Part(_pts((x, gy), (0, 1)), closed=False, fill=False, role="facet", width=0.025, optional=0.4))
    return parts


def _triangle(r):
    apex = (r.uniform(-0.15, 0.15), -1.0)
    return [Part(_pts(apex, (1.0, 0.75 + r.uniform(-0.05, 0.05)), (-1.0, 0.75 + r.uniform(-0.05, 0.05))),
                 role="body")]


def _square(r):
    return [Part(_rect(-1, -1, 1, 1) + r.uniform(-0.05, 0.05, (4, 2)), role="body")]


def _circle(r):
    return [Part(_ellipse(0, 0, 1, r.uniform(0.93, 1.07), 48), role="body")]


def _hexagon(r):
    start = -np.pi / 2 if r.random() < 0.5 else 0.0  # pointy or flat top
    return [Part(_regular(6, 1.0, start) + r.uniform(-0.03, 0.03, (6, 2)), role="body")]


def _octagon(r):
    return [Part(_regular(8, 1.0, np.pi / 8) + r.uniform(-0.03, 0.03, (8, 2)), role="body")]


def _axe(r):
    hw, top = r.uniform(0.06, 0.09), -0.85
    ey0, ey1 = -1.05 - r.uniform(0.0, 0.1), -0.2 + r.uniform(-0.05, 0.1)
    ex = r.uniform(0.7, 0.85)
    blade = np.concatenate([
        _pts((hw, top + 0.03)),
        _bezier((hw, top + 0.03), (ex * 0.5, -0.9), (ex, ey0), 6)[1:],
        _bezier((ex, ey0), (ex + r.uniform(0.08, 0.18), (ey0 + ey1) / 2), (ex, ey1), 10)[1:],
        _bezier((ex, ey1), (ex * 0.45, -0.45), (hw, -0.5), 6)[1:],
    ])
    poll = _pts((-hw, top + 0.05), (-hw - r.uniform(0.12, 0.2), top + 0.08), (-hw - 0.15, -0.55), (-hw, -0.52))
    return [Part(blade, closed=False, role="metal"), Part(poll, closed=False, role="metal", optional=0.5),
            Part(_rect(-hw, top, hw, 1.0), role="wood")]


def _hammer(r):
    hw, hy0, hy1 = r.uniform(0.06, 0.09), -1.0, -1.0 + r.uniform(0.28, 0.38)
    hl, hr = -r.uniform(0.6, 0.75), r.uniform(0.25, 0.35)
    head = _pts((hl, hy0), (hr, hy0), (hr + 0.25, hy0 + 0.04), (hr + 0.5, hy0 + 0.22), (hr + 0.22, hy0 + 0.17),
                (hr, hy1), (hl, hy1))
    claw = r.random() < 0.7
    if not claw:
        head = _rect(hl, hy0, -hl, hy1)
    return [Part(_rect(-hw, hy1 - 0.05, hw, 1.0), role="wood"), Part(head, role="metal")]


def _sailboat(r):
    hy, hd, mx = r.uniform(0.3, 0.45), r.uniform(0.35, 0.5), r.uniform(-0.1, 0.15)
    hull = _pts((-0.95, hy), (0.95, hy), (0.6 - r.uniform(0, 0.15), hy + hd), (-0.6 + r.uniform(0, 0.15), hy + hd))
    sy = hy - r.uniform(0.05, 0.12)
    parts = [Part(_pts((mx, hy), (mx, -1)), closed=False, fill=False, role="mast", width=0.05),
             Part(_pts((mx - 0.03, -0.95), (mx - 0.03, sy), (mx - r.uniform(0.75, 0.9), sy)), role="sail"),
             Part(_pts((mx + 0.06, -0.8), (mx + 0.06, sy), (mx + r.uniform(0.55, 0.75), sy)), role="sail2",
                  optional=0.45),
             Part(hull, role="hull")]
    return parts


def _fork(r):
    n, hw = int(r.integers(3, 5)), r.uniform(0.06, 0.09)
    hw_head, ty = r.uniform(0.32, 0.4), -0.3
    parts = [Part(np.concatenate([_pts((-hw, 0.0)), _pts((-hw * 1.6, 1.0), (hw * 1.6, 1.0)), _pts((hw, 0.0))]),
                  closed=False, role="handle"),
             Part(np.concatenate([_pts((-hw_head, ty - 0.02), (hw_head, ty - 0.02)),
                                  _bezier((hw_head, ty), (hw_head * 0.7, -0.05), (hw, 0.02), 6),
                                  _bezier((-hw, 0.02), (-hw_head * 0.7, -0.05), (-hw_head, ty), 6)]), role="metal")]
    tine_len = r.uniform(0.6, 0.75)
    for x in np.linspace(-hw_head + 0.03, hw_head - 0.03, n):
        parts.append(Part(_pts((x, ty), (x, ty - tine_len)), closed=False, fill=False, role="metal", width=0.07))
    return parts


_MODELS: dict[str, Callable[[np.random.Generator], list[Part]]] = {
    "apple": _apple, "pear": _pear, "house": _house, "star": _star, "fish": _fish, "tree": _tree, "car": _car,
    "cup": _cup, "umbrella": _umbrella, "key": _key, "bicycle": _bicycle, "sun": _sun, "moon": _moon,
    "cloud": _cloud, "flower": _flower, "envelope": _envelope, "clock": _clock, "door": _door,
    "ladder": _ladder, "hat": _hat, "bowtie": _bowtie, "candle": _candle, "mushroom": _mushroom, "leaf": _leaf,
    "lightning": _lightning, "heart": _heart, "diamond": _diamond, "triangle": _triangle, "square": _square,
    "circle": _circle, "hexagon": _hexagon, "octagon": _octagon, "axe": _axe, "hammer": _hammer,
    "sailboat": _sailboat, "fork": _fork,
}

#: All classes of the benchmark (QuickDraw category names, single common English words).
DOODLE_CLASSES: list[str] = list(_MODELS)

#: The zero-shot test classes. Each has a seen relative that shares part of its look or meaning, so the split
#: is not trivially separable: pear~apple, hexagon~octagon, clock~circle, umbrella~mushroom,
#: sailboat~triangle, fork~key/hammer, ladder~door, moon~sun/circle, diamond~triangle.
DOODLE_UNSEEN: list[str] = ["pear", "hexagon", "clock", "umbrella", "sailboat", "fork", "ladder", "moon", "diamond"]

# Objects with no natural upright pose get larger rotations; plain shapes small ones (a square turned by 45
# degrees would be a rhombus, and "diamond" is a class).
_FREE_ROTATION = {"leaf", "key", "fork", "axe", "hammer", "moon", "fish", "lightning", "bowtie"}
_SHAPES = {"triangle", "square", "circle", "hexagon", "octagon", "star", "heart", "diamond"}

# ----------------------------------------------------------------------------------------------------------
# Colours. Objects get their usual colours (an apple is red, green or yellow), plain shapes any colour.
# ----------------------------------------------------------------------------------------------------------

_VIVID = [(205, 35, 40), (40, 150, 60), (235, 195, 35), (40, 90, 200), (240, 130, 30), (130, 60, 170),
          (235, 110, 160), (40, 175, 190), (120, 75, 40), (90, 90, 95), (230, 230, 225)]
_WOOD = [(130, 85, 45), (160, 110, 60), (100, 65, 35), (185, 140, 90)]
_METAL = [(185, 190, 198), (150, 155, 165), (205, 170, 70), (120, 125, 135)]
_GREEN = [(60, 150, 50), (90, 170, 60), (40, 120, 50), (120, 170, 40)]
_DARK = [(35, 35, 40), (60, 50, 45), (30, 40, 60)]
_PALE = [(245, 240, 225), (235, 235, 240), (250, 245, 235)]

_PALETTES: dict[str, dict[str, list | None]] = {  # None: a shade of the main colour
    "apple": {"body": [(200, 25, 35), (170, 20, 30), (120, 190, 50), (225, 190, 40)], "stem": _WOOD, "leaf": _GREEN},
    "pear": {"body": [(170, 200, 60), (210, 200, 70), (150, 180, 50), (200, 160, 60)], "stem": _WOOD,
             "leaf": _GREEN},
    "house": {"wall": [(230, 215, 180), (200, 90, 60), (240, 240, 235), (180, 200, 220), (240, 220, 140)],
              "roof": [(150, 40, 35), (90, 60, 50), (70, 75, 90), (180, 80, 40)], "chimney": [(150, 70, 50)],
              "door": _WOOD, "window": [(150, 200, 240), (200, 230, 250), (250, 230, 140)]},
    "star": {"body": [(240, 200, 30), (250, 220, 70), (230, 160, 30), (220, 60, 50)]},
    "fish": {"body": [(240, 130, 30), (40, 110, 200), (230, 190, 40), (200, 60, 60), (60, 170, 170)],
             "tail": None, "fin": None, "eye": _DARK},
    "tree": {"crown": _GREEN + [(200, 120, 30)], "trunk": _WOOD},
    "car": {"body": [(200, 30, 35), (40, 80, 190), (240, 200, 40), (40, 140, 70), (230, 230, 230), (40, 40, 45)],
            "window": [(150, 200, 240), (100, 130, 160)], "tire": _DARK, "hub": _METAL},
    "cup": {"body": _VIVID, "inside": [(90, 50, 25), (60, 35, 20), (240, 235, 220)]},
    "umbrella": {"canopy": _VIVID, "shaft": _DARK + _WOOD},
    "key": {"metal": _METAL, "hole": _DARK},
    "bicycle": {"tire": _DARK, "frame": _VIVID},
    "sun": {"disc": [(250, 200, 30), (245, 160, 30), (250, 220, 80)], "ray": [(250, 190, 30), (240, 140, 30)]},
    "moon": {"body": [(245, 235, 160), (230, 230, 220), (250, 220, 90), (200, 200, 190)]},
    "cloud": {"body": [(245, 245, 250), (215, 220, 230), (170, 175, 185), (235, 240, 250)]},
    "flower": {"petal": [(230, 60, 90), (240, 200, 40), (150, 80, 200), (250, 250, 245), (240, 130, 40),
                         (230, 120, 180)], "center": [(240, 190, 30), (110, 70, 30)], "stem": _GREEN, "leaf": _GREEN},
    "envelope": {"paper": [(245, 240, 225), (225, 200, 160), (250, 250, 250), (200, 220, 240)], "flap": None,
                 "fold": [(150, 140, 120)]},
    "clock": {"face": _PALE, "rim": _VIVID + _METAL, "hand": _DARK},
    "door": {"door": _WOOD + [(180, 40, 40), (60, 90, 150), (235, 235, 230)], "panel": None, "knob": _METAL},
    "ladder": {"wood": _WOOD + _METAL},
    "hat": {"hat": [(40, 40, 45), (120, 80, 50), (60, 60, 90), (180, 150, 100), (150, 30, 40)], "brim": None,
            "band": _VIVID},
    "bowtie": {"wing": _VIVID, "knot": None},
    "candle": {"wax": [(240, 235, 220), (210, 40, 50), (240, 200, 210), (250, 230, 150), (150, 200, 240)],
               "wick": _DARK, "flame": [(250, 170, 30), (250, 210, 60), (245, 120, 30)]},
    "mushroom": {"cap": [(200, 30, 35), (150, 95, 55), (210, 170, 110), (230, 120, 40)],
                 "stem": [(240, 235, 220), (225, 215, 190)], "spot": [(250, 250, 245)]},
    "leaf": {"leaf": _GREEN + [(220, 120, 30), (200, 60, 30), (230, 190, 40)], "stem": None, "vein": None},
    "lightning": {"bolt": [(250, 210, 30), (250, 180, 20), (255, 230, 90)]},
    "heart": {"body": [(215, 25, 45), (240, 90, 140), (190, 20, 60), (250, 130, 160)]},
    "diamond": {"gem": [(170, 225, 245), (215, 240, 250), (120, 190, 235), (240, 170, 220)], "facet": None},
    "axe": {"metal": _METAL, "wood": _WOOD},
    "hammer": {"metal": _METAL, "wood": _WOOD + [(200, 40, 40), (240, 190, 30)]},
    "sailboat": {"sail": _PALE + [(240, 80, 60)], "sail2": _PALE + [(40, 90, 200)], "mast": _WOOD,
                 "hull": _WOOD + [(200, 40, 40), (40, 60, 120), (240, 240, 240)]},
    "fork": {"metal": _METAL[:2], "handle": _METAL[:2] + _WOOD + [(40, 40, 45)]},
}


def _part_colours(cls: str, parts: list[Part], rng: np.random.Generator) -> list[np.ndarray]:
    """One colour per role (so a fish's tail matches its body), jittered.

    Roles whose palette is ``None`` (fins, flap, panels, facets...) take a darker or lighter shade of the first
    role that has its own palette, whatever the drawing order."""
    palette = _PALETTES.get(cls, {})
    roles = list(dict.fromkeys(p.role for p in parts))
    by_role: dict[str, np.ndarray] = {}
    for role in roles:
        choices = palette.get(role, _VIVID)
        if choices is not None:
            col = np.array(choices[int(rng.integers(len(choices)))], float)
            by_role[role] = np.clip(col + rng.normal(0, 10, 3), 0, 255)
    main = next(iter(by_role.values()), np.array(_VIVID[int(rng.integers(len(_VIVID)))], float))
    for role in roles:
        if role not in by_role:
            by_role[role] = main * rng.uniform(0.6, 0.8) if rng.random() < 0.6 else main + (255 - main) * 0.4
    return [by_role[p.role] for p in parts]


# ----------------------------------------------------------------------------------------------------------
# Geometry shared by both renderers
# ----------------------------------------------------------------------------------------------------------


def _instance(cls: str, rng: np.random.Generator, modality: str) -> list[Part]:
    """A fresh instance of a class: parts with details dropped, centred, scaled to [-1, 1], posed."""
    parts = [p for p in _MODELS[cls](rng) if getattr(p, modality) and rng.random() >= p.optional]
    pts = np.concatenate([p.points for p in parts])
    lo, hi = pts.min(0), pts.max(0)
    centre, half = (lo + hi) / 2, max((hi - lo).max() / 2, 1e-6)
    parts = [replace(p, points=(p.points - centre) / half, width=p.width / half) for p in parts]

    if modality == "sketch":
        aspect, shear = rng.uniform(0.85, 1.18), rng.uniform(-0.08, 0.08)
        max_rot = 0.08 if cls in _SHAPES else (0.35 if cls in _FREE_ROTATION else 0.17)
    else:  # photos get wider pose changes than sketches, so no photo repeats a sketch's pose
        aspect, shear = rng.uniform(0.78, 1.28), rng.uniform(-0.12, 0.12)
        max_rot = 0.15 if cls in _SHAPES else (0.75 if cls in _FREE_ROTATION else 0.35)
    theta = rng.uniform(-max_rot, max_rot)
    c, s = math.cos(theta), math.sin(theta)
    flip = -1.0 if (rng.random() < 0.5 and cls not in _SHAPES) else 1.0
    m = np.array([[c, -s], [s, c]]) @ np.array([[1, shear], [0, 1]]) @ np.diag([flip * math.sqrt(aspect),
                                                                                 1 / math.sqrt(aspect)])
    scale = math.sqrt(abs(np.linalg.det(m)))
    return [replace(p, points=p.points @ m.T, width=p.width * scale) for p in parts]


def _resample(points: np.ndarray, step: float) -> np.ndarray:
    """Points every ``step`` along the polyline (end points kept)."""
    seg = np.hypot(*np.diff(points, axis=0).T)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= step:
        return points[[0, -1]]
    t = np.append(np.arange(0.0, s[-1], step), s[-1])
    return np.stack([np.interp(t, s, points[:, 0]), np.interp(t, s, points[:, 1])], 1)


def _rdp(points: np.ndarray, eps: float) -> np.ndarray:
    """Ramer-Douglas-Peucker simplification, as used for QuickDraw's simplified drawings."""
    n = len(points)
    if n < 3:
        return points
    keep = np.zeros(n, bool)
    keep[[0, -1]] = True
    stack = [(0, n - 1)]
    while stack:
        i, j = stack.pop()
        if j <= i + 1:
            continue
        a, b, mid = points[i], points[j], points[i + 1 : j]
        d = b - a
        norm = math.hypot(*d)
        if norm < 1e-9:  # a loop: distance to the shared end point
            dist = np.hypot(*(mid - a).T)
        else:
            dist = np.abs(d[0] * (mid[:, 1] - a[1]) - d[1] * (mid[:, 0] - a[0])) / norm
        k = int(np.argmax(dist))
        if dist[k] > eps:
            keep[i + 1 + k] = True
            stack += [(i, i + 1 + k), (i + 1 + k, j)]
    return points[keep]


# ----------------------------------------------------------------------------------------------------------
# Sketches
# ----------------------------------------------------------------------------------------------------------

_COUNTRIES = ["US", "GB", "DE", "FR", "BR", "CA", "JP", "IN", "RU", "AU", "KR", "IT", "PL", "SE", "MX", "TH",
              "CZ", "NL", "FI", "ES", "HU", "SA", "PH", "ID"]


def _wobble(n: int, length: float, amp: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth hand tremor and drift along a stroke: a few low-frequency sinusoids in arc length, per axis."""
    s = np.linspace(0, length, n)[:, None]
    out = np.zeros((n, 2))
    for wavelength in (rng.uniform(0.25, 0.45), rng.uniform(0.6, 1.2), rng.uniform(1.5, 3.0)):
        a = amp * rng.uniform(0.3, 1.0, 2) * (wavelength / 1.5) ** 0.5
        out += a * np.sin(2 * np.pi * s / wavelength + rng.uniform(0, 2 * np.pi, 2))
    return out


def _pen_paths(pts: np.ndarray, closed: bool, rng: np.random.Generator) -> list[np.ndarray]:
    """How a person traces one part: dense paths (0.01 apart) with a random start, direction and closure."""
    if closed and len(pts) <= 10 and rng.random() < 0.3:
        # A polygon drawn side by side: cut the loop at 2-4 corners, one stroke per run of sides.
        n = len(pts)
        cuts = np.sort(rng.choice(n, size=int(rng.integers(2, min(n, 4) + 1)), replace=False))
        paths = []
        for a, b in zip(cuts, np.roll(cuts, -1)):
            run = pts[[(a + k) % n for k in range((b - a) % n + 1)]]
            run = _resample(run, 0.01)
            paths.append(run[::-1] if rng.random() < 0.3 else run)
        return paths
    if closed:
        dense = _resample(np.concatenate([pts, pts[:1]]), 0.01)[:-1]
        dense = np.roll(dense, -int(rng.integers(len(dense))), 0)  # start anywhere on the loop
        end = 1.0 + (rng.uniform(-0.05, 0.0) if rng.random() < 0.5 else rng.uniform(0.0, 0.1))  # short / overshoot
        dense = np.concatenate([dense, dense])[: max(2, int(len(dense) * end))]
        return [dense[::-1] if rng.random() < 0.5 else dense]
    dense = _resample(pts, 0.01)
    return [dense[::-1] if rng.random() < 0.4 else dense]


def _human_strokes(parts: list[Part], rng: np.random.Generator) -> list[np.ndarray]:
    """Turn parts into hand-drawn strokes (still in normalised coordinates)."""
    shaky = rng.uniform(0.008, 0.03)  # how unsteady this particular person is
    order = list(range(len(parts)))
    if rng.random() < 0.15:
        rng.shuffle(order)
    else:  # mostly outline first, details later, with a few neighbouring swaps
        for i in range(len(order) - 1):
            if rng.random() < 0.25:
                order[i], order[i + 1] = order[i + 1], order[i]
    strokes = []
    for idx in order:
        p = parts[idx]
        # People place and size each part a little off: shift, scale and turn it about its own centre.
        c = p.points.mean(0)
        a = rng.normal(0, 0.04)
        turn = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) * rng.uniform(0.92, 1.08)
        pts = (p.points - c) @ turn.T + c + rng.normal(0, 0.025, 2)
        for path in _pen_paths(pts, p.closed, rng):
            dense = path + _wobble(len(path), len(path) * 0.01, shaky, rng)
            if len(dense) > 40 and rng.random() < 0.15:  # the pen lifts half-way: a gap or a small overlap
                cut = int(len(dense) * rng.uniform(0.3, 0.7))
                strokes += [dense[:cut], dense[cut - int(rng.integers(0, 4)) :] + rng.normal(0, 0.015, 2)]
            else:
                strokes.append(dense)
    return strokes


def _to_quickdraw(strokes: list[np.ndarray], rng: np.random.Generator) -> list[list[list[int]]]:
    """Google's simplification: align top-left, longer side to 255, resample at 1 unit, RDP with epsilon 2."""
    allp = np.concatenate(strokes)
    lo = allp.min(0)
    scale = 255.0 / max((allp.max(0) - lo).max(), 1e-6)
    simple = []
    for s in strokes:
        s = _rdp(_resample((s - lo) * scale, 1.0), 2.0)
        s = s + rng.uniform(-0.8, 0.8, s.shape)  # the tiny per-point jitter of a real touch screen
        simple.append(s)
    # Rounding and jitter move the extremes a little: re-align so min is exactly 0 and the longer side 255.
    allp = np.concatenate(simple)
    lo = allp.min(0)
    scale = 255.0 / max((allp.max(0) - lo).max(), 1e-6)
    drawing = []
    for s in simple:
        q = np.clip(np.rint((s - lo) * scale), 0, 255).astype(int)
        q = q[np.concatenate([[True], np.any(q[1:] != q[:-1], axis=1)])]  # no repeated points
        drawing.append([q[:, 0].tolist(), q[:, 1].tolist()])
    return drawing


def _class_key(cls: str) -> int:
    return zlib.crc32(cls.encode("utf-8"))


def _rng(seed: int, cls: str, modality: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _class_key(cls), modality, index]))


def make_sketch(cls: str, index: int, seed: int = 0) -> dict:
    """One QuickDraw-style record (a dict ready for ``json.dumps``) for item ``index`` of ``cls``."""
    rng = _rng(seed, cls, 0, index)
    drawing = _to_quickdraw(_human_strokes(_instance(cls, rng, "sketch"), rng), rng)
    month, day = int(rng.integers(1, 13)), int(rng.integers(1, 29))
    hms = (int(rng.integers(24)), int(rng.integers(60)), int(rng.integers(60)), int(rng.integers(100000)))
    return {
        "word": cls,
        "countrycode": _COUNTRIES[int(rng.integers(len(_COUNTRIES)))],
        "timestamp": f"2017-{month:02d}-{day:02d} {hms[0]:02d}:{hms[1]:02d}:{hms[2]:02d}.{hms[3]:05d} UTC",
        "recognized": True,
        # Fixed-width class and seed fields then the index: unique within a dataset, all digits like Google's.
        "key_id": f"5{_class_key(cls):010d}{seed % 10000:04d}{index:05d}",
        "drawing": drawing,
    }


# ----------------------------------------------------------------------------------------------------------
# Photos
# ----------------------------------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return x, y


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int = 1) -> np.ndarray:
    """Value noise in [0, 1]: a small random grid upsampled bicubically."""
    low = (rng.random((cells, cells, channels)) * 255).astype(np.uint8)
    img = Image.fromarray(low[..., 0] if channels == 1 else low).resize((size, size), Image.BICUBIC)
    arr = np.asarray(img, np.float32) / 255.0
    return arr if channels > 1 else arr[..., None]


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3).astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A varied scene behind the object (float32 RGB, 0-255)."""
    x, y = _grid(size)
    c1, c2 = _random_colour(rng), _random_colour(rng)
    kind = int(rng.integers(5))
    if kind == 0:  # linear gradient
        a = rng.uniform(0, 2 * np.pi)
        t = np.clip((x - 0.5) * math.cos(a) + (y - 0.5) * math.sin(a) + 0.5, 0, 1)[..., None]
        bg = c1 * (1 - t) + c2 * t
    elif kind == 1:  # radial vignette
        cx, cy = rng.uniform(0.2, 0.8, 2)
        t = np.clip(np.hypot(x - cx, y - cy) * rng.uniform(1.0, 1.8), 0, 1)[..., None]
        bg = c1 * (1 - t) + c2 * t
    elif kind == 2:  # coloured value noise (foliage, fabric, blurry scenery)
        noise = _smooth_noise(rng, size, int(rng.integers(3, 10)), 3) - 0.5
        bg = c1 + noise * rng.uniform(60, 200)
    elif kind == 3:  # stripes or checks
        a, period = rng.uniform(0, np.pi), rng.uniform(0.08, 0.3)
        t = np.sin(2 * np.pi * ((x * math.cos(a) + y * math.sin(a)) / period))
        if rng.random() < 0.3:
            t = t * np.sin(2 * np.pi * ((-x * math.sin(a) + y * math.cos(a)) / period))
        t = (np.clip(t * 3, -1, 1)[..., None] + 1) / 2
        bg = c1 * (1 - t) + c2 * t
    else:  # a table top under a wall
        horizon = rng.uniform(0.45, 0.8) + (x - 0.5) * rng.uniform(-0.2, 0.2)
        t = np.clip((y - horizon) * size / 3, 0, 1)[..., None]
        bg = (c1 * (1 - t) + c2 * t) * (0.85 + 0.3 * y[..., None])
    bg = bg * (0.85 + 0.3 * _smooth_noise(rng, size, 6))
    if rng.random() < 0.5:  # clutter: other out-of-focus things in the scene
        layer = Image.new("RGBA", (size, size), (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        for _ in range(int(rng.integers(2, 7))):
            col = tuple(int(v) for v in _random_colour(rng)) + (int(rng.integers(80, 200)),)
            x0, y0 = rng.uniform(-0.2, 1.0, 2) * size
            w, h = rng.uniform(0.08, 0.4, 2) * size
            shape = int(rng.integers(3))
            if shape == 0:
                draw.ellipse([x0, y0, x0 + w, y0 + h], fill=col)
            elif shape == 1:
                draw.rectangle([x0, y0, x0 + w, y0 + h], fill=col)
            else:
                draw.line([x0, y0, x0 + w, y0 + h], fill=col, width=int(rng.integers(2, size // 20 + 3)))
        layer = layer.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, size / 40)))
        base = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8)).convert("RGBA")
        bg = np.asarray(Image.alpha_composite(base, layer).convert("RGB"), np.float32)
    return bg.astype(np.float32)


def _label_map(parts: list[Part], size: int, rng: np.random.Generator) -> tuple[np.ndarray, float, np.ndarray]:
    """Place the object in the frame and draw its parts as labels 1..n (0 = background)."""
    pts = np.concatenate([p.points for p in parts])
    lo, hi = pts.min(0), pts.max(0)
    extent = max((hi - lo).max(), 1e-6)
    px = rng.uniform(0.5, 0.85) * size / extent  # pixels per unit: the object's longer side fills 50-85%
    span = (hi - lo) * px
    margin = size * 0.04
    origin = np.array([rng.uniform(margin, max(margin, size - margin - span[i])) for i in range(2)]) - lo * px
    lab = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(lab)
    for i, p in enumerate(parts, start=1):
        xy = [tuple(v) for v in (p.points * px + origin).tolist()]
        if p.fill:
            draw.polygon(xy, fill=i)
        else:
            if p.closed:
                xy = xy + xy[:1]
            draw.line(xy, fill=i, width=max(2, int(round(p.width * px))), joint="curve")
    centre = ((lo + hi) / 2) * px + origin
    return np.asarray(lab), extent * px / 2, centre


def make_photo(cls: str, index: int, seed: int = 0, size: int = 128) -> Image.Image:
    """One rendered photo (RGB ``size`` x ``size``) for item ``index`` of ``cls``."""
    rng = _rng(seed, cls, 1, index)
    parts = _instance(cls, rng, "photo")
    # Only the part labels are drawn at twice the size: box-downsampling them (colours premultiplied by
    # coverage) gives anti-aliased edges, while the smooth shading below is computed at the output size.
    lab, radius, centre = _label_map(parts, size * 2, rng)
    radius, centre = radius / 2, centre / 2
    colours = np.array([[0, 0, 0]] + _part_colours(cls, parts, rng), np.float32)
    premult = Image.fromarray(colours.astype(np.uint8)[lab]).resize((size, size), Image.BOX)
    mask_img = Image.fromarray(((lab > 0) * 255).astype(np.uint8)).resize((size, size), Image.BOX)
    alpha = np.asarray(mask_img, np.float32)[..., None] / 255
    base = np.asarray(premult, np.float32) / np.maximum(alpha, 1e-3)

    bg = _background(rng, size)
    obj_mean = colours[1:].mean(0)
    if np.abs(bg.mean((0, 1)) - obj_mean).sum() < 120:  # keep the object visible against its scene
        bg = bg * 0.45 if obj_mean.mean() > 110 else 255 - (255 - bg) * 0.45

    x, y = _grid(size)
    light = rng.uniform(-2.6, -1.0)  # mostly from above-left
    lx, ly = math.cos(light), math.sin(light)
    if rng.random() < 0.75:  # drop shadow, cast away from the light
        off = rng.uniform(0.03, 0.08) * size
        shadow = mask_img.transform((size, size), Image.AFFINE, (1, 0, lx * off, 0, 1, ly * off))
        shadow = np.asarray(shadow.filter(ImageFilter.GaussianBlur(size / 30)), np.float32)[..., None] / 255
        bg = bg * (1 - rng.uniform(0.25, 0.5) * shadow)

    # Shading: a light gradient across the object, darker rims (a rounded look) and part seams, and texture.
    dx, dy = (x * size - centre[0]) / radius, (y * size - centre[1]) / radius
    shade = 1 + rng.uniform(0.12, 0.3) * -(dx * lx + dy * ly)
    inside = np.asarray(mask_img.filter(ImageFilter.GaussianBlur(size / 24)), np.float32) / 255
    shade *= 0.62 + 0.38 * np.clip((inside - 0.5) * 2.2, 0, 1)
    small = lab[::2, ::2]
    seams = np.zeros(small.shape, bool)
    seams[1:] |= small[1:] != small[:-1]
    seams[:, 1:] |= small[:, 1:] != small[:, :-1]
    seams = np.asarray(Image.fromarray(seams.astype(np.uint8) * 255).filter(ImageFilter.GaussianBlur(size / 80)),
                       np.float32) / 255
    shade *= 1 - 0.35 * np.clip(seams * 2, 0, 1)
    shade *= 1 + rng.uniform(0.05, 0.22) * (_smooth_noise(rng, size, int(rng.integers(6, 20)))[..., 0] - 0.5)
    obj = base * shade[..., None]
    if rng.random() < 0.7:  # specular highlight on the lit side
        hx, hy = centre[0] - lx * radius * 0.35, centre[1] - ly * radius * 0.35
        spot = np.exp(-((x * size - hx) ** 2 + (y * size - hy) ** 2) / (2 * (radius * rng.uniform(0.15, 0.3)) ** 2))
        obj = obj + (255 - obj) * rng.uniform(0.25, 0.6) * spot[..., None]

    img = bg * (1 - alpha) + obj * alpha
    img = img * rng.uniform(0.85, 1.1) + rng.uniform(-15, 15)  # exposure
    img = img + rng.uniform(1.5, 5) * rng.standard_normal(img.shape, dtype=np.float32)  # sensor grain
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if rng.random() < 0.2:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.7)))  # slightly out of focus
    return out


# ----------------------------------------------------------------------------------------------------------
# Class vectors and the dataset writer
# ----------------------------------------------------------------------------------------------------------


def _vector_asset_text() -> str:
    return resources.files("ray_sbir").joinpath("assets", "doodle_class_vectors.txt").read_text("utf-8")


def load_class_vectors() -> dict[str, np.ndarray]:
    """The shipped class vectors (all-MiniLM-L6-v2 embeddings of the class names, L2-normalised)."""
    lines = _vector_asset_text().splitlines()
    vectors = {}
    for line in lines[1:]:
        name, *vals = line.split(" ")
        vectors[name] = np.array(vals, np.float32)
    return vectors


def _resolve_classes(classes: list[str] | None) -> list[str]:
    if classes is None:
        return list(DOODLE_CLASSES)
    unknown = [c for c in classes if c not in _MODELS]
    if unknown:
        raise ValueError(f"unknown doodle class(es) {unknown}; valid classes: {', '.join(DOODLE_CLASSES)}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"duplicate classes in {classes}")
    return list(classes)


def _remove_stale_photos(folder: str, cls: str, count: int) -> None:
    """Drop photos numbered beyond ``count`` left by an earlier, larger run, so counts stay exact."""
    if not fs.isdir(folder):
        return
    pattern = re.compile(rf"{re.escape(cls)}_(\d+)\.png$")
    for uri in fs.list_files(folder, (".png",), recursive=False):
        m = pattern.search(uri)
        if m and int(m.group(1)) >= count:
            fs.remove(uri)


def make_doodles(out: str, *, sketches_per_class: int = 60, photos_per_class: int = 60, photo_size: int = 128,
                 seed: int = 0, classes: list[str] | None = None, unseen: list[str] | None = None) -> dict:
    """Write the benchmark under ``out`` (local path or ``s3://`` URI) and return a summary.

    Layout: ``sketch/<class>.ndjson`` (QuickDraw simplified format), ``photo/<class>/<class>_<i:04d>.png``,
    ``unseen_classes.txt`` (one class per line) and ``class_vectors.txt`` (word2vec text format, the generated
    classes only). ``classes`` picks a subset of :data:`DOODLE_CLASSES` (default: all); ``unseen`` overrides
    the zero-shot split (default: the members of :data:`DOODLE_UNSEEN` among the generated classes, which may
    be none for a small subset).
    """
    classes = _resolve_classes(classes)
    if unseen is None:
        unseen = [c for c in DOODLE_UNSEEN if c in classes]
    elif any(c not in classes for c in unseen):
        raise ValueError(f"unseen classes {[c for c in unseen if c not in classes]} are not among {classes}")
    for name, value in (("sketches_per_class", sketches_per_class), ("photos_per_class", photos_per_class),
                        ("seed", seed)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if not isinstance(photo_size, int) or photo_size < 16:
        raise ValueError(f"photo_size must be an integer >= 16, got {photo_size!r}")

    t0 = time.time()
    sketch_dir, photo_dir = fs.join(out, "sketch"), fs.join(out, "photo")
    fs.makedirs(out)
    counts = {}
    for cls in classes:
        records = [json.dumps(make_sketch(cls, i, seed), separators=(",", ":")) for i in range(sketches_per_class)]
        fs.write_text(fs.join(sketch_dir, f"{cls}.ndjson"), "".join(r + "\n" for r in records))
        folder = fs.join(photo_dir, cls)
        _remove_stale_photos(folder, cls, photos_per_class)
        for i in range(photos_per_class):
            buf = io.BytesIO()
            make_photo(cls, i, seed, photo_size).save(buf, format="PNG", compress_level=1)  # speed over size
            fs.write_bytes(fs.join(folder, f"{cls}_{i:04d}.png"), buf.getvalue())
        counts[cls] = {"sketch": sketches_per_class, "photo": photos_per_class}

    fs.write_text(fs.join(out, "unseen_classes.txt"), "".join(c + "\n" for c in unseen))
    lines = _vector_asset_text().splitlines()
    rows = {line.split(" ", 1)[0]: line for line in lines[1:]}
    dim = int(lines[0].split()[1])
    fs.write_text(fs.join(out, "class_vectors.txt"),
                  f"{len(classes)} {dim}\n" + "".join(rows[c] + "\n" for c in classes))
    return {
        "root": out,
        "classes": classes,
        "unseen": list(unseen),
        "seen": [c for c in classes if c not in unseen],
        "counts": counts,
        "num_sketches": sketches_per_class * len(classes),
        "num_photos": photos_per_class * len(classes),
        "photo_size": photo_size,
        "seed": seed,
        "paths": {"sketch": sketch_dir, "photo": photo_dir, "unseen": fs.join(out, "unseen_classes.txt"),
                  "class_vectors": fs.join(out, "class_vectors.txt")},
        "seconds": round(time.time() - t0, 2),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write the embedded doodle benchmark.")
    p.add_argument("out")
    p.add_argument("--sketches-per-class", type=int, default=60)
    p.add_argument("--photos-per-class", type=int, default=60)
    p.add_argument("--photo-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", nargs="*", default=None)
    a = p.parse_args(argv)
    s = make_doodles(a.out, sketches_per_class=a.sketches_per_class, photos_per_class=a.photos_per_class,
                     photo_size=a.photo_size, seed=a.seed, classes=a.classes)
    print(json.dumps({k: v for k, v in s.items() if k != "counts"}, indent=2))


if __name__ == "__main__":
    main()
