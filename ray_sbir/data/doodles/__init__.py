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

Modules: ``geometry`` (:class:`Part` and shape helpers), ``shapes`` (the class models, class list and split),
``pose`` (posed instances, per-item generators), ``sketch`` (QuickDraw records), ``photo`` (rendered photos);
this module writes the dataset and the class vectors.
"""


from __future__ import annotations

import argparse
import io
import json
import re
import time
from importlib import resources

import numpy as np

from ray_sbir import fs
from ray_sbir.data.doodles.photo import make_photo
from ray_sbir.data.doodles.shapes import _MODELS, DOODLE_CLASSES, DOODLE_UNSEEN
from ray_sbir.data.doodles.sketch import make_sketch

__all__ = ["DOODLE_CLASSES", "DOODLE_UNSEEN", "load_class_vectors", "main", "make_doodles", "make_photo",
           "make_sketch"]


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
