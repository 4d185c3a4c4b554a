"""Learned similarity of an embedding pair: the re-rank stage's models (plain PyTorch).

``mlp`` -- Garcia & Vogiatzis, "Learning Non-Metric Visual Similarity for Image Retrieval", Image and Vision
Computing 2019 (arXiv 1709.01353): instead of the cosine, a network scores a (query, item) pair from its
concatenated features. The authors' code (github.com/noagarcia/SimNet, ``init_simnet_simplenn.m``) feeds the
two 512-d R-MAC vectors to two fully connected layers of 4,096 units with ReLU and one linear output, weights
drawn as ``0.01 * randn`` and zero biases, no dropout. Our embeddings are 32-256-d, so the hidden sizes are a
setting (default 512, 512); ``features="symmetric"`` adds ``a * b`` and ``|a - b|`` to the concatenation
(the product's sum is the inner product, so the cosine is one linear layer away -- the concatenation alone
must learn the product through the ReLUs). The score is not symmetric in (query, item) and not a metric.

``linear`` -- cosine after a learned linear projection ``W`` (initialised to the identity): the baseline the
learned scorer is judged against, trained on the same pairs and targets, so that any gain of ``mlp`` is not
simply from seeing more data.

Both score ``N`` pairs at once: ``forward(a (N, d), b (N, d)) -> (N,)``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ray_sbir.registry import Registry

__all__ = ["SIMILARITY_HEADS", "LinearCosineSimilarity", "MLPSimilarity", "create_similarity",
           "list_similarity_heads", "register_similarity"]

SIMILARITY_HEADS: Registry[Callable[..., nn.Module]] = Registry("similarity head", key="rerank.head",
                                                                 package="ray_sbir.models")


def register_similarity(name: str):
    return SIMILARITY_HEADS.register(name)


def list_similarity_heads() -> list[str]:
    return SIMILARITY_HEADS.names()


def create_similarity(head: str, dim: int, *, hidden: list[int] | tuple[int, ...] = (512, 512),
                      features: str = "concat") -> nn.Module:
    return SIMILARITY_HEADS.get(head)(dim, hidden=tuple(hidden), features=features)


@register_similarity("mlp")
class MLPSimilarity(nn.Module):
    def __init__(self, dim: int, hidden: tuple[int, ...] = (512, 512), features: str = "concat"):
        super().__init__()
        if features not in ("concat", "symmetric"):
            raise ValueError(f"features must be concat or symmetric, got {features!r}")
        self.dim, self.features = dim, features
        width = 2 * dim if features == "concat" else 4 * dim
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        for m in self.net:
            if isinstance(m, nn.Linear):  # as the authors' code: small Gaussian weights, zero biases
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = [a, b] if self.features == "concat" else [a, b, a * b, (a - b).abs()]
        return self.net(torch.cat(x, dim=-1)).squeeze(-1)


@register_similarity("linear")
class LinearCosineSimilarity(nn.Module):
    def __init__(self, dim: int, hidden: tuple[int, ...] = (), features: str = "concat"):
        super().__init__()
        self.dim = dim
        self.proj = nn.Linear(dim, dim, bias=False)
        nn.init.eye_(self.proj.weight)  # starts as the plain cosine

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(self.proj(a), self.proj(b), dim=-1)
