"""Fault tolerance and data parallelism of training on a real local Ray cluster."""

import os
import re
import signal
import threading
import time

import numpy as np
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


def test_two_gloo_workers_hold_identical_weights(ray_local, tiny_doodles, tmp_path):
    """DDP through Ray Train synchronises gradients: after steps on different data, replicas are identical."""
    import ray.train
    import torch
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    out_dir = str(tmp_path / "weights")
    os.makedirs(out_dir)

    def loop(config):
        from ray_sbir.config import load_config
        from ray_sbir.training import TaskContext, create_task

        rank = ray.train.get_context().get_world_rank()
        torch.manual_seed(100 + rank)  # different init per rank: DDP must broadcast rank 0's weights
        cfg = load_config(None, ["model.sketch.backbone=resnet10t", "model.sketch.image_size=32", "model.embed_dim=16"])
        task = create_task(cfg, TaskContext(["a", "b", "c"], np.random.default_rng(0).normal(size=(3, 8))))
        model = task.model
        step = ray.train.torch.prepare_model(task)
        opt = torch.optim.SGD(step.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(rank)  # different data per rank
        for _ in range(3):
            batch = {k: torch.randn(4, 3, 32, 32, generator=g) for k in ("sketch", "positive", "negative")}
            batch["label"] = torch.randint(0, 3, (4,), generator=g)
            batch["negative_label"] = (batch["label"] + 1) % 3
            terms = step(batch, 0.5)
            opt.zero_grad()
            terms["loss"].backward()
            opt.step()
        flat = torch.cat([p.detach().flatten() for p in model.parameters()]).numpy()
        np.save(os.path.join(config["out"], f"rank{rank}.npy"), flat)
        ray.train.report({"done": 1})

    TorchTrainer(loop, train_loop_config={"out": out_dir},
                 scaling_config=ScalingConfig(num_workers=2, use_gpu=False)).fit()
    w0, w1 = np.load(os.path.join(out_dir, "rank0.npy")), np.load(os.path.join(out_dir, "rank1.npy"))
    assert np.array_equal(w0, w1)
    torch.manual_seed(100)
    from ray_sbir.config import load_config
    from ray_sbir.models import create_model

    cfg = load_config(None, ["model.sketch.backbone=resnet10t", "model.sketch.image_size=32", "model.embed_dim=16"])
    init = torch.cat([p.detach().flatten() for p in create_model(cfg.model).parameters()])
    assert not np.allclose(w0, init.numpy())  # the steps did change the weights
