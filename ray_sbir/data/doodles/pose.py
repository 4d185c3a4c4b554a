"""Instances of a class model, posed for a modality, and the per-item random generators (deterministic)."""

from __future__ import annotations

import math
import zlib
from dataclasses import replace

import numpy as np

from ray_sbir.data.doodles.geometry import Part
from ray_sbir.data.doodles.shapes import _MODELS

# Objects with no natural upright pose get larger rotations; plain shapes small ones (a square turned by 45
# degrees would be a rhombus, and "diamond" is a class).
_FREE_ROTATION = {"leaf", "key", "fork", "axe", "hammer", "moon", "fish", "lightning", "bowtie"}
_SHAPES = {"triangle", "square", "circle", "hexagon", "octagon", "star", "heart", "diamond"}


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


def _class_key(cls: str) -> int:
    return zlib.crc32(cls.encode("utf-8"))


def _rng(seed: int, cls: str, modality: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _class_key(cls), modality, index]))
