"""Latency the re-rank stage adds per query, in-process (the engine) and over HTTP (the Serve app), in one run.

On a private local Ray cluster: ``bench_serving.build_fixture``'s gallery (``--n`` random unit vectors, a
random-init checkpoint of ``--model``; the timing does not depend on the weights) and a rerank checkpoint of
``configs/rerank.yaml``'s head (MLP 512-512 on the concatenated pair, random init) over the same space. For
rerank off and each ``--ks`` value it starts the colocated app (one replica, one torch thread) and sends the
doodle page's JSON request sequentially; beside it, the same :class:`~ray_sbir.serving.engine.SearchEngine` in
this process. Prints p50 / p99 of each and the difference to rerank off.

    python bench/bench_rerank_latency.py --n 100000 --ks 100 1000 --requests 200
    python bench/bench_rerank_latency.py --tiny     # 1,000 items, K 10, 5 requests each (a smoke run)
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time

import numpy as np
from bench_serving import build_fixture
from common import REPO, bench_parser, environment, free_port, parse_args, pct, start_ray, write_result


def rerank_checkpoint(encoder: str, out: str, hidden: list[int]) -> str:
    import torch

    from ray_sbir.checkpoint import CheckpointMeta, write_checkpoint
    from ray_sbir.config import load_config
    from ray_sbir.training import TaskContext, create_task, task_class

    cfg = load_config(os.path.join(REPO, "configs", "rerank.yaml"),
                      [f"rerank.encoder={encoder}", f"rerank.hidden={json.dumps(hidden)}"])
    cfg = task_class("rerank").prepare_config(cfg)
    torch.manual_seed(0)
    task = create_task(cfg, TaskContext(["bench"]))
    write_checkpoint(out, task.trainable_state(), CheckpointMeta(0, cfg, ["bench"], {}))
    return out


def sketch_of(strokes, size: int, line_width: float, padding: float) -> np.ndarray:
    from ray_sbir.data.quickdraw import rasterize

    pts = [np.stack([np.asarray(s[0], np.float32), np.asarray(s[1], np.float32)], 1) for s in strokes]
    return rasterize([pts], size=size, line_width=line_width, padding=padding)[0]


def inprocess(fx: dict, rerank: str | None, k_candidates: int, k: int, requests: int) -> list[float]:
    import torch

    from ray_sbir.checkpoint import read_meta
    from ray_sbir.data.decode import render_spec
    from ray_sbir.index import GalleryItems, index_layout
    from ray_sbir.search.pipeline import SearchSpec
    from ray_sbir.serving.engine import LocalRetrieval, SearchEngine, load_rerank_scorer, scoring_of

    torch.set_num_threads(1)
    layout = index_layout(fx["index"])
    scorer = load_rerank_scorer(rerank, fx["index"], layout.dim) if rerank else None
    spec = SearchSpec.parse(f"exact > rerank:{k_candidates}" if rerank else "exact")
    engine = SearchEngine(LocalRetrieval(fx["checkpoint"], fx["index"], layout), GalleryItems.read(fx["index"], layout),
                          scoring_of(layout), spec, scorer)
    spec = render_spec(read_meta(fx["checkpoint"]).config, "sketch")
    images = [sketch_of(q, spec.size, spec.line_width, spec.padding) for q in fx["queries"]]

    async def run() -> list[float]:
        out = []
        for i in range(requests):
            t0 = time.perf_counter()
            outcome = await engine.search(images[i % len(images)], k)
            engine.results(outcome)
            out.append((time.perf_counter() - t0) * 1e3)
        return out

    return asyncio.run(run())


def over_http(fx: dict, rerank: str | None, k_candidates: int, k: int, requests: int) -> list[float]:
    import httpx
    from ray import serve

    from ray_sbir.serving import ServeConfig, build_app
    from ray_sbir.testing.serve import stop_serve

    cfg = ServeConfig(checkpoint=fx["checkpoint"], index=fx["index"], search_mode="colocated", rerank=rerank,
                      rerank_k=k_candidates, max_k=max(200, k), colocated={"num_cpus": 1, "torch_threads": 1})
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(cfg), name="rerank-bench", route_prefix="/")
    bodies = [json.dumps({"strokes": q, "k": k}).encode() for q in fx["queries"]]
    out = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as c:
            for i in range(10):  # warm-up
                c.post("/search", content=bodies[i % len(bodies)], headers={"content-type": "application/json"})
            for i in range(requests):
                t0 = time.perf_counter()
                r = c.post("/search", content=bodies[i % len(bodies)], headers={"content-type": "application/json"})
                out.append((time.perf_counter() - t0) * 1e3)
                assert r.status_code == 200, r.text
    finally:
        stop_serve()
    return out


def main() -> None:
    p = bench_parser(__doc__, json_out=True)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--model", default="tiny")
    p.add_argument("--ks", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    p.add_argument("--requests", type=int, default=200)
    args = parse_args(p, tiny={"n": 1000, "ks": [10], "k": 5, "hidden": [32], "requests": 5})

    print(json.dumps({"env": environment()}), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fx = build_fixture(tmp, args.n, args.model, 0)
        ckpt = rerank_checkpoint(fx["checkpoint"], os.path.join(tmp, "rerank"), args.hidden)
        ray = start_ray(4, 400, log_to_driver=False)
        for kc in [None, *args.ks]:
            rr = ckpt if kc else None
            row = {"rerank_k": kc or "off", "n": args.n, "model": args.model, "dim": fx["dim"]}
            for where, fn in (("in_process", inprocess), ("http", over_http)):
                lat = fn(fx, rr, kc or 1, args.k, args.requests)
                row[where] = {"p50_ms": round(statistics.median(lat), 2), "p99_ms": round(pct(lat, 99), 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
        ray.shutdown()
    base = rows[0]
    for row in rows[1:]:
        row["added_p50_ms"] = {w: round(row[w]["p50_ms"] - base[w]["p50_ms"], 2) for w in ("in_process", "http")}
        print(json.dumps({"rerank_k": row["rerank_k"], "added_p50_ms": row["added_p50_ms"]}), flush=True)
    write_result(args, rows, indent=1)


if __name__ == "__main__":
    main()
