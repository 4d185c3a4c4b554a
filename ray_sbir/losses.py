"""Doodle-to-Search losses as ``nn.Module``s that return named terms.

- :class:`TripletLoss`: ``max(0, margin + d(s, p+) - d(s, p-))`` with Euclidean distance on L2-normalised
  embeddings.
- :class:`DomainLoss`: gradient reversal -> MLP -> sketch/photo binary cross-entropy. The classifier learns to
  tell the domains apart while the reversed gradient pushes the encoders to make them indistinguishable.
- :class:`SemanticLoss`: a shared decoder maps embeddings to the word-vector space, pulled to the class vector
  by cosine; the negative's branch passes a reversal layer, so the encoder is pushed *away* from making a
  negative photo decodable as its class while the decoder still learns from it.

:class:`DoodleToSearchLoss` weights and sums them; any term with weight 0 is skipped (ablations).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ray_sbir.config import LossConfig


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lambd: float) -> torch.Tensor:
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.lambd * grad, None


def grad_reverse(x: torch.Tensor, lambd: float = 1.0) -> torch.Tensor:
    """Identity forward; gradient times ``-lambd`` backward."""
    return _ReverseGrad.apply(x, float(lambd))


class GradientReversal(nn.Module):
    def __init__(self, lambd: float = 1.0):
        super().__init__()
        self.lambd = lambd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.lambd)


def reversal_lambda(schedule: str, scale: float, progress: float) -> float:
    """Reversal strength at training ``progress`` in [0, 1].

    ``dann`` is the ramp of Ganin & Lempitsky (2015): 0 at the start, when the domain classifier is still
    random and its reversed gradient only adds noise, rising to ``scale``."""
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return scale
    if schedule == "dann":
        return scale * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)
    raise ValueError(f"unknown loss.domain_lambda_schedule {schedule!r}; expected constant or dann")


class TripletLoss(nn.Module):
    def __init__(self, margin: float = 0.2):
        super().__init__()
        self.margin = margin

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        d_pos = (anchor - positive).pow(2).sum(-1).clamp_min(1e-12).sqrt()
        d_neg = (anchor - negative).pow(2).sum(-1).clamp_min(1e-12).sqrt()
        return F.relu(self.margin + d_pos - d_neg).mean()


class DomainLoss(nn.Module):
    """Binary cross-entropy of a small MLP guessing sketch (1) vs photo (0) behind a reversal layer."""

    def __init__(self, embed_dim: int, hidden: int = 128):
        super().__init__()
        self.classifier = nn.Sequential(
            nn.Linear(embed_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True), nn.Linear(hidden, 1),
        )

    def forward(self, sketch: torch.Tensor, photos: list[torch.Tensor], lambd: float) -> tuple[torch.Tensor, torch.Tensor]:
        feats = torch.cat([sketch, *photos], dim=0)
        target = torch.cat([torch.ones(len(sketch)), torch.zeros(sum(len(p) for p in photos))]).to(feats.device)
        logits = self.classifier(grad_reverse(feats, lambd)).squeeze(-1)
        loss = F.binary_cross_entropy_with_logits(logits.float(), target)
        accuracy = ((logits > 0).float() == target).float().mean()
        return loss, accuracy


class SemanticLoss(nn.Module):
    """Cosine loss between decoded embeddings and class word vectors (rows of ``class_vectors``)."""

    def __init__(self, embed_dim: int, class_vectors: torch.Tensor, negative_lambda: float = 0.5):
        super().__init__()
        self.register_buffer("class_vectors", F.normalize(class_vectors.float(), dim=-1), persistent=False)
        self.decoder = nn.Sequential(
            nn.Linear(embed_dim, embed_dim), nn.ReLU(inplace=True), nn.Linear(embed_dim, class_vectors.shape[1])
        )
        self.negative_lambda = negative_lambda

    def _cosine_loss(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        decoded = F.normalize(self.decoder(emb).float(), dim=-1)
        return (1.0 - (decoded * self.class_vectors[labels]).sum(-1)).mean()

    def forward(self, sketch, positive, negative, labels, negative_labels) -> torch.Tensor:
        return (
            self._cosine_loss(sketch, labels)
            + self._cosine_loss(positive, labels)
            + self._cosine_loss(grad_reverse(negative, self.negative_lambda), negative_labels)
        ) / 3.0


class DoodleToSearchLoss(nn.Module):
    """Weighted sum of the three terms; ``forward`` returns a dict with ``loss`` and each term."""

    def __init__(self, cfg: LossConfig, embed_dim: int, class_vectors: torch.Tensor | None):
        super().__init__()
        self.cfg = cfg
        self.triplet = TripletLoss(cfg.margin)
        self.domain = DomainLoss(embed_dim) if cfg.domain_weight > 0 else None
        self.semantic = None
        if cfg.semantic_weight > 0:
            if class_vectors is None:
                raise ValueError("loss.semantic_weight > 0 needs class word vectors (data.word_vectors)")
            self.semantic = SemanticLoss(embed_dim, class_vectors, cfg.semantic_negative_lambda)

    def forward(self, sketch, positive, negative, labels, negative_labels, progress: float = 1.0) -> dict:
        terms: dict[str, torch.Tensor] = {}
        total = sketch.new_zeros((), dtype=torch.float32)
        if self.cfg.triplet_weight > 0:
            terms["triplet"] = self.triplet(sketch, positive, negative)
            total = total + self.cfg.triplet_weight * terms["triplet"]
        if self.domain is not None:
            lambd = reversal_lambda(self.cfg.domain_lambda_schedule, self.cfg.domain_lambda, progress)
            terms["domain"], terms["domain_accuracy"] = self.domain(sketch, [positive, negative], lambd)
            total = total + self.cfg.domain_weight * terms["domain"]
        if self.semantic is not None:
            terms["semantic"] = self.semantic(sketch, positive, negative, labels, negative_labels)
            total = total + self.cfg.semantic_weight * terms["semantic"]
        terms["loss"] = total
        return terms
