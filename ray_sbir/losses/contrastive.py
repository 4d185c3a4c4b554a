"""In-batch cross-modal contrastive loss (InfoNCE in both directions, as CLIP trains: Radford et al. 2021,
Fig. 3), with class-aware positives (the supervised contrastive form, Khosla et al., NeurIPS 2020, eq. 2,
"L_out"): every photo of the sketch's class in the batch is a positive, every other photo a negative.

With unit embeddings ``s_i`` (sketches), ``x_j`` (the batch's photos), logits ``z_ij = s_i . x_j / tau`` and
``P(i) = {j : y_j = y_i}``:

    L_s->p = mean_i  -1/|P(i)| sum_{p in P(i)} log( exp(z_ip) / sum_j exp(z_ij) )
    L_p->s = the same with photos as anchors and the batch's sketches as candidates (the transposed logits)
    L = (L_s->p + L_p->s) / 2              (directions: both; or either alone)

Anchors with no positive in the batch are left out of their direction's mean. ``positives: pair`` keeps only
the sketch's own photo (row ``i`` of the photos) as its positive: CLIP's diagonal. Embeddings are L2-normalised
here whatever the model's ``normalize`` (the logits are cosines). The temperature is learned when
``learn_temperature`` (CLIP's ``logit_scale = log(1 / tau)``, started at ``temperature`` and clipped at
``max_logit_scale``), else fixed; the current value is logged as ``contrastive_temperature``.

It wants batches with several classes and several items per class: PK batches (``data.sampler: {name: pk}``).
With triplet batches the candidates are the positive and negative photos.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ray_sbir.config import ConfigError, check_range
from ray_sbir.losses.registry import LossTerm, TermContext, TermOptions, register_term

DIRECTIONS = ("both", "sketch_to_photo", "photo_to_sketch")
POSITIVES = ("class", "pair")


@dataclass
class ContrastiveOptions(TermOptions):
    temperature: float = 0.07
    learn_temperature: bool = True
    max_logit_scale: float = 100.0
    directions: str = "both"
    positives: str = "class"

    def check(self, where: str) -> None:
        check_range(f"{where}.temperature", self.temperature, low=0, low_open=True)
        check_range(f"{where}.max_logit_scale", self.max_logit_scale, low=1)
        if 1.0 / self.temperature > self.max_logit_scale:
            raise ConfigError(f"{where}.temperature: 1/temperature ({1 / self.temperature:g}) exceeds "
                              f"max_logit_scale ({self.max_logit_scale:g})")
        if self.directions not in DIRECTIONS:
            raise ConfigError(f"{where}.directions: expected one of {', '.join(DIRECTIONS)}, got {self.directions!r}")
        if self.positives not in POSITIVES:
            raise ConfigError(f"{where}.positives: expected one of {', '.join(POSITIVES)}, got {self.positives!r}")


def positive_log_likelihood(logits: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Per-anchor ``-1/|P| sum_{p in P} log softmax(logits)_p`` for anchors with at least one positive."""
    usable = positive.any(dim=1)
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    pos = positive.to(logits.dtype)
    per_anchor = -(log_prob * pos).sum(dim=1) / pos.sum(dim=1).clamp_min(1.0)
    return per_anchor[usable]


def contrastive_loss(sketch: torch.Tensor, photos: torch.Tensor, positive: torch.Tensor, logit_scale: torch.Tensor,
                     directions: str = "both") -> torch.Tensor:
    """The loss above for unit ``sketch`` ``[B, D]``, ``photos`` ``[M, D]`` and the ``[B, M]`` positive mask."""
    logits = logit_scale * sketch @ photos.T
    parts = []
    if directions in ("both", "sketch_to_photo"):
        parts.append(positive_log_likelihood(logits, positive))
    if directions in ("both", "photo_to_sketch"):
        parts.append(positive_log_likelihood(logits.T, positive.T))
    means = [p.mean() for p in parts if len(p)]
    return torch.stack(means).mean() if means else logits.sum() * 0.0


@register_term("contrastive", ContrastiveOptions)
class ContrastiveTerm(LossTerm):
    inputs = ("sketch", "label", "photos", "photo_label")

    def __init__(self, options: ContrastiveOptions, context: TermContext):
        super().__init__(options)
        scale = torch.tensor(math.log(1.0 / options.temperature))
        if options.learn_temperature:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale)

    def forward(self, outputs, progress):
        sketch = F.normalize(outputs["sketch"].float(), dim=-1)
        photos = F.normalize(outputs["photos"].float(), dim=-1)
        if self.options.positives == "pair":
            positive = torch.zeros(len(sketch), len(photos), dtype=torch.bool, device=sketch.device)
            positive[torch.arange(len(sketch)), torch.arange(len(sketch))] = True
        else:
            positive = outputs["label"][:, None] == outputs["photo_label"][None, :]
        scale = self.logit_scale.clamp(max=math.log(self.options.max_logit_scale)).exp()
        loss = contrastive_loss(sketch, photos, positive, scale, self.options.directions)
        return {self.name: loss, f"{self.name}_temperature": (1.0 / scale).detach()}
