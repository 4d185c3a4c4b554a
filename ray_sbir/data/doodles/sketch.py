"""Doodle sketches: human-like strokes from a posed instance, stored as QuickDraw simplified records."""

from __future__ import annotations

import math

import numpy as np

from ray_sbir.data.doodles.geometry import Part
from ray_sbir.data.doodles.pose import _class_key, _instance, _rng


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
