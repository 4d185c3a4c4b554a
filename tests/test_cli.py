"""The `ray-sbir` command line, run as a user runs it (subprocesses)."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, TINY_CONFIG


def _run(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "ray_sbir.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.mark.parametrize("cmd", ["make-doodles", "train", "embed", "evaluate", "demo"])
def test_every_subcommand_has_help(cmd):
    r = _run(cmd, "--help")
    assert r.returncode == 0 and "usage: ray-sbir " + cmd in r.stdout
    assert len(r.stdout.splitlines()) > 4


def test_config_errors_exit_2_with_message():
    r = _run("train", "--config", TINY_CONFIG, "--set", "train.epoch=3")
    assert r.returncode == 2
    assert "unknown config key 'train.epoch'" in r.stderr and "epochs" in r.stderr


def test_demo_end_to_end_tiny(tmp_path):
    """The README's demo path on a tiny config: own local Ray cluster, generate, train, embed, evaluate."""
    out = str(tmp_path / "demo")
    r = _run("demo", "--config", TINY_CONFIG, "--out", out, "--sketches-per-class", "6", "--photos-per-class", "6",
             "--set", "train.epochs=1", "--num-cpus", "3", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "untrained encoder" in r.stdout and "trained (Doodle to Search)" in r.stdout
    summary = json.load(open(os.path.join(out, "demo_summary.json")))
    assert set(summary["table"]) == {"untrained encoder", "trained (Doodle to Search)"}
    for key in ("retrieval_grid_trained", "retrieval_grid_untrained", "pr_curve"):
        assert os.path.getsize(summary[key]) > 1000
    assert os.path.isfile(os.path.join(out, "runs", "tiny", "config.yaml"))
