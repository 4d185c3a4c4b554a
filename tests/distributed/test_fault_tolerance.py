"""Fault tolerance of training on a real local Ray cluster: a training worker killed mid-run (run alone: the kill is
timed against the checkpoints)."""

import os
import re
import signal
import threading
import time

import pytest

from ray_sbir.checkpoint import load_model, read_meta
from ray_sbir.data.plan import plan_dataset
from ray_sbir.distributed.train import train
from tests.conftest import checkpoint_registered, tiny_config

pytestmark = pytest.mark.exclusive  # timing under load: run alone (tests/conftest.py)


def _train_worker_pids() -> list[int]:
    """PIDs of this cluster's Ray Train worker processes: children of our own raylet (other Ray instances on
    the machine are left alone)."""
    import psutil
    import ray

    node = ray._private.worker.global_worker.node
    raylet_pid = node.all_processes["raylet"][0].process.pid
    return [p.pid for p in psutil.Process(raylet_pid).children(recursive=True)
            if "RayTrainWorker" in " ".join(p.cmdline()) or p.name().startswith("ray::RayTrainWork")]


def _kill_a_train_worker_after(run_dir: str, checkpoint_dir_name: str, killed: list, delay: float = 0.5,
                               timeout: float = 900):
    t0 = time.time()
    while not checkpoint_registered(run_dir, checkpoint_dir_name):
        if time.time() - t0 > timeout:
            return
        time.sleep(0.1)
    time.sleep(delay)
    pids = _train_worker_pids()
    if pids:
        os.kill(pids[0], signal.SIGKILL)
        killed.append(pids[0])


def test_worker_killed_mid_run_resumes_from_last_checkpoint(ray_local, tiny_doodles, tmp_path, capfd):
    storage = str(tmp_path / "runs")
    cfg = tiny_config(tiny_doodles, storage, "train.epochs=3", "train.max_failures=2", "train.name=ft",
                      "data.triplets_per_epoch=480", "train.num_workers=2", "train.checkpoints_to_keep=3")
    plan = plan_dataset(cfg)
    killed: list = []
    killer = threading.Thread(target=_kill_a_train_worker_after,
                              args=(os.path.join(storage, "ft"), "checkpoint_epoch_0000", killed))
    killer.start()
    result = train(cfg, plan)
    killer.join()
    out = capfd.readouterr()
    logs = out.out + out.err
    assert killed, "no training worker was killed"
    resumed = re.findall(r"resuming from checkpoint of epoch (\d+) -> starting epoch (\d+)", logs)
    assert resumed, "no resume after the worker was killed:\n" + "\n".join(l for l in logs.splitlines() if "ray-sbir" in l or "rror" in l)[-4000:]
    epoch, start = map(int, resumed[0])
    assert start == epoch + 1 and epoch >= 0  # continued, not started over
    # epoch 1 (0-based 0) trained exactly once: the restart did not redo finished epochs
    assert len(set(re.findall(r"epoch 1/3 done in", logs))) == 1
    meta = read_meta(result.latest_checkpoint)
    assert meta.epoch == 2
    load_model(result.latest_checkpoint)
