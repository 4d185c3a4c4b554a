"""The batch sampler interface and its registry (``data.sampler``).

A sampler turns the seen classes' sketches and photos into the rows of one epoch and the callable that decodes
them (the body of a Ray Data ``map_batches``, or of a plain loop in the benches):

- :meth:`BatchSampler.rows`: the light rows the driver hands the pipeline once (anchor sketches, or one row per
  batch to draw), with ``shuffle_rows`` saying whether they are shuffled every epoch;
- ``uniforms``: the random columns added to every row, re-drawn every epoch (Ray Data's seeded ``random()``
  expression, which reseeds per execution; NumPy in tests and benches);
- :meth:`BatchSampler.builder`: the callable turning ``rows_per_task`` rows into decoded, augmented images.

Registered: ``triplet`` (:mod:`~ray_sbir.data.samplers.triplet`: one anchor sketch, a photo of its class and one
of another per row: Doodle to Search's triplets) and ``pk`` (:mod:`~ray_sbir.data.samplers.pk`: P classes x K
sketches, each with a photo of its class, so a batch holds several positives of every class and many in-batch
negatives).

Adding one: a module with an options dataclass and a :class:`BatchSampler` subclass decorated with
``@register_sampler("name", Options)``, imported in ``ray_sbir/data/samplers/__init__.py``. ``data.sampler:
{name: ..., <its options>}`` selects it; unknown names and options are errors naming the key before anything
starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa

from ray_sbir.config import ConfigError, build_typed
from ray_sbir.data.decode import RenderSpec
from ray_sbir.registry import Registry, register_section_check

__all__ = ["BatchSampler", "DECODE_BATCH", "SAMPLERS", "SamplerOptions", "create_sampler", "register_sampler",
           "sampler_options", "uniform_columns"]

# Rows per decode task of a per-item sampler: big enough to amortise task overhead and the rasteriser's
# vectorisation, small enough that a task's decoded output stays a few MB.
DECODE_BATCH = 64


@dataclass
class SamplerOptions:
    """Options every sampler has (its registered name); a sampler's own options extend this."""

    name: str = "triplet"


class BatchSampler:
    """One way of drawing training batches (see the module docstring)."""

    registered_name: str = ""
    photo_inputs: tuple[str, ...] = ("positive", "negative")  # photo images each batch row carries
    label_inputs: tuple[str, ...] = ("label", "negative_label")  # label columns each batch row carries
    uniforms: tuple[str, ...] = ()
    shuffle_rows: bool = True

    def __init__(self, options: SamplerOptions, batch_size: int):
        self.options = options
        self.batch_size = batch_size

    @classmethod
    def check(cls, options: SamplerOptions, batch_size: int, where: str) -> None:
        """Raise :class:`ConfigError` for options that cannot run with ``train.batch_size``."""

    @property
    def rows_per_batch(self) -> int:
        """Rows of :meth:`rows` one training batch is built from."""
        return self.batch_size

    @property
    def rows_per_task(self) -> int:
        """Rows one call of the builder decodes."""
        return DECODE_BATCH

    def rows(self, anchors: pa.Table, items_per_epoch: int, seed: int) -> pa.Table:
        """The epoch's rows, from the anchor sketches (``uri``, ``label``, ``strokes``, ``label_idx``)."""
        raise NotImplementedError

    def builder(self, anchors: pa.Table, photo_uris: list[str], photo_labels: np.ndarray, num_classes: int,
                sketch_specs: dict[str, RenderSpec], photo_spec: RenderSpec | None, augment: bool,
                class_similarity: np.ndarray | None = None, temperature: float = 0.1) -> Callable[[dict], dict]:
        raise NotImplementedError


SAMPLERS: Registry[type[BatchSampler]] = Registry("batch sampler", key="data.sampler.name",
                                                  package="ray_sbir.data.samplers")


def register_sampler(name: str, options: type = SamplerOptions):
    return SAMPLERS.register(name, options=options)


def sampler_options(values: dict, where: str = "data.sampler") -> SamplerOptions:
    """Typed, checked options of the sampler ``values["name"]`` names."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping such as {{name: pk, items_per_class: 4}}, got {values!r}")
    name = values.get("name", SamplerOptions.name)
    cls = SAMPLERS.extra(name, "options", f"{where}.name")
    return build_typed(cls, dict(values), where)


def create_sampler(cfg) -> BatchSampler:
    """The run's sampler (``cfg.data.sampler``), for per-worker batches of ``cfg.train.batch_size``."""
    options = sampler_options(cfg.data.sampler)
    return SAMPLERS.get(options.name)(options, cfg.train.batch_size)


@register_section_check
def check_sampler_section(cfg, check_paths: bool) -> None:
    options = sampler_options(cfg.data.sampler)
    SAMPLERS.get(options.name).check(options, cfg.train.batch_size, "data.sampler")


def uniform_columns(sampler: BatchSampler, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """The sampler's random columns for ``n`` rows, drawn with NumPy (tests and the plain benches; Ray Data
    draws them with its ``random()`` expression), in the order the sampler names them."""
    return {name: rng.random(n) for name in sampler.uniforms}
