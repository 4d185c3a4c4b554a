"""Online retrieval with Ray Serve: a sketch in, the nearest gallery items out.

Modules (one job each; only ``deployments`` and ``app`` import Ray Serve)
    ``config``       :class:`ServeConfig`, :class:`DeploymentSettings` (the run config's validation mechanism)
    ``engine``       the search pipeline both modes run: retrieve -> (re-rank) -> results
    ``http``         FastAPI app, errors, request parsing and limits, the optional API key
    ``items``        item thumbnails
    ``deployments``  ``SketchEncoder``, ``SearchShard{i}``, ``SearchIngress``
    ``app``          :func:`build_app`, :func:`build` (``serve/config.yaml``'s import path), :func:`preflight`

Two ways to run, chosen by ``ServeConfig.search_mode`` (``"auto"``: colocated when the gallery's embeddings
fit in ``colocate_max_bytes``, 1 GiB by default, else sharded):

*colocated*
    One deployment, ``SearchIngress``, with ``ServeConfig.colocated``'s replicas/autoscaling/resources: each
    replica holds the sketch encoder and the whole gallery and answers a request without any
    deployment-handle hop; concurrent requests share a forward pass and a scan through a
    :class:`~ray_sbir.serving.batching.GreedyBatcher` (no batch timer). Each hop of the sharded mode costs about
    5 ms of latency on a 2-core machine, so on small galleries this is 2-4x faster (``bench/bench_serving.py``).
*sharded*
    ``SearchIngress`` (HTTP) calls ``SketchEncoder`` and one ``SearchShard{i}`` deployment per contiguous
    slice of the index through handles, each with its own replicas/autoscaling/resources; calls are retried
    while a replica is replaced.

Both modes run the same :class:`~ray_sbir.serving.engine.SearchEngine`; they differ only in where the
retrieval stage lives.

HTTP API (OpenAPI docs at ``/docs``)
    ``POST /search``: a sketch as an uploaded image (``multipart/form-data`` field ``file``, or a raw
    ``image/png`` / ``image/jpeg`` body) or as QuickDraw strokes
    (``application/json``: ``{"strokes": [[[x...], [y...]], ...], "k": 20}``); ``k`` is also a query
    parameter. Answers ``{"k", "count", "results": [{"rank", "id", "class", "score", "image_url"}], ...}``
    (``first_stage_score`` too when re-ranked). ``GET /items/{id}/image``: a PNG thumbnail of a gallery item.
    ``GET /healthz``, ``GET /info`` (index, stages, model), and ``GET /`` the doodle page.
"""

from __future__ import annotations

from ray_sbir.serving.config import (
    SEARCH_MODES, DeploymentSettings, ServeConfig, demo_defaults, embedding_bytes, model_gpus, resolve_search_mode,
)
from ray_sbir.serving.engine import encode_sketches, load_sketch_encoder, open_shard

_SERVE_NAMES = {"build": "app", "build_app": "app", "preflight": "app", "SearchIngress": "deployments",
                "SearchShard": "deployments", "SketchEncoder": "deployments", "parse_multipart": "http"}

__all__ = ["SEARCH_MODES", "DeploymentSettings", "ServeConfig", "demo_defaults", "embedding_bytes",
           "encode_sketches", "load_sketch_encoder", "open_shard", "model_gpus", "resolve_search_mode",
           *_SERVE_NAMES]


def __getattr__(name: str):
    # Serve (and FastAPI) load only when an app is built: the config and the engine import without them.
    if name in _SERVE_NAMES:
        import importlib

        return getattr(importlib.import_module(f"ray_sbir.serving.{_SERVE_NAMES[name]}"), name)
    raise AttributeError(f"module 'ray_sbir.serving' has no attribute {name!r}")
