"""Relative Triplet Loss: a triplet loss weighted by how the anchor relates to the other anchors of its batch.

Source: Seddati, Hubens, Dupont and Dutoit, "A Recipe for Efficient SBIR Models: Combining Relative Triplet
Loss with Batch Normalization and Knowledge Distillation" (arXiv 2305.18988, 2023). The paper's text says
only that RTL is "an adapted triplet loss to overcome [the training data's] limitations through loss weighting
based on anchors similarity"; its formula could not be found (abstract and front matter only, in the stored
copies searched for this project). **What follows is our own documented variant, not the paper's equation.**

The data limitation it addresses: many sketches are poor, and a sketch that looks like the sketches of
another class (a "cat" drawn like the "dog"s) is an unreliable anchor; pulling it hard toward its photos
distorts the space for everything else. So each anchor is down-weighted by its closeness to the anchors of
*other* classes in the batch:

    c_i = max_{j : y_j != y_i} cos(a_i, a_j)           (detached; c_i = -1 when the batch has no other class)
    w_i = ((1 - c_i) / 2) ** power                     in [0, 1]: 1 far from other classes, 0 on top of one
    L   = sum_i w_i * max(0, margin + d(a_i, p_i) - d(a_i, n_i)) / sum_i w_i

The weighted mean keeps the loss on the triplet loss's scale; with equal weights (``power = 0``) it *is* the
triplet loss (``ray_sbir.losses.triplet``). The weights are computed without gradient: they select which
triplets count, they are not a target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ray_sbir.config import ConfigError
from ray_sbir.losses.registry import LossTerm, TermContext, register_term
from ray_sbir.losses.triplet import TripletOptions, resolve_distance, triplet_losses


@dataclass
class RelativeTripletOptions(TripletOptions):
    power: float = 1.0

    def check(self, where: str) -> None:
        super().check(where)
        if self.power < 0:
            raise ConfigError(f"{where}.power: must be >= 0, got {self.power}")


@torch.no_grad()
def anchor_weights(anchors: torch.Tensor, labels: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """``w_i = ((1 - max_{j: y_j != y_i} cos(a_i, a_j)) / 2) ** power`` (1 when no other class is present)."""
    a = F.normalize(anchors.float(), dim=-1)
    sim = a @ a.T
    other = labels[:, None] != labels[None, :]
    closest = torch.where(other, sim, torch.full_like(sim, -1.0)).amax(dim=1)
    return ((1.0 - closest) / 2.0).clamp(0.0, 1.0).pow(power)


@register_term("relative_triplet", RelativeTripletOptions)
class RelativeTripletTerm(LossTerm):
    inputs = ("sketch", "positive", "negative", "label")

    def __init__(self, options: RelativeTripletOptions, context: TermContext):
        super().__init__(options)
        self.distance = resolve_distance(options.distance, context.unit_norm)

    def forward(self, outputs, progress):
        o = self.options
        losses = triplet_losses(outputs["sketch"], outputs["positive"], outputs["negative"], o.margin, self.distance)
        w = anchor_weights(outputs["sketch"], outputs["label"], o.power)
        return {self.name: (w * losses).sum() / w.sum().clamp_min(1e-12),
                f"{self.name}_mean_weight": w.mean()}
