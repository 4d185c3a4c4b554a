"""Batch decoding of catalog rows into image arrays: the body of the Ray Data ``map_batches`` steps.

Plain functions over ``dict[str, np.ndarray]`` batches (Ray Data's numpy batch format), so they are unit-tested
without Ray. A row that cannot be decoded never fails the batch: it comes back with its ``error`` message set
(and a blank image), so callers can report it and keep every good row.
"""

from __future__ import annotations

from dataclasses import dataclass

import logging

import numpy as np

from ray_sbir import fs
from ray_sbir.data.images import (
    BadItem, color_jitter, decode_photo, decode_sketch_image, random_affine,
)
from ray_sbir.data.quickdraw import rasterize_packed
from ray_sbir.data.triplets import TripletSampler

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderSpec:
    """How items become arrays: side in pixels and QuickDraw stroke rendering."""

    size: int = 64
    line_width: float = 1.5
    padding: float = 0.08


def render_spec(cfg, modality: str) -> RenderSpec:
    """How ``modality`` items are turned into model inputs for the run config ``cfg``: the modality's
    encoder input size, and the data section's stroke rendering."""
    return RenderSpec(cfg.model.encoder_config(modality).image_size, cfg.data.line_width, cfg.data.padding)


def _blank(modality: str, size: int) -> np.ndarray:
    return np.full((size, size) if modality == "sketch" else (size, size, 3), 255, np.uint8)


def decode_one(uri: str, strokes, modality: str, spec: RenderSpec) -> np.ndarray:
    """Decode one item; raises :class:`BadItem` (with the item's URI) on bad input. ``strokes``: the catalog's
    packed drawing (:func:`~ray_sbir.data.quickdraw.pack_strokes`) for a QuickDraw sketch, else None."""
    if modality == "sketch" and strokes is not None:
        try:
            return rasterize_packed([strokes], spec.size, spec.line_width, spec.padding)[0]
        except (ValueError, IndexError) as e:
            raise BadItem(f"{uri}: cannot rasterize drawing ({e})") from e
    try:
        data = fs.read_bytes(uri)
    except (FileNotFoundError, OSError) as e:
        raise BadItem(f"{uri}: cannot read ({type(e).__name__}: {e})") from e
    if modality == "sketch":
        return decode_sketch_image(data, spec.size, uri)
    if modality == "photo":
        return decode_photo(data, spec.size, uri)
    raise BadItem(f"{uri}: unknown modality {modality!r}")


def decode_images(uris, strokes, modality: str, spec: RenderSpec) -> tuple[np.ndarray, list[str]]:
    """Decode a column of items of one modality; returns (images, per-row error strings or "")."""
    n = len(uris)
    images = np.empty((n, spec.size, spec.size) if modality == "sketch" else (n, spec.size, spec.size, 3), np.uint8)
    errors = [""] * n
    strokes = strokes if strokes is not None else [None] * n
    # QuickDraw rows are rasterised together, straight from their packed arrays: the rasteriser is vectorised
    # over the batch.
    vector_rows = [i for i in range(n) if strokes[i] is not None] if modality == "sketch" else []
    if vector_rows:
        try:
            images[vector_rows] = rasterize_packed([strokes[i] for i in vector_rows], spec.size,
                                                   spec.line_width, spec.padding)
            done = set(vector_rows)
        except (ValueError, IndexError):
            done = set()  # one bad drawing: fall back to row-by-row to isolate it
    else:
        done = set()
    for i in range(n):
        if i in done:
            continue
        try:
            images[i] = decode_one(str(uris[i]), strokes[i], modality, spec)
        except BadItem as e:
            images[i] = _blank(modality, spec.size)
            errors[i] = str(e)
    return images, errors


def decode_batch(batch: dict, *, modality: str, spec: RenderSpec) -> dict:
    """Catalog rows -> rows with ``image`` (uint8) and ``error`` ("" when fine); other columns kept."""
    images, errors = decode_images(batch["uri"], batch.get("strokes"), modality, spec)
    out = {k: v for k, v in batch.items() if k != "strokes"}
    out["image"] = images
    out["error"] = np.asarray(errors, dtype=object)
    return out


PHOTO_NAMES = ("positive", "negative")


def augmentation_seed(uniforms) -> int:
    """A batch's augmentation seed from its first row's uniform (its float64 bits): augmentation is then
    reproducible with the draws of the batch."""
    seed = np.asarray(uniforms[:1], np.float64).view(np.uint64)
    return int(seed[0]) if len(seed) else 0


def augment_images(images: dict[str, np.ndarray], sketch_names: list[str], photo_names, seed: int) -> None:
    """Augment a training batch in place: every rendering of the anchor sketch gets the same random affine
    transform (a fresh generator with the same seed), photos an affine transform and colour jitter."""
    rng = np.random.default_rng(seed)
    first, *others = sketch_names
    images[first] = random_affine(images[first], rng)
    for name in others:
        images[name] = random_affine(images[name], np.random.default_rng(seed))
    for name in photo_names:
        images[name] = color_jitter(random_affine(images[name], rng), rng)


class TripletBatchBuilder:
    """Turns anchor rows (a sketch + three uniforms) into decoded, augmented triplets.

    ``photos`` holds the training photos (``uri`` and class index ``label_idx``); the photo for each anchor
    is chosen by :class:`TripletSampler` from the row's uniforms, then read and decoded here, inside the
    Ray Data task. The anchor sketch is rendered once per entry of ``sketch_specs`` (``{"sketch": spec}``,
    plus e.g. ``"teacher_sketch"`` at a teacher's input size), each with the same augmentation; photos are
    decoded at ``photo_spec`` (None: no photos, for tasks that need none). Rows whose anchor or photos fail to
    decode are dropped (a bad file only costs its triplets, never the epoch)."""

    def __init__(self, photo_uris: list[str], photo_labels: np.ndarray, num_classes: int,
                 sketch_specs: dict[str, RenderSpec], photo_spec: RenderSpec | None, augment: bool,
                 class_similarity: np.ndarray | None = None, temperature: float = 0.1):
        self.photo_uris = list(photo_uris)
        self.sampler = TripletSampler(photo_labels, num_classes, class_similarity, temperature)
        self.sketch_specs = dict(sketch_specs)
        self.photo_spec = photo_spec
        self.augment = augment

    def __call__(self, batch: dict) -> dict:
        labels = np.asarray(batch["label_idx"], dtype=np.int64)
        pos, neg_labels, neg = self.sampler.sample(labels, batch["u_pos"], batch["u_neg_class"], batch["u_neg"])
        images, errors = {}, []
        for name, spec in self.sketch_specs.items():
            images[name], err = decode_images(batch["uri"], batch.get("strokes"), "sketch", spec)
            errors.append(err)
        if self.photo_spec is not None:
            for name, rows in (("positive", pos), ("negative", neg)):
                images[name], err = decode_images([self.photo_uris[i] for i in rows], None, "photo", self.photo_spec)
                errors.append(err)
        ok = np.array([not any(errs) for errs in zip(*errors)], dtype=bool)
        for msg in sorted({m for err in errors for m in err if m}):
            logger.warning("skipped training triplet: %s", msg)
        if self.augment:
            augment_images(images, list(self.sketch_specs), PHOTO_NAMES if self.photo_spec is not None else (),
                           augmentation_seed(batch["u_pos"]))
        out = {name: image[ok] for name, image in images.items()}
        out.update(label=labels[ok], negative_label=neg_labels[ok].astype(np.int64))
        return out
