"""Domain loss behind gradient reversal (Doodle to Search, Dey et al., CVPR 2019, Sec. 3.2; Ganin &
Lempitsky, ICML 2015): a small MLP learns to tell sketch embeddings (1) from photo embeddings (0) with binary
cross-entropy, while the reversed gradient pushes the encoders to make the domains indistinguishable.

    L = BCE(D(GRL_lambda([s; p; n])), [1...1; 0...0])

``reversal`` scales the reversed gradient, ramped by ``schedule`` (``dann``: 2/(1+exp(-10 p)) - 1 times it,
``constant``).

``balance: frequency`` (default) weights each sample by the inverse frequency of its modality in the batch, so
the two modalities count half each:

    L = 1/2 * mean_{x in sketches} BCE(D(x), 1) + 1/2 * mean_{x in photos} BCE(D(x), 0)

Why: a triplet holds one sketch and two photos, and with the plain mean (``balance: none``) the classifier's
cheapest answer is "photo" for everything: accuracy 2/3, the loss at the prior's entropy, and a classifier whose
output no longer depends on its input sends the encoders no alignment signal through the reversed gradient
(what our runs logged). Balanced, the constant answer scores 1/2 and costs log 2, so the classifier has to look
at the embeddings. ``domain_accuracy`` is the balanced accuracy (the mean of ``domain_accuracy_sketch`` and
``domain_accuracy_photo``, both logged): 0.5 is chance whatever the batch's mix.
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
    balance: str = "frequency"

    def check(self, where: str) -> None:
        if self.schedule not in ("dann", "constant"):
            raise ConfigError(f"{where}.schedule: expected dann or constant, got {self.schedule!r}")
        if self.balance not in BALANCES:
            raise ConfigError(f"{where}.balance: expected one of {list(BALANCES)}, got {self.balance!r}")


BALANCES = ("frequency", "none")


class DomainClassifier(nn.Module):
    """``BCE(classifier(GRL(feats)))``: returns ``(loss, {"sketch": accuracy, "photo": accuracy})``."""

    def __init__(self, embed_dim: int, hidden: int = 128, balance: str = "frequency"):
        super().__init__()
        if balance not in BALANCES:
            raise ValueError(f"domain balance must be one of {BALANCES}, got {balance!r}")
        self.balance = balance
        self.classifier = nn.Sequential(
            nn.Linear(embed_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True), nn.Linear(hidden, 1),
        )

    def forward(self, sketch: torch.Tensor, photos: list[torch.Tensor], lambd: float):
        feats = torch.cat([sketch, *photos], dim=0)
        n_sketch, n_photo = len(sketch), sum(len(p) for p in photos)
        is_sketch = torch.cat([torch.ones(n_sketch), torch.zeros(n_photo)]).to(feats.device)
        logits = self.classifier(grad_reverse(feats, lambd)).squeeze(-1).float()
        per_sample = F.binary_cross_entropy_with_logits(logits, is_sketch, reduction="none")
        if self.balance == "frequency":
            weights = torch.where(is_sketch > 0, 0.5 / max(n_sketch, 1), 0.5 / max(n_photo, 1))
            loss = (per_sample * weights).sum()
        else:
            loss = per_sample.mean()
        right = ((logits > 0).float() == is_sketch).float()
        return loss, {"sketch": right[:n_sketch].mean(), "photo": right[n_sketch:].mean()}


@register_term("domain", DomainOptions)
class DomainTerm(LossTerm):
    inputs = ("sketch", "positive", "negative")

    def __init__(self, options: DomainOptions, context: TermContext):
        super().__init__(options)
        self.domain = DomainClassifier(context.embed_dim, options.hidden, options.balance)

    def forward(self, outputs, progress):
        lambd = reversal_lambda(self.options.schedule, self.options.reversal, progress)
        loss, accuracy = self.domain(outputs["sketch"], [outputs["positive"], outputs["negative"]], lambd)
        return {self.name: loss, f"{self.name}_accuracy": (accuracy["sketch"] + accuracy["photo"]) / 2,
                f"{self.name}_accuracy_sketch": accuracy["sketch"], f"{self.name}_accuracy_photo": accuracy["photo"]}
