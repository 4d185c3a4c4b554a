"""Bounded concurrent load on loopback with valid and invalid requests, while one encoder replica and one shard
replica are killed: no 5xx, every invalid request a 4xx, and (thanks to the ingress's retries) no failed request.
"""

from __future__ import annotations

import collections
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.serving.helpers import (APP_NAME, make_gallery, mixed_load_plan, replica_actor, serve_config_for,
                                   start_serve, stop_serve)

pytestmark = pytest.mark.exclusive  # timing under load: run alone (tests/conftest.py)

httpx = pytest.importorskip("httpx")

CLIENTS = 24
REQUESTS = 1200


@pytest.fixture(scope="module")
def loaded(ray_local, tmp_path_factory):
    gallery = make_gallery(str(tmp_path_factory.mktemp("load")))
    # Two encoder replicas (one dies: the other takes over) and one replica per shard (one dies: requests wait,
    # retried, until Serve has replaced it).
    cfg = serve_config_for(gallery, retry_timeout_s=120, search_mode="sharded",
                           encoder={"num_replicas": 2, "num_cpus": 0.5, "max_batch_size": 16,
                                    "batch_wait_timeout_s": 0.01},
                           shard={"num_replicas": 1, "num_cpus": 0.25})
    base = start_serve(cfg)
    yield base, gallery
    stop_serve()


def _wait_running(deadline_s: float = 180) -> None:
    from ray import serve

    deadline = time.time() + deadline_s
    while time.time() < deadline:
        app = serve.status().applications.get(APP_NAME)
        if app is not None and str(app.status).endswith("RUNNING") and all(
                str(d.status).endswith("HEALTHY") for d in app.deployments.values()):
            return
        time.sleep(1)
    raise TimeoutError("the app did not recover")


def test_load_with_replica_loss_has_no_failures(loaded):
    import ray

    base, gallery = loaded
    plan = mixed_load_plan(gallery, REQUESTS)

    results = [None] * REQUESTS
    started = collections.Counter()
    lock = threading.Lock()
    local = threading.local()

    def client() -> httpx.Client:
        if not hasattr(local, "c"):
            local.c = httpx.Client(base_url=base, timeout=180)
        return local.c

    def run(i: int) -> None:
        name, kw, want = plan[i]
        t0 = time.time()
        try:
            r = client().post("/search", **kw)
            status, ok_json = r.status_code, isinstance(r.json().get("detail" if want != 200 else "results"),
                                                        (str, list))
        except Exception as e:  # noqa: BLE001 - a transport failure counts as a failed request
            status, ok_json = f"error:{type(e).__name__}", False
        with lock:
            started["done"] += 1
        results[i] = (name, want, status, ok_json, t0, time.time())

    kills = {}

    def killer() -> None:
        while started["done"] < REQUESTS // 4:
            time.sleep(0.05)
        for deployment in ("SketchEncoder", "SearchShard0"):
            name, actor = replica_actor(deployment)
            ray.kill(actor, no_restart=True)
            kills[deployment] = (name, time.time(), started["done"])

    t_start = time.time()
    kthread = threading.Thread(target=killer, daemon=True)
    kthread.start()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(run, range(REQUESTS)))
    elapsed = time.time() - t_start
    kthread.join(timeout=5)

    by_status = collections.Counter(str(r[2]) for r in results)
    server_errors = [r for r in results if not isinstance(r[2], int) or r[2] >= 500]
    wrong = [r for r in results if r[2] != r[1] or not r[3]]
    kill_t = min(t for _, t, _ in kills.values()) if kills else t_start
    during = [r for r in results if r[5] >= kill_t]
    lat = np.array([r[5] - r[4] for r in results])
    retries = httpx.get(base + "/info", timeout=30).json()["retries"]
    print(f"\n{REQUESTS} requests, {CLIENTS} clients, {elapsed:.1f}s ({REQUESTS / elapsed:.0f} req/s); "
          f"status counts {dict(by_status)}; killed {kills}; requests finishing after the kills: {len(during)}, "
          f"failed: {len([r for r in during if r in server_errors])}; ingress retries: {retries}; latency p50 "
          f"{np.percentile(lat, 50) * 1e3:.0f} ms p99 {np.percentile(lat, 99) * 1e3:.0f} ms max {lat.max():.1f} s")
    assert set(kills) == {"SketchEncoder", "SearchShard0"}
    assert not server_errors, server_errors[:10]
    assert not wrong, wrong[:10]
    assert sum(1 for r in results if r[1] >= 400) > 0.2 * REQUESTS
    # The killed replicas are replaced and the app answers normally afterwards.
    _wait_running()
    r = httpx.post(base + "/search", json={"strokes": gallery.drawings[0][2], "k": 3}, timeout=60)
    assert r.status_code == 200 and r.json()["count"] == 3
