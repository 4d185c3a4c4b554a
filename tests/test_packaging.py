"""What a non-editable install gets: the wheel built from this tree carries the demo preset (`ray-sbir demo`
without --config runs it, not built-in defaults) and the web page, with the source tree's content."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    REPO], check=True, timeout=300)
    (name,) = [f for f in os.listdir(out) if f.endswith(".whl")]
    return zipfile.ZipFile(os.path.join(out, name))


def test_wheel_carries_the_demo_preset(wheel):
    with open(os.path.join(REPO, "configs", "demo.yaml"), "rb") as f:
        assert wheel.read("ray_sbir/assets/presets/demo.yaml") == f.read()
    assert "ray_sbir/assets/web/index.html" in wheel.namelist()


def test_wheel_carries_the_haproxy_launcher_executable(wheel):
    # Serve runs it as its HAProxy binary (ray_sbir.serving.cluster.proxy_env): pip keeps the mode bits.
    info = wheel.getinfo("ray_sbir/assets/haproxy/haproxy-buffered")
    assert (info.external_attr >> 16) & 0o111 == 0o111
    assert wheel.read(info.filename).startswith(b"#!/bin/sh\n")


def test_demo_default_config_is_the_packaged_preset():
    from ray_sbir.cli.commands import _default_config
    from ray_sbir.config import load_config

    path = _default_config("demo")
    assert path and path.endswith(os.path.join("assets", "presets", "demo.yaml"))
    assert load_config(path) == load_config(os.path.join(REPO, "configs", "demo.yaml"))
    assert _default_config("train") is None
