"""Autoscaling, watched: real HTTP load against the local Serve app (``heavy`` concurrent clients, then one client
that keeps searching while the deployments scale down, so the replicas being stopped are drained, not dropped),
with the replicas and latency sampled. ``tests/serving/test_autoscale.py`` asserts on the timeline,
``bench/bench_autoscale.py`` records it for ``docs/benchmarks.md``."""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field

from ray_sbir.testing.galleries import serve_config_for
from ray_sbir.testing.serve import APP_NAME

__all__ = ["AUTOSCALE", "Timeline", "WATCHED", "autoscaled_config", "reached", "run_timeline", "running_replicas"]

# Fast enough for a test: decisions every ~second, scale down 4 s after the load drops.
AUTOSCALE = {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 2, "upscale_delay_s": 1.0,
             "downscale_delay_s": 4.0, "look_back_period_s": 2.0, "metrics_interval_s": 0.5}


def running_replicas(deployments: list[str]) -> dict[str, int]:
    from ray import serve

    app = serve.status().applications[APP_NAME]
    return {name: int(app.deployments[name].replica_states.get("RUNNING", 0)) for name in deployments}


@dataclass
class Timeline:
    samples: list[dict] = field(default_factory=list)  # {t, phase, clients, replicas: {...}, p50_ms, requests}
    failures: list[str] = field(default_factory=list)
    requests: int = 0


def run_timeline(base: str, body: dict, deployments: list[str], *, heavy: int = 12, max_replicas: dict,
                 min_replicas: dict, up_timeout_s: float = 90, down_timeout_s: float = 90,
                 sample_s: float = 0.5) -> Timeline:
    """Drive ``heavy`` clients until every deployment named in ``max_replicas`` (a subset of ``deployments``) runs
    that many replicas, then one client until all are back at ``min_replicas``; sample replicas and latency every
    ``sample_s``."""
    import httpx  # a dev dependency, as are the tests and benches that call this

    tl = Timeline()
    lock = threading.Lock()
    window: list[float] = []
    clients = {"n": 0}

    def client(stop: threading.Event) -> None:
        with httpx.Client(base_url=base, timeout=60) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    r = c.post("/search", json=body)
                    ok, what = r.status_code == 200, f"{r.status_code} {r.text[:120]}"
                except httpx.HTTPError as e:  # a dropped connection is a failed request too
                    ok, what = False, repr(e)
                with lock:
                    tl.requests += 1
                    window.append((time.perf_counter() - t0) * 1e3)
                    if not ok:
                        tl.failures.append(what)

    def start(n: int) -> tuple[threading.Event, list[threading.Thread]]:
        stop = threading.Event()
        threads = [threading.Thread(target=client, args=(stop,), daemon=True) for _ in range(n)]
        for t in threads:
            t.start()
        clients["n"] += n
        return stop, threads

    def sample(phase: str, t_start: float) -> dict:
        with lock:
            lat = list(window)
            window.clear()
        s = {"t": round(time.perf_counter() - t_start, 2), "phase": phase, "clients": clients["n"],
             "replicas": running_replicas(deployments),
             "p50_ms": round(statistics.median(lat), 1) if lat else None, "requests": len(lat)}
        tl.samples.append(s)
        return s

    t_start = time.perf_counter()
    light_stop, light = start(1)
    try:
        for _ in range(4):  # idle-ish baseline
            time.sleep(sample_s)
            sample("light", t_start)
        heavy_stop, heavy_threads = start(heavy)
        deadline = time.perf_counter() + up_timeout_s
        while time.perf_counter() < deadline:
            time.sleep(sample_s)
            if reached(sample("heavy", t_start)["replicas"], max_replicas):
                break
        for _ in range(4):  # hold at the bound a moment
            time.sleep(sample_s)
            sample("heavy", t_start)
        heavy_stop.set()
        for t in heavy_threads:
            t.join(60)
        clients["n"] -= heavy
        deadline = time.perf_counter() + down_timeout_s
        while time.perf_counter() < deadline:
            time.sleep(sample_s)
            if sample("light", t_start)["replicas"] == min_replicas:
                break
        for _ in range(4):
            time.sleep(sample_s)
            sample("light", t_start)
    finally:
        light_stop.set()
        for t in light:
            t.join(60)
    return tl


def reached(replicas: dict[str, int], bound: dict[str, int]) -> bool:
    return all(replicas[name] == n for name, n in bound.items())


def autoscaled_config(gallery, mode: str):
    if mode == "colocated":
        return serve_config_for(gallery, search_mode="colocated",
                                colocated={"num_cpus": 0.25, "autoscaling": AUTOSCALE, "max_batch_size": 4})
    return serve_config_for(gallery, search_mode="sharded", num_shards=2,
                            encoder={"num_cpus": 0.25, "autoscaling": {**AUTOSCALE, "max_replicas": 2},
                                     "max_batch_size": 4, "batch_wait_timeout_s": 0.005},
                            shard={"num_cpus": 0.25, "autoscaling": {**AUTOSCALE, "max_replicas": 2}})


WATCHED = {"colocated": (["SearchIngress"], {"SearchIngress": 3}),
           "sharded": (["SketchEncoder", "SearchShard0"], {"SketchEncoder": 2})}
