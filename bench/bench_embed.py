"""Benchmark: the Ray Data gallery embedding job (``ray_sbir.distributed.embed.embed_items``) vs a plain PyTorch loop.

Both embed the same photo (or sketch) files of a generated doodle dataset with the same encoder (the untrained
baseline of the config's model: ``ModelSource(UNTRAINED, cfg.model, seed)``), the same decode function
(``ray_sbir.data.decode.decode_images``), the same ``to_model_input``, batch size and torch threads, and both
write the index as Parquet (``id, uri, label, modality, embedding``):

- **ray**: ``embed_items(...)``, the real job (Ray Data ``map_batches(EmbedBatch)`` on an actor pool of
  ``--concurrency`` actors, rows streamed to the driver, Parquet shards, manifest, failures; run with
  ``resume=False`` into a fresh folder each time, so nothing is reused between runs).
- **plain**: one process: build the encoder, then for each batch of ``--batch-size`` rows
  ``decode_images`` -> ``to_model_input`` -> encoder -> a pyarrow table; one Parquet file at the end.

The plain loop runs with the torch thread count the Ray actor gets (probed with an actor of the same resources;
Ray sets ``OMP_NUM_THREADS`` to the actor's CPU count, 1 by default), and ``--plain-threads-extra`` adds a plain
run at another thread count (the machine's default of 2 here) to show what that setting costs.

Rates: **end-to-end** (items / wall time of the whole call: Ray Data startup, actor start and model load,
writing, manifest) and **steady state**, the marginal rate between a run over ``--small-fraction`` of the items
and a run over all of them: ``(N_full - N_small) / (T_full - T_small)``. Fixed costs cancel in the difference,
for both sides alike. Runs alternate (ray full, plain full, ray small, plain small) ``--rounds`` times; medians.

    python bench/bench_embed.py                                    # demo model, 36 classes x 40 photos
    python bench/bench_embed.py --per-class 80 --rounds 3 --profile
    python bench/bench_embed.py --tiny         # seconds of measuring: tiny.yaml model, 3 classes x 4 photos, 1 round
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from common import (REPO, bench_parser, command_line, ensure_doodles, environment, finish_environment, parse_args,
                    start_ray, tiny_workdir, write_result)

from ray_sbir import fs
from ray_sbir.config import load_config
from ray_sbir.data.catalog import Catalog, build_catalog
from ray_sbir.data.decode import decode_images, render_spec
from ray_sbir.data.images import to_model_input
from ray_sbir.distributed.datasets import DECODE_BATCH
from ray_sbir.distributed.embed import UNTRAINED, EmbedBatch, ModelSource, embed_items
from ray_sbir.logs import setup_logging


def plain_embed(items: Catalog, modality: str, source: ModelSource, out_path: str, spec, batch_size: int,
                threads: int) -> dict:
    """The plain loop; returns its wall time and the time spent in each part."""
    t0 = time.perf_counter()
    torch.set_num_threads(threads)
    table = items.select(modality=modality).items.select(["item_id", "uri", "label", "strokes"])
    model = source.load(torch.device("cpu")).keep_only(modality)  # as EmbedBatch holds it
    t_model = time.perf_counter() - t0
    uris, strokes = table["uri"].to_pylist(), table["strokes"].to_pylist()
    ids, labels = table["item_id"].to_pylist(), table["label"].to_pylist()
    parts, t_decode, t_encode, batch_ends = [], 0.0, 0.0, []
    tl = time.perf_counter()
    with torch.no_grad():
        for start in range(0, len(uris), batch_size):
            sl = slice(start, start + batch_size)
            a = time.perf_counter()
            images, errors = decode_images(uris[sl], strokes[sl], modality, spec)
            b = time.perf_counter()
            ok = np.array([not e for e in errors], dtype=bool)
            emb = np.zeros((len(ok), model.embed_dim), np.float32)
            if ok.any():
                x = to_model_input(torch.from_numpy(images[ok]), "cpu")
                emb[ok] = model.encode(x, modality).float().cpu().numpy()
            c = time.perf_counter()
            t_decode += b - a
            t_encode += c - b
            dim = emb.shape[1]
            parts.append(pa.table({
                "id": pa.array(ids[sl], pa.string()), "uri": pa.array(uris[sl], pa.string()),
                "label": pa.array(labels[sl], pa.string()), "modality": pa.array([modality] * len(ok), pa.string()),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), dim),
            }).filter(pa.array(ok)))
            batch_ends.append(time.perf_counter() - tl)
    t_loop = time.perf_counter() - tl
    a = time.perf_counter()
    os.makedirs(out_path, exist_ok=True)
    pq.write_table(pa.concat_tables(parts), os.path.join(out_path, "part-0.parquet"))
    t_write = time.perf_counter() - a
    n = table.num_rows
    # Per-batch steady state: after the first batch (first-call allocations), excluding a short last batch.
    full = [i for i in range(len(batch_ends)) if min(batch_size, n - i * batch_size) == batch_size]
    steady = None
    if len(full) >= 3:
        i0, i1 = full[0], full[-1]
        steady = (i1 - i0) * batch_size / (batch_ends[i1] - batch_ends[i0])
    return {"n": n, "wall_s": time.perf_counter() - t0, "model_s": t_model, "decode_s": t_decode,
            "encode_s": t_encode, "write_s": t_write, "loop_s": t_loop, "per_batch_steady_items_per_s": steady}


def ray_embed(items: Catalog, modality: str, source: ModelSource, out_path: str, spec, batch_size: int,
              concurrency: int, cfg) -> dict:
    fs.remove(out_path, recursive=True)
    t0 = time.perf_counter()
    res = embed_items(items, modality, source, out_path, spec, batch_size=batch_size, concurrency=concurrency,
                      config=cfg, resume=False)  # a re-run must embed again, not reuse shards
    wall = time.perf_counter() - t0
    assert not res.shards_skipped
    return {"n": res.count + len(res.failures), "wall_s": wall}


def probe_actor_threads() -> dict:
    """What torch sees in a Ray Data actor of EmbedBatch's default resources (1 CPU)."""
    import ray

    @ray.remote(num_cpus=1)
    class Probe:
        def threads(self):
            return {"torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}

    actor = Probe.remote()
    out = ray.get(actor.threads.remote())
    ray.kill(actor)
    return out


def as_dataset(table: pa.Table):
    """A catalog table as a Ray dataset laid out as ``ray_sbir.distributed.datasets`` lays out its inputs (blocks
    of about ``DECODE_BATCH`` rows, at most 64): rebuilt here from public names, the library's helper being
    private."""
    import ray

    return ray.data.from_arrow(table).repartition(max(1, min(64, table.num_rows // DECODE_BATCH)))


def profile_ray(items: Catalog, modality: str, source: ModelSource, spec, batch_size: int, concurrency: int):
    """Where the Ray job's time goes. Two reference points: starting one actor that builds ``EmbedBatch``
    (process start, imports, model build) and the same Ray Data input with a no-op UDF (no actor, no model);
    then the job's own pipeline (``map_batches(EmbedBatch, ...)`` over :func:`as_dataset`, consumed with
    ``iter_batches(batch_format="pyarrow", batch_size=None)``, as ``embed_items`` builds and consumes it, without
    its shard writing), timed to the first batch and to the end, with Ray Data's per-operator stats."""
    import ray

    out: dict = {}

    @ray.remote(num_cpus=1)
    class Holder:  # an actor that builds EmbedBatch, as each embedding actor does first
        def __init__(self):
            t0 = time.perf_counter()
            self.udf = EmbedBatch(source, modality, spec, False)
            self.init_s = time.perf_counter() - t0

        def init_seconds(self):
            return self.init_s

    t = time.perf_counter()
    holder = Holder.remote()
    out["embed_actor_model_load_s"] = ray.get(holder.init_seconds.remote())
    out["embed_actor_start_total_s"] = time.perf_counter() - t
    ray.kill(holder)
    t = time.perf_counter()
    as_dataset(items.items.select(["item_id", "uri", "label"])).map_batches(
        lambda b: b, batch_size=batch_size, batch_format="numpy").materialize()
    out["noop_pipeline_s"] = time.perf_counter() - t
    table = items.select(modality=modality).items.select(["item_id", "uri", "label", "strokes"])
    table = table.append_column("row", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    t = time.perf_counter()
    ds = as_dataset(table).map_batches(
        EmbedBatch, fn_constructor_kwargs={"source": source, "modality": modality, "spec": spec, "use_gpu": False},
        batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=concurrency), num_gpus=0,
        batch_format="numpy")
    rows, first = 0, None
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        rows += batch.num_rows
        if first is None:
            first = time.perf_counter() - t
    out["pipeline_first_batch_s"] = first
    out["pipeline_total_s"] = time.perf_counter() - t
    out["pipeline_rows"] = rows
    return out, ds.stats()


def marginal(full: dict, small: dict) -> float:
    dt = full["wall_s"] - small["wall_s"]
    return (full["n"] - small["n"]) / dt if dt > 0 else float("nan")


def main(argv=None) -> dict:
    p = bench_parser(__doc__, json_out=True)
    p.add_argument("--config", default=os.path.join(REPO, "configs", "demo.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config override, repeatable")
    p.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "ray-sbir-bench", "embed"))
    p.add_argument("--modality", default="photo", choices=["photo", "sketch"])
    p.add_argument("--classes", type=int, default=36)
    p.add_argument("--per-class", type=int, default=40, help="items per class and modality")
    p.add_argument("--batch-size", type=int, default=None, help="default: the config's eval.batch_size")
    p.add_argument("--concurrency", type=int, default=1, help="embedding actors (eval.concurrency)")
    p.add_argument("--num-cpus", type=int, default=2, help="logical CPUs of the local Ray cluster")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads of the plain loop (default: what the Ray actor gets)")
    p.add_argument("--plain-threads-extra", type=int, default=2,
                   help="also time the plain loop at this thread count (0: skip)")
    p.add_argument("--small-fraction", type=float, default=0.25)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--profile", action="store_true", help="time embed_items' steps one by one + Ray Data stats")
    args = parse_args(p, argv, tiny={"config": os.path.join(REPO, "configs", "tiny.yaml"), "out": None, "classes": 3,
                                     "per_class": 4, "batch_size": 8, "rounds": 1, "plain_threads_extra": 0,
                                     "small_fraction": 0.5})
    args.out = args.out or tiny_workdir("bench_embed")
    setup_logging()  # embed_items' progress lines

    data = ensure_doodles(os.path.join(args.out, f"doodles_{args.classes}x{args.per_class}"), classes=args.classes,
                          per_class=args.per_class)
    cfg = load_config(args.config, [f"data.root={data}", *args.overrides])
    spec = render_spec(cfg, args.modality)  # the embedded modality's encoder input size
    bs = args.batch_size or cfg.eval.batch_size
    source = ModelSource(UNTRAINED, cfg.model, cfg.train.seed)
    items = build_catalog(data).select(modality=args.modality)
    n = len(items)
    n_small = max(bs, int(round(n * args.small_fraction / bs)) * bs)
    small = Catalog(items.items.slice(0, n_small), items.layout, items.root)

    ray = start_ray(args.num_cpus, 512)
    actor = probe_actor_threads()
    threads = args.threads or actor["torch_threads"]
    env = environment(model=cfg.model.sketch.backbone, image_size=spec.size, batch_size=bs, items=n,
                      small_items=n_small, modality=args.modality, concurrency=args.concurrency,
                      num_cpus=args.num_cpus, ray_actor=actor, plain_threads=threads)
    print(f"{env}", flush=True)

    runs: dict[str, dict[str, list]] = {"ray": {"full": [], "small": []}, "plain": {"full": [], "small": []}}
    extra = args.plain_threads_extra and args.plain_threads_extra != threads
    if extra:
        runs[f"plain_{args.plain_threads_extra}t"] = {"full": [], "small": []}
    idx = os.path.join(args.out, "index")
    try:
        for r in range(args.rounds):
            for size, cat in (("full", items), ("small", small)):
                res = ray_embed(cat, args.modality, source, os.path.join(idx, f"ray_{size}"), spec, bs,
                                args.concurrency, cfg)
                runs["ray"][size].append(res)
                print(f"round {r} ray {size}: {res}", flush=True)
                res = plain_embed(cat, args.modality, source, os.path.join(idx, "plain"), spec, bs, threads)
                runs["plain"][size].append(res)
                print(f"round {r} plain {size}: {res}", flush=True)
                if extra:
                    res = plain_embed(cat, args.modality, source, os.path.join(idx, "plain2"), spec, bs,
                                      args.plain_threads_extra)
                    runs[f"plain_{args.plain_threads_extra}t"][size].append(res)
                    print(f"round {r} plain {args.plain_threads_extra} threads {size}: {res}", flush=True)
        prof = None
        if args.profile:
            prof, stats = profile_ray(items, args.modality, source, spec, bs, args.concurrency)
            print(f"profile of the Ray job's steps (s): {prof}\nRay Data stats of the embedding step:\n{stats}",
                  flush=True)
    finally:
        ray.shutdown()
    finish_environment(env)

    res: dict = {"command": command_line(__file__, argv),
                 "env": env, "runs": runs, "profile": prof}
    e2e = {k: n / statistics.median(x["wall_s"] for x in v["full"]) for k, v in runs.items()}
    e2e_small = {k: n_small / statistics.median(x["wall_s"] for x in v["small"]) for k, v in runs.items()}
    wall = {k: statistics.median(x["wall_s"] for x in v["full"]) for k, v in runs.items()}
    steady = {k: statistics.median(marginal(f, s) for f, s in zip(v["full"], v["small"])) for k, v in runs.items()}
    res.update(end_to_end_items_per_s=e2e, end_to_end_small_items_per_s=e2e_small, wall_full_s=wall,
               steady_items_per_s=steady)
    res["ratio_steady"] = steady["ray"] / steady["plain"]
    res["ratio_end_to_end"] = e2e["ray"] / e2e["plain"]
    plain_batches = [x["per_batch_steady_items_per_s"] for x in runs["plain"]["full"]]
    res["plain_per_batch_steady_items_per_s"] = statistics.median(plain_batches) if all(plain_batches) else None
    parts = {k: statistics.median(x[k] for x in runs["plain"]["full"]) for k in
             ("model_s", "decode_s", "encode_s", "write_s")}
    res["plain_parts_s"] = parts

    print("\n=== results ===")
    print(f"{env}")
    print(f"steady state (marginal {n_small} -> {n} items), items/s: "
          + ", ".join(f"{k} {v:.1f}" for k, v in steady.items()))
    print(f"end to end ({n} items), items/s: " + ", ".join(f"{k} {v:.1f}" for k, v in e2e.items())
          + "; wall s: " + ", ".join(f"{k} {v:.2f}" for k, v in wall.items()))
    print(f"end to end ({n_small} items), items/s: " + ", ".join(f"{k} {v:.1f}" for k, v in e2e_small.items()))
    print(f"plain loop parts (full run, s): {parts}; its per-batch steady rate "
          f"{res['plain_per_batch_steady_items_per_s']}")
    print(f"ray / plain = {res['ratio_steady']:.3f}  (target >= 0.9; steady state, same threads = {threads})")
    print(f"ray / plain end to end = {res['ratio_end_to_end']:.3f}")
    if extra:
        key = f"plain_{args.plain_threads_extra}t"
        print(f"ray / plain at {args.plain_threads_extra} threads = {steady['ray'] / steady[key]:.3f} steady, "
              f"{e2e['ray'] / e2e[key]:.3f} end to end")
    print(f"loadavg start {env['loadavg_start']} end {env['loadavg_end']}")
    write_result(args, res)
    return res


if __name__ == "__main__":
    main()
