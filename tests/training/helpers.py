"""Shared helpers of the training-task tests (tests/training): a random batch and a tiny encoder checkpoint."""

import torch

from ray_sbir.checkpoint import CheckpointMeta, write_checkpoint
from ray_sbir.config import load_config
from ray_sbir.models import create_model

CLASSES = ["a", "b", "c"]
TINY = ["model.sketch.backbone=resnet10t", "model.sketch.image_size=32", "model.embed_dim=16",
        "train.backbone_lr_mult=1.0"]


def make_batch(sizes: dict[str, int], n: int = 6, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = {name: torch.randn(n, 3, s, s, generator=g) for name, s in sizes.items()}
    batch["label"] = torch.arange(n) % 3
    batch["negative_label"] = (batch["label"] + 1) % 3
    return batch


def make_teacher(tmp_path, *overrides) -> str:
    cfg = load_config(None, [*TINY, "model.photo.backbone=test_vit", "model.photo.image_size=48",
                             "model.normalize=batchnorm_l2", *overrides])
    torch.manual_seed(0)
    model = create_model(cfg.model).eval()
    folder = str(tmp_path / "teacher")
    write_checkpoint(folder, {"model": model.state_dict()}, CheckpointMeta(3, cfg, CLASSES, {}))
    return folder
