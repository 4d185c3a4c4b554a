"""Ten million rows behind the Serve app (2 shard deployments): ``POST /search`` latency and throughput of a float
model's sign-codes index, searched two-stage (Hamming over the codes in each shard, the merged candidates
re-scored by the float16 rows the shards hold).

The gallery is :mod:`bench_ten_million`'s (``--rows`` rows of ``--dim`` dims in ``--clusters`` clusters), written
as an index folder chunk by chunk the way the embedding job writes one (``item_table`` with the packed sign codes
of ``--bits`` bits, ``commit_shard``, ``finish`` with the kind's manifest entry); the checkpoint is a random-init
one of ``configs/demo.yaml``'s model (EfficientNet-Lite0, 256-d, 64 px: the timing does not depend on the
weights) and the queries are QuickDraw-format doodles (``bench_serving.build_fixture``). The app runs as
``ray-sbir serve`` runs it in sharded mode (:func:`ray_sbir.serving.build_app`: ingress, sketch encoder, 2 shard
deployments holding 5M rows each as ``shard_dtype: float16``) with the spec ``hamming:N > rescore`` for each N of
``--candidates`` (redeployed per N). Each N: ``--requests`` sequential requests (1 client, keep-alive) and the
same number from ``--clients`` concurrent clients: p50/p99 ms and requests/s, with the ingress's own stage
times and the shard replicas' resident memory.

    python bench/bench_ten_million_serve.py --workdir /tmp/tm --json bench_out/ten_million_serve.json
    python bench/bench_ten_million_serve.py --tiny
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import time

import numpy as np
from bench_serving import APP, build_fixture, cluster_processes, http_concurrent, http_sequential, replica_rss, summary
from bench_ten_million import clustered
from common import bench_parser, environment, free_port, parse_args, pct, start_ray, stop_ray, tiny_workdir, \
    write_result

CHUNK_ROWS = 500_000


def write_gallery(uri: str, rows: int, dim: int, clusters: int, bits: int) -> dict:
    """The clustered gallery as an index folder with its sign codes; returns what the writing took."""
    from ray_sbir.index.format import item_table
    from ray_sbir.index.writer import begin, commit_shard, finish, fingerprint
    from ray_sbir.search import EmbeddingKind

    kind = EmbeddingKind("float", dim).with_sign_codes(bits)
    t0 = time.perf_counter()
    gallery = clustered(rows, dim, clusters, 0)
    made = time.perf_counter() - t0
    begin(uri, {"fingerprint": fingerprint("bench_ten_million_serve", rows, dim, bits)}, resume=False)
    files, counts = [], []
    for i, a in enumerate(range(0, rows, CHUNK_ROWS)):
        emb = np.asarray(gallery[a:a + CHUNK_ROWS], np.float32)
        ids = [f"row/{j:08d}" for j in range(a, a + len(emb))]
        table = item_table(ids, None, ["synthetic"] * len(emb), "photo", emb, codes=kind.codes(emb))
        files.append(f"part-{i:05d}.parquet")
        counts.append(commit_shard(uri, files[-1], table))
    finish(uri, files, counts, [], dim=dim, embedding=kind.manifest_spec())
    return {"made_s": round(made, 1), "written_s": round(time.perf_counter() - t0 - made, 1),
            "bytes_on_disk": sum(os.path.getsize(os.path.join(uri, f)) for f in files)}


def main() -> int:
    p = bench_parser(__doc__, json_out=True)
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--clusters", type=int, default=20_000)
    p.add_argument("--bits", type=int, default=256)
    p.add_argument("--candidates", type=int, nargs="+", default=[500, 1000])
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--shard-threads", type=int, default=1, help="torch/kernel threads of each shard replica")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--workdir", default="", help="where the index and checkpoint go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the written index (default: removed at the end)")
    args = parse_args(p, tiny={"rows": 20_000, "clusters": 200, "bits": 128, "candidates": [100], "requests": 6,
                               "clients": 2})
    root = args.workdir or tiny_workdir("bench_ten_million_serve")
    os.makedirs(root, exist_ok=True)
    fx = build_fixture(os.path.join(root, "fixture"), 16, "demo", 0)
    if fx["dim"] != args.dim:
        p.error(f"--dim {args.dim}: the demo preset's model makes {fx['dim']}-d embeddings")
    index = os.path.join(root, "index")
    written = index_ok = None
    manifest = os.path.join(index, "_manifest.json")
    if os.path.exists(manifest) and json.load(open(manifest)).get("count") == args.rows:
        index_ok = True  # an earlier run's gallery of the same size (--keep): reused
    else:
        written = write_gallery(index, args.rows, args.dim, args.clusters, args.bits)
        print(f"gallery: {args.rows:,} x {args.dim} written with {args.bits}-bit codes: {written}", flush=True)
    bodies = [json.dumps({"strokes": q, "k": args.k}).encode() for q in fx["queries"]]
    from ray import serve

    from ray_sbir.serving import ServeConfig, build_app
    from ray_sbir.testing.serve import stop_serve

    start_ray(4, 300, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = f"http://127.0.0.1:{port}"
    import httpx

    results = []
    try:
        for n in args.candidates:
            cfg = ServeConfig(checkpoint=fx["checkpoint"], index=index, num_shards=args.shards, search_mode="sharded",
                              shard_dtype="float16", search=f"hamming:{n} > rescore", max_k=max(200, args.k))
            cfg.shard.torch_threads = args.shard_threads
            t0 = time.perf_counter()
            serve.run(build_app(cfg), name=APP, route_prefix="/")  # APP: replica_rss finds its replicas by it
            with httpx.Client(base_url=base, timeout=300) as client:
                while client.get("/healthz").status_code != 200:
                    time.sleep(0.5)
                up = time.perf_counter() - t0
                for b in bodies[:5]:
                    client.post("/search", content=b, headers={"content-type": "application/json"})
                stages: list[dict] = []
                lat, el = http_sequential(client, [bodies[i % len(bodies)] for i in range(args.requests)], stages)
            lat_c, el_c = http_concurrent(base, [bodies[i % len(bodies)] for i in range(args.requests)], args.clients)
            row = {"candidates": n, "start_s": round(up, 1), "sequential": summary(lat, el),
                   f"concurrent_{args.clients}": summary(lat_c, el_c),
                   "ingress_stage_p50_ms": {key: round(statistics.median(s[key] for s in stages), 2)
                                            for key in stages[0]},
                   "replica_rss_mb": replica_rss(cluster_processes())}
            results.append(row)
            print(f"N = {n}: up in {up:.0f} s; sequential p50 {pct(lat, 50) * 1e3:.1f} ms, p99 "
                  f"{pct(lat, 99) * 1e3:.1f} ms, {len(lat) / el:.1f} req/s; {args.clients} clients p50 "
                  f"{pct(lat_c, 50) * 1e3:.1f} ms, {len(lat_c) / el_c:.1f} req/s; stages p50 "
                  f"{row['ingress_stage_p50_ms']}; RSS MB {row['replica_rss_mb']}", flush=True)
            serve.delete(APP)
    finally:
        stop_serve()
        stop_ray()
        if not args.keep and not index_ok:
            shutil.rmtree(index, ignore_errors=True)
    write_result(args, {"rows": args.rows, "dim": args.dim, "bits": args.bits, "shards": args.shards,
                        "written": written, "results": results, "environment": environment()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
