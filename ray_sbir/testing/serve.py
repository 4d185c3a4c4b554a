"""The Serve app started on a free loopback port, its replicas watched, and HAProxy's access log read: what the
serving tests and the serving benches (bench_replica_loss, bench_autoscale, bench_index_switch) drive."""

from __future__ import annotations

import time

from ray_sbir.testing.stores import free_port

__all__ = ["APP_NAME", "HAProxyLog", "replica_actor", "start_serve", "stop_serve", "wait_for_healthz",
           "wait_for_replicas"]

APP_NAME = "sbir-test"


def start_serve(cfg) -> str:
    """Start Serve on a free loopback port with the app; returns the base URL."""
    from ray import serve

    from ray_sbir.serving import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(cfg), name=APP_NAME, route_prefix="/")
    base = f"http://127.0.0.1:{port}"
    if not wait_for_healthz(base, 60):
        raise RuntimeError("the app did not answer /healthz")
    return base


def stop_serve(timeout_s: float = 180) -> None:
    """``serve.shutdown()``, then wait until the controller is gone.

    ``serve.shutdown()`` gives the controller 30 s to stop gracefully and then returns, yet the controller goes on
    shutting down and finally kills itself (``ray.kill``). A ``serve.start`` meanwhile finds that controller alive
    by its name, reuses it, and then loses it with every app deployed on it (seen on a loaded CI machine): the
    next Serve start must wait for the name to be released."""
    from ray import serve

    serve.shutdown()
    _wait_for_controller_gone(timeout_s)


def _wait_for_controller_gone(timeout_s: float = 180) -> None:
    import ray

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            ray.get_actor("SERVE_CONTROLLER_ACTOR", namespace="serve")
        except ValueError:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the Serve controller was still there {timeout_s:.0f}s after serve.shutdown()")


def wait_for_healthz(base: str, timeout_s: float, alive=lambda: True) -> bool:
    """Poll ``GET /healthz`` until it answers 200 (True), ``timeout_s`` passes or ``alive()`` turns false."""
    import httpx  # a dev dependency, as are the tests and benches that call this

    deadline = time.time() + timeout_s
    while time.time() < deadline and alive():
        try:
            if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def wait_for_replicas(deployment: str, n: int, timeout_s: float = 180) -> bool:
    """Whether the test app is RUNNING with ``n`` running replicas of ``deployment`` within ``timeout_s``."""
    from ray import serve

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        app = serve.status().applications.get(APP_NAME)
        dep = app.deployments.get(deployment) if app else None
        if dep and str(app.status).endswith("RUNNING") and dep.replica_states.get("RUNNING", 0) == n:
            return True
        time.sleep(0.5)
    return False


def replica_actor(deployment: str):
    """``(name, handle)`` of a live replica actor of ``deployment`` in the test app (Serve's actor name)."""
    import ray

    for a in ray.util.list_named_actors(all_namespaces=True):
        name = a["name"]
        if name.startswith("SERVE_REPLICA::") and f"{APP_NAME}#{deployment}#" in name:
            return name, ray.get_actor(name, namespace=a["namespace"])
    raise LookupError(f"no replica of {deployment}")


class HAProxyLog:
    """HAProxy's access log, received as syslog over UDP on a free loopback port.

    Call before Ray Serve starts HAProxy (it reads ``RAY_SERVE_HAPROXY_LOG_TARGET``, default 127.0.0.1:514).
    ``unusual()`` gives the httplog lines of ``POST`` requests that HAProxy answered 5xx or not at all, sent
    more than once, or ended otherwise than normally: the termination state (4 characters after the cookies,
    e.g. ``SH--``) and the retries field (``+N`` when redispatched) say what happened to each."""

    def __init__(self) -> None:
        import os
        import socket
        import threading

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.5)
        os.environ["RAY_SERVE_HAPROXY_LOG_TARGET"] = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self.lines: list[str] = []
        self._stop = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.lines.append(self._sock.recv(65536).decode(errors="replace").strip())
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()

    # An httplog line's status, termination state and retries (``200 1832 - - ---- 8/8/7/6/+1``).
    _FIELDS = r" (-?\d+) \S+ \S+ \S+ (\S{4}) \d+/\d+/\d+/\d+/(\+?\d+) "

    def unusual(self) -> list[str]:
        import re

        out = []
        for ln in self.lines:
            m = re.search(self._FIELDS, ln)
            if '"POST ' in ln and m and (m[1].startswith(("5", "-")) or m[2] != "----" or m[3] != "0"):
                out.append(ln)
        return out

    def summary(self) -> dict[str, int]:
        """Counts of ``"status termination-state retries"`` over :meth:`unusual`'s lines."""
        import collections
        import re

        return dict(collections.Counter(" ".join(re.search(self._FIELDS, ln).groups()) for ln in self.unusual()))
