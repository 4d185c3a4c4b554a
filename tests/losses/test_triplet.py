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


def test_batch_hard_mining_against_brute_force():
    """Hermans et al.'s batch-hard triplet across modalities: for each sketch the farthest photo of its class
    and the nearest of another, from every photo of the batch; sketches lacking either are left out."""
    import numpy as np

    rng = np.random.default_rng(0)
    s, x = rng.normal(size=(5, 4)), rng.normal(size=(7, 4))
    y, yx = np.array([0, 0, 1, 1, 5]), np.array([0, 1, 1, 0, 2, 2, 1])  # class 5 has no photo
    expected = []
    for i in range(len(s)):
        d = [np.linalg.norm(s[i] - x[j]) for j in range(len(x))]
        pos = [d[j] for j in range(len(x)) if yx[j] == y[i]]
        neg = [d[j] for j in range(len(x)) if yx[j] != y[i]]
        if pos and neg:
            expected.append(max(0.0, 0.5 + max(pos) - min(neg)))
    term = _term(margin=0.5, mining="batch_hard")
    assert term.inputs == ("sketch", "label", "photos", "photo_label")
    out = {"sketch": torch.tensor(s, dtype=torch.float32), "photos": torch.tensor(x, dtype=torch.float32),
           "label": torch.tensor(y), "photo_label": torch.tensor(yx)}
    assert term(out, 1.0)["triplet"].item() == pytest.approx(float(np.mean(expected)), rel=1e-5)
    assert len(expected) == 4 and any(e > 0 for e in expected)


def test_mining_option_is_checked():
    with pytest.raises(ConfigError, match="loss.terms.triplet.mining: expected one of given, batch_hard"):
        term_options("triplet", {"mining": "semi_hard"})
