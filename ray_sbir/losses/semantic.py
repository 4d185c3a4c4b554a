"""Semantic loss (Doodle to Search, Dey et al., CVPR 2019, Sec. 3.3): a shared decoder maps embeddings to the
class word-vector space, pulled to the class vector by cosine:

    L = ( c(s, y) + c(p, y) + c(GRL_nu(n), y_n) ) / 3,   c(e, y) = 1 - cos(decoder(e), v_y)

The negative's branch passes a gradient reversal layer (strength ``negative_reversal``): the decoder still
learns from it, while the encoder is pushed *away* from making a negative photo decodable as its class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ray_sbir.config import ConfigError
from ray_sbir.losses.gradient_reversal import grad_reverse
from ray_sbir.losses.registry import LossTerm, TermContext, TermOptions, register_term


@dataclass
class SemanticOptions(TermOptions):
    weight: float = 0.5
    negative_reversal: float = 0.5


class SemanticDecoder(nn.Module):
    """Cosine loss between decoded embeddings and class word vectors (rows of ``class_vectors``)."""

    def __init__(self, embed_dim: int, class_vectors: torch.Tensor, negative_reversal: float = 0.5):
        super().__init__()
        self.register_buffer("class_vectors", F.normalize(class_vectors.float(), dim=-1), persistent=False)
        self.decoder = nn.Sequential(
            nn.Linear(embed_dim, embed_dim), nn.ReLU(inplace=True), nn.Linear(embed_dim, class_vectors.shape[1])
        )
        self.negative_reversal = negative_reversal

    def cosine_loss(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        decoded = F.normalize(self.decoder(emb).float(), dim=-1)
        return (1.0 - (decoded * self.class_vectors[labels]).sum(-1)).mean()

    def forward(self, sketch, positive, negative, labels, negative_labels) -> torch.Tensor:
        return (
            self.cosine_loss(sketch, labels)
            + self.cosine_loss(positive, labels)
            + self.cosine_loss(grad_reverse(negative, self.negative_reversal), negative_labels)
        ) / 3.0


@register_term("semantic", SemanticOptions)
class SemanticTerm(LossTerm):
    inputs = ("sketch", "positive", "negative", "label", "negative_label")

    @classmethod
    def needs_class_vectors(cls, options) -> bool:
        return True

    def __init__(self, options: SemanticOptions, context: TermContext):
        super().__init__(options)
        if context.class_vectors is None:
            raise ConfigError("loss term semantic needs class word vectors (data.word_vectors, or "
                              "class_vectors.txt in the dataset root)")
        self.semantic = SemanticDecoder(context.embed_dim, torch.as_tensor(context.class_vectors),
                                        options.negative_reversal)

    def forward(self, outputs, progress):
        return {self.name: self.semantic(outputs["sketch"], outputs["positive"], outputs["negative"],
                                         outputs["label"], outputs["negative_label"])}
