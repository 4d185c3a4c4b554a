"""Requests lost when a replica of the Serve app is killed under load, per HTTP front and search mode.

    python bench/bench_replica_loss.py --proxy haproxy --mode colocated [--clients 8 --before 5 --after 20]

One run, on a private local Ray cluster started with ``ray_sbir.serving.cluster.proxy_env(--proxy)`` (what
``ray-sbir serve --proxy`` sets): the test gallery of ``tests/serving/test_app.py`` (tiny random-init model), the
app with 2 replicas of the deployment that dies (colocated: ``SearchIngress``, which holds encoder and
gallery; sharded: ``SketchEncoder``), ``--clients`` keep-alive clients sending ``POST /search`` in a loop.
After ``--before`` seconds one replica is killed (``ray.kill``, no restart: the process is gone at once);
clients go on for ``--after`` seconds. Prints the count of every outcome (HTTP status or client exception).

In sharded mode the ingress retries its calls to the encoder and shards, so a lost downstream replica costs no
request (``tests/serving/test_load.py`` asserts that). In colocated mode the replica that dies is the one
answering HTTP: its in-flight requests can only be replayed by the HTTP front in front of it.

``--kills N`` repeats the kill N times (each after Serve has replaced the last victim and ``--before`` seconds
of load), for rare outcomes. ``--env KEY=VALUE`` sets a variable before the cluster starts (e.g. another
``RAY_SERVE_HAPROXY_BALANCE_ALGORITHM``), to compare HAProxy settings. Behind HAProxy, its access log is
captured and the lines of requests it answered 5xx or replayed are summarised by termination state and
retry count (what the HTTP front saw of each lost request).

``--tiny``: 2 clients, 1 s before and 2 s after the kill (a smoke run: the app's start-up dominates).
"""

from __future__ import annotations

import collections
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from common import bench_parser, command_line, environment, parse_args, start_ray, stop_ray, write_result


def main(argv=None) -> dict:
    p = bench_parser(__doc__, json_out=True)
    p.add_argument("--proxy", choices=["serve", "haproxy"], default="haproxy")
    p.add_argument("--mode", choices=["colocated", "sharded"], default="colocated")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--before", type=float, default=5.0, help="seconds of load before the kill")
    p.add_argument("--after", type=float, default=20.0, help="seconds of load after the kill")
    p.add_argument("--kills", type=int, default=1, help="replicas killed one after another")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment for the cluster, set after proxy_env's (repeatable)")
    args = parse_args(p, argv, tiny={"clients": 2, "before": 1.0, "after": 2.0})

    from ray_sbir.serving.cluster import proxy_env

    os.environ.update(proxy_env(args.proxy))  # before Ray Serve is imported and before the cluster starts
    overrides = dict(kv.split("=", 1) for kv in args.env)
    os.environ.update(overrides)
    import httpx
    from ray import serve

    from ray_sbir.serving import ServeConfig
    from ray_sbir.testing.galleries import make_gallery
    from ray_sbir.testing.serve import HAProxyLog, replica_actor, start_serve, wait_for_replicas

    haproxy_log = HAProxyLog() if args.proxy == "haproxy" else None

    tmp = tempfile.TemporaryDirectory(prefix="bench_replica_loss_")
    gallery = make_gallery(tmp.name)
    env = environment()
    ray = start_ray(4, log_to_driver=False)
    two = {"num_replicas": 2, "num_cpus": 0.5}
    cfg = ServeConfig(checkpoint=gallery.checkpoint, index=gallery.index, search_mode=args.mode,
                      colocated=two, encoder=two, retry_timeout_s=60)
    victim = "SearchIngress" if args.mode == "colocated" else "SketchEncoder"
    base = start_serve(cfg)  # Serve on a free loopback port, the app up and answering /healthz

    outcomes: collections.Counter = collections.Counter()
    lock = threading.Lock()
    stop = threading.Event()
    body = {"strokes": gallery.drawings[0][2], "k": 5}

    def client() -> None:
        with httpx.Client(base_url=base, timeout=60) as c:
            while not stop.is_set():
                try:
                    key = c.post("/search", json=body).status_code
                except httpx.HTTPError as e:
                    key = type(e).__name__
                with lock:
                    outcomes[key] += 1

    try:
        with ThreadPoolExecutor(args.clients) as pool:
            for _ in range(args.clients):
                pool.submit(client)
            for kill in range(args.kills):
                if kill and not wait_for_replicas(victim, 2):
                    raise TimeoutError(f"{victim} did not get back to 2 running replicas in 180 s")
                time.sleep(args.before)
                with lock:
                    before = dict(outcomes)
                ray.kill(replica_actor(victim)[1], no_restart=True)
                time.sleep(args.after)
            stop.set()
    finally:
        stop_ray()
        tmp.cleanup()
        if haproxy_log:
            haproxy_log.close()
    total = sum(outcomes.values())
    failed = total - outcomes.get(200, 0)
    seen = haproxy_log.summary() if haproxy_log else {}
    res = {"command": command_line(__file__, argv), "env": env, "proxy": args.proxy, "mode": args.mode,
           "settings": overrides, "killed": victim, "kills": args.kills, "before_last_kill": before,
           "outcomes": {str(k): v for k, v in outcomes.items()}, "requests": total, "failed": failed,
           "haproxy_replayed_or_5xx": seen}
    print(f"{args.mode} behind {args.proxy} {overrides or ''}, one of 2 {victim} replicas killed {args.kills}x "
          f"under {args.clients} clients: {failed} of {total} requests failed; outcomes {dict(outcomes)}; "
          f"HAProxy replayed or answered 5xx (status, termination state, retries): {seen}")
    write_result(args, res)
    return res


if __name__ == "__main__":
    main()
