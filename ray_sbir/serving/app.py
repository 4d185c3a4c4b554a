"""Building the Serve application: ``build_app(cfg)`` binds the deployments of the chosen mode, ``build(args)`` is
the ``import_path`` of ``serve/config.yaml`` (``ray_sbir.serving:build``) and of ``serve run``, and
:func:`preflight` checks, in the calling process, everything a replica would otherwise fail on at start-up
(readable index and checkpoints, matching dimensions, the API key's source), so ``ray-sbir serve`` stops with
one sentence instead of a replica's traceback."""

from __future__ import annotations

import dataclasses
from typing import Any

from ray_sbir.serving.config import DeploymentSettings, ServeConfig, model_gpus, resolve_search_mode
from ray_sbir.serving.deployments import (
    ENCODER_NAME, INGRESS_NAME, SHARD_NAME, SearchIngress, SearchShard, SketchEncoder,
)

__all__ = ["build", "build_app", "connect", "preflight", "run_app", "stop_app"]


def preflight(cfg: ServeConfig) -> None:
    """Raise ``ValueError`` / ``FileNotFoundError`` naming the file and the problem when ``cfg`` cannot be
    served: the index's manifest and footers, the checkpoint's metadata and weights, their dimensions, the
    re-rank checkpoint, the API key source."""
    from ray_sbir.checkpoint import load_model
    from ray_sbir.index import index_layout
    from ray_sbir.serving.engine import check_index_dim, pipeline_scorer, serving_spec
    from ray_sbir.serving.http import ApiKey

    try:
        layout = index_layout(cfg.index)
    except (FileNotFoundError, ValueError, OSError) as e:
        raise ValueError(f"index {cfg.index} cannot be served: {e}") from None
    if layout.count == 0:
        raise ValueError(f"index {cfg.index} has no items")
    try:
        model, meta = load_model(cfg.checkpoint)
    except Exception as e:  # noqa: BLE001 - any failure to rebuild the model is reported in one sentence
        raise ValueError(f"checkpoint {cfg.checkpoint} cannot be loaded: {type(e).__name__}: {e}") from None
    check_index_dim(cfg.index, layout.dim, cfg.checkpoint, model.embed_dim)
    pipeline_scorer(serving_spec(cfg, layout), cfg, layout.dim)  # the pipeline and its re-rank checkpoint
    ApiKey(cfg)  # the key's variable or file must exist (here: where the command runs)


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
    from ray_sbir.checkpoint import resolve_checkpoint

    cfg = config if isinstance(config, ServeConfig) else ServeConfig.from_dict(config)
    # Run folders become their best checkpoint here, once: every replica then loads the same weights.
    cfg = dataclasses.replace(cfg, checkpoint=resolve_checkpoint(cfg.checkpoint),
                              rerank=resolve_checkpoint(cfg.rerank) if cfg.rerank else cfg.rerank)
    if resolve_search_mode(cfg) == "colocated":
        gpus = model_gpus(cfg, cfg.colocated)
        return SearchIngress.options(**_deployment_options(cfg.colocated, INGRESS_NAME, gpus)).bind(
            cfg.to_dict(), None, [])
    from ray_sbir.index import index_layout
    from ray_sbir.search import index_flip_queries

    enc_gpus = model_gpus(cfg, cfg.encoder)
    encoder = SketchEncoder.options(**_deployment_options(cfg.encoder, ENCODER_NAME, enc_gpus)).bind(
        cfg.checkpoint, use_gpu=enc_gpus > 0, torch_threads=cfg.encoder.torch_threads,
        max_batch_size=cfg.encoder.max_batch_size, batch_wait_timeout_s=cfg.encoder.batch_wait_timeout_s,
        flip_average=index_flip_queries(index_layout(cfg.index)))  # queries encoded as the manifest says
    shard_gpus = cfg.shard.num_gpus or 0.0
    shards = [
        SearchShard.options(**_deployment_options(cfg.shard, f"{SHARD_NAME}{i}", shard_gpus)).bind(
            cfg.index, i, cfg.num_shards, use_gpu=shard_gpus > 0, dtype=cfg.shard_dtype,
            torch_threads=cfg.shard.torch_threads, max_batch_size=cfg.shard.max_batch_size,
            batch_wait_timeout_s=cfg.shard.batch_wait_timeout_s, keep_floats=cfg.needs_floats)
        for i in range(cfg.num_shards)
    ]
    ingress_gpus = cfg.ingress.num_gpus or 0.0
    return SearchIngress.options(**_deployment_options(cfg.ingress, INGRESS_NAME, ingress_gpus)).bind(
        cfg.to_dict(), encoder, shards)


def build(args: dict):
    """Serve application builder: ``import_path: ray_sbir.serving:build`` with ``args`` in a Serve config file
    (importable wherever ray-sbir is installed, e.g. every node of a cluster), or ``serve run
    ray_sbir.serving:build key=value ...``, which passes every value as a string. The :func:`preflight` checks
    run here, in the process that builds the app (``serve deploy``'s build task), so a missing index or a
    checkpoint of another dimension is one error in ``serve status``, not replicas failing one after another."""
    cfg = ServeConfig.from_dict(_typed_args(args))
    preflight(cfg)
    return build_app(cfg)


def _typed_args(args: dict | None) -> dict:
    """``serve run``'s ``key=value`` strings read as YAML for every field that is not a string (``rerank_k=50``,
    ``use_gpu=true``, ``shard={num_cpus: 2}``), then checked by the config's typed loader like any value."""
    import typing

    import yaml

    hints = typing.get_type_hints(ServeConfig)
    out = dict(args or {})
    for key, value in out.items():
        if isinstance(value, str) and key in hints and hints[key] not in (str, str | None):
            try:
                out[key] = yaml.safe_load(value)
            except yaml.YAMLError:
                pass  # left as given: the typed loader names the key and what it expected
    return out


def connect(*, address: str | None, host: str, num_cpus: int | None = None, dashboard: str | None = None) -> str | None:
    """Join the cluster at ``address``, or start a private local one (on loopback when ``host`` is); returns the
    private cluster's tag (:func:`~ray_sbir.distributed.runtime.init_ray`), ``None`` on a joined cluster."""
    import os

    from ray_sbir.distributed.runtime import init_ray, is_loopback

    # Logical CPUs (at least 4): the app's replicas reserve ~2 by default; a 2-core laptop must still place them.
    # new_cluster: a private cluster of our own, never one that happens to run on this machine already.
    return init_ray(num_cpus=num_cpus or max(os.cpu_count() or 1, 4), address=address, new_cluster=not address,
                    loopback=not address and is_loopback(host), dashboard=dashboard)


def run_app(cfg: ServeConfig, *, host: str, port: int) -> None:
    """Run the app on ``host:port`` of the connected cluster (returns once its replicas are up)."""
    from ray import serve

    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(cfg), name="ray-sbir", route_prefix="/")


def stop_app(private_cluster: str | None = None) -> None:
    """Stop what :func:`connect` and :func:`run_app` started. A private cluster (its tag) ends whole: Ray's shutdown, then every
    process still carrying the tag (an HAProxy whose actor died), with no drain: behind HAProxy, Serve keeps each
    replica reachable for 30 s on shutdown (``RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S``) so that other
    nodes' load balancers can deregister it, which a cluster ending with its one HTTP front has no use for. On a
    cluster joined at an address, Serve shuts down as Serve does."""
    from ray_sbir.distributed.runtime import stop_ray

    if not private_cluster:
        from ray import serve

        serve.shutdown()
    stop_ray(private_cluster)
