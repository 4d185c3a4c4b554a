"""Similarity regression: the loss of the learned re-ranker (Garcia & Vogiatzis 2019).

For a pair with cosine ``c`` and label ``y`` (+1 same class, -1 different class, 0 a warm-up pair of random
vectors), the target is ``t = c + delta * y``: matching pairs are pushed above their cosine, non-matching ones
below, random pairs regress onto the plain cosine. The loss is the absolute error ``|s - t|`` -- the authors'
code (github.com/noagarcia/SimNet: ``load_img_data.m`` builds ``cosinesDelta = cosines +- delta``,
``l1LossForward.m`` sums ``abs(x - r)``) uses L1, with ``delta = 0.2`` in ``train.m`` (0.8 for its released
end-to-end model). The warm-up on random pairs follows ``imdb_random_vectors.m`` (unit vectors, cosine drawn
uniformly in [-1, 1], target = the cosine). Their cosines are stored in [0, 1] and mapped by ``2c - 1``; ours
are already in [-1, 1].

``balance`` (default on) averages matching and non-matching pairs separately and sums the two means: an
in-batch pair set has ~2B non-matching pairs per matching one, and without it the scorer would mostly learn
to push everything down.
"""

from __future__ import annotations

from dataclasses import dataclass


from ray_sbir.config import ConfigError
from ray_sbir.losses.registry import LossTerm, TermContext, TermOptions, register_term


@dataclass
class SimilarityRegressionOptions(TermOptions):
    margin: float = 0.2  # delta
    balance: bool = True

    def check(self, where: str) -> None:
        if self.margin < 0:
            raise ConfigError(f"{where}.margin must be >= 0, got {self.margin}")


@register_term("similarity_regression", SimilarityRegressionOptions)
class SimilarityRegressionTerm(LossTerm):
    inputs = ("pair_score", "pair_cosine", "pair_label")

    def __init__(self, options: SimilarityRegressionOptions, context: TermContext):
        super().__init__(options)

    def forward(self, outputs, progress):
        s, c = outputs["pair_score"].float(), outputs["pair_cosine"].float()
        y = outputs["pair_label"].float()
        err = (s - (c + self.options.margin * y)).abs()
        pos, neg = y > 0, y < 0
        if self.options.balance and bool(pos.any()) and bool(neg.any()):
            loss = err[pos].mean() + err[neg].mean() + (err[y == 0].mean() if bool((y == 0).any()) else 0.0)
        else:
            loss = err.mean()
        return {self.name: loss}
