"""Serving latency: ``POST /search`` over HTTP through the Ray Serve app vs the same work in-process.

    python bench/bench_serving.py [--n 100000 --model tiny --shards 2 --requests 300 --clients 8 --k 20]

One run, on a private local Ray cluster (``address="local"``, never someone else's) and a free loopback port:

1. builds a gallery index of ``--n`` random unit vectors in the index format (Parquet + ``_manifest.json``,
   :func:`ray_sbir.index.write_index`); item ids are unique, the item images are a few generated doodle
   photos reused, so ``/items/{id}/image`` works; a real checkpoint of the ``--model`` preset
   (``configs/tiny.yaml``: resnet10t, 32-d, 32 px; ``configs/demo.yaml``: EfficientNet-Lite0, 256-d, 64 px;
   random init, the timing does not depend on the weights) and QuickDraw-format query sketches;
2. starts the real app in its sharded mode (:func:`ray_sbir.serving.build_app`,
   :class:`~ray_sbir.serving.ServeConfig` defaults except ``num_shards`` and ``search_mode="sharded"``:
   ingress -> encoder and shard deployments through handles) and sends the doodle page's request, ``{"strokes": [...], "k": 20}`` JSON, with
   httpx (keep-alive): sequentially (1 client) and with ``--clients`` concurrent clients;
3. in the same process, the same work with no Serve and no HTTP: JSON parse, stroke validation and
   rasterisation, the checkpoint's sketch encoder, :class:`~ray_sbir.search.ShardedIndex` exact search over
   the same index (same shard count) and the id/class/url mapping, on the same queries; sequential blocks
   are interleaved with the HTTP ones so machine noise hits both alike (``--inproc-threads``, default 1 and
   2 torch threads; the ratio uses the faster);
4. prints p50/p99 latency and throughput of each, the ratio HTTP p50 / in-process p50 (target <= 1.5), and
   where the HTTP time goes: the ingress's own ``timing_ms`` (validate / encode / search), the fixed cost of
   a request through proxy + FastAPI (``GET /healthz``), bare and working deployment-handle round trips from
   this process, CPU milliseconds per request of every process of the cluster (from ``/proc``, the idle
   app's background subtracted) and the encoder's batch sizes under concurrency;
5. unless ``--no-colocated``: the real app in its colocated mode (``search_mode="colocated"``: one deployment,
   the encoder and the whole gallery in each ingress replica, greedy batching, no handle hops), against the
   in-process path, with the same measurements.

``--waits`` repeats the HTTP measurements with other ``batch_wait_timeout_s`` values for the encoder and
the shards (``default`` = the ServeConfig defaults, or ``ENCODER:SHARD`` seconds), redeploying the app in
the same run; ``--serve-env`` passes Serve's environment switches to the cluster. ``--memory`` also
measures memory per indexed item (fp32 and fp16 storage): bytes held by :class:`ShardedIndex` and the RSS
growth of a fresh process loading the index (total and marginal), plus the RSS of the Serve processes. The
machine may be shared with other jobs: the load average is printed.

``--tiny``: 1,000 items in one shard, a handful of requests per path, 2 clients, a short idle window (a smoke
run: the app's start-ups dominate).
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from common import (REPO, bench_parser, command_line, environment, finish_environment, free_port, parse_args, pct,
                    start_ray, stop_ray, write_result)

PRESETS = {"tiny": os.path.join(REPO, "configs", "tiny.yaml"), "demo": os.path.join(REPO, "configs", "demo.yaml")}
APP = "sbir-bench"


# ------------------------------------------------------------------------------------------- fixture


def build_fixture(root: str, n: int, preset: str, seed: int, classes: int = 8) -> dict:
    """Checkpoint, ``n``-item index of random unit vectors and query strokes under ``root``."""
    import torch

    from ray_sbir.checkpoint import CheckpointMeta, write_checkpoint
    from ray_sbir.config import load_config
    from ray_sbir.data.catalog import build_catalog
    from ray_sbir.data.decode import render_spec
    from ray_sbir.data.doodles import DOODLE_CLASSES, make_doodles
    from ray_sbir.data.quickdraw import unpack_strokes
    from ray_sbir.models import create_model
    from ray_sbir.index import write_index

    overrides = ["model.sketch.pretrained_weights=null"]
    cfg = load_config(PRESETS[preset], overrides)
    if cfg.model.photo is not None:  # an asymmetric preset: its photo backbone random-initialised too
        cfg = load_config(PRESETS[preset], [*overrides, "model.photo.pretrained_weights=null"])
    torch.manual_seed(seed)
    model = create_model(cfg.model).eval()
    checkpoint = os.path.join(root, "checkpoint")
    write_checkpoint(checkpoint, {"model": model.state_dict()},
                     CheckpointMeta(epoch=0, config=cfg, classes=["bench"], metrics={}))

    data = os.path.join(root, "doodles")
    make_doodles(data, sketches_per_class=6, photos_per_class=2, photo_size=64, classes=DOODLE_CLASSES[:classes])
    cat = build_catalog(data)
    photos = cat.select(modality="photo").items.to_pydict()
    sketches = cat.select(modality="sketch").items.to_pydict()
    # The catalog packs strokes as (x, y, end) triples; a request posts [[xs], [ys]] lists.
    queries = [[[p[:, 0].tolist(), p[:, 1].tolist()] for p in unpack_strokes(s)] for s in sketches["strokes"]]

    dim = int(cfg.model.embed_dim)
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim), dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    pick = np.arange(n) % len(photos["uri"])
    ids = [f"photo/{i:07d}" for i in range(n)]
    labels, uris = [photos["label"][j] for j in pick], [photos["uri"][j] for j in pick]
    index = os.path.join(root, "index")
    write_index(index, ids, emb, labels=labels, uris=uris, modality="photo", rows_per_file=max(1, -(-n // 4)))
    small = max(1, n // 10)  # the first tenth: for the marginal memory per item
    small_index = os.path.join(root, "index_small")
    write_index(small_index, ids[:small], emb[:small], labels=labels[:small], uris=uris[:small], modality="photo",
                rows_per_file=max(1, -(-small // 4)))
    return {"checkpoint": checkpoint, "index": index, "small_index": small_index, "queries": queries, "dim": dim,
            "image_size": int(render_spec(cfg, "sketch").size), "backbone": cfg.model.sketch.backbone}


# ------------------------------------------------------------------------------------------- in-process


def load_sharded(index: str, num_shards: int, dtype: str | None = None):
    """The index's rows, ids, labels and uris in a :class:`~ray_sbir.search.ShardedIndex` (exact float shards
    in this process, with the id mapping the endpoint's items file gives)."""
    from ray_sbir.index import read_index
    from ray_sbir.search import ShardedIndex

    t = read_index(index, columns=["id", "uri", "label", "embedding"])
    return ShardedIndex(t.embeddings, num_shards, ids=t.ids, labels=t.labels, uris=t.uris, device="cpu", dtype=dtype)


