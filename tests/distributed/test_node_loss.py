"""Training survives losing a whole worker node of a 2-node Ray cluster (a spot node taken away).

The cluster is started with the CLI as on real machines: a head (``ray start --head``) with too few CPUs for
the training worker, and a worker node (``ray start --address``) where the worker must run. The training
driver runs as its own process (``jobs/train.py`` with ``RAY_ADDRESS``). Once Ray Train has registered the
first checkpoint, every process of the worker node (raylet, object store, workers) is killed without warning;
then a replacement node joins, as an autoscaler would bring one. Ray Train restarts the worker group on it
and the run continues from the last checkpoint, without redoing finished epochs. Checkpoints live in storage
every node reaches (here a local folder of this one machine; on a real cluster, ``s3://``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from ray_sbir.checkpoint import load_model, read_meta
from tests.conftest import REPO, checkpoint_registered
from tests.local_cluster import LocalCluster

pytestmark = [pytest.mark.slow]  # its own `ray start` cluster and generous deadlines: runs beside other tests

MB = 1024**2


@pytest.mark.timeout(1800)  # three `ray start`s and two training attempts on a 2-core machine
def test_training_survives_losing_a_worker_node(tiny_doodles, tmp_path):
    cluster = LocalCluster.create()
    driver = None
    try:
        # The head keeps 1 CPU (Ray Data, the Train controller); a training worker needs 2, so it can only be
        # placed on a worker node.
        cluster.start_head(num_cpus=1, object_store_memory=150 * MB, dashboard=False)
        doomed = cluster.add_node("worker-1", num_cpus=3, object_store_memory=150 * MB)
        storage = str(tmp_path / "runs")
        run_dir = os.path.join(storage, "nodeloss")
        log_path = tmp_path / "driver.log"
        env = {**cluster.env, "RAY_ADDRESS": cluster.gcs_address, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": os.pathsep.join(p for p in (REPO, cluster.env.get("PYTHONPATH")) if p)}
        with open(log_path, "w") as log:
            driver = subprocess.Popen(
                [sys.executable, "jobs/train.py", "--config", "configs/tiny.yaml",
                 "--set", f"data.root={tiny_doodles}", "--set", f"train.storage_path={storage}",
                 "--set", "data.unseen=random:2", "--set", "train.name=nodeloss", "--set", "train.epochs=2",
                 "--set", "train.cpus_per_worker=2", "--set", "train.max_failures=3",
                 "--set", "data.triplets_per_epoch=240", "--set", "train.validate=false"],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

        deadline = time.time() + 1500  # generous: a loaded 2-core machine is slow
        while not checkpoint_registered(run_dir, "checkpoint_epoch_0000"):
            assert driver.poll() is None, f"training ended before the node was lost:\n{log_path.read_text()[-4000:]}"
            assert time.time() < deadline, f"no first checkpoint:\n{log_path.read_text()[-4000:]}"
            time.sleep(0.2)
        assert not checkpoint_registered(run_dir, "checkpoint_epoch_0001")  # the loss comes mid-run
        killed = doomed.pids()
        doomed.stop(grace_s=0)  # the whole node, without warning
        assert killed and not doomed.pids()
        cluster.add_node("worker-2", num_cpus=3, object_store_memory=150 * MB)

        rc = driver.wait(timeout=900)
        logs = log_path.read_text()
        assert rc == 0, logs[-6000:]
    finally:
        if driver is not None and driver.poll() is None:
            driver.kill()
        cluster.stop()

    resumed = re.findall(r"resuming from checkpoint of epoch (\d+) -> starting epoch (\d+)", logs)
    assert resumed, logs[-6000:]
    epoch, start = map(int, resumed[0])
    assert epoch >= 0 and start == epoch + 1  # continued, not started over
    # Epoch 1 trained exactly once, by one worker process. (Nodes sharing one machine share its log folder, so
    # each node's log monitor forwards the same line: count the workers, not the lines.)
    assert len(set(re.findall(r"pid=(\d+)\)\S*\s*\[ray-sbir[^\]]*\] epoch 1/2 done in", logs))) == 1
    final = json.loads(logs[logs.rindex('{\n  "run_dir"'):])
    assert read_meta(final["latest_checkpoint"]).epoch == 1
    load_model(final["latest_checkpoint"])
