"""The ``doodle2search`` task (Dey et al., CVPR 2019): sketch and photo encoders trained together on
(sketch, positive photo, negative photo) triplets with the configured loss terms (triplet or relative triplet,
domain, semantic)."""

from __future__ import annotations

import torch

from ray_sbir.config import Config
from ray_sbir.models import create_model
from ray_sbir.training.tasks import Task, TaskContext, register_task


@register_task("doodle2search")
class Doodle2SearchTask(Task):
    outputs = ("sketch", "positive", "negative", "label", "negative_label")

    def __init__(self, cfg: Config, context: TaskContext):
        super().__init__()
        self.model = create_model(cfg.model)
        self.criterion = self.build_criterion(cfg, context)

    def forward(self, batch: dict[str, torch.Tensor], progress: float) -> dict[str, torch.Tensor]:
        sketch = self.model.encode(batch["sketch"], "sketch")
        # One photo forward pass for positives and negatives: BatchNorm sees them together.
        photos = self.model.encode(torch.cat([batch["positive"], batch["negative"]]), "photo")
        n = len(batch["positive"])
        outputs = {"sketch": sketch, "positive": photos[:n], "negative": photos[n:],
                   "label": batch["label"], "negative_label": batch["negative_label"]}
        return self.criterion(outputs, progress)
