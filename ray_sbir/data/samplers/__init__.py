"""Batch samplers: how training batches are drawn (``data.sampler``; the interface in
:mod:`~ray_sbir.data.samplers.base`). Importing a sampler's module registers it."""

from ray_sbir.data.samplers.base import (
    DECODE_BATCH, SAMPLERS, BatchSampler, SamplerOptions, check_sampler_section, create_sampler, register_sampler,
    sampler_options, uniform_columns,
)
from ray_sbir.data.samplers import pk, triplet  # noqa: E402,F401  isort: skip

__all__ = ["BatchSampler", "DECODE_BATCH", "SAMPLERS", "SamplerOptions", "check_sampler_section", "create_sampler",
           "register_sampler", "sampler_options", "uniform_columns"]
