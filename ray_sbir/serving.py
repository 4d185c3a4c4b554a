"""Online retrieval with Ray Serve: a sketch in, the nearest gallery items out.

Two ways to run, chosen by ``ServeConfig.search_mode`` (``"auto"``: colocated when the gallery's embeddings
fit in ``colocate_max_bytes``, 1 GiB by default, else sharded):

*colocated*
    One deployment, ``SearchIngress``, with ``ServeConfig.colocated``'s replicas/autoscaling/resources: each
    replica holds the sketch encoder and the whole gallery (:class:`LocalSearch`) and answers a request
    without any deployment-handle hop; concurrent requests share a forward pass and a scan through a
    :class:`~ray_sbir.batching.GreedyBatcher` (no batch timer). Each hop of the sharded mode costs about
    5 ms of latency on a 2-core machine, so on small galleries this is 2-4x faster (``bench/bench_serving.py``).
*sharded*
    Three kinds of deployments, composed through deployment handles by :func:`build_app`, for galleries that
    must be spread over replicas and GPUs:

``SketchEncoder``
    Loads the checkpoint's sketch encoder once per replica and embeds already-validated ``uint8 [S, S]``
    sketch images. Requests are grouped by ``@serve.batch`` (``max_batch_size`` / ``batch_wait_timeout_s``
    from the config) so one forward pass serves many concurrent users. GPU per replica, replica count or
    autoscaling come from :class:`ServeConfig`.
``SearchShard{i}``
    One deployment per shard: each replica reads *only its own* contiguous slice of the index
    (:func:`ray_sbir.search.shard_slices` over the index's rows, Parquet files outside the slice are never
    read) into an :class:`~ray_sbir.search.ExactShard`, and answers exact top-``k`` queries with global row
    numbers. Concurrent queries are batched too (one matrix product for the batch). Each shard deployment
    scales on its own.
``SearchIngress``
    The HTTP front (FastAPI): validates every input *before* anything reaches the encoder, fans a query out
    to all shards, merges the answers with :func:`ray_sbir.search.merge_topk` and maps rows to items. Calls
    to the encoder and shards are retried (they are idempotent) while a downstream replica is being
    replaced, so losing a replica delays requests instead of failing them.

HTTP API (OpenAPI docs at ``/docs``)
    ``POST /search``: a sketch as an uploaded image (``multipart/form-data`` field ``file``, or a raw
    ``image/png`` / ``image/jpeg`` body) or as QuickDraw strokes
    (``application/json``: ``{"strokes": [[[x...], [y...]], ...], "k": 20}``); ``k`` is also a query
    parameter. Answers ``{"k", "count", "results": [{"rank", "id", "class", "score", "image_url"}], ...}``.
    ``GET /items/{id}/image``: a PNG thumbnail of a gallery item. ``GET /healthz``, ``GET /info``, and
    ``GET /`` the doodle page (``ray_sbir/assets/web/index.html``).

Bad input never yields a 5xx: every rejected request gets a 4xx with ``{"detail": "<what is wrong>"}`` --
400 unreadable body (empty, not an image, truncated image, invalid JSON or multipart), 413 body over
``max_body_bytes`` or image over ``max_pixels``, 415 unsupported content type, 422 a well-formed request with
invalid values (bad strokes, ``k`` out of ``[1, max_k]``, an image with no ink), 404 unknown item ids.

Multipart bodies are parsed here (a small RFC 7578 reader) rather than by FastAPI's ``UploadFile``, so the
app needs no ``python-multipart`` and the byte limit applies to the whole body as it streams in.
"""


import asyncio
import dataclasses
import io
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from email.message import Message
from importlib import resources
from typing import Any, Awaitable, Callable
from urllib.parse import quote

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from ray_sbir import fs
from ray_sbir.config import build_typed
from ray_sbir.index import GalleryItems, IndexLayout, index_layout, read_code_rows, read_embedding_rows

logger = logging.getLogger("ray_sbir.serving")

__all__ = [
    "DeploymentSettings", "SearchIngress", "SearchShard", "ServeConfig", "SketchEncoder", "build",
    "build_app", "demo_defaults", "embedding_bytes", "encode_sketches", "load_exact_shard",
    "load_sketch_encoder", "LocalSearch", "parse_multipart", "resolve_search_mode",
]

ENCODER_NAME = "SketchEncoder"
SHARD_NAME = "SearchShard"
INGRESS_NAME = "SearchIngress"
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")  # never hand user bytes to e.g. the EPS plugin
INLINE_JSON_BYTES = 16 * 1024  # stroke bodies up to this size are validated on the event loop
RAW_IMAGE_TYPES = ("image/png", "image/jpeg", "image/jpg", "image/gif", "image/bmp", "image/webp",
                   "application/octet-stream")


# --------------------------------------------------------------------------------------------- config


