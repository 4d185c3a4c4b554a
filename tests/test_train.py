"""Ray Train + Ray Data training on a tiny generated set, on a real local Ray cluster."""

import json
import math

import torch

from ray_sbir import fs
from ray_sbir.checkpoint import load_model, read_meta
from ray_sbir.train import plan_dataset, train
from tests.conftest import tiny_config


def test_two_workers_train_checkpoint_and_resume(ray_local, tiny_doodles, tmp_path, capfd):
    storage = str(tmp_path / "runs")
    cfg = tiny_config(tiny_doodles, storage, "train.num_workers=2", "train.epochs=2", "train.name=two")
    plan = plan_dataset(cfg)
    assert set(plan.split.unseen).isdisjoint(plan.split.train + plan.split.val)
    result = train(cfg, plan)

    meta = read_meta(result.latest_checkpoint)
    assert meta.epoch == 1 and meta.classes == plan.split.train
    assert math.isfinite(meta.metrics["train_loss"]) and meta.metrics["steps"] >= 1
    assert 0.0 <= meta.metrics["val_map"] <= 1.0
    for term in ("train_triplet", "train_domain", "train_semantic"):
        assert term in meta.metrics
    # resolved config and split written beside the run
    assert "epochs: 2" in fs.read_text(fs.join(result.run_dir, "config.yaml"))
    assert json.loads(fs.read_text(fs.join(result.run_dir, "split.json")))["unseen"] == plan.split.unseen

    model, _ = load_model(result.best_checkpoint)
    torch.manual_seed(cfg.train.seed)
    from ray_sbir.models import create_model

    init = create_model(cfg.model)
    trained_w = model.sketch_encoder.head.weight
    assert not torch.allclose(trained_w, init.sketch_encoder.head.weight)  # training changed the weights
    # the two encoders diverge: separate weights, trained on different domains
    assert not torch.allclose(model.sketch_encoder.head.weight, model.photo_encoder.head.weight)

    # Same run name, more epochs: resumes after epoch 1 instead of starting over.
    capfd.readouterr()
    cfg.train.epochs = 3
    result2 = train(cfg, plan)
    out = capfd.readouterr()
    assert "resuming from checkpoint of epoch 1 -> starting epoch 2" in out.out + out.err
    assert read_meta(result2.latest_checkpoint).epoch == 2
