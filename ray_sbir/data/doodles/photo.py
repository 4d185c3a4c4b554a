"""Doodle photos: filled, shaded, coloured instances on varied backgrounds."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ray_sbir.data.doodles.geometry import Part
from ray_sbir.data.doodles.pose import _instance, _rng

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