@dataclass
class DeploymentSettings:
    """How one deployment runs.

    ``autoscaling`` (Serve's ``autoscaling_config``: ``min_replicas``, ``max_replicas``,
    ``target_ongoing_requests``, ...) replaces the fixed ``num_replicas`` when given. ``num_gpus`` ``None``
    means "from ``ServeConfig.use_gpu``" for the encoder and 0 elsewhere. ``max_batch_size`` and
    ``batch_wait_timeout_s`` apply to the deployments that batch (encoder and shards); ``torch_threads``
    bounds each replica's intra-op threads. ``ray_actor_options`` is merged over ``num_cpus``/``num_gpus``.
    """

    num_replicas: int = 1
    autoscaling: dict | None = None
    num_cpus: float = 1.0
    num_gpus: float | None = None
    max_ongoing_requests: int | None = None
    max_batch_size: int = 16
    batch_wait_timeout_s: float = 0.005
    torch_threads: int = 1
    ray_actor_options: dict = field(default_factory=dict)

    def check(self, name: str) -> None:
        if self.autoscaling is None and (not isinstance(self.num_replicas, int) or self.num_replicas < 1):
            raise ValueError(f"{name}.num_replicas must be an integer >= 1, got {self.num_replicas!r}")
        if self.autoscaling is not None:
            if not isinstance(self.autoscaling, dict):
                raise ValueError(f"{name}.autoscaling must be a mapping, got {self.autoscaling!r}")
            lo, hi = self.autoscaling.get("min_replicas", 1), self.autoscaling.get("max_replicas", 1)
            if lo < 0 or hi < max(lo, 1):
                raise ValueError(f"{name}.autoscaling needs 0 <= min_replicas <= max_replicas, max >= 1")
        if self.num_cpus < 0 or (self.num_gpus is not None and self.num_gpus < 0):
            raise ValueError(f"{name}: num_cpus / num_gpus must be >= 0")
        if self.max_batch_size < 1 or self.batch_wait_timeout_s < 0 or self.torch_threads < 1:
            raise ValueError(f"{name}: max_batch_size and torch_threads must be >= 1, batch_wait_timeout_s >= 0")


def _default_ingress() -> DeploymentSettings:
    return DeploymentSettings(num_cpus=0.25, max_ongoing_requests=256)


def _default_encoder() -> DeploymentSettings:
    return DeploymentSettings(num_cpus=1.0, max_ongoing_requests=64, max_batch_size=16,
                              batch_wait_timeout_s=0.005, torch_threads=1)


def _default_shard() -> DeploymentSettings:
    return DeploymentSettings(num_cpus=0.25, max_ongoing_requests=64, max_batch_size=32,
                              batch_wait_timeout_s=0.002, torch_threads=1)


def _default_colocated() -> DeploymentSettings:
    # The one deployment of the colocated mode does the encoder's and the shards' work: the encoder's CPU.
    return DeploymentSettings(num_cpus=1.0, max_ongoing_requests=256, max_batch_size=16, torch_threads=1)


SEARCH_MODES = ("auto", "sharded", "colocated")
_ROLES = {"encoder": _default_encoder, "shard": _default_shard, "ingress": _default_ingress,
          "colocated": _default_colocated}


