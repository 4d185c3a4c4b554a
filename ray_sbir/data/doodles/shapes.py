"""The class models of the doodle benchmark: one parametric drawing function per class, the class list and
the zero-shot split."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ray_sbir.data.doodles.geometry import (
    Part, _arc, _bezier, _ellipse, _keep_contiguous, _lens, _pts, _rect, _regular,
)


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
