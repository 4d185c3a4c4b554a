"""Data parallelism of training on a real local Ray cluster: DDP through Ray Train keeps the replicas identical."""

import os

import numpy as np


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
