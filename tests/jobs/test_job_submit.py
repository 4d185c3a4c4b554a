"""The jobs/ entrypoints, submitted the way docs/cluster.md says, to a real Ray cluster started with the CLI.

A head node is started with ``ray start --head`` (token authentication on, its own temp dir, ports and
token; see :mod:`tests.local_cluster`), then ``ray job submit --working-dir <repo> -- python jobs/train.py
...`` and ``... jobs/evaluate.py ...`` run through the job API, uploading this working copy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

from tests.conftest import REPO
from tests.local_cluster import LocalCluster, ray_cli

pytestmark = pytest.mark.slow

# Large or irrelevant folders kept out of the uploaded working dir (Ray already skips .git and whatever
# .gitignore lists; explicit here because the 512 MiB package limit fails the submission, not the job).
EXCLUDES = [".git", "demo_out", "runs", "bench_out", ".benchmarks", ".pytest_cache", "**/__pycache__"]


def _run(cmd: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def job_cluster():
    cluster = LocalCluster.create()
    try:
        cluster.start_head(num_cpus=3, object_store_memory=300 * 1024**2)
        yield SimpleNamespace(address=cluster.dashboard_address, env=cluster.env, root=cluster.root, ray=ray_cli())
    finally:
        cluster.stop()


def _submit(cluster, submission_id: str, entrypoint: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    cmd = [cluster.ray, "job", "submit", "--address", cluster.address, "--submission-id", submission_id,
           "--working-dir", REPO, "--runtime-env-json", json.dumps({"excludes": EXCLUDES}), "--",
           *entrypoint]
    return _run(cmd, cluster.env, timeout)


def _job(cluster, *args: str) -> str:
    res = _run([cluster.ray, "job", *args, "--address", cluster.address], cluster.env, 120)
    assert res.returncode == 0, res.stdout[-3000:]
    return res.stdout


def _json_field(text: str, key: str) -> str | None:
    m = re.findall(rf'"{re.escape(key)}": "([^"]+)"', text)
    return m[-1] if m else None


def test_job_api_requires_the_token(job_cluster):
    env = {k: v for k, v in job_cluster.env.items() if k != "RAY_AUTH_MODE"}
    # Without RAY_AUTH_MODE=token the job CLI sends no token, even with one on disk, and is refused.
    refused = _run([job_cluster.ray, "job", "list", "--address", job_cluster.address], env, 120)
    assert refused.returncode != 0
    assert "Missing authentication token" in refused.stdout, refused.stdout[-2000:]
    # With it, the token from RAY_AUTH_TOKEN_PATH (default ~/.ray/auth_token) is sent and accepted.
    _job(job_cluster, "list")


@pytest.fixture(scope="module")
def train_job(job_cluster, tiny_doodles):
    storage = os.path.join(job_cluster.root, "runs")
    res = _submit(job_cluster, "rsj-train", [
        sys.executable, "jobs/train.py", "--config", "configs/tiny.yaml",
        "--set", f"data.root={tiny_doodles}", "--set", f"train.storage_path={storage}",
        "--set", "data.unseen=random:2", "--set", "train.epochs=1"])
    logs = _job(job_cluster, "logs", "rsj-train") if res.returncode == 0 else ""
    return SimpleNamespace(result=res, logs=logs, checkpoint=_json_field(logs, "best_checkpoint"), storage=storage,
                           doodles=tiny_doodles)


def test_train_job(job_cluster, train_job):
    res = train_job.result
    assert res.returncode == 0, res.stdout[-5000:]
    assert "Job 'rsj-train' succeeded" in res.stdout
    assert "Job 'rsj-train' succeeded" in _job(job_cluster, "status", "rsj-train")
    logs = train_job.logs
    assert "epoch 1/1 done" in logs
    # The CLI's closing summary: the run finished and reported its checkpoints.
    ckpt = train_job.checkpoint
    assert ckpt and _json_field(logs, "run_dir") == os.path.join(train_job.storage, "tiny")
    assert ckpt.startswith(os.path.join(train_job.storage, "tiny", "checkpoint_epoch_"))
    assert os.path.isfile(os.path.join(ckpt, "meta.json")) and os.path.isfile(os.path.join(ckpt, "state.pt"))


def test_evaluate_job(job_cluster, train_job):
    ckpt = train_job.checkpoint
    if not ckpt:
        pytest.fail("the training job produced no checkpoint (see test_train_job)")
    out = os.path.join(job_cluster.root, "eval")
    res = _submit(job_cluster, "rsj-eval", [
        sys.executable, "jobs/evaluate.py", "--config", "configs/tiny.yaml",
        "--set", f"data.root={train_job.doodles}", "--set", "data.unseen=random:2",
        "--checkpoint", ckpt, "--out", out])
    assert res.returncode == 0, res.stdout[-5000:]
    assert "Job 'rsj-eval' succeeded" in res.stdout
    report_path = os.path.join(out, "model", "report.json")
    assert _json_field(_job(job_cluster, "logs", "rsj-eval"), "report") == report_path
    with open(report_path) as f:
        report = json.load(f)
    assert report["checkpoint"] == ckpt and report["split"] == "unseen"
    assert len(report["classes"]) == 2
    assert report["num_queries"] == 20 and report["num_gallery"] == 20  # 2 classes x 10 sketches / photos
    assert 0.0 < report["metrics"]["map_all"] <= 1.0
    for png in ("retrieval_grid.png", "pr_curve.png"):
        assert os.path.getsize(os.path.join(out, "model", png)) > 0
