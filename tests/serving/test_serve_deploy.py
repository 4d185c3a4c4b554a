"""`serve deploy serve/config.yaml` on a cluster started the way cluster.yaml starts its nodes.

A head node is started with ``ray start`` (token authentication, Serve's HAProxy ingress from
:func:`ray_sbir.serving.cluster.proxy_env`, as in cluster.yaml's start commands; see :mod:`tests.local_cluster`).
The repository's Serve config is deployed with Serve's own CLI through the dashboard. Only the gallery paths
and the HTTP port are changed (free port, loopback). The app then has to answer over HTTP behind HAProxy.
"""

from __future__ import annotations

import subprocess
import time

import psutil
import pytest
import yaml

from tests.local_cluster import LocalCluster
from ray_sbir.testing.stores import free_port
from tests.serving.helpers import REPO, make_gallery

httpx = pytest.importorskip("httpx")

pytestmark = [pytest.mark.slow, pytest.mark.exclusive]


def _serve_cli(cluster: LocalCluster, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    import shutil

    serve_bin = shutil.which("serve")
    assert serve_bin, "Ray Serve's `serve` CLI is not on PATH"
    return subprocess.run([serve_bin, *args, "--address", cluster.dashboard_address], env=cluster.env, cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False)


def test_serve_deploy_of_the_repository_config(tmp_path):
    from ray_sbir.serving.cluster import proxy_env

    gallery = make_gallery(str(tmp_path / "gallery"))
    config = yaml.safe_load((REPO / "serve" / "config.yaml").read_text())
    port = free_port()
    config["http_options"] = {**config["http_options"], "host": "127.0.0.1", "port": port}
    app = config["applications"][0]
    app["args"].update(checkpoint=gallery.checkpoint, index=gallery.index)
    app["args"]["colocated"]["num_cpus"] = 0.5  # fits the 3-CPU head
    deploy_file = tmp_path / "config.yaml"
    deploy_file.write_text(yaml.safe_dump(config))

    cluster = LocalCluster.create()
    cluster.env.update(proxy_env("haproxy"))  # what cluster.yaml exports before `ray start`
    # Behind HAProxy, Serve keeps each replica reachable for 30 s when it stops so that the load balancers of other
    # nodes can deregister it; this one-node cluster has none, and `serve shutdown` would only wait.
    cluster.env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] = "1"
    try:
        cluster.start_head(num_cpus=3, object_store_memory=200 * 1024**2)
        res = _serve_cli(cluster, "deploy", str(deploy_file))
        assert res.returncode == 0, res.stdout[-3000:]
        base = f"http://127.0.0.1:{port}"
        deadline, info = time.time() + 300, None
        while time.time() < deadline and info is None:
            try:
                r = httpx.get(f"{base}/info", timeout=5)
                info = r.json() if r.status_code == 200 else None
            except httpx.HTTPError:
                pass
            time.sleep(1)
        status = _serve_cli(cluster, "status").stdout
        assert info is not None, f"the deployed app never answered /info:\n{status[-3000:]}"
        assert info["count"] == len(gallery.ids) and info["search_mode"] == "colocated"  # auto, small gallery
        r = httpx.post(f"{base}/search", json={"strokes": gallery.drawings[0][2], "k": 4}, timeout=60)
        assert r.status_code == 200 and r.json()["count"] == 4, r.text
        assert httpx.post(f"{base}/search", json={"strokes": []}, timeout=60).status_code == 422
        # HAProxy holds the HTTP port (not Serve's Python proxy).
        listeners = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "haproxy"
                     and any(c.laddr.port == port and c.status == "LISTEN" for c in p.net_connections("tcp"))]
        assert listeners, "no haproxy process listens on the Serve port"
        assert "RUNNING" in status and "ray-sbir" in status, status[-3000:]
        res = _serve_cli(cluster, "shutdown", "-y")
        assert res.returncode == 0, res.stdout[-3000:]
    finally:
        cluster.stop()
