"""The serving configuration: :class:`ServeConfig` (a Serve config's ``args``) and per-deployment
:class:`DeploymentSettings`, validated by the run config's one mechanism (:func:`ray_sbir.config.build_typed`:
unknown keys and wrong types name the key). No Ray imports."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

from ray_sbir import fs
from ray_sbir.config import build_typed
from ray_sbir.index import index_layout

__all__ = ["DeploymentSettings", "SEARCH_MODES", "ServeConfig", "demo_defaults", "embedding_bytes", "model_gpus",
           "resolve_search_mode"]


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
    # A binary (hash code) index: 0 ranks by Hamming distance; N > 0 is two-stage, the N Hamming-nearest rows
    # (over every shard) re-scored by the inner product of the float relaxation stored beside the codes.
    hamming_candidates: int = 0
    # Re-rank stage: a similarity checkpoint (task "rerank") re-scores the first stage's top rerank_k items
    # of every query (off when None; see ray_sbir.serving.engine).
    rerank: str | None = None
    rerank_k: int = 100
    # The ranking pipeline (ray_sbir.search.pipeline, e.g. "hamming:500 > rescore > qe:20 > rerank:50"); empty:
    # the index's own (its manifest), with hamming_candidates and rerank/rerank_k applied.
    search: str = ""
    # Access control for /search and /items (the page, /healthz and /docs stay open): the key is read from
    # this environment variable or secret file (one line) when a replica starts; never logged.
    api_key_env: str | None = None
    api_key_file: str | None = None
    encoder: DeploymentSettings = field(default_factory=_default_encoder)
    shard: DeploymentSettings = field(default_factory=_default_shard)
    ingress: DeploymentSettings = field(default_factory=_default_ingress)
    colocated: DeploymentSettings = field(default_factory=_default_colocated)  # the colocated mode's deployment

    @property
    def needs_floats(self) -> bool:
        """Shards keep a binary index's float rows: the rescore (two-stage) or re-rank stage scores them."""
        return bool(self.rerank or self.hamming_candidates or self.search)

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
                     "max_points", "thumbnail_size", "rerank_k"):
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
        if isinstance(self.hamming_candidates, bool) or not isinstance(self.hamming_candidates, int) \
                or self.hamming_candidates < 0:
            raise ValueError(f"hamming_candidates must be an integer >= 0, got {self.hamming_candidates!r}")
        if self.search:
            from ray_sbir.search.pipeline import SearchSpec

            SearchSpec.parse(self.search, "search")
        if self.rerank is not None and (not isinstance(self.rerank, str) or not self.rerank):
            raise ValueError(f"rerank must be a similarity checkpoint path or URI, got {self.rerank!r}")
        if self.api_key_env and self.api_key_file:
            raise ValueError("give api_key_env or api_key_file, not both")
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
        for key in ("checkpoint", "index", "rerank", "api_key_file"):  # replicas may run elsewhere: no relative paths
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
    size = embedding_bytes(layout.count, layout.dim, cfg.shard_dtype, model_gpus(cfg, cfg.colocated) > 0)
    return "colocated" if size <= cfg.colocate_max_bytes else "sharded"


def model_gpus(cfg: ServeConfig, settings: DeploymentSettings) -> float:
    """GPUs per replica of a deployment that runs the encoder (the sharded mode's encoder, the colocated
    deployment): its own ``num_gpus``, else one when ``use_gpu``."""
    return settings.num_gpus if settings.num_gpus is not None else (1.0 if cfg.use_gpu else 0.0)
