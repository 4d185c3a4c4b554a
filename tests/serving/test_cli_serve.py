"""`ray-sbir serve` as a user runs and stops it: its own local cluster, the chosen HTTP front, and every process it
started gone within 15 s of the stop, whichever way it is stopped (exclusive: the 15 s are timed).

The ``gallery`` fixture (tests/serving/conftest.py) gives the tiny checkpoint and index it serves."""

from __future__ import annotations

import os
import signal
import time

import pytest

from ray_sbir.testing.stores import free_port, port_is_free
from tests.serving.helpers import REPO, make_rerank_checkpoint, wait_for_healthz

httpx = pytest.importorskip("httpx")


def listening_outside_loopback(pid: int) -> list[tuple[str, str, int]]:
    """``(process, address, port)`` of every TCP socket that ``pid`` and its descendants listen on outside the
    loopback interface (the whole local cluster: GCS, raylet, workers, agents, replicas, HAProxy)."""
    import ipaddress

    import psutil

    out = []
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            name = " ".join(p.cmdline())[:80] or p.name()
            conns = p.net_connections("tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError, ProcessLookupError):
            continue
        for c in conns:
            ip = ipaddress.ip_address(c.laddr.ip)
            ip = getattr(ip, "ipv4_mapped", None) or ip  # ::ffff:127.0.0.1 is loopback too
            if c.status == "LISTEN" and not ip.is_loopback:
                out.append((name, c.laddr.ip, c.laddr.port))
    return sorted(set(out))


def _private_cluster_tag(pid: int) -> str | None:
    """The tag the processes of ``ray-sbir serve``'s private cluster carry (read from its Ray processes)."""
    import psutil

    from ray_sbir.distributed.runtime import PRIVATE_CLUSTER_ENV

    for child in psutil.Process(pid).children(recursive=True):
        try:
            tag = child.environ().get(PRIVATE_CLUSTER_ENV)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if tag:
            return tag
    return None


# How a user stops it: SIGTERM to the process (`kill PID`), SIGTERM to its process group (what a service manager
# or `kill -- -PGID` sends), SIGINT to its process group (Ctrl-C in a terminal).
STOPS = {"term": lambda pid: os.kill(pid, signal.SIGTERM), "group_term": lambda pid: os.killpg(pid, signal.SIGTERM),
         "ctrl_c": lambda pid: os.killpg(pid, signal.SIGINT)}


@pytest.mark.exclusive
@pytest.mark.parametrize("proxy,stop", [("haproxy", "term"), ("haproxy", "group_term"), ("serve", "ctrl_c")])
def test_cli_serve_starts_the_app_and_stops_on_sigterm(gallery, tmp_path, proxy, stop):
    """`ray-sbir serve` as a user runs it: its own local cluster with the chosen HTTP front (Serve's HAProxy
    ingress or its Python proxy), the page and /search on the given port; stopped any of the usual ways, it
    exits 0 and within 15 s every process it started has ended (HAProxy included) and the port is free."""
    import subprocess
    import sys

    import psutil

    from ray_sbir.distributed.runtime import private_cluster_pids

    port = free_port()
    rerank = make_rerank_checkpoint(gallery.checkpoint, str(tmp_path / "rerank"))
    log = tmp_path / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ray_sbir.cli", "serve", "--checkpoint", gallery.checkpoint,
                                 "--index", gallery.index, "--port", str(port), "--num-cpus", "3",
                                 "--proxy", proxy, "--rerank", rerank, "--rerank-k", "10"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        up = wait_for_healthz(base, 240, alive=lambda: proc.poll() is None)
        assert up and proc.poll() is None, log.read_text()[-3000:]
        info = httpx.get(f"{base}/info", timeout=30).json()
        assert info["count"] == len(gallery.ids) and info["search_mode"] == "colocated"  # auto, small gallery
        assert [s["stage"] for s in info["stages"]] == ["retrieve", "rerank", "results"]  # --rerank
        r = httpx.post(f"{base}/search", json={"strokes": gallery.drawings[0][2], "k": 3}, timeout=60)
        assert r.status_code == 200 and r.json()["count"] == 3, r.text
        assert all("first_stage_score" in item for item in r.json()["results"])
        assert "<canvas" in httpx.get(f"{base}/", timeout=30).text
        deadline = time.time() + 20
        while "doodle page: http://127.0.0.1:" not in log.read_text() and time.time() < deadline:
            time.sleep(0.5)
        assert f"doodle page: http://127.0.0.1:{port}/" in log.read_text() and "(colocated:" in log.read_text()
        def haproxy_ports() -> tuple[int, set]:
            """(HAProxy processes, their listening ports); HAProxy reloads by starting a new process, so one
            listed a moment ago may be gone."""
            found, ports = 0, set()
            for p in psutil.Process(proc.pid).children(recursive=True):
                try:
                    if p.name() == "haproxy":
                        found += 1
                        ports |= {c.laddr.port for c in p.net_connections("tcp") if c.status == "LISTEN"}
                except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
                    continue
            return found, ports

        haproxies, listening = haproxy_ports()
        if proxy == "haproxy":  # HAProxy holds the port; Serve's Python proxy is not in the request path
            deadline = time.time() + 20
            while port not in listening and time.time() < deadline:
                time.sleep(0.5)
                haproxies, listening = haproxy_ports()
            assert "HAProxy ingress" in log.read_text() and haproxies
            assert port in listening, listening
        else:
            assert "Serve's proxy" in log.read_text() and not haproxies
        # Loopback means loopback (the default --host): the cluster's every server listens on 127.0.0.1 --
        # HAProxy's stats and Prometheus frontends too (the launcher binds them to the HTTP host) -- except what
        # Ray 2.60 hard-codes (docs/cluster.md, "Loopback"): each Serve replica's internal gRPC server on [::].
        for name, ip, lport in listening_outside_loopback(proc.pid):
            assert "ServeReplica" in name and ip == "::", (name, ip, lport)
        tag = _private_cluster_tag(proc.pid)
        names = {psutil.Process(pid).name() for pid in private_cluster_pids(tag)} if tag else set()
        assert "raylet" in names and ("haproxy" in names) == (proxy == "haproxy"), names  # the tag reaches them
        stopped = time.time()
        STOPS[stop](proc.pid)
        assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]
        while time.time() < stopped + 15 and (private_cluster_pids(tag) or not port_is_free(port)):
            time.sleep(0.2)
        assert not private_cluster_pids(tag) and port_is_free(port), (private_cluster_pids(tag), log.read_text()[-3000:])
        assert time.time() - stopped < 15, f"stopped in {time.time() - stopped:.1f} s"
        assert "failed to shut down" not in log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
