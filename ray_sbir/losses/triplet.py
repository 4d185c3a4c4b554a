"""Triplet loss (Doodle to Search, Dey et al., CVPR 2019, eq. 1; Schroff et al., FaceNet, 2015):

    L = mean_i max(0, margin + d(a_i, p_i) - d(a_i, n_i))

with ``a`` the sketch embeddings, ``p``/``n`` the positive/negative photo embeddings (``mining: given``: the
batch's own triplets). ``mining: batch_hard`` (Hermans, Beyer and Leibe, "In Defense of the Triplet Loss for
Person Re-Identification", 2017, eq. 5, across modalities) takes, for each sketch, the farthest photo of its
class and the nearest photo of another class among all the batch's photos:

    L = mean_i max(0, margin + max_{j: y_j = y_i} d(a_i, x_j) - min_{j: y_j != y_i} d(a_i, x_j))

(sketches without a photo of their class, or of another class, in the batch are left out); it wants PK
batches (``data.sampler: {name: pk}``), where every sketch has K photos of its class beside it. ``distance``:
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
MININGS = ("given", "batch_hard")


@dataclass
class TripletOptions(TermOptions):
    margin: float = 0.2
    distance: str = "auto"
    mining: str = "given"

    def check(self, where: str) -> None:
        if self.mining not in MININGS:
            raise ConfigError(f"{where}.mining: expected one of {', '.join(MININGS)}, got {self.mining!r}")
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


def pairwise_distance(x: torch.Tensor, y: torch.Tensor, distance: str) -> torch.Tensor:
    """``[B, M]`` distances of every row of ``x`` to every row of ``y``."""
    if distance == "euclidean":
        sq = x.pow(2).sum(-1, keepdim=True) + y.pow(2).sum(-1)[None, :] - 2 * x @ y.T
        return sq.clamp_min(1e-12).sqrt()
    if distance == "dot":
        return -(x @ y.T) / x.shape[-1]
    raise ValueError(f"unknown distance {distance!r}")


def batch_hard_losses(anchor, labels, candidates, candidate_labels, margin: float, distance: str) -> torch.Tensor:
    """Per-anchor batch-hard hinge (Hermans et al. 2017) over ``candidates``; anchors lacking a positive or a
    negative candidate are left out (shape ``[B']``)."""
    d = pairwise_distance(anchor, candidates, distance)
    same = labels[:, None] == candidate_labels[None, :]
    hardest_positive = d.masked_fill(~same, float("-inf")).max(dim=1).values
    hardest_negative = d.masked_fill(same, float("inf")).min(dim=1).values
    usable = same.any(dim=1) & (~same).any(dim=1)
    return F.relu(margin + hardest_positive[usable] - hardest_negative[usable])


def triplet_losses(anchor, positive, negative, margin: float, distance: str) -> torch.Tensor:
    """Per-triplet hinge ``max(0, margin + d(a, p) - d(a, n))``, shape ``[B]``."""
    d_pos = pair_distance(anchor, positive, distance)
    d_neg = pair_distance(anchor, negative, distance)
    return F.relu(margin + d_pos - d_neg)


# Every photo the batch encoded (positives and negatives, or a PK batch's photos) and their class indices.
IN_BATCH = ("sketch", "label", "photos", "photo_label")


@register_term("triplet", TripletOptions)
class TripletTerm(LossTerm):
    inputs = ("sketch", "positive", "negative")

    @classmethod
    def required_inputs(cls, options: TripletOptions) -> tuple[str, ...]:
        return IN_BATCH if options.mining == "batch_hard" else cls.inputs

    def __init__(self, options: TripletOptions, context: TermContext):
        super().__init__(options)
        self.distance = resolve_distance(options.distance, context.unit_norm)

    def forward(self, outputs, progress):
        if self.options.mining == "batch_hard":
            losses = batch_hard_losses(outputs["sketch"], outputs["label"], outputs["photos"],
                                       outputs["photo_label"], self.options.margin, self.distance)
            # No usable anchor (a batch of one class): zero, still connected to the graph for DDP.
            return {self.name: losses.mean() if len(losses) else outputs["sketch"].sum() * 0.0}
        losses = triplet_losses(outputs["sketch"], outputs["positive"], outputs["negative"], self.options.margin,
                                self.distance)
        return {self.name: losses.mean()}
