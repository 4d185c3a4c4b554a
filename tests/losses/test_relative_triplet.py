import math

import pytest
import torch

from ray_sbir.config import ConfigError
from ray_sbir.losses import TermContext, term_options
from ray_sbir.losses.relative_triplet import RelativeTripletTerm, anchor_weights
from ray_sbir.losses.triplet import TripletTerm


def test_anchor_weights_hand_computed():
    # anchors 0 and 1 are class 0, anchor 2 class 1; unit vectors at 0, 60 and 90 degrees
    a = torch.tensor([[1.0, 0.0], [0.5, math.sqrt(3) / 2], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    # closest other-class anchor: c0 = cos(0, 90) = 0, c1 = cos(60, 90) = 0.866, c2 = max(0, 0.866) = 0.866
    w = anchor_weights(a, labels, power=1.0)
    c = math.sqrt(3) / 2
    assert w.tolist() == pytest.approx([0.5, (1 - c) / 2, (1 - c) / 2], rel=1e-5)
    assert anchor_weights(a, labels, power=2.0).tolist() == pytest.approx([0.25, ((1 - c) / 2) ** 2,
                                                                            ((1 - c) / 2) ** 2], rel=1e-5)
    # no other class in the batch: every anchor counts fully
    assert anchor_weights(a, torch.tensor([3, 3, 3])).tolist() == pytest.approx([1.0, 1.0, 1.0])
    # the scale of an embedding does not matter (cosine)
    assert anchor_weights(5 * a, labels).tolist() == pytest.approx(w.tolist(), rel=1e-5)


def test_relative_triplet_is_the_weighted_mean_of_triplet_hinges():
    a = torch.tensor([[1.0, 0.0], [0.5, math.sqrt(3) / 2], [0.0, 1.0]])
    p = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    n = torch.tensor([[1.0, 0.0], [0.5, math.sqrt(3) / 2], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    out = {"sketch": a, "positive": p, "negative": n, "label": labels}
    ctx = TermContext(embed_dim=2)
    rtl = RelativeTripletTerm(term_options("relative_triplet", {"margin": 0.2}), ctx)(out, 1.0)
    # hinges by hand: d(a,p), d(a,n) Euclidean on these unit vectors
    d = lambda x, y: (x - y).norm().item()  # noqa: E731
    h = [max(0.0, 0.2 + d(a[i], p[i]) - d(a[i], n[i])) for i in range(3)]
    c = math.sqrt(3) / 2
    w = [0.5, (1 - c) / 2, (1 - c) / 2]
    assert rtl["relative_triplet"].item() == pytest.approx(sum(wi * hi for wi, hi in zip(w, h)) / sum(w), rel=1e-5)
    assert rtl["relative_triplet_mean_weight"].item() == pytest.approx(sum(w) / 3, rel=1e-5)
    # power 0: every weight 1, exactly the triplet loss
    flat = RelativeTripletTerm(term_options("relative_triplet", {"margin": 0.2, "power": 0.0}), ctx)(out, 1.0)
    plain = TripletTerm(term_options("triplet", {"margin": 0.2}), ctx)(out, 1.0)
    assert flat["relative_triplet"].item() == pytest.approx(plain["triplet"].item(), rel=1e-6)


def test_weights_carry_no_gradient():
    a = torch.randn(6, 4, requires_grad=True)
    out = {"sketch": a, "positive": torch.randn(6, 4), "negative": torch.randn(6, 4),
           "label": torch.tensor([0, 0, 1, 1, 2, 2])}
    loss = RelativeTripletTerm(term_options("relative_triplet", {"margin": 5.0}), TermContext(4))(out, 1.0)
    loss["relative_triplet"].backward()
    w = anchor_weights(a.detach(), out["label"])
    # d/da of sum_i w_i h_i / sum w, with h_i = 5 + |a-p| - |a-n| (all active at margin 5)
    a2 = a.detach().clone().requires_grad_(True)
    h = 5.0 + (a2 - out["positive"]).norm(dim=1) - (a2 - out["negative"]).norm(dim=1)
    ((w * h).sum() / w.sum()).backward()
    assert torch.allclose(a.grad, a2.grad, atol=1e-6)


def test_power_must_not_be_negative():
    with pytest.raises(ConfigError, match="power: must be >= 0"):
        term_options("relative_triplet", {"power": -1})
