"""The Serve deployments: ``SketchEncoder`` and ``SearchShard`` (the sharded mode's stages, each scaled on its own)
and ``SearchIngress`` (HTTP; in the colocated mode it holds every stage itself). All three run the engine of
:mod:`ray_sbir.serving.engine`; the HTTP parsing is :mod:`ray_sbir.serving.http`'s.

``@serve.ingress`` freezes (pickles) the FastAPI app when ``SearchIngress`` is defined, so this module defines it
last and its endpoints use only what is imported above it. No ``from __future__ import annotations``: FastAPI
must see the endpoints' parameter types (``Request``) as classes, not strings, through Serve's wrapping.
"""

import asyncio
import contextlib
import logging
import os
import time
from importlib import resources
from typing import Any, Awaitable, Callable

import numpy as np
from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from ray import serve
from starlette.exceptions import HTTPException

from ray_sbir.index import GalleryItems, index_layout, index_version
from ray_sbir.search.filters import RowFilter, column_kinds
from ray_sbir.serving.config import ServeConfig, model_gpus
from ray_sbir.serving.engine import (
    LocalRetrieval, SearchEngine, SearchOutcome, ShardedRetrieval, check_index_dim, encode_sketches, pipeline_scorer,
    open_shard, load_sketch_encoder, scoring_of, serving_spec,
)
from ray_sbir.serving.http import SEARCH_BODY, ApiKey, RequestParser, api, api_error, html_attr
from ray_sbir.serving.items import LRU, render_thumbnail
from ray_sbir.serving.metrics import EndpointMetrics

logger = logging.getLogger("ray_sbir.serving")

ENCODER_NAME = "SketchEncoder"
SHARD_NAME = "SearchShard"
INGRESS_NAME = "SearchIngress"

__all__ = ["ENCODER_NAME", "INGRESS_NAME", "SHARD_NAME", "SearchIngress", "SearchShard", "SketchEncoder"]


