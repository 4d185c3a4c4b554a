"""Switching a served gallery to its next version under load: requests during the switch, failures, and the
seconds until every answer comes from the new version (issue 17 item 7).

    python bench/bench_index_switch.py --proxy haproxy [--clients 8 --before 5 --after 30]

One run on a private local Ray cluster (``ray_sbir.serving.cluster.proxy_env(--proxy)``, as ``ray-sbir serve``
sets it): the test gallery of ``tests/serving`` (tiny random-init model) as version 1, and version 2 written
by :func:`ray_sbir.index.new_version` (``--added`` new rows, one removed). The app runs with 2 replicas of the
deployment that holds the gallery (colocated mode: ``SearchIngress`` holds encoder and gallery), ``--clients``
keep-alive clients send ``POST /search`` in a loop; after ``--before`` seconds the app is redeployed with
version 2 (``serve.run`` with the new config: what ``serve deploy`` does), and the clients go on for
``--after`` seconds. Every answer says which version answered it (``index_version``), so the bench reports
the failures (any status but 200, or a client error), the requests answered during the switch, and when the
last answer from version 1 came (seconds after the redeploy started), beside how long ``serve.run`` took.
Exits 1 if a request failed or version 2 never answered: ``tests/bench`` runs it (``--tiny``) as the test
that a switch loses nothing.

``--tiny``: 2 clients, 1 s before the switch and 10 s after it.
"""

from __future__ import annotations

import collections
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from common import bench_parser, command_line, environment, parse_args, start_ray, stop_ray, write_result


def next_version(gallery, added: int) -> str:
    """Version 2 of the test gallery: ``added`` new rows (unit vectors), its first row removed."""
    from ray_sbir.index import item_table, new_version, read_index

    base = read_index(gallery.index)
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((added, base.embeddings.shape[1])).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    table = item_table([f"new/{i}" for i in range(added)], [base.uris[0]] * added, [base.labels[0]] * added,
                       "photo", emb)
    out = gallery.index.rstrip("/") + "_v2"
    new_version(gallery.index, out, [table], [str(base.ids[0])])
    return out


def main(argv=None) -> int:
    p = bench_parser(__doc__, json_out=True)
    p.add_argument("--proxy", choices=["serve", "haproxy"], default="haproxy")
    # Colocated only: each replica holds its whole gallery, so every answer comes from one version. In sharded
    # mode an old ingress replica may call a shard replica of the new version during the rolling update (row
    # numbers of two versions): switch a sharded app blue/green instead (docs/cluster.md, "Growing a gallery").
    p.add_argument("--mode", choices=["colocated"], default="colocated")
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--added", type=int, default=50, help="rows version 2 adds")
    p.add_argument("--before", type=float, default=5.0, help="seconds of load before the switch")
    p.add_argument("--after", type=float, default=30.0, help="seconds of load after the switch starts")
    args = parse_args(p, argv, tiny={"clients": 2, "before": 1.0, "after": 10.0})

    from ray_sbir.serving.cluster import proxy_env

    os.environ.update(proxy_env(args.proxy))  # before Ray Serve is imported and before the cluster starts
    import dataclasses

    import httpx
    from ray import serve

    from ray_sbir.serving import ServeConfig, build_app
    from ray_sbir.testing.galleries import make_gallery
    from ray_sbir.testing.serve import APP_NAME, start_serve

    tmp = tempfile.TemporaryDirectory(prefix="bench_index_switch_")
    gallery = make_gallery(tmp.name)
    v2 = next_version(gallery, args.added)
    env = environment()
    ray = start_ray(4, log_to_driver=False)
    two = {"num_replicas": 2, "num_cpus": 0.5}
    cfg = ServeConfig(checkpoint=gallery.checkpoint, index=gallery.index, search_mode=args.mode, colocated=two,
                      retry_timeout_s=60)
    base = start_serve(cfg)

    answers: list[tuple[float, object, int | None]] = []  # (time, status or error, index_version)
    lock = threading.Lock()
    stop = threading.Event()
    body = {"strokes": gallery.drawings[0][2], "k": 5}

    def client() -> None:
        with httpx.Client(base_url=base, timeout=60) as c:
            while not stop.is_set():
                try:
                    r = c.post("/search", json=body)
                    key, version = r.status_code, (r.json().get("index_version") if r.status_code == 200 else None)
                except httpx.HTTPError as e:
                    key, version = type(e).__name__, None
                with lock:
                    answers.append((time.monotonic(), key, version))

    try:
        with ThreadPoolExecutor(args.clients) as pool:
            for _ in range(args.clients):
                pool.submit(client)
            time.sleep(args.before)
            t_switch = time.monotonic()
            serve.run(build_app(dataclasses.replace(cfg, index=v2)), name=APP_NAME, route_prefix="/")
            t_deployed = time.monotonic()
            time.sleep(max(0.0, args.after - (t_deployed - t_switch)))
            stop.set()
    finally:
        stop_ray()
        tmp.cleanup()
    outcomes = collections.Counter(str(k) for _, k, _ in answers)
    failed = sum(n for k, n in outcomes.items() if k != "200")
    during = [a for a in answers if t_switch <= a[0] <= t_deployed]
    old = [t for t, k, v in answers if v == 1 and t >= t_switch]
    new = [t for t, k, v in answers if v == 2]
    res = {"command": command_line(__file__, argv), "env": env, "proxy": args.proxy, "mode": args.mode,
           "clients": args.clients, "requests": len(answers), "failed": failed, "outcomes": dict(outcomes),
           "during_switch": len(during), "serve_run_s": round(t_deployed - t_switch, 2),
           "last_v1_answer_s": round(max(old) - t_switch, 2) if old else 0.0,
           "first_v2_answer_s": round(min(new) - t_switch, 2) if new else None,
           "v2_answers": len(new)}
    print(f"{args.mode} behind {args.proxy}, {args.clients} clients, switch to version 2: {failed} of {len(answers)} "
          f"requests failed ({len(during)} answered while serve.run redeployed, {res['serve_run_s']} s); first v2 "
          f"answer after {res['first_v2_answer_s']} s, last v1 answer after {res['last_v1_answer_s']} s; "
          f"outcomes {dict(outcomes)}")
    write_result(args, res)
    return 1 if failed or not new else 0


if __name__ == "__main__":
    sys.exit(main())
