"""Domain loss behind gradient reversal (Doodle to Search, Dey et al., CVPR 2019, Sec. 3.2; Ganin &
Lempitsky, ICML 2015): a small MLP learns to tell sketch embeddings (1) from photo embeddings (0) with binary
cross-entropy, while the reversed gradient pushes the encoders to make the domains indistinguishable.

    L = BCE(D(GRL_lambda([s; p; n])), [1...1; 0...0])

``reversal`` scales the reversed gradient, ramped by ``schedule`` (``dann``: 2/(1+exp(-10 p)) - 1 times it,
``constant``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ray_sbir.config import ConfigError
from ray_sbir.losses.gradient_reversal import grad_reverse, reversal_lambda
from ray_sbir.losses.registry import LossTerm, TermContext, TermOptions, register_term


@dataclass
class DomainOptions(TermOptions):
    weight: float = 0.5
    reversal: float = 1.0
    schedule: str = "dann"
    hidden: int = 128

    def check(self, where: str) -> None:
        if self.schedule not in ("dann", "constant"):
            raise ConfigError(f"{where}.schedule: expected dann or constant, got {self.schedule!r}")


class DomainClassifier(nn.Module):
    """``BCE(classifier(GRL(feats)))``: returns ``(loss, accuracy)``."""

    def __init__(self, embed_dim: int, hidden: int = 128):
        super().__init__()
        self.classifier = nn.Sequential(
            nn.Linear(embed_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True), nn.Linear(hidden, 1),
        )

    def forward(self, sketch: torch.Tensor, photos: list[torch.Tensor], lambd: float):
        feats = torch.cat([sketch, *photos], dim=0)
        target = torch.cat([torch.ones(len(sketch)), torch.zeros(sum(len(p) for p in photos))]).to(feats.device)
        logits = self.classifier(grad_reverse(feats, lambd)).squeeze(-1)
        loss = F.binary_cross_entropy_with_logits(logits.float(), target)
        accuracy = ((logits > 0).float() == target).float().mean()
        return loss, accuracy


@register_term("domain", DomainOptions)
class DomainTerm(LossTerm):
    inputs = ("sketch", "positive", "negative")

    def __init__(self, options: DomainOptions, context: TermContext):
        super().__init__(options)
        self.domain = DomainClassifier(context.embed_dim, options.hidden)

    def forward(self, outputs, progress):
        lambd = reversal_lambda(self.options.schedule, self.options.reversal, progress)
        loss, accuracy = self.domain(outputs["sketch"], [outputs["positive"], outputs["negative"]], lambd)
        return {self.name: loss, f"{self.name}_accuracy": accuracy}