@serve.deployment(name=ENCODER_NAME)
class SketchEncoder:
    """The checkpoint's sketch encoder: ``uint8 [S, S]`` sketch image -> ``float32 [D]``; concurrent requests
    share a forward pass (``@serve.batch``)."""

    def __init__(self, checkpoint: str, use_gpu: bool = False, torch_threads: int = 1, max_batch_size: int = 16,
                 batch_wait_timeout_s: float = 0.005, flip_average: bool = False):
        self.encoder, meta, self.device = load_sketch_encoder(checkpoint, use_gpu, torch_threads)
        self.flip_average = flip_average  # as the served index's manifest records (the app passes it)
        self.size = self.encoder.input_size("sketch")
        self.dim = self.encoder.embed_dim
        self._encode_batch.set_max_batch_size(max_batch_size)
        self._encode_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)
        self.batches = 0
        self.items = 0
        self.max_seen_batch = 0

    async def __call__(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.shape != (self.size, self.size):
            raise ValueError(f"expected a uint8 ({self.size}, {self.size}) sketch, got {image.dtype} {image.shape}")
        return await self._encode_batch(image)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _encode_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        x = np.stack(images)
        emb = await asyncio.to_thread(encode_sketches, self.encoder, x, self.device, self.flip_average)
        self.batches += 1
        self.items += len(images)
        self.max_seen_batch = max(self.max_seen_batch, len(images))
        return list(emb)

    def stats(self) -> dict:
        return {"batches": self.batches, "items": self.items, "max_batch": self.max_seen_batch,
                "device": str(self.device), "flip_average": self.flip_average, "pid": os.getpid()}


@serve.deployment(name=SHARD_NAME)
class SearchShard:
    """One contiguous slice of the gallery (:func:`ray_sbir.search.shard_slices`; Parquet files outside it are
    never read), searched exactly; answers carry global row numbers. Concurrent queries share a scan."""

    def __init__(self, index: str, shard: int, num_shards: int, use_gpu: bool = False, dtype: str | None = None,
                 torch_threads: int = 1, max_batch_size: int = 32, batch_wait_timeout_s: float = 0.002,
                 keep_floats: bool = False):
        import torch

        from ray_sbir.search import shard_slices

        torch.set_num_threads(torch_threads)
        layout = index_layout(index)
        sl = shard_slices(layout.count, num_shards)[shard]
        self.shard = open_shard(index, layout, sl.start, sl.stop, use_gpu=use_gpu, dtype=dtype,
                                torch_threads=torch_threads, keep_floats=keep_floats)
        self.info = {"shard": shard, "num_shards": num_shards, "start": sl.start, "stop": sl.stop,
                     "count": self.shard.n, "dim": layout.dim, "total": layout.count,
                     "device": str(self.shard.device)}
        self._search_batch.set_max_batch_size(max_batch_size)
        self._search_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def describe(self) -> dict:
        return {**self.info, "pid": os.getpid()}

    async def search(self, query: np.ndarray, k: int, allowed_bits: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores float32 [k'], global rows int64 [k'])`` for one query embedding; ``allowed_bits`` (a search
        filter: this shard's rows, packed a bit per row) restricts it to those rows, searched alone (a filtered
        query cannot share a batch's scan)."""
        q = np.asarray(query, np.float32).reshape(-1)
        if allowed_bits is None:
            return await self._search_batch(q, int(k))
        allowed = np.unpackbits(np.asarray(allowed_bits, np.uint8), count=self.shard.n).astype(bool)
        scores, rows = await asyncio.to_thread(self.shard.search, q[None], int(k), allowed)
        return scores[0], rows[0]

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """Stored embeddings of global ``rows`` of this shard (for the re-rank stage)."""
        return self.shard.vectors(rows)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _search_batch(self, queries: list[np.ndarray], ks: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        kk = max(ks)
        scores, rows = await asyncio.to_thread(self.shard.search, np.stack(queries), kk)
        return [(scores[i, :k].copy(), rows[i, :k].copy()) for i, k in enumerate(ks)]


def _retryable_errors() -> tuple[type[BaseException], ...]:
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.serve.exceptions import BackPressureError, ReplicaUnavailableError

    return (RayActorError, ActorUnavailableError, ReplicaUnavailableError, BackPressureError)


@serve.deployment(name=INGRESS_NAME)
@serve.ingress(api)
class SearchIngress:
    """HTTP front: request validation, the search engine (colocated: every stage here; sharded: the encoder and
    shards through handles), item lookup, thumbnails and the doodle page."""

    def __init__(self, config: dict, encoder, shards: list):
        from ray_sbir.checkpoint import read_meta
        from ray_sbir.data.decode import render_spec
        from ray_sbir.search import shard_slices

        self.cfg = ServeConfig(**config)
        meta = read_meta(self.cfg.checkpoint)
        self.render = render_spec(meta.config, "sketch")
        self.parser = RequestParser(self.cfg, self.render)
        self.api_key = ApiKey(self.cfg)
        from ray_sbir.search import index_flip_average, index_flip_queries

        layout = index_layout(self.cfg.index)
        self.dim, self.n = layout.dim, layout.count
        # Which version of the gallery this replica serves (ray_sbir.index.versions): in /info, every /search
        # response and the index_rows metric, so clients and operators see when a switch has reached a replica.
        self.index_version = index_version(layout.manifest)
        check_index_dim(self.cfg.index, self.dim, self.cfg.checkpoint, int(meta.config.model.embed_dim))
        items = GalleryItems.read(self.cfg.index, layout)
        if len(items) != layout.count:
            raise ValueError(f"index {self.cfg.index}: {len(items)} rows, file footers say {layout.count}")
        self.class_counts = items.class_counts()
        # What a search filter may name: the rows' own columns (ray_sbir.search.filters).
        self.filter_columns = items.filter_columns()
        self.filter_kinds = column_kinds({name: col.type for name, col in self.filter_columns.items()})
        # The ranking pipeline (the serve config's, else the index's own) and how its first stage scores: the
        # inner product of float embeddings, or Hamming distance of codes (optionally re-scored by the floats).
        spec = serving_spec(self.cfg, layout)
        scoring = scoring_of(layout, spec)
        self.retryable = _retryable_errors()
        self.retries = 0
        if encoder is None:  # colocated mode: encoder and the whole gallery in this replica
            s = self.cfg.colocated
            use_gpu = model_gpus(self.cfg, s) > 0
            retrieval = LocalRetrieval(self.cfg.checkpoint, self.cfg.index, layout, use_gpu=use_gpu,
                                       dtype=self.cfg.shard_dtype, torch_threads=s.torch_threads,
                                       max_batch_size=s.max_batch_size, keep_floats=self.cfg.needs_floats)
        else:
            use_gpu = False
            slices = [(s.start, s.stop) for s in shard_slices(self.n, self.cfg.num_shards)]
            retrieval = ShardedRetrieval(encoder, shards, slices, self._call)
        self.engine = SearchEngine(retrieval, items, scoring, spec, pipeline_scorer(spec, self.cfg, self.dim, use_gpu))
        self.model_info = {
            "name": meta.config.model.name, "task": meta.task, "sketch_backbone": meta.config.model.sketch.backbone,
            "embed_dim": int(meta.config.model.embed_dim), "normalize": meta.config.model.normalize,
            "checkpoint": self.cfg.checkpoint, "epoch": meta.epoch, "image_size": self.render.size,
            "flip_average": index_flip_average(layout), "flip_queries": index_flip_queries(layout),
            "training_classes": list(meta.classes),
        }
        self.thumbs = LRU(self.cfg.thumbnail_cache)
        fingerprint = (layout.manifest.fingerprint if layout.manifest else None) or "unknown"
        self.metrics = EndpointMetrics(self.cfg.index, f"v{self.index_version}-{fingerprint[:8]}", self.n)
        self.page_html = resources.files("ray_sbir").joinpath("assets/web/index.html").read_text(encoding="utf-8")

    @property
    def mode(self) -> str:
        return self.engine.retrieval.mode

    # ---------------------------------------------------------------------------------------- pages

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self, request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        html = self.page_html.replace('data-root=""', f'data-root="{html_attr(root)}"', 1)
        if self.api_key.enabled:
            html = html.replace('data-api-key="off"', 'data-api-key="on"', 1)
        return HTMLResponse(html)

    @api.get("/healthz", summary="Liveness")
    async def healthz(self) -> dict:
        return {"status": "ok", "items": self.n, "shards": len(self.engine.retrieval.slices)}

    @api.get("/info", summary="Index, shards, search stages, model and classes")
    async def info(self, request: Request) -> dict:
        with self._counted("info"):
            self.api_key.check(request)  # it names the gallery's classes and files
            slices = self.engine.retrieval.slices
            return {
                "index": self.cfg.index, "index_version": self.index_version, "count": self.n, "dim": self.dim,
                "search_mode": self.mode,
                "scoring": self.engine.scoring, "stages": self.engine.stages(),
                "num_shards": len(slices),
                "shards": [{"shard": i, "start": a, "stop": b} for i, (a, b) in enumerate(slices)],
                "model": self.model_info, "classes": self.class_counts,
                "limits": {"default_k": self.cfg.default_k, "max_k": self.cfg.max_k,
                           "max_body_bytes": self.cfg.max_body_bytes, "max_pixels": self.cfg.max_pixels,
                           "max_strokes": self.cfg.max_strokes, "max_points": self.cfg.max_points,
                           "max_coordinate": self.cfg.max_coordinate},
                "auth": "api_key" if self.api_key.enabled else "none",
                "filters": self.filter_kinds,
                "retries": self.retries,
            }

    # --------------------------------------------------------------------------------------- search

    @api.post("/search", summary="Search the gallery with a sketch", openapi_extra=SEARCH_BODY)
    async def search(self, request: Request, k: str | None = None) -> dict:
        with self._counted("search"):
            t0 = time.perf_counter()
            self.api_key.check(request)
            sketch, k_value, row_filter = await self.parser.sketch(request, k)
            allowed = self._allowed(row_filter)
            t1 = time.perf_counter()
            if allowed is not None and not allowed.any():  # nothing matches: an empty answer, not an error
                outcome = SearchOutcome(np.zeros(0, np.float32), np.zeros(0, np.int64), None, {})
            else:
                outcome = await self.engine.search(sketch, k_value, allowed)
            t2 = time.perf_counter()
            results = self.engine.results(outcome, str(request.scope.get("root_path", "")).rstrip("/"))
            t3 = time.perf_counter()
            timing = {"validate": t1 - t0, **outcome.timing, "results": t3 - t2, "total": t3 - t0}
            self.metrics.search(timing, len(results))
        return {"k": k_value, "count": len(results), "index_version": self.index_version, "results": results,
                "timing_ms": {name: round(v * 1e3, 2) for name, v in timing.items()}}

    def _allowed(self, row_filter) -> np.ndarray | None:
        """The row mask of a request's ``filter`` (None: no filter); 400 naming the field when it names a column
        the index lacks or a value of the wrong type."""
        if row_filter is None:
            return None
        try:
            parsed = RowFilter.parse(row_filter, self.filter_kinds)
        except ValueError as e:
            raise api_error(400, str(e)) from None
        return parsed.mask(self.filter_columns, self.n) if parsed else None

    def stats(self) -> dict:
        """Batching statistics of the colocated mode (called through a deployment handle, not HTTP)."""
        local = self.engine.retrieval.stats() if isinstance(self.engine.retrieval, LocalRetrieval) else {}
        return {"mode": self.mode, "retries": self.retries, **local}

    @contextlib.contextmanager
    def _counted(self, endpoint: str):
        """Count the request in ``ray_sbir_requests_total`` with the status it ends with (an error's own, 500
        for an unexpected exception)."""
        status = 500
        try:
            yield
            status = 200
        except HTTPException as e:
            status = e.status_code
            raise
        finally:
            self.metrics.request(endpoint, status)

    async def _call(self, what: str, make: Callable[[], Awaitable[Any]]) -> Any:
        """Await a downstream call, retrying while its replica is gone (calls are idempotent)."""
        deadline = time.monotonic() + self.cfg.retry_timeout_s
        delay = 0.05
        while True:
            try:
                return await make()
            except self.retryable as e:
                if time.monotonic() + delay > deadline:
                    logger.error("%s unavailable after %.0fs of retries: %s", what, self.cfg.retry_timeout_s, e)
                    raise api_error(503, f"{what} is unavailable ({type(e).__name__}); try again later") from e
                self.retries += 1
                logger.warning("retrying %s after %s", what, type(e).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    # --------------------------------------------------------------------------------------- items

    @api.get("/items/{item_id:path}/image", summary="Thumbnail of a gallery item (PNG)",
             responses={200: {"content": {"image/png": {}}}, 404: {"description": "unknown item id"}})
    async def item_image(self, item_id: str, request: Request) -> Response:
        with self._counted("item_image"):
            return await self._item_image(item_id, request)

    async def _item_image(self, item_id: str, request: Request) -> Response:
        self.api_key.check(request)
        items = self.engine.items
        row = items.row_of(item_id)
        if row is None:
            raise api_error(404, f"unknown item id {item_id[:200]!r}")
        png = self.thumbs.get(row)
        if png is None:
            try:
                png = await asyncio.to_thread(render_thumbnail, items, row, self.cfg.thumbnail_size, self.render)
            except Exception as e:
                logger.exception("thumbnail of %s failed", item_id)
                raise api_error(500, f"cannot render the image of item {item_id!r}: {type(e).__name__}: {e}")
            self.thumbs.put(row, png)
        cache = "private, max-age=3600" if self.api_key.enabled else "public, max-age=3600"
        return Response(png, media_type="image/png", headers={"Cache-Control": cache})
