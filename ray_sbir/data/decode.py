"""Batch decoding of catalog rows into image arrays: the body of the Ray Data ``map_batches`` steps.

Plain functions over ``dict[str, np.ndarray]`` batches (Ray Data's numpy batch format), so they are unit-tested
without Ray. A row that cannot be decoded never fails the batch: it comes back with its ``error`` message set
(and a blank image), so callers can report it and keep every good row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ray_sbir import fs
from ray_sbir.data.images import (
    BadItem, color_jitter, decode_photo, decode_sketch_image, random_affine, rasterize_strokes_json,
)
from ray_sbir.data.triplets import TripletSampler


@dataclass(frozen=True)
class RenderSpec:
    """How items become arrays: side in pixels and QuickDraw stroke rendering."""

    size: int = 64
    line_width: float = 1.5
    padding: float = 0.08


def _blank(modality: str, size: int) -> np.ndarray:
    return np.full((size, size) if modality == "sketch" else (size, size, 3), 255, np.uint8)


def decode_one(uri: str, strokes: str | None, modality: str, spec: RenderSpec) -> np.ndarray:
    """Decode one item; raises :class:`BadItem` (with the item's URI) on bad input."""
    if modality == "sketch" and strokes:
        try:
            return rasterize_strokes_json([strokes], spec.size, spec.line_width, spec.padding)[0]
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
    # QuickDraw rows are rasterised together: the rasteriser is vectorised over the batch.
    vector_rows = [i for i in range(n) if modality == "sketch" and strokes[i]]
    if vector_rows:
        try:
            images[vector_rows] = rasterize_strokes_json([strokes[i] for i in vector_rows], spec.size,
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


class TripletBatchBuilder:
    """Turns anchor rows (a sketch + three uniforms) into decoded, augmented triplets.

    ``photos`` holds the training photos (``uri`` and class index ``label_idx``); the photo for each anchor
    is chosen by :class:`TripletSampler` from the row's uniforms, then read and decoded here, inside the
    Ray Data task. Rows whose anchor or photos fail to decode are dropped and counted in ``error``-free
    output (a bad file only costs its triplets, never the epoch)."""

    def __init__(self, photo_uris: list[str], photo_labels: np.ndarray, num_classes: int, spec: RenderSpec,
                 augment: bool, class_similarity: np.ndarray | None = None, temperature: float = 0.1):
        self.photo_uris = list(photo_uris)
        self.sampler = TripletSampler(photo_labels, num_classes, class_similarity, temperature)
        self.spec = spec
        self.augment = augment

    def __call__(self, batch: dict) -> dict:
        labels = np.asarray(batch["label_idx"], dtype=np.int64)
        pos, neg_labels, neg = self.sampler.sample(labels, batch["u_pos"], batch["u_neg_class"], batch["u_neg"])
        sketches, s_err = decode_images(batch["uri"], batch.get("strokes"), "sketch", self.spec)
        positives, p_err = decode_images([self.photo_uris[i] for i in pos], None, "photo", self.spec)
        negatives, n_err = decode_images([self.photo_uris[i] for i in neg], None, "photo", self.spec)
        ok = np.array([not (a or b or c) for a, b, c in zip(s_err, p_err, n_err)], dtype=bool)
        for msg in {m for m in (*s_err, *p_err, *n_err) if m}:
            print(f"[ray-sbir] skipped training triplet: {msg}", flush=True)
        if self.augment:
            # Seeded from the row's own uniforms so augmentation is reproducible with the triplets.
            seed = np.asarray(batch["u_pos"][:1], np.float64).view(np.uint64)
            rng = np.random.default_rng(int(seed[0]) if len(seed) else 0)
            sketches = random_affine(sketches, rng)
            positives = color_jitter(random_affine(positives, rng), rng)
            negatives = color_jitter(random_affine(negatives, rng), rng)
        return {
            "sketch": sketches[ok], "positive": positives[ok], "negative": negatives[ok],
            "label": labels[ok], "negative_label": neg_labels[ok].astype(np.int64),
        }
