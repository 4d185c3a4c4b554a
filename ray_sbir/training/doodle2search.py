"""The ``doodle2search`` task (Dey et al., CVPR 2019): sketch and photo encoders trained together with the
configured loss terms (triplet or relative triplet, domain, semantic; in-batch contrastive, knowledge
preservation), on triplet batches (a sketch, a photo of its class and one of another) or PK batches (P classes x
K sketches, each with a photo of its class: ``ray_sbir.data.samplers.pk``).

What the terms read: ``sketch``, ``positive``, ``negative`` (with their labels ``label``, ``negative_label``),
``photos`` / ``photo_label`` (every photo the batch encoded, once: the candidates of the in-batch terms), and for
the knowledge term each modality's pooled backbone features and input images. A PK batch carries no negative
photos: where a term needs ``negative`` (the triplet, domain and semantic terms) each sketch gets a random photo
of another class from the batch, so no photo is encoded only to be a negative.
"""

from __future__ import annotations

import torch

from ray_sbir.config import Config
from ray_sbir.models import create_model
from ray_sbir.training.tasks import PHOTO_INPUTS, Task, TaskContext, register_task

FEATURE_OUTPUTS = ("sketch_features", "photo_features", "sketch_input", "photo_input")


def in_batch_negatives(labels: torch.Tensor) -> torch.Tensor:
    """For each row a random other row of another label (itself where every row has its label)."""
    other = labels[:, None] != labels[None, :]
    weights = other.float() + (~other.any(dim=1, keepdim=True)).float() * torch.eye(len(labels), device=labels.device)
    return torch.multinomial(weights, 1).squeeze(1)


@register_task("doodle2search")
class Doodle2SearchTask(Task):
    outputs = ("sketch", "positive", "negative", "label", "negative_label", "photos", "photo_label",
               *FEATURE_OUTPUTS)
    samplers = ("triplet", "pk")

    def __init__(self, cfg: Config, context: TaskContext):
        super().__init__()
        self.model = create_model(cfg.model)
        self.criterion = self.build_criterion(cfg, context)
        self.with_features = bool(self.criterion.inputs & set(FEATURE_OUTPUTS))
        self.needs_negatives = bool(self.criterion.inputs & {"negative", "negative_label"})

    def _encode(self, images: torch.Tensor, modality: str, outputs: dict) -> torch.Tensor:
        if not self.with_features:
            return self.model.encode(images, modality)
        emb, feats = self.model.encode_with_features(images, modality)
        outputs[f"{modality}_features"], outputs[f"{modality}_input"] = feats, images
        return emb

    def forward(self, batch: dict[str, torch.Tensor], progress: float) -> dict[str, torch.Tensor]:
        outputs: dict[str, torch.Tensor] = {"label": batch["label"]}
        outputs["sketch"] = self._encode(batch["sketch"], "sketch", outputs)
        # One photo forward pass for every photo of the batch: BatchNorm sees them together.
        names = [name for name in PHOTO_INPUTS if name in batch]
        photos = self._encode(torch.cat([batch[name] for name in names]), "photo", outputs)
        n = len(batch["positive"])
        outputs.update(positive=photos[:n], photos=photos)
        if "negative" in batch:
            outputs.update(negative=photos[n:], negative_label=batch["negative_label"],
                           photo_label=torch.cat([batch["label"], batch["negative_label"]]))
        else:
            outputs["photo_label"] = batch["label"]
            if self.needs_negatives:
                pick = in_batch_negatives(batch["label"])
                outputs.update(negative=photos[pick], negative_label=batch["label"][pick])
        return self.criterion(outputs, progress)