class InProcess:
    """What the Serve app does for one ``POST /search`` JSON request, as plain calls in this process."""

    def __init__(self, checkpoint: str, index: str, num_shards: int, dtype: str | None = None):
        from ray_sbir.checkpoint import load_model
        from ray_sbir.data.decode import render_spec
        model, meta = load_model(checkpoint, "cpu")
        self.model = model.keep_only("sketch").eval()  # as a serving replica holds it: no photo encoder
        spec = render_spec(meta.config, "sketch")
        self.size, self.line_width, self.padding = int(spec.size), float(spec.line_width), float(spec.padding)
        self.index = load_sharded(index, num_shards, dtype)

    def __call__(self, body: bytes, record: dict | None = None) -> dict:
        """One request; ``record``: a dict that gets the seconds of each stage appended."""
        import torch

        from ray_sbir.data.images import to_model_input
        from ray_sbir.data.quickdraw import parse_line, rasterize

        t0 = time.perf_counter()
        obj = json.loads(body)
        k = int(obj.get("k", 20))
        drawing = parse_line(json.dumps({"word": "query", "key_id": "query", "drawing": obj["strokes"]}),
                             source="request", normalize=False)
        image = rasterize([drawing.strokes], size=self.size, line_width=self.line_width, padding=self.padding)
        t1 = time.perf_counter()
        with torch.inference_mode():
            emb = self.model.encode(to_model_input(torch.from_numpy(image)), "sketch").float().numpy()
        t2 = time.perf_counter()
        res = self.index.query(emb, k)
        t3 = time.perf_counter()
        results = [{"rank": r, "id": i, "class": c, "score": round(float(s), 6), "image_url": f"/items/{i}/image"}
                   for r, (i, c, s) in enumerate(zip(res.ids[0], res.labels[0], res.scores[0].tolist()), start=1)]
        t4 = time.perf_counter()
        if record is not None:
            for name, dt in zip(("prepare", "encode", "search", "results"), (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                record.setdefault(name, []).append(dt)
        return {"k": k, "count": len(results), "results": results}


# ------------------------------------------------------------------------------------------- measuring


def summary(lat: list[float], elapsed: float) -> dict:
    return {"n": len(lat), "p50_ms": pct(lat, 50) * 1e3, "p90_ms": pct(lat, 90) * 1e3, "p99_ms": pct(lat, 99) * 1e3,
            "mean_ms": float(np.mean(lat)) * 1e3 if lat else float("nan"), "qps": len(lat) / elapsed}


def fmt(s: dict) -> str:
    return (f"p50 {s['p50_ms']:7.2f} ms  p90 {s['p90_ms']:7.2f} ms  p99 {s['p99_ms']:7.2f} ms  "
            f"{s['qps']:7.1f} req/s  (n={s['n']})")


def stdlib_sequential(base: str, bodies: list[bytes], path: str = "/search") -> tuple[list[float], float]:
    """Like :func:`http_sequential` with the standard library's ``http.client`` (one keep-alive connection):
    the lightest Python client, so less of the measured time is the client's own (httpx spends ~0.5 ms more
    per request here)."""
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
    lat = []
    t_start = time.perf_counter()
    try:
        for body in bodies:
            t0 = time.perf_counter()
            conn.request("POST", path, body=body, headers={"content-type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            lat.append(time.perf_counter() - t0)
            if r.status != 200:
                raise RuntimeError(f"POST {path} answered {r.status}: {data[:300]!r}")
    finally:
        conn.close()
    return lat, time.perf_counter() - t_start


def healthz_latencies(client, path: str = "/healthz", n: int = 20) -> list[float]:
    """Seconds of ``n`` sequential ``GET`` s of ``path``: the fixed cost of a request through the front."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.get(path)
        out.append(time.perf_counter() - t0)
    return out


def same_answer(client, path: str, body: bytes, inproc: InProcess) -> bool:
    """Whether ``POST path`` returns the same ids, in order, as the in-process path for ``body``."""
    a = client.post(path, content=body, headers={"content-type": "application/json"}).json()
    return [r["id"] for r in a["results"]] == [r["id"] for r in inproc(body)["results"]]


def http_sequential(client, bodies: list[bytes], server: list | None = None,
                    path: str = "/search") -> tuple[list[float], float]:
    lat = []
    t_start = time.perf_counter()
    for body in bodies:
        t0 = time.perf_counter()
        r = client.post(path, content=body, headers={"content-type": "application/json"})
        lat.append(time.perf_counter() - t0)
        if r.status_code != 200:
            raise RuntimeError(f"POST /search answered {r.status_code}: {r.text[:300]}")
        if server is not None:
            server.append(r.json()["timing_ms"])
    return lat, time.perf_counter() - t_start


def http_concurrent(base: str, bodies: list[bytes], clients: int, path: str = "/search", *,
                    headers: dict | None = None, content_types: list[str] | None = None) -> tuple[list[float], float]:
    """``bodies`` posted by ``clients`` concurrent clients (JSON unless ``content_types`` says per body, each
    request with ``headers``): latencies and the elapsed wall time."""
    import httpx

    lat: list[float] = []
    lock = threading.Lock()
    nxt = iter(range(len(bodies)))

    def worker() -> None:
        with httpx.Client(base_url=base, timeout=120, headers=headers) as c:
            c.get("/healthz")  # open the connection before the clock starts
            barrier.wait()
            while True:
                with lock:
                    i = next(nxt, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                ctype = content_types[i] if content_types else "application/json"
                r = c.post(path, content=bodies[i], headers={"content-type": ctype})
                dt = time.perf_counter() - t0
                if r.status_code != 200:
                    raise RuntimeError(f"POST /search answered {r.status_code}: {r.text[:300]}")
                with lock:
                    lat.append(dt)

    barrier = threading.Barrier(clients + 1)
    with ThreadPoolExecutor(clients) as pool:
        futs = [pool.submit(worker) for _ in range(clients)]
        barrier.wait()
        t_start = time.perf_counter()
        for f in futs:
            f.result()
        elapsed = time.perf_counter() - t_start
    return lat, elapsed


def handle_hops(enc, shard, fn: InProcess, body: bytes, k: int, repeats: int = 40) -> dict:
    """Deployment-handle round trips from this process (no HTTP): a method with no work and no batching
    (``stats`` / ``describe``: the bare hop), the batched encoder call and the batched shard search."""
    import torch

    from ray_sbir.data.images import to_model_input
    from ray_sbir.data.quickdraw import parse_line, rasterize

    obj = json.loads(body)
    strokes = parse_line(json.dumps({"word": "q", "key_id": "q", "drawing": obj["strokes"]}), normalize=False).strokes
    image = rasterize([strokes], size=fn.size, line_width=fn.line_width, padding=fn.padding)[0]
    with torch.inference_mode():
        emb = fn.model.encode(to_model_input(torch.from_numpy(image[None])), "sketch").float().numpy()[0]
    calls = {"encoder.stats (bare hop)": lambda: enc.stats.remote().result(),
             "encoder (batched encode)": lambda: enc.remote(image).result(),
             "shard0.describe (bare hop)": lambda: shard.describe.remote().result(),
             "shard0.search (batched search)": lambda: shard.search.remote(emb, k).result()}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t0)
    return {name: round(pct(ts[5:], 50) * 1e3, 2) for name, ts in times.items()}


def inproc_sequential(fn: InProcess, bodies: list[bytes], stages: dict) -> tuple[list[float], float]:
    lat = []
    t_start = time.perf_counter()
    for body in bodies:
        t0 = time.perf_counter()
        fn(body, record=stages)
        lat.append(time.perf_counter() - t0)
    return lat, time.perf_counter() - t_start


def inproc_concurrent(fn: InProcess, bodies: list[bytes], clients: int) -> tuple[list[float], float]:
    lat: list[float] = []
    lock = threading.Lock()

    def one(body: bytes) -> None:
        t0 = time.perf_counter()
        fn(body)
        with lock:
            lat.append(time.perf_counter() - t0)

    t_start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, bodies))
    return lat, time.perf_counter() - t_start


def inproc_batched(fn: InProcess, bodies: list[bytes], batch: int) -> dict:
    """Throughput bound in-process: ``batch`` queries per encoder pass and per search."""
    import torch

    from ray_sbir.data.images import to_model_input
    from ray_sbir.data.quickdraw import parse_line, rasterize

    t_start = time.perf_counter()
    for start in range(0, len(bodies), batch):
        objs = [json.loads(b) for b in bodies[start:start + batch]]
        strokes = [parse_line(json.dumps({"word": "q", "key_id": "q", "drawing": o["strokes"]}),
                              normalize=False).strokes for o in objs]
        images = rasterize(strokes, size=fn.size, line_width=fn.line_width, padding=fn.padding)
        with torch.inference_mode():
            emb = fn.model.encode(to_model_input(torch.from_numpy(images)), "sketch").float().numpy()
        res = fn.index.query(emb, max(int(o.get("k", 20)) for o in objs))
        [[str(i) for i in row] for row in res.ids]
    elapsed = time.perf_counter() - t_start
    return {"batch": batch, "qps": len(bodies) / elapsed}


# ------------------------------------------------------------------------------------------- processes


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def descendants(pid: int) -> list[int]:
    """Processes started (transitively) by ``pid``: this run's own Ray processes only."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, []):
            out.append(c)
            todo.append(c)
    return out


def cluster_processes() -> dict[int, str]:
    """pid -> role of this run's own Ray processes (descendants of this process): the Serve replicas by
    deployment, ``proxy``, ``controller``, ``ray (other)`` for raylet, GCS, agents and idle workers."""
    out = {}
    for p in descendants(os.getpid()):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        role = "ray (other)"
        if "ProxyActor" in cmd:
            role = "proxy"
        elif "ServeController" in cmd:
            role = "controller"
        elif f"ServeReplica:{APP}:" in cmd:  # process title ray::ServeReplica:<app>:<deployment>
            role = cmd.split(f"ServeReplica:{APP}:", 1)[1].split()[0].split(".")[0]
        out[p] = role
    return out


def cpu_seconds(pids: dict[int, str]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each role, and by this process (``client``)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for p, role in {**pids, os.getpid(): "client"}.items():
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[role] = out.get(role, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def per_request(cpu: dict[str, float], idle_rate: dict[str, float], wall: float, n: int) -> dict[str, float]:
    """CPU ms per request by role, less the idle background (``idle_rate`` x ``wall``), and the total."""
    out = {role: (v - idle_rate.get(role, 0.0) * wall) / n * 1e3 for role, v in cpu.items()}
    out = {role: round(v, 2) for role, v in sorted(out.items(), key=lambda kv: -kv[1])}
    out["total"] = round(sum(out.values()), 2)
    return out


def replica_rss(pids: dict[int, str]) -> dict:
    return {role: round(rss_mb(p), 1) for p, role in pids.items() if role.startswith(("Search", "Sketch", "proxy"))}


def memory_per_item(index: str, small_index: str) -> dict:
    """fp32 and fp16: bytes :class:`ShardedIndex` holds per item, and the RSS growth per item of a fresh
    process loading the index -- raw (over ``n``) and marginal (the difference between loading the full
    and the small index, over the difference in rows: the fixed costs of a first Parquet read cancel)."""
    mem = {}
    for dt in ("float32", "float16"):
        big, small = rss_child(index, dt), rss_child(small_index, dt)
        grow_big, grow_small = big["after"] - big["before"], small["after"] - small["before"]
        mem[dt] = {"held_bytes_per_item": {k: round(v / big["n"], 1) for k, v in big["held"].items()
                                           if k != "per_item"},
                   "rss_delta_bytes_per_item": round(grow_big / big["n"], 1),
                   "rss_marginal_bytes_per_item": round((grow_big - grow_small) / (big["n"] - small["n"]), 1),
                   "rss_delta_mb": round(grow_big / 2**20, 1), "peak_rss_mb": round(big["peak"] / 2**20, 1)}
    return mem


def rss_child(index: str, dtype: str) -> dict:
    """RSS of a fresh process before and after loading the index into a ShardedIndex (``dtype`` storage)."""
    code = f"""
import gc, json, os, sys
import numpy, pyarrow, torch
sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
from bench_serving import load_sharded
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) * 1024
    return 0
def peak():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1]) * 1024
    return 0
gc.collect(); before = rss()
idx = load_sharded({index!r}, 1, {dtype!r})
gc.collect()
import pyarrow as pa
pa.default_memory_pool().release_unused()
after = rss()
print(json.dumps({{"before": before, "after": after, "peak": peak(), "n": idx.n, "held": idx.memory_bytes()}}))
"""
    env = dict(os.environ, OMP_NUM_THREADS="1")  # PYTHONPATH names the repository (bench/common.py)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------- main


def echo_app(k: int):
    """Serve's own floor for this request: a FastAPI deployment that reads and parses the same JSON body and
    answers a ``k``-result JSON of the same shape, doing no other work. Its latency is what any app pays
    through Serve's proxy (HTTP, routing, the replica's callback to the proxy for the body, the response)."""
    from fastapi import FastAPI, Request
    from ray import serve

    api = FastAPI()
    results = [{"rank": r, "id": f"photo/item_{r:07d}.png", "class": "cat", "score": 0.5,
                "image_url": f"/items/photo/item_{r:07d}.png/image"} for r in range(1, k + 1)]

    @serve.deployment(name="Echo", ray_actor_options={"num_cpus": 1})
    @serve.ingress(api)
    class Echo:
        @api.post("/search")
        async def search(self, request: Request) -> dict:
            body = json.loads(await request.body())
            return {"k": body.get("k"), "count": len(results), "results": results}

    return Echo.bind()


def measure_colocated(fx: dict, args, base: str, bodies, inproc: InProcess) -> dict:
    """The real app in its colocated mode (``ServeConfig(search_mode="colocated")``: encoder and gallery in the
    ingress replica, greedy batching), at ``/colo``, interleaved with the in-process path (1 thread)."""
    import httpx
    import torch
    from ray import serve

    from ray_sbir.serving import ServeConfig, build_app
    from ray.serve._private import constants as serve_constants

    assert serve_constants.RAY_SERVE_ENABLE_HA_PROXY == (args.proxy == "haproxy"), "Ray Serve was imported too early"

    cfg = ServeConfig(checkpoint=fx["checkpoint"], index=fx["index"], num_shards=args.shards,
                      max_k=max(200, args.k), search_mode="colocated")
    serve.run(build_app(cfg), name=APP + "-colo", route_prefix="/colo")
    torch.set_num_threads(1)
    lat_h, lat_i, el_h, el_i, server, health = [], [], 0.0, 0.0, [], []
    lat_s, el_s = [], 0.0
    with httpx.Client(base_url=base, timeout=120) as client:
        while client.get("/colo/healthz").status_code != 200:
            time.sleep(0.2)
        for b in bodies(20):
            client.post("/colo/search", content=b, headers={"content-type": "application/json"})
        same_ids = same_answer(client, "/colo/search", bodies(1)[0], inproc)
        per = max(1, args.requests // args.rounds)
        for r in range(args.rounds):
            blk = bodies(per, r * per)
            health += healthz_latencies(client, "/colo/healthz")
            lh, eh = http_sequential(client, blk, server, path="/colo/search")
            ls, es = stdlib_sequential(base, blk, path="/colo/search")
            li, ei = inproc_sequential(inproc, blk, {})
            print(f"[colocated] round {r}: HTTP p50 {pct(lh, 50) * 1e3:.2f} ms (httpx), {pct(ls, 50) * 1e3:.2f} ms "
                  f"(http.client), in-process (1 thread) p50 {pct(li, 50) * 1e3:.2f} ms", flush=True)
            lat_s += ls
            el_s += es
            lat_h += lh
            lat_i += li
            el_h += eh
            el_i += ei
    # Serve's floor for the same request, interleaved with the in-process path too.
    serve.run(echo_app(args.k), name=APP + "-echo", route_prefix="/echo")
    lat_e, lat_ie = [], []
    with httpx.Client(base_url=base, timeout=120) as client:
        for b in bodies(20):
            client.post("/echo/search", content=b, headers={"content-type": "application/json"})
        for r in range(args.rounds):
            blk = bodies(per, r * per)
            lat_e += http_sequential(client, blk, path="/echo/search")[0]
            lat_ie += inproc_sequential(inproc, blk, {})[0]
    serve.delete(APP + "-echo")
    ingress = serve.get_deployment_handle("SearchIngress", app_name=APP + "-colo")
    stats0 = ingress.stats.remote().result()
    lat_hc, el_hc = http_concurrent(base, bodies(args.concurrent_requests), args.clients, path="/colo/search")
    stats1 = ingress.stats.remote().result()
    out = {"same_ids": same_ids, "http_sequential": summary(lat_h, el_h), "inproc_sequential": summary(lat_i, el_i),
           "http_sequential_stdlib": summary(lat_s, el_s),
           "http_concurrent": summary(lat_hc, el_hc), "healthz_p50_ms": pct(health, 50) * 1e3,
           "server_timing_p50_ms": {key: statistics.median(s[key] for s in server) for key in server[0]},
           "mean_batch_concurrent": (stats1["items"] - stats0["items"]) / max(1, stats1["batches"] - stats0["batches"]),
           "max_batch": stats1["max_batch"], "echo_floor_p50_ms": pct(lat_e, 50) * 1e3,
           "echo_rounds_inproc_p50_ms": pct(lat_ie, 50) * 1e3}
    out["ratio_p50"] = out["http_sequential"]["p50_ms"] / out["inproc_sequential"]["p50_ms"]
    out["ratio_p50_stdlib"] = out["http_sequential_stdlib"]["p50_ms"] / out["inproc_sequential"]["p50_ms"]
    # The lowest ratio any app behind Serve's proxy could reach: in-process work plus the echo floor.
    out["floor_ratio_p50"] = (out["echo_floor_p50_ms"] + out["echo_rounds_inproc_p50_ms"]) / \
        out["echo_rounds_inproc_p50_ms"]
    serve.delete(APP + "-colo")
    print("\n=== colocated mode (search_mode=colocated: encoder + search in the ingress replica, greedy batching) ===")
    print(f"HTTP sequential                 {fmt(out['http_sequential'])}")
    print(f"in-process sequential 1 thread  {fmt(out['inproc_sequential'])}")
    print(f"HTTP sequential, http.client    {fmt(out['http_sequential_stdlib'])}")
    print(f"HTTP p50 / in-process p50 = {out['ratio_p50']:.2f} (httpx), {out['ratio_p50_stdlib']:.2f} (http.client)  "
          f"(target <= 1.5); same ids: {same_ids}")
    print(f"ingress timing_ms p50 {out['server_timing_p50_ms']}; GET /healthz p50 {out['healthz_p50_ms']:.2f} ms")
    print(f"Serve floor (echo app, same body, {args.k}-result answer, no work) p50 {out['echo_floor_p50_ms']:.2f} ms; "
          f"in-process p50 in those rounds {out['echo_rounds_inproc_p50_ms']:.2f} ms; lowest reachable ratio "
          f"(floor + in-process) / in-process = {out['floor_ratio_p50']:.2f}")
    print(f"HTTP {args.clients} clients                  {fmt(out['http_concurrent'])}; mean batch "
          f"{out['mean_batch_concurrent']:.2f}, max {out['max_batch']}", flush=True)
    return out


def parse_waits(spec: str) -> list[tuple[str, float | None, float | None]]:
    out = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        if item == "default":
            out.append(("default", None, None))
        else:
            e, _, s = item.partition(":")
            out.append((item, float(e), float(s or e)))
    return out


def main(argv=None) -> dict:
    p = bench_parser(__doc__, json_out=True)
    p.add_argument("--n", type=int, default=100_000, help="gallery items")
    p.add_argument("--model", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--requests", type=int, default=300, help="sequential requests per path (HTTP, in-process)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved blocks the sequential requests are split into")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--concurrent-requests", type=int, default=400)
    p.add_argument("--waits", default="default", help="comma-separated: default and/or ENCODER_S:SHARD_S")
    p.add_argument("--inproc-threads", default="1,2",
                   help="comma-separated torch thread counts for the in-process path; the ratio uses the fastest")
    p.add_argument("--num-cpus", type=int, default=4, help="logical CPUs of the private Ray cluster")
    p.add_argument("--serve-env", default="", help="comma-separated KEY=VALUE environment variables for the Ray "
                   "cluster (proxy and replicas), e.g. RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0")
    p.add_argument("--proxy", choices=["serve", "haproxy"], default="serve",
                   help="HTTP front of the private cluster: Serve's Python proxy, or its HAProxy ingress "
                        "(ray_sbir.serving.cluster.proxy_env; what `ray-sbir serve --proxy` sets)")
    p.add_argument("--memory", action="store_true", help="also measure memory per item (fp32, fp16)")
    p.add_argument("--no-colocated", dest="colocated", action="store_false",
                   help="skip the app's colocated mode (encoder and search in the ingress replica)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="where the index and checkpoint go (default: a temp dir)")
    p.add_argument("--idle-s", type=float, default=5.0, help="seconds the idle app's background CPU is measured")
    args = parse_args(p, argv, tiny={"n": 1000, "shards": 1, "requests": 6, "rounds": 1, "clients": 2, "concurrent_requests": 4,
                                     "inproc_threads": "1", "idle_s": 0.5})

    import httpx
    import torch

    threads = [int(t) for t in args.inproc_threads.split(",") if t.strip()]
    env = environment()
    tmp = tempfile.TemporaryDirectory(prefix="bench_serving_") if args.workdir is None else None
    root = args.workdir or tmp.name
    t0 = time.perf_counter()
    fx = build_fixture(root, args.n, args.model, args.seed)
    print(f"fixture: {args.n} items x {fx['dim']}-d, model {args.model} ({fx['backbone']}, {fx['image_size']} px), "
          f"{len(fx['queries'])} query sketches, built in {time.perf_counter() - t0:.1f}s  {env}", flush=True)
    bodies_all = [json.dumps({"strokes": q, "k": args.k}).encode() for q in fx["queries"]]

    def bodies(count: int, offset: int = 0) -> list[bytes]:
        return [bodies_all[(offset + i) % len(bodies_all)] for i in range(count)]

    res: dict = {"command": command_line(__file__, argv),
                 "n": args.n, "dim": fx["dim"], "model": args.model, "backbone": fx["backbone"],
                 "image_size": fx["image_size"], "shards": args.shards, "k": args.k, "clients": args.clients,
                 "proxy": args.proxy,
                 "env": env}

    if args.memory:
        res["memory"] = memory_per_item(fx["index"], fx["small_index"])
        for dt, m in res["memory"].items():
            print(f"memory {dt}: {m}", flush=True)

    inproc = InProcess(fx["checkpoint"], fx["index"], args.shards)
    from ray_sbir.serving.cluster import proxy_env

    serve_env = {**proxy_env(args.proxy), **dict(kv.split("=", 1) for kv in args.serve_env.split(",") if kv.strip())}
    os.environ.update(serve_env)  # before ray.init: the cluster's processes inherit them
    # ... and before Ray Serve is first imported here: it reads them at import.
    from ray import serve

    from ray_sbir.serving import ServeConfig, build_app

    res["serve_env"] = serve_env
    ray = start_ray(args.num_cpus, 300, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = f"http://127.0.0.1:{port}"
    json_post = {"headers": {"content-type": "application/json"}}
    res["waits"] = {}
    try:
        for label, enc_wait, shard_wait in parse_waits(args.waits):
            cfg = ServeConfig(checkpoint=fx["checkpoint"], index=fx["index"], num_shards=args.shards,
                              max_k=max(200, args.k), search_mode="sharded")
            if enc_wait is not None:
                cfg.encoder.batch_wait_timeout_s = enc_wait
                cfg.shard.batch_wait_timeout_s = shard_wait
            t0 = time.perf_counter()
            serve.run(build_app(cfg), name=APP, route_prefix="/")
            with httpx.Client(base_url=base, timeout=120) as client:
                while client.get("/healthz").status_code != 200:
                    time.sleep(0.2)
                up = time.perf_counter() - t0
                for b in bodies(20):  # warm-up both paths
                    client.post("/search", content=b, **json_post)
                    for t in threads:
                        torch.set_num_threads(t)
                        inproc(b)
                # Same answers both ways.
                same_ids = same_answer(client, "/search", bodies_all[0], inproc)
                # Interleaved sequential blocks: /healthz, HTTP /search, in-process at each thread count.
                pids = cluster_processes()
                # Background CPU of the idle app (health checks, metrics, long polls), to subtract below.
                c0, t_idle = cpu_seconds(pids), time.perf_counter()
                time.sleep(args.idle_s)
                c1, t_idle = cpu_seconds(pids), time.perf_counter() - t_idle
                idle_rate = {role: (c1[role] - c0.get(role, 0.0)) / t_idle for role in c1 if role != "client"}
                cpu_h: dict[str, float] = {}
                cpu_i = dict.fromkeys(threads, 0.0)
                lat_h, el_h, server, health = [], 0.0, [], []
                lat_i = {t: [] for t in threads}
                el_i = dict.fromkeys(threads, 0.0)
                stages: dict[int, dict] = {t: {} for t in threads}
                per = max(1, args.requests // args.rounds)
                for r in range(args.rounds):
                    blk = bodies(per, r * per)
                    health += healthz_latencies(client)
                    c0 = cpu_seconds(pids)
                    lh, eh = http_sequential(client, blk, server)
                    c1 = cpu_seconds(pids)
                    for role in c1:
                        cpu_h[role] = cpu_h.get(role, 0.0) + c1[role] - c0.get(role, 0.0)
                    lat_h += lh
                    el_h += eh
                    line = f"[{label}] round {r}: HTTP p50 {pct(lh, 50) * 1e3:.2f} ms"
                    for t in threads:
                        torch.set_num_threads(t)
                        c0 = time.process_time()
                        li, ei = inproc_sequential(inproc, blk, stages[t])
                        cpu_i[t] += time.process_time() - c0
                        lat_i[t] += li
                        el_i[t] += ei
                        line += f", in-process ({t} threads) p50 {pct(li, 50) * 1e3:.2f} ms"
                    print(line, flush=True)
            best_t = min(threads, key=lambda t: pct(lat_i[t], 50))
            torch.set_num_threads(best_t)
            enc = serve.get_deployment_handle("SketchEncoder", app_name=APP)
            hops = handle_hops(enc, serve.get_deployment_handle("SearchShard0", app_name=APP), inproc,
                               bodies_all[0], args.k)
            stats0 = enc.stats.remote().result()
            c0 = cpu_seconds(pids)
            lat_hc, el_hc = http_concurrent(base, bodies(args.concurrent_requests), args.clients)
            c1 = cpu_seconds(pids)
            cpu_hc = {role: c1[role] - c0.get(role, 0.0) - idle_rate.get(role, 0.0) * el_hc for role in c1}
            stats1 = enc.stats.remote().result()
            lat_ic, el_ic = inproc_concurrent(inproc, bodies(args.concurrent_requests), args.clients)
            batched = inproc_batched(inproc, bodies(args.concurrent_requests), args.clients)
            w = {
                "encoder_batch_wait_s": cfg.encoder.batch_wait_timeout_s,
                "shard_batch_wait_s": cfg.shard.batch_wait_timeout_s,
                "app_up_s": round(up, 1), "same_ids": same_ids,
                "http_sequential": summary(lat_h, el_h),
                "inproc_sequential": {t: summary(lat_i[t], el_i[t]) for t in threads},
                "inproc_best_threads": best_t,
                "http_concurrent": summary(lat_hc, el_hc), "inproc_concurrent": summary(lat_ic, el_ic),
                "inproc_batched": batched,
                "healthz_p50_ms": pct(health, 50) * 1e3,
                "server_timing_p50_ms": {key: statistics.median(s[key] for s in server) for key in server[0]},
                "inproc_stages_p50_ms": {t: {key: round(pct(v, 50) * 1e3, 3) for key, v in stages[t].items()}
                                         for t in threads},
                "encoder_mean_batch_concurrent": (stats1["items"] - stats0["items"])
                / max(1, stats1["batches"] - stats0["batches"]),
                "encoder_max_batch": stats1["max_batch"],
                "handle_calls_p50_ms": hops,
                "idle_cpu_ms_per_s": {role: round(v * 1e3, 1) for role, v in idle_rate.items()},
                "http_cpu_ms_per_request": per_request(cpu_h, idle_rate, el_h, len(lat_h)),
                "http_concurrent_cpu_ms_per_request": per_request(cpu_hc, {}, 0.0, len(lat_hc)),
                "inproc_cpu_ms_per_request": {t: round(cpu_i[t] / len(lat_i[t]) * 1e3, 2) for t in threads},
            }
            w["ratio_p50"] = w["http_sequential"]["p50_ms"] / w["inproc_sequential"][best_t]["p50_ms"]
            w["client_minus_ingress_p50_ms"] = w["http_sequential"]["p50_ms"] - w["server_timing_p50_ms"]["total"]
            res["waits"][label] = w
            print(f"\n=== batch_wait_timeout_s encoder {w['encoder_batch_wait_s']} shard {w['shard_batch_wait_s']} ===")
            print(f"HTTP sequential                 {fmt(w['http_sequential'])}")
            for t in threads:
                print(f"in-process sequential {t} thread(s) {fmt(w['inproc_sequential'][t])}")
            print(f"HTTP p50 / in-process p50 ({best_t} thread(s)) = {w['ratio_p50']:.2f}  (target <= 1.5); "
                  f"same ids: {same_ids}")
            print(f"HTTP {args.clients} clients                  {fmt(w['http_concurrent'])}")
            print(f"in-process {args.clients} threads            {fmt(w['inproc_concurrent'])}")
            print(f"in-process batches of {args.clients}: {batched['qps']:.1f} req/s")
            print(f"ingress timing_ms p50 {w['server_timing_p50_ms']}; client - ingress total p50 "
                  f"{w['client_minus_ingress_p50_ms']:.2f} ms; GET /healthz p50 {w['healthz_p50_ms']:.2f} ms")
            print(f"in-process stages p50 ms {w['inproc_stages_p50_ms']}")
            print(f"handle calls from this process p50 ms {hops}")
            print(f"CPU ms per request, idle background subtracted: HTTP sequential {w['http_cpu_ms_per_request']}; "
                  f"HTTP {args.clients} clients {w['http_concurrent_cpu_ms_per_request']}; "
                  f"in-process sequential {w['inproc_cpu_ms_per_request']}; idle background CPU ms/s "
                  f"{w['idle_cpu_ms_per_s']}")
            print(f"encoder mean batch under {args.clients} clients {w['encoder_mean_batch_concurrent']:.2f}, "
                  f"max {w['encoder_max_batch']}", flush=True)
        res["replica_rss_mb"] = replica_rss(cluster_processes())
        if args.colocated:
            res["colocated"] = measure_colocated(fx, args, base, bodies, inproc)
        print(f"replica RSS (MB): {res['replica_rss_mb']}")
    finally:
        stop_ray()
        if tmp is not None:
            tmp.cleanup()
    finish_environment(env)
    print(f"loadavg start {env['loadavg_start']} end {env['loadavg_end']}")
    write_result(args, res)
    return res


if __name__ == "__main__":
    main()