@dataclass
class ServeConfig:
    """Everything :func:`build_app` needs; :meth:`from_dict` reads a Serve config's ``args``."""

    checkpoint: str
    index: str
    num_shards: int = 2
    default_k: int = 20
    max_k: int = 200
    max_body_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 16_000_000  # upload images: width x height (decompression bombs); capped by images.py
    max_strokes: int = 1_000
    max_points: int = 50_000
    max_coordinate: float = 1_000_000.0  # |x|, |y| of submitted strokes
    thumbnail_size: int = 128
    use_gpu: bool = False  # encoder replicas on a GPU (1 per replica unless encoder.num_gpus says otherwise)
    shard_dtype: str | None = None  # storage dtype of shard embeddings (None: float32 on CPU, float16 on GPU)
    retry_timeout_s: float = 30.0  # how long the ingress retries a call whose replica died
    thumbnail_cache: int = 2048
    # "sharded": the ingress calls SketchEncoder and SearchShard{i} deployments through handles (galleries of
    # any size, spread over replicas and GPUs). "colocated": one deployment, each replica holding the encoder
    # and the whole gallery (no handle hops: measured 2-4x lower latency on small galleries). "auto":
    # colocated when the gallery's embeddings take at most colocate_max_bytes, else sharded.
    search_mode: str = "auto"
    colocate_max_bytes: int = 1 << 30
    encoder: DeploymentSettings = field(default_factory=_default_encoder)
    shard: DeploymentSettings = field(default_factory=_default_shard)
    ingress: DeploymentSettings = field(default_factory=_default_ingress)
    colocated: DeploymentSettings = field(default_factory=_default_colocated)  # the colocated mode's deployment

    def __post_init__(self) -> None:
        for name, default in _ROLES.items():
            v = getattr(self, name)
            if v is None:
                setattr(self, name, default())
            elif isinstance(v, dict):  # from YAML / JSON: fields not given keep this role's defaults
                setattr(self, name, _settings_from_dict(v, name, default()))
        self.check()

    def check(self, where: str = "serve") -> None:
        if not self.checkpoint or not isinstance(self.checkpoint, str):
            raise ValueError("checkpoint (a checkpoint folder or URI) is required")
        if not self.index or not isinstance(self.index, str):
            raise ValueError("index (an index folder or URI) is required")
        for name in ("num_shards", "max_k", "default_k", "max_body_bytes", "max_pixels", "max_strokes",
                     "max_points", "thumbnail_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if self.default_k > self.max_k:
            raise ValueError(f"default_k ({self.default_k}) must not exceed max_k ({self.max_k})")
        if not self.max_coordinate > 0 or self.retry_timeout_s < 0:
            raise ValueError("max_coordinate must be > 0 and retry_timeout_s >= 0")
        if self.search_mode not in SEARCH_MODES:
            raise ValueError(f"search_mode must be one of {list(SEARCH_MODES)}, got {self.search_mode!r}")
        if isinstance(self.colocate_max_bytes, bool) or not isinstance(self.colocate_max_bytes, int) \
                or self.colocate_max_bytes < 0:
            raise ValueError(f"colocate_max_bytes must be an integer >= 0, got {self.colocate_max_bytes!r}")
        for name in _ROLES:
            getattr(self, name).check(name)

    @classmethod
    def from_dict(cls, args: dict) -> "ServeConfig":
        """From a mapping (a Serve config's ``args``); unknown keys are errors that list the valid ones.

        ``checkpoint``/``index`` may be left out when ``demo_out`` names a demo run folder (default
        ``demo_out``): they are then taken from its ``demo_summary.json``."""
        if not isinstance(args, dict):
            raise ValueError(f"serve args must be a mapping, got {type(args).__name__}")
        args = dict(args)
        demo_out = args.pop("demo_out", None)
        if not args.get("checkpoint") or not args.get("index"):
            defaults = demo_defaults(demo_out or "demo_out")
            args.setdefault("checkpoint", defaults["checkpoint"])
            args.setdefault("index", defaults["index"])
            args["checkpoint"] = args["checkpoint"] or defaults["checkpoint"]
            args["index"] = args["index"] or defaults["index"]
        for key in ("checkpoint", "index"):  # replicas may run elsewhere: no paths relative to this process
            if isinstance(args.get(key), str) and not fs.is_remote(args[key]):
                args[key] = os.path.abspath(args[key])
        for name, default in _ROLES.items():
            if isinstance(args.get(name), dict):  # fields not given keep this role's defaults
                args[name] = {**dataclasses.asdict(default()), **args[name]}
        # The run config's mechanism (ray_sbir.config): unknown keys and wrong types name the key.
        return build_typed(cls, args, "serve")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _settings_from_dict(d: dict, name: str, base: DeploymentSettings) -> DeploymentSettings:
    return build_typed(DeploymentSettings, {**dataclasses.asdict(base), **d}, f"serve.{name}")


def demo_defaults(demo_out: str = "demo_out") -> dict:
    """The checkpoint and unseen-class gallery index of a ``ray-sbir demo --out <demo_out>`` run.

    Raises ``FileNotFoundError`` saying what to run first when the demo has not been run."""
    summary_uri = fs.join(demo_out, "demo_summary.json")
    if not fs.exists(summary_uri):
        raise FileNotFoundError(
            f"no demo run found ({summary_uri} does not exist): run `ray-sbir demo --out {demo_out}` first, "
            "or give a checkpoint and an index explicitly (--checkpoint ... --index ...)")
    summary = json.loads(fs.read_text(summary_uri))
    checkpoint = summary.get("best_checkpoint")
    index = fs.join(demo_out, "eval", "trained", "index", "gallery")
    if not checkpoint:
        raise FileNotFoundError(f"{summary_uri} names no best_checkpoint; re-run `ray-sbir demo --out {demo_out}`")
    if not fs.exists(index):
        raise FileNotFoundError(f"the demo's gallery index {index} is missing; re-run `ray-sbir demo --out {demo_out}`")
    return {"checkpoint": checkpoint, "index": index}


def embedding_bytes(count: int, dim: int, dtype: str | None, on_gpu: bool) -> int:
    """Bytes the gallery's embeddings take on the search device (``dtype`` ``None``: fp16 on GPU, else fp32)."""
    from ray_sbir.search import storage_itemsize

    return int(count) * int(dim) * storage_itemsize(dtype, on_gpu)


def resolve_search_mode(cfg: ServeConfig) -> str:
    """``"sharded"`` or ``"colocated"``: ``cfg.search_mode``, or for ``"auto"`` colocated exactly when the
    index's embeddings take at most ``cfg.colocate_max_bytes`` on the colocated replica's device (read from
    the Parquet footers, no data)."""
    if cfg.search_mode != "auto":
        return cfg.search_mode
    layout = index_layout(cfg.index)
    size = embedding_bytes(layout.count, layout.dim, cfg.shard_dtype, _model_gpus(cfg, cfg.colocated) > 0)
    return "colocated" if size <= cfg.colocate_max_bytes else "sharded"


def _model_gpus(cfg: ServeConfig, settings: DeploymentSettings) -> float:
    """GPUs per replica of a deployment that runs the encoder (the sharded mode's encoder, the colocated
    deployment): its own ``num_gpus``, else one when ``use_gpu``."""
    return settings.num_gpus if settings.num_gpus is not None else (1.0 if cfg.use_gpu else 0.0)


# ---------------------------------------------------------------------------------------- index slices


# ------------------------------------------------------------------------------------------ deployments


def _device(use_gpu: bool):
    import torch

    return torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")


def load_sketch_encoder(checkpoint: str, use_gpu: bool, torch_threads: int):
    """``(model, checkpoint meta, device)`` for a serving replica: the model of any task, reduced to its
    sketch side (the photo encoder's weights are dropped)."""
    import torch

    from ray_sbir.checkpoint import load_model

    torch.set_num_threads(torch_threads)
    device = _device(use_gpu)
    model, meta = load_model(checkpoint, device)
    return model.keep_only("sketch"), meta, device


def encode_sketches(model, images: np.ndarray, device) -> np.ndarray:
    """``uint8 [B, S, S]`` sketch images -> ``float32 [B, D]`` embeddings."""
    import torch

    from ray_sbir.data.images import to_model_input

    with torch.inference_mode():
        return model.encode(to_model_input(torch.from_numpy(images), device), "sketch").float().cpu().numpy()


def load_exact_shard(index: str, layout: IndexLayout, start: int, stop: int, *, use_gpu: bool,
                     dtype: str | None, torch_threads: int):
    """Rows ``start:stop`` of the index as an :class:`~ray_sbir.search.ExactShard` (global row numbers), or for
    a binary index (hash codes) a Hamming shard over its packed codes behind the same interface."""
    import pyarrow as pa

    from ray_sbir.search import ExactShard

    spec = (layout.manifest.embedding if layout.manifest else None) or {}
    if spec.get("kind") == "binary":
        from ray_sbir.hamming import HammingScores, HammingShard

        return HammingScores(HammingShard(read_code_rows(index, layout, start, stop), int(spec["bits"]),
                                          offset=start, device=_device(use_gpu)))
    emb = read_embedding_rows(index, layout, start, stop)
    shard = ExactShard(emb, offset=start, device=_device(use_gpu), dtype=dtype, num_threads=torch_threads)
    del emb
    # Arrow keeps the Parquet read buffers pooled: without this a 1M x 256 shard replica held 2.3 GB of
    # RSS for 512 MB of embeddings (bench/bench_serving.py).
    pa.default_memory_pool().release_unused()
    return shard


class LocalSearch:
    """The colocated mode's search engine, inside an ingress replica: the sketch encoder and one
    :class:`~ray_sbir.search.ExactShard` over the whole gallery, called in batches by a
    :class:`~ray_sbir.batching.GreedyBatcher` (one forward pass and one scan per batch, and no batch timer).
    Answers ``(scores, global rows)`` like the shards of the sharded mode."""

    def __init__(self, checkpoint: str, index: str, layout: IndexLayout, *, use_gpu: bool = False,
                 dtype: str | None = None, torch_threads: int = 1, max_batch_size: int = 16):
        from ray_sbir.batching import GreedyBatcher

        self.encoder, _, self.device = load_sketch_encoder(checkpoint, use_gpu, torch_threads)
        self.shard = load_exact_shard(index, layout, 0, layout.count, use_gpu=use_gpu, dtype=dtype,
                                      torch_threads=torch_threads)
        self.batcher = GreedyBatcher(self._run, max_batch_size)

    async def search(self, image: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return await self.batcher((image, k))

    def _run(self, batch: list[tuple[np.ndarray, int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        emb = encode_sketches(self.encoder, np.stack([image for image, _ in batch]), self.device)
        scores, rows = self.shard.search(emb, max(k for _, k in batch))
        return [(scores[i, :k], rows[i, :k]) for i, (_, k) in enumerate(batch)]

    def stats(self) -> dict:
        return {**self.batcher.stats(), "device": str(self.device), "count": self.shard.n, "pid": os.getpid()}


@serve.deployment(name=ENCODER_NAME)
class SketchEncoder:
    """The checkpoint's sketch encoder: ``uint8 [S, S]`` sketch image -> L2-normalised ``float32 [D]``."""

    def __init__(self, checkpoint: str, use_gpu: bool = False, torch_threads: int = 1, max_batch_size: int = 16,
                 batch_wait_timeout_s: float = 0.005):
        self.encoder, meta, self.device = load_sketch_encoder(checkpoint, use_gpu, torch_threads)
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
        emb = await asyncio.to_thread(self._encode, x)
        self.batches += 1
        self.items += len(images)
        self.max_seen_batch = max(self.max_seen_batch, len(images))
        return list(emb)

    def _encode(self, x: np.ndarray) -> np.ndarray:
        return encode_sketches(self.encoder, x, self.device)

    def stats(self) -> dict:
        return {"batches": self.batches, "items": self.items, "max_batch": self.max_seen_batch,
                "device": str(self.device), "pid": os.getpid()}


@serve.deployment(name=SHARD_NAME)
class SearchShard:
    """One contiguous slice of the gallery, searched exactly; answers carry global row numbers."""

    def __init__(self, index: str, shard: int, num_shards: int, use_gpu: bool = False, dtype: str | None = None,
                 torch_threads: int = 1, max_batch_size: int = 32, batch_wait_timeout_s: float = 0.002):
        import torch

        from ray_sbir.search import shard_slices

        torch.set_num_threads(torch_threads)
        layout = index_layout(index)
        sl = shard_slices(layout.count, num_shards)[shard]
        self.shard = load_exact_shard(index, layout, sl.start, sl.stop, use_gpu=use_gpu, dtype=dtype,
                                      torch_threads=torch_threads)
        self.info = {"shard": shard, "num_shards": num_shards, "start": sl.start, "stop": sl.stop,
                     "count": self.shard.n, "dim": layout.dim, "total": layout.count,
                     "device": str(self.shard.device)}
        self._search_batch.set_max_batch_size(max_batch_size)
        self._search_batch.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def describe(self) -> dict:
        return {**self.info, "pid": os.getpid()}

    async def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores float32 [k'], global rows int64 [k'])`` for one query embedding."""
        return await self._search_batch(np.asarray(query, np.float32).reshape(-1), int(k))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _search_batch(self, queries: list[np.ndarray], ks: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        kk = max(ks)
        scores, rows = await asyncio.to_thread(self.shard.search, np.stack(queries), kk)
        return [(scores[i, :k].copy(), rows[i, :k].copy()) for i, k in enumerate(ks)]


class _LRU:
    def __init__(self, size: int):
        self.size = size
        self.data: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        return None

    def put(self, key, value) -> None:
        with self.lock:
            self.data[key] = value
            self.data.move_to_end(key)
            while len(self.data) > self.size:
                self.data.popitem(last=False)


def _retryable_errors() -> tuple[type[BaseException], ...]:
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.serve.exceptions import BackPressureError, ReplicaUnavailableError

    return (RayActorError, ActorUnavailableError, ReplicaUnavailableError, BackPressureError)


def parse_multipart(body: bytes, content_type: str) -> list[dict]:
    """Parts of a ``multipart/form-data`` body: ``[{"name", "filename", "content_type", "data"}]``.

    Raises ``ValueError`` saying what is malformed."""
    msg = Message()
    msg["content-type"] = content_type
    boundary = msg.get_param("boundary")
    if not boundary or not isinstance(boundary, str):
        raise ValueError("multipart body without a boundary parameter in its Content-Type")
    delim = b"\r\n--" + boundary.encode("latin-1")
    chunks = (b"\r\n" + body).split(delim)
    if len(chunks) < 2:
        raise ValueError("multipart body does not contain its boundary")
    parts, closed = [], False
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            closed = True
            break
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError("malformed multipart part (no blank line after its headers)")
        headers = Message()
        for line in head.split(b"\r\n"):
            if not line.strip():
                continue
            key, colon, value = line.decode("latin-1").partition(":")
            if not colon:
                raise ValueError(f"malformed multipart header line {line[:80]!r}")
            headers[key.strip()] = value.strip()
        disposition = headers.get("content-disposition", "")
        if not disposition.lower().startswith("form-data"):
            raise ValueError("multipart part without 'Content-Disposition: form-data'")
        parts.append({"name": headers.get_param("name", header="content-disposition"),
                      "filename": headers.get_filename(),
                      "content_type": headers.get_content_type() if headers.get("content-type") else None,
                      "data": data})
    if not closed:
        raise ValueError("multipart body is truncated (no closing boundary)")
    return parts


def _html_attr(s: str) -> str:
    return s.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def _api_error(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


api = FastAPI(
    title="ray-sbir",
    version="0.1.0",
    description="Zero-shot sketch-based image retrieval: draw or upload a sketch, get the nearest gallery images. "
                "The doodle page is at `/`.",
)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    msgs = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
        msgs.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    return JSONResponse({"detail": "; ".join(msgs) or "invalid request"}, status_code=422)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


_SEARCH_BODY = {
    "requestBody": {
        "required": True,
        "description": "A sketch: QuickDraw strokes as JSON, an image upload, or a raw image body.",
        "content": {
            "application/json": {"schema": {
                "type": "object", "required": ["strokes"],
                "properties": {
                    "strokes": {"type": "array", "description": "[[[x, ...], [y, ...]], ...] (optionally a third "
                                "list of timings per stroke, QuickDraw raw format)",
                                "items": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}},
                    "k": {"type": "integer", "minimum": 1, "description": "number of results (default 20)"},
                },
            }, "example": {"strokes": [[[10, 100, 100, 10, 10], [10, 10, 100, 100, 10]]], "k": 10}},
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}, "k": {"type": "integer"}},
            }},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        },
    },
}


# NOTE: @serve.ingress freezes (pickles) the FastAPI app when this class is defined, with the module globals that
# exist at that moment: everything the endpoints use must be defined above this line.
@serve.deployment(name=INGRESS_NAME)
@serve.ingress(api)
class SearchIngress:
    """HTTP front: validation, fan-out to the shards, merge, item lookup, thumbnails and the doodle page."""

    def __init__(self, config: dict, encoder, shards: list):
        from ray_sbir.checkpoint import read_meta
        from ray_sbir.search import shard_slices

        self.cfg = ServeConfig(**config)
        self.encoder = encoder
        self.shards = list(shards)
        from ray_sbir.data.decode import render_spec

        meta = read_meta(self.cfg.checkpoint)
        spec = render_spec(meta.config, "sketch")
        self.size, self.line_width, self.padding = spec.size, spec.line_width, spec.padding
        layout = index_layout(self.cfg.index)
        self.dim = layout.dim
        if self.dim != int(meta.config.model.embed_dim):
            raise ValueError(f"index {self.cfg.index} holds {self.dim}-d embeddings but checkpoint "
                             f"{self.cfg.checkpoint} makes {meta.config.model.embed_dim}-d ones")
        self.items = GalleryItems.read(self.cfg.index, layout)
        if len(self.items) != layout.count:
            raise ValueError(f"index {self.cfg.index}: {len(self.items)} rows, file footers say {layout.count}")
        self.class_counts = self.items.class_counts()
        # How results are scored: the inner product of float embeddings, or Hamming distance of hash codes.
        self.scoring = (layout.manifest.embedding if layout.manifest else None) or {"kind": "float",
                                                                                     "score": "inner_product"}
        self.n = layout.count
        self.slices = [(s.start, s.stop) for s in shard_slices(self.n, self.cfg.num_shards)]
        self.model_info = {
            "name": meta.config.model.name, "task": meta.task, "sketch_backbone": meta.config.model.sketch.backbone,
            "embed_dim": int(meta.config.model.embed_dim), "normalize": meta.config.model.normalize,
            "checkpoint": self.cfg.checkpoint, "epoch": meta.epoch, "image_size": self.size,
            "training_classes": list(meta.classes),
        }
        self.thumbs = _LRU(self.cfg.thumbnail_cache)
        self.page_html = resources.files("ray_sbir").joinpath("assets/web/index.html").read_text(encoding="utf-8")
        self.retryable = _retryable_errors()
        self.retries = 0
        self.local: LocalSearch | None = None
        if encoder is None:  # colocated mode: encoder and the whole gallery in this replica
            s = self.cfg.colocated
            self.local = LocalSearch(self.cfg.checkpoint, self.cfg.index, layout,
                                     use_gpu=_model_gpus(self.cfg, s) > 0, dtype=self.cfg.shard_dtype,
                                     torch_threads=s.torch_threads, max_batch_size=s.max_batch_size)
            self.slices = [(0, self.n)]

    @property
    def mode(self) -> str:
        return "colocated" if self.local is not None else "sharded"

    # ---------------------------------------------------------------------------------------- pages

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page(self, request: Request) -> HTMLResponse:
        root = str(request.scope.get("root_path", "")).rstrip("/")
        return HTMLResponse(self.page_html.replace('data-root=""', f'data-root="{_html_attr(root)}"', 1))

    @api.get("/healthz", summary="Liveness")
    async def healthz(self) -> dict:
        return {"status": "ok", "items": self.n, "shards": len(self.slices)}

    @api.get("/info", summary="Index, shards, model and classes")
    async def info(self) -> dict:
        return {
            "index": self.cfg.index, "count": self.n, "dim": self.dim, "search_mode": self.mode,
            "scoring": self.scoring,
            "num_shards": len(self.slices),
            "shards": [{"shard": i, "start": a, "stop": b} for i, (a, b) in enumerate(self.slices)],
            "model": self.model_info, "classes": self.class_counts,
            "limits": {"default_k": self.cfg.default_k, "max_k": self.cfg.max_k,
                       "max_body_bytes": self.cfg.max_body_bytes, "max_pixels": self.cfg.max_pixels,
                       "max_strokes": self.cfg.max_strokes, "max_points": self.cfg.max_points,
                       "max_coordinate": self.cfg.max_coordinate},
            "retries": self.retries,
        }

    # --------------------------------------------------------------------------------------- search

    @api.post("/search", summary="Search the gallery with a sketch", openapi_extra=_SEARCH_BODY)
    async def search(self, request: Request, k: str | None = None) -> dict:
        t0 = time.perf_counter()
        k_value = self._parse_k(k, "query parameter k", text=True) if k is not None else None
        body = await self._read_body(request)
        t_read = time.perf_counter()
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype == "application/json" or (ctype in ("", "text/plain") and body.lstrip()[:1] in (b"{", b"[")):
            # A doodle's strokes (a few KB) parse and rasterize in well under a millisecond: on the event loop
            # that costs less than a hop to a worker thread and back; bigger bodies must not block the loop.
            sketch, json_k = (self._sketch_from_json(body) if len(body) <= INLINE_JSON_BYTES
                              else await asyncio.to_thread(self._sketch_from_json, body))
            k_value = json_k if json_k is not None else k_value
        elif ctype == "multipart/form-data":
            data, form_k = self._image_from_multipart(body, request.headers.get("content-type", ""))
            k_value = form_k if form_k is not None else k_value
            sketch = await asyncio.to_thread(self._sketch_from_image, data)
        elif ctype in RAW_IMAGE_TYPES or ctype.startswith("image/") or ctype == "":
            sketch = await asyncio.to_thread(self._sketch_from_image, body)
        else:
            raise _api_error(415, f"unsupported Content-Type {ctype!r}: send application/json strokes, "
                                  "multipart/form-data with a 'file' field, or an image/png or image/jpeg body")
        k_value = self.cfg.default_k if k_value is None else k_value
        t1 = time.perf_counter()
        if self.local is not None:
            scores, rows = await self.local.search(sketch, k_value)
            scores, rows = scores[None, :], rows[None, :]
            t2 = time.perf_counter()
        else:
            emb = await self._call("the sketch encoder", lambda: self.encoder.remote(sketch))
            t2 = time.perf_counter()
            answers = await asyncio.gather(*(
                self._call(f"search shard {i}", lambda h=h: h.search.remote(emb, k_value))
                for i, h in enumerate(self.shards)))
            from ray_sbir.search import merge_topk

            scores, rows = merge_topk([(s[None, :], r[None, :]) for s, r in answers], k_value)
        root = str(request.scope.get("root_path", "")).rstrip("/")
        ids, labels = self.items.rows(rows[0])
        # QuickDraw galleries add each drawing's key_id, countrycode and recognized flag.
        results = [{"rank": rank, "id": item_id, "class": label, "score": round(float(score), 6), **details,
                    "image_url": f"{root}/items/{quote(item_id, safe='/:')}/image"}
                   for rank, (item_id, label, score, details)
                   in enumerate(zip(ids, labels, scores[0].tolist(), self.items.details(rows[0])), start=1)]
        t3 = time.perf_counter()
        timing = {"read": t_read - t0, "validate": t1 - t_read, "encode": t2 - t1, "search": t3 - t2,
                  "total": t3 - t0}
        if self.local is not None:  # one batched step: encoder + scan (+ the queue wait), then the item lookup
            timing = {"read": t_read - t0, "validate": t1 - t_read, "encode+search": t2 - t1, "results": t3 - t2,
                      "total": t3 - t0}
        return {"k": k_value, "count": len(results), "results": results,
                "timing_ms": {name: round(v * 1e3, 2) for name, v in timing.items()}}

    def stats(self) -> dict:
        """Batching statistics of the colocated mode (called through a deployment handle, not HTTP)."""
        return {"mode": self.mode, "retries": self.retries, **(self.local.stats() if self.local else {})}

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
                    raise _api_error(503, f"{what} is unavailable ({type(e).__name__}); try again later") from e
                self.retries += 1
                logger.warning("retrying %s after %s", what, type(e).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _parse_k(self, value: Any, where: str, text: bool = False) -> int:
        """``k`` from JSON (an integer) or, ``text=True``, from a query parameter / form field."""
        if text and isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise _api_error(422, f"{where} must be an integer, got {value[:40]!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise _api_error(422, f"{where} must be an integer, got {type(value).__name__}")
        if not 1 <= value <= self.cfg.max_k:
            raise _api_error(422, f"{where} must be between 1 and {self.cfg.max_k}, got {value}")
        return value

    async def _read_body(self, request: Request) -> bytes:
        limit = self.cfg.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                declared_n = int(declared)
            except ValueError:
                raise _api_error(400, f"invalid Content-Length header {declared[:40]!r}") from None
            if declared_n > limit:
                raise _api_error(413, f"request body of {declared_n} bytes exceeds the limit of {limit} bytes")
        buf = bytearray()
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > limit:
                raise _api_error(413, f"request body exceeds the limit of {limit} bytes")
        if not buf:
            raise _api_error(400, "empty request body: send a sketch (strokes JSON or an image)")
        return bytes(buf)

    def _image_from_multipart(self, body: bytes, content_type: str) -> tuple[bytes, int | None]:
        try:
            parts = parse_multipart(body, content_type)
        except ValueError as e:
            raise _api_error(400, f"invalid multipart body: {e}") from None
        file_part = next((p for p in parts if p["name"] in ("file", "image")), None)
        if file_part is None:
            file_part = next((p for p in parts if p["filename"]), None)
        if file_part is None:
            raise _api_error(400, "multipart body has no file: send the image in a field named 'file'")
        k = None
        k_part = next((p for p in parts if p["name"] == "k"), None)
        if k_part is not None:
            k = self._parse_k(k_part["data"].decode("utf-8", "replace"), "form field k", text=True)
        if not file_part["data"]:
            raise _api_error(400, "the uploaded file is empty")
        return file_part["data"], k

    def _sketch_from_image(self, data: bytes) -> np.ndarray:
        from PIL import Image

        from ray_sbir.data.images import BadItem, decode_sketch_image

        try:
            with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as img:  # reads the header only
                w, h = img.size
        except Image.DecompressionBombError:
            raise _api_error(413, f"image too large: more than {self.cfg.max_pixels} pixels") from None
        except Exception as e:  # UnidentifiedImageError, OSError, SyntaxError... on bad bytes
            raise _api_error(400, f"not a decodable image (PNG, JPEG, GIF, BMP or WebP expected): "
                                  f"{type(e).__name__}") from None
        if w * h > self.cfg.max_pixels:
            raise _api_error(413, f"image of {w}x{h} = {w * h} pixels exceeds the limit of "
                                  f"{self.cfg.max_pixels} pixels")
        try:
            return decode_sketch_image(data, self.size, "uploaded image")
        except BadItem as e:
            msg = str(e)
            if "no ink" in msg:
                raise _api_error(422, f"{msg}: the image is blank, draw something dark on a light background")
            if "exceeds" in msg or "too large" in msg:
                raise _api_error(413, msg)
            raise _api_error(400, msg) from None

    def _sketch_from_json(self, body: bytes) -> tuple[np.ndarray, int | None]:
        from ray_sbir.data.quickdraw import MalformedDrawing, parse_line, rasterize

        try:
            obj = json.loads(body)
        except UnicodeDecodeError:
            raise _api_error(400, "invalid JSON: the body is not UTF-8") from None
        except json.JSONDecodeError as e:
            raise _api_error(400, f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
        except RecursionError:
            raise _api_error(400, "invalid JSON: nested too deeply") from None
        k = None
        if isinstance(obj, dict):
            if "strokes" not in obj:
                raise _api_error(422, "missing 'strokes': send {\"strokes\": [[[x, ...], [y, ...]], ...], \"k\": 20}")
            strokes = obj["strokes"]
            if "k" in obj and obj["k"] is not None:
                k = self._parse_k(obj["k"], "k")
        elif isinstance(obj, list):
            strokes = obj
        else:
            raise _api_error(422, f"expected a JSON object with 'strokes', got {type(obj).__name__}")
        if not isinstance(strokes, list):
            raise _api_error(422, "'strokes' must be a list of strokes [[x, ...], [y, ...]], "
                                  f"got {type(strokes).__name__}")
        if not strokes:
            raise _api_error(422, "empty drawing: 'strokes' has no strokes")
        if len(strokes) > self.cfg.max_strokes:
            raise _api_error(422, f"too many strokes: {len(strokes)} > {self.cfg.max_strokes}")
        points = sum(len(s[0]) for s in strokes if isinstance(s, list) and s and isinstance(s[0], list))
        if points > self.cfg.max_points:
            raise _api_error(422, f"too many points: {points} > {self.cfg.max_points}")
        line = json.dumps({"word": "query", "key_id": "query", "drawing": strokes})
        try:
            drawing = parse_line(line, source="request", normalize=False)
        except MalformedDrawing as e:
            raise _api_error(422, f"invalid strokes: {e.reason}") from None
        pts = np.concatenate(drawing.strokes, axis=0)
        if np.abs(pts).max() > self.cfg.max_coordinate:
            raise _api_error(422, f"stroke coordinates out of range: |x|, |y| must be <= {self.cfg.max_coordinate:g}")
        try:
            image = rasterize([drawing.strokes], size=self.size, line_width=self.line_width, padding=self.padding)[0]
        except ValueError as e:
            raise _api_error(422, f"cannot rasterize the strokes: {e}") from None
        return image, k

    # --------------------------------------------------------------------------------------- items

    @api.get("/items/{item_id:path}/image", summary="Thumbnail of a gallery item (PNG)",
             responses={200: {"content": {"image/png": {}}}, 404: {"description": "unknown item id"}})
    async def item_image(self, item_id: str) -> Response:
        row = self.items.row_of(item_id)
        if row is None:
            raise _api_error(404, f"unknown item id {item_id[:200]!r}")
        png = self.thumbs.get(row)
        if png is None:
            try:
                png = await asyncio.to_thread(self._thumbnail, row)
            except Exception as e:
                logger.exception("thumbnail of %s failed", item_id)
                raise _api_error(500, f"cannot render the image of item {item_id!r}: {type(e).__name__}: {e}")
            self.thumbs.put(row, png)
        return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=3600"})

    def _thumbnail(self, row: int) -> bytes:
        from PIL import Image

        from ray_sbir.data.images import decode_photo
        from ray_sbir.data.quickdraw import parse_line, rasterize, read_ndjson

        size = self.cfg.thumbnail_size
        uri, item_id = self.items.uri(row), self.items.id(row)
        line_range = self.items.source_range(row)
        drawing = None
        if line_range is not None:  # a QuickDraw index: read back the drawing's own line, not the file
            offset, length = line_range
            with fs.open_uri(uri, "rb", block_size=length) as f:
                f.seek(offset)
                drawing = parse_line(f.read(length), source=uri, line_no=0)
        elif uri.endswith((".ndjson", ".ndjson.gz")):  # a catalog item (id "<file>:<key_id>"): scan its file
            key = item_id.rsplit(":", 1)[-1]
            drawing = next((d for d in read_ndjson(uri) if d.key_id == key), None)
            if drawing is None:
                raise FileNotFoundError(f"drawing {key} not found in {uri}")
        if drawing is not None:
            arr = rasterize([drawing.strokes], size=size, line_width=max(1.0, self.line_width * size / self.size),
                            padding=self.padding)[0]
        else:
            arr = decode_photo(fs.read_bytes(uri), size, uri)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        return buf.getvalue()


# ------------------------------------------------------------------------------------------- building


def _deployment_options(s: DeploymentSettings, name: str, num_gpus: float) -> dict:
    actor = {"num_cpus": s.num_cpus, "num_gpus": num_gpus, **(s.ray_actor_options or {})}
    opts: dict[str, Any] = {"name": name, "ray_actor_options": actor}
    if s.autoscaling:
        opts["autoscaling_config"] = dict(s.autoscaling)
    else:
        opts["num_replicas"] = s.num_replicas
    if s.max_ongoing_requests:
        opts["max_ongoing_requests"] = s.max_ongoing_requests
    return opts


def build_app(config: ServeConfig | dict):
    """The bound Serve application. Sharded mode: ``SearchIngress`` over one ``SketchEncoder`` and
    ``num_shards`` ``SearchShard{i}`` deployments. Colocated mode (:func:`resolve_search_mode`):
    ``SearchIngress`` alone, run with ``cfg.colocated``'s settings, each replica searching the whole gallery.
    Run it with ``serve.run(build_app(cfg))``."""
    cfg = config if isinstance(config, ServeConfig) else ServeConfig.from_dict(config)
    if resolve_search_mode(cfg) == "colocated":
        gpus = _model_gpus(cfg, cfg.colocated)
        return SearchIngress.options(**_deployment_options(cfg.colocated, INGRESS_NAME, gpus)).bind(
            cfg.to_dict(), None, [])
    enc_gpus = _model_gpus(cfg, cfg.encoder)
    encoder = SketchEncoder.options(**_deployment_options(cfg.encoder, ENCODER_NAME, enc_gpus)).bind(
        cfg.checkpoint, use_gpu=enc_gpus > 0, torch_threads=cfg.encoder.torch_threads,
        max_batch_size=cfg.encoder.max_batch_size, batch_wait_timeout_s=cfg.encoder.batch_wait_timeout_s)
    shard_gpus = cfg.shard.num_gpus or 0.0
    shards = [
        SearchShard.options(**_deployment_options(cfg.shard, f"{SHARD_NAME}{i}", shard_gpus)).bind(
            cfg.index, i, cfg.num_shards, use_gpu=shard_gpus > 0, dtype=cfg.shard_dtype,
            torch_threads=cfg.shard.torch_threads, max_batch_size=cfg.shard.max_batch_size,
            batch_wait_timeout_s=cfg.shard.batch_wait_timeout_s)
        for i in range(cfg.num_shards)
    ]
    ingress_gpus = cfg.ingress.num_gpus or 0.0
    return SearchIngress.options(**_deployment_options(cfg.ingress, INGRESS_NAME, ingress_gpus)).bind(
        cfg.to_dict(), encoder, shards)


def build(args: dict):
    """Serve application builder: ``import_path: ray_sbir.serving:build`` with ``args`` in a Serve config file
    (importable wherever ray-sbir is installed, e.g. every node of a cluster), or ``serve run
    ray_sbir.serving:build key=value ...``, which passes every value as a string."""
    args = dict(args or {})
    for key in ("num_shards", "default_k", "max_k", "colocate_max_bytes"):
        if isinstance(args.get(key), str) and args[key].strip().isdigit():
            args[key] = int(args[key])
    for key in ("use_gpu",):
        if isinstance(args.get(key), str) and args[key].strip().lower() in ("true", "false", "1", "0"):
            args[key] = args[key].strip().lower() in ("true", "1")
    return build_app(ServeConfig.from_dict(args))
