"""Joining a cluster started with ``ray start`` (``ray_sbir.distributed.runtime.init_ray``): the driver's storage
settings and the variables it names reach every worker, and a command asking more than the cluster holds is one
sentence (exit 2) right after connecting, not a job waiting forever."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from tests.local_cluster import LocalCluster

pytestmark = [pytest.mark.slow]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MB = 1024**2

DRIVER = textwrap.dedent("""
    import json, os, sys
    import ray
    from ray_sbir.distributed.runtime import init_ray
    assert init_ray(address=sys.argv[1]) is None  # joined: no private cluster of ours

    @ray.remote(num_cpus=0)
    def seen():
        return {k: os.environ.get(k) for k in ("FSSPEC_GS_TOKEN", "SBIR_TEST_SECRET", "SBIR_TEST_NOT_NAMED")}

    print(json.dumps(ray.get(seen.remote())))
""")


@pytest.fixture(scope="module")
def head():
    cluster = LocalCluster.create()
    for k in ("FSSPEC_GS_TOKEN", "SBIR_TEST_SECRET", "SBIR_TEST_NOT_NAMED", "RAY_SBIR_WORKER_ENV"):
        cluster.env.pop(k, None)  # the cluster's processes start without them
    try:
        cluster.start_head(num_cpus=1, object_store_memory=100 * MB, dashboard=False)
        yield cluster
    finally:
        cluster.stop()


def driver_env(cluster: LocalCluster, **extra: str) -> dict:
    return {**cluster.env, "PYTHONPATH": os.pathsep.join(p for p in (REPO, cluster.env.get("PYTHONPATH")) if p),
            **extra}


def test_workers_of_a_joined_cluster_get_the_storage_settings_and_named_variables(head):
    import json

    env = driver_env(head, FSSPEC_GS_TOKEN="anon", SBIR_TEST_SECRET="s3cr3t", SBIR_TEST_NOT_NAMED="x",
                     RAY_SBIR_WORKER_ENV="SBIR_TEST_SECRET")
    proc = subprocess.run([sys.executable, "-c", DRIVER, head.gcs_address], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen == {"FSSPEC_GS_TOKEN": "anon", "SBIR_TEST_SECRET": "s3cr3t", "SBIR_TEST_NOT_NAMED": None}
    assert "s3cr3t" not in proc.stderr  # values are never logged


def test_a_request_beyond_the_joined_cluster_is_one_sentence(head, tiny_doodles):
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "ray_sbir.cli", "train", "--config", "configs/tiny.yaml", "--set",
                           f"data.root={tiny_doodles}", "--set", "train.num_workers=4", "--address", head.gcs_address],
                          env=driver_env(head), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (f"ray-sbir: error: train.num_workers x train.cpus_per_worker needs 5 CPUs (4 reserved, 1 left "
                    f"to Ray Data), it has 1 on the cluster at {head.gcs_address}: lower the request, add nodes, or "
                    "set RAY_SBIR_SKIP_RESOURCE_CHECK=1 where nodes are added on demand"), proc.stderr[-3000:]
    assert time.time() - started < 60


DASHBOARD = textwrap.dedent("""
    import sys, urllib.error, urllib.request
    from ray_sbir.distributed.runtime import init_ray, private_cluster_pids, stop_ray
    from ray_sbir.logs import setup_logging
    setup_logging()
    tag = init_ray(num_cpus=1, new_cluster=True, dashboard=sys.argv[1])
    try:  # the dashboard answers; under token auth (Ray's default here) its API asks for the token: 401
        with urllib.request.urlopen(f"http://{sys.argv[1]}/api/version", timeout=30) as r:
            print("dashboard", r.status)
    except urllib.error.HTTPError as e:
        print("dashboard", e.code)
    stop_ray(tag)
    print("left", len(private_cluster_pids(tag)))
""")


def test_a_private_cluster_with_its_dashboard_ends_whole():
    from ray_sbir.testing.stores import free_port

    address = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", DASHBOARD, address], env={**env, "PYTHONPATH": REPO}, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    status, left = proc.stdout.split()[1], proc.stdout.split()[3]
    assert status in ("200", "401") and left == "0", proc.stdout
    assert f"Ray dashboard: http://{address}" in proc.stderr


def test_progress_bars_where_a_person_watches():
    """On when stderr is a terminal; off when it is not, in CI, and with JSON log lines."""
    import pty

    code = "from ray_sbir.distributed.runtime import progress_bars_wanted as w; print(w())"

    def in_terminal(**env: str) -> str:
        out = []
        base = {k: v for k, v in os.environ.items() if k not in ("CI", "RAY_SBIR_LOG_FORMAT")}
        pid, fd = pty.fork()
        if pid == 0:  # the child: stdin/stdout/stderr are the terminal
            os.execve(sys.executable, [sys.executable, "-c", code], {**base, "PYTHONPATH": REPO, **env})
        while True:
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                break
            if not chunk:
                break
            out.append(chunk.decode())
        os.waitpid(pid, 0)
        return "".join(out).strip().splitlines()[-1]

    assert in_terminal() == "True"
    assert in_terminal(CI="true") == "False"
    assert in_terminal(RAY_SBIR_LOG_FORMAT="json") == "False"
    piped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": REPO})
    assert piped.stdout.strip() == "False"
