"""What a run derives from its config before any work starts: the catalog and the zero-shot class split
(shared by train, embed and evaluate), and the training classes' word vectors."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources

import numpy as np

from ray_sbir import fs
from ray_sbir.config import Config
from ray_sbir.data.catalog import Catalog, build_catalog
from ray_sbir.data.layouts import NO_SPLIT
from ray_sbir.data.splits import ZeroShotSplit, load_unseen_classes, make_zero_shot_split, seen_only_split

logger = logging.getLogger(__name__)


@dataclass
class DatasetPlan:
    catalog: Catalog
    split: ZeroShotSplit

    def items(self, classes: list[str], modality: str) -> Catalog:
        return self.catalog.select(modality=modality, labels=classes)


def plan_dataset(cfg: Config) -> DatasetPlan:
    d = cfg.data
    catalog = build_catalog(d.root, d.layout, d.manifest, strict=d.strict).limit_per_class(d.max_per_class)
    if catalog.errors:
        logger.warning("%d malformed record(s) skipped while cataloguing %s; first: %s", len(catalog.errors),
                       d.root, catalog.errors[0])
    val = int(d.val_classes) if d.val_classes >= 1 else d.val_classes
    if d.unseen.strip() == NO_SPLIT:
        return DatasetPlan(catalog, seen_only_split(catalog.classes, val_classes=val, seed=d.seed))
    unseen_spec = fs.join(d.root, "unseen_classes.txt") if d.unseen == "root" else d.unseen
    unseen = load_unseen_classes(unseen_spec, catalog.classes, seed=d.seed)
    split = make_zero_shot_split(catalog.classes, unseen, val_classes=val, seed=d.seed)
    return DatasetPlan(catalog, split)


ASSETS = "assets:"  # files shipped in ray_sbir/assets, e.g. assets:sketchy_class_vectors.txt


def resolve_asset(uri: str) -> str:
    """``assets:<file>`` -> the path of that file shipped in ``ray_sbir/assets``; any other URI unchanged."""
    if uri.startswith(ASSETS):
        return str(resources.files("ray_sbir").joinpath("assets", uri[len(ASSETS):]))
    return uri


def load_class_vectors(cfg: Config, classes: list[str]) -> np.ndarray:
    """Word vectors of ``classes`` from ``data.word_vectors`` (a URI, or ``assets:<file>`` for the vectors
    shipped with the package), else ``class_vectors.txt`` in the dataset root."""
    from ray_sbir.data.class_vectors import class_vectors, load_phrase_map, load_word_vectors

    uri = resolve_asset(cfg.data.word_vectors or fs.join(cfg.data.root, "class_vectors.txt"))
    vectors = load_word_vectors(uri, cfg.data.word_vectors_format)
    phrase_map = load_phrase_map(cfg.data.phrase_map) if cfg.data.phrase_map else None
    return class_vectors(classes, vectors, vectors_name=uri, phrase_map=phrase_map)
