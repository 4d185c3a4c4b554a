"""Triplet loss (Doodle to Search, Dey et al., CVPR 2019, eq. 1; Schroff et al., FaceNet, 2015):

    L = mean_i max(0, margin + d(a_i, p_i) - d(a_i, n_i))

with ``a`` the sketch embeddings, ``p``/``n`` the positive/negative photo embeddings. ``distance``:
``euclidean`` ``||x - y||`` (on unit vectors it ranks as cosine does), or ``dot``: ``-x.y / D`` for
embeddings that are not unit vectors (``normalize: batchnorm``): search scores the inner product, so training
ranks by it too; dividing by the dimension keeps the margin on the scale of a cosine for BatchNorm outputs
(unit variance per dimension). ``auto`` (default): euclidean for unit vectors, dot otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ray_sbir.config import ConfigError
from ray_sbir.losses.registry import LossTerm, TermContext, TermOptions, register_term

DISTANCES = ("auto", "euclidean", "dot")


@dataclass
class TripletOptions(TermOptions):
    margin: float = 0.2
    distance: str = "auto"

    def check(self, where: str) -> None:
        if self.distance not in DISTANCES:
            raise ConfigError(f"{where}.distance: expected one of {', '.join(DISTANCES)}, got {self.distance!r}")
        if self.margin < 0:
            raise ConfigError(f"{where}.margin: must be >= 0, got {self.margin}")


def resolve_distance(distance: str, unit_norm: bool) -> str:
    return ("euclidean" if unit_norm else "dot") if distance == "auto" else distance


def pair_distance(x: torch.Tensor, y: torch.Tensor, distance: str) -> torch.Tensor:
    """Row-wise distance of two ``[B, D]`` batches."""
    if distance == "euclidean":
        return (x - y).pow(2).sum(-1).clamp_min(1e-12).sqrt()
    if distance == "dot":
        return -(x * y).sum(-1) / x.shape[-1]
    raise ValueError(f"unknown distance {distance!r}")


def triplet_losses(anchor, positive, negative, margin: float, distance: str) -> torch.Tensor:
    """Per-triplet hinge ``max(0, margin + d(a, p) - d(a, n))``, shape ``[B]``."""
    d_pos = pair_distance(anchor, positive, distance)
    d_neg = pair_distance(anchor, negative, distance)
    return F.relu(margin + d_pos - d_neg)


@register_term("triplet", TripletOptions)
class TripletTerm(LossTerm):
    inputs = ("sketch", "positive", "negative")

    def __init__(self, options: TripletOptions, context: TermContext):
        super().__init__(options)
        self.distance = resolve_distance(options.distance, context.unit_norm)

    def forward(self, outputs, progress):
        losses = triplet_losses(outputs["sketch"], outputs["positive"], outputs["negative"], self.options.margin,
                                self.distance)
        return {self.name: losses.mean()}
