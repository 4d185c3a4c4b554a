import math

import pytest
import torch

from ray_sbir.config import ConfigError
from ray_sbir.losses import TermContext, term_options
from ray_sbir.losses.triplet import TripletTerm, pair_distance


def _term(**options):
    return TripletTerm(term_options("triplet", options), TermContext(embed_dim=2))


def test_triplet_loss_hand_computed():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    n = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    out = {"sketch": a, "positive": p, "negative": n}
    # row 0: d_pos = sqrt(0.16+0.64)=0.894, d_neg = sqrt(2)=1.414 -> max(0, 0.5+0.894-1.414)=0
    # row 1: d_pos = 0, d_neg = sqrt(2) -> 0;  with margin 1.0: row0 0.480, row1 0 -> mean 0.240
    assert _term(margin=0.5)(out, 1.0)["triplet"].item() == pytest.approx(0.0, abs=1e-6)
    expected = (1.0 + math.sqrt(0.8) - math.sqrt(2)) / 2
    assert _term(margin=1.0)(out, 1.0)["triplet"].item() == pytest.approx(expected, rel=1e-5)


def test_distance_follows_the_normalisation():
    """auto: Euclidean for unit vectors, the scaled inner product (what search scores) otherwise."""
    x = torch.tensor([[2.0, 0.0]])
    y = torch.tensor([[1.0, 1.0]])
    assert pair_distance(x, y, "euclidean").item() == pytest.approx(math.sqrt(2))
    assert pair_distance(x, y, "dot").item() == pytest.approx(-2.0 / 2)
    unit = TripletTerm(term_options("triplet", {}), TermContext(embed_dim=2, unit_norm=True))
    bn = TripletTerm(term_options("triplet", {}), TermContext(embed_dim=2, unit_norm=False))
    assert unit.distance == "euclidean" and bn.distance == "dot"
    # dot, margin 0.2: d_pos = -(2*1+0*1)/2 = -1, d_neg = -(2*-1)/2 = 1 -> max(0, 0.2 - 1 - 1) = 0; swapped: 2.2
    out = {"sketch": x, "positive": y, "negative": torch.tensor([[-1.0, 0.0]])}
    assert bn(out, 1.0)["triplet"].item() == pytest.approx(0.0)
    out = {"sketch": x, "positive": torch.tensor([[-1.0, 0.0]]), "negative": y}
    assert bn(out, 1.0)["triplet"].item() == pytest.approx(2.2)


def test_options_are_checked():
    with pytest.raises(ConfigError, match="loss.terms.triplet.distance: expected one of auto, euclidean, dot"):
        term_options("triplet", {"distance": "cosine"})
    with pytest.raises(ConfigError, match="valid keys of loss.terms.triplet: weight, margin, distance"):
        term_options("triplet", {"margn": 0.1})
