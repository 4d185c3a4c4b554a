"""PK batches (``data.sampler: {name: pk, items_per_class: K}``): every training batch holds P classes x K
sketches, each sketch with a photo of its class (Hermans, Beyer and Leibe, "In Defense of the Triplet Loss for
Person Re-Identification", 2017, Sec. 3: "randomly sampling P classes, and then randomly sampling K images of
each class"). P = ``train.batch_size`` / K.

Why: with one random negative per sketch (the ``triplet`` sampler) a batch teaches each sketch one comparison.
In a PK batch every sketch has K photos of its class and (P - 1) x K photos of other classes beside it, so the
in-batch losses (``contrastive``, ``triplet`` with ``mining: batch_hard``) compare each sketch with the whole
batch, and no photo is decoded or encoded only to serve as one triplet's negative.

Each row of the epoch is one batch to draw: a uniform (re-drawn every epoch) seeds the choice of the P classes
(without repeats), K sketches of each and K photos of each (without repeats where the class has K; with repeats
only where it has fewer), and the batch's augmentation. The builder emits the batch's P x K rows in order, so
Ray Data's fixed-size batches of the training loop are exactly the drawn batches (a decode task holds whole
batches). A row whose sketch or photo cannot be decoded is dropped, as the triplet sampler does: its batch is
then one item short and the following batches of that task shift by one (the losses take any mix of labels).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ray_sbir.config import ConfigError, check_range
from ray_sbir.data import decode
from ray_sbir.data.samplers.base import DECODE_BATCH, BatchSampler, SamplerOptions, register_sampler
from ray_sbir.data.decode import RenderSpec, augment_images, augmentation_seed

logger = logging.getLogger(__name__)


@dataclass
class PKOptions(SamplerOptions):
    name: str = "pk"
    # K: sketches of each class in a batch (P = train.batch_size / K classes).
    items_per_class: int = 4

    def check(self, where: str) -> None:
        check_range(f"{where}.items_per_class", self.items_per_class, low=1)


class PKDraw:
    """The draw of one PK batch from its seed: ``(sketch rows, photo rows, class indices)``, P x K each,
    grouped by class. ``sketch_labels`` / ``photo_labels`` are the class index of every sketch / photo."""

    def __init__(self, sketch_labels: np.ndarray, photo_labels: np.ndarray | None, num_classes: int,
                 classes_per_batch: int, items_per_class: int):
        self.p, self.k = classes_per_batch, items_per_class
        self._sketches = _rows_by_class(sketch_labels, num_classes)
        self._photos = None if photo_labels is None else _rows_by_class(photo_labels, num_classes)
        usable = [c for c in range(num_classes) if len(self._sketches[c])
                  and (self._photos is None or len(self._photos[c]))]
        if len(usable) < self.p:
            raise ValueError(f"PK batches of {self.p} classes need at least {self.p} training classes with "
                             f"sketches{' and photos' if self._photos is not None else ''}; there are {len(usable)} "
                             "(lower train.batch_size or raise data.sampler.items_per_class)")
        self.classes = np.asarray(usable, dtype=np.int64)

    def __call__(self, seed: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        rng = np.random.default_rng(seed)
        classes = rng.choice(self.classes, self.p, replace=False)
        sketches = np.concatenate([_pick(rng, self._sketches[c], self.k) for c in classes])
        photos = None if self._photos is None else np.concatenate([_pick(rng, self._photos[c], self.k)
                                                                     for c in classes])
        return sketches, photos, np.repeat(classes, self.k)


def _rows_by_class(labels: np.ndarray, num_classes: int) -> list[np.ndarray]:
    labels = np.asarray(labels, dtype=np.int64)
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(num_classes + 1))
    return [order[bounds[c]:bounds[c + 1]] for c in range(num_classes)]


def _pick(rng: np.random.Generator, rows: np.ndarray, k: int) -> np.ndarray:
    return rng.choice(rows, k, replace=len(rows) < k)


class PKBatchBuilder:
    """Rows ``{"u": [...]}`` (one per batch) -> the decoded, augmented P x K rows of each batch: every sketch
    rendering of ``sketch_specs``, ``positive`` photos at ``photo_spec`` (None: no photos) and ``label``."""

    def __init__(self, anchors: pa.Table, photo_uris: list[str], photo_labels: np.ndarray, num_classes: int,
                 classes_per_batch: int, items_per_class: int, sketch_specs: dict[str, RenderSpec],
                 photo_spec: RenderSpec | None, augment: bool):
        self.sketch_uris = anchors["uri"].to_pylist()
        # Packed QuickDraw drawings stay one Arrow column (taken row by row), not a list of Python floats.
        self.strokes = anchors["strokes"] if "strokes" in anchors.column_names and \
            anchors["strokes"].null_count < anchors.num_rows else None
        self.photo_uris = list(photo_uris)
        self.draw = PKDraw(np.asarray(anchors["label_idx"]), None if photo_spec is None else photo_labels,
                           num_classes, classes_per_batch, items_per_class)
        self.sketch_specs = dict(sketch_specs)
        self.photo_spec = photo_spec
        self.augment = augment

    def __call__(self, batch: dict) -> dict:
        parts = [self._one(augmentation_seed(np.asarray([u], np.float64))) for u in np.asarray(batch["u"])]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def _one(self, seed: int) -> dict:
        sketches, photos, labels = self.draw(seed)
        strokes = None if self.strokes is None else self.strokes.take(pa.array(sketches)).to_numpy(zero_copy_only=False)
        images, errors = {}, []
        for name, spec in self.sketch_specs.items():
            images[name], err = decode.decode_images([self.sketch_uris[i] for i in sketches], strokes, "sketch", spec)
            errors.append(err)
        if photos is not None:
            images["positive"], err = decode.decode_images([self.photo_uris[i] for i in photos], None, "photo",
                                                           self.photo_spec)
            errors.append(err)
        ok = np.array([not any(errs) for errs in zip(*errors)], dtype=bool)
        for msg in sorted({m for err in errors for m in err if m}):
            logger.warning("skipped training item of a PK batch: %s", msg)
        if self.augment:
            augment_images(images, list(self.sketch_specs), ("positive",) if photos is not None else (), seed)
        out = {name: image[ok] for name, image in images.items()}
        out["label"] = labels[ok]
        return out


@register_sampler("pk", PKOptions)
class PKSampling(BatchSampler):
    photo_inputs = ("positive",)
    label_inputs = ("label",)
    uniforms = ("u",)
    shuffle_rows = False  # every row draws its batch from its own uniform: nothing to shuffle

    @classmethod
    def check(cls, options: PKOptions, batch_size: int, where: str) -> None:
        k = options.items_per_class
        if batch_size % k or batch_size // k < 2:
            raise ConfigError(f"{where}.items_per_class: train.batch_size ({batch_size}) must be a multiple of it "
                              f"with at least 2 classes per batch, got {k}")

    @property
    def classes_per_batch(self) -> int:
        return self.batch_size // self.options.items_per_class

    @property
    def rows_per_batch(self) -> int:
        return 1

    @property
    def rows_per_task(self) -> int:
        return max(1, DECODE_BATCH // self.batch_size)  # whole batches per decode task

    def rows(self, anchors: pa.Table, items_per_epoch: int, seed: int) -> pa.Table:
        return pa.table({"batch": np.arange(max(1, items_per_epoch // self.batch_size), dtype=np.int64)})

    def builder(self, anchors, photo_uris, photo_labels, num_classes, sketch_specs, photo_spec, augment,
                class_similarity=None, temperature=0.1):
        return PKBatchBuilder(anchors, photo_uris, photo_labels, num_classes, self.classes_per_batch,
                              self.options.items_per_class, sketch_specs, photo_spec, augment)
