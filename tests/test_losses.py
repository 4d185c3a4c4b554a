import math

import pytest
import torch
import torch.nn.functional as F

from ray_sbir.config import LossConfig
from ray_sbir.losses import (
    DomainLoss, DoodleToSearchLoss, SemanticLoss, TripletLoss, grad_reverse, reversal_lambda,
)


@pytest.mark.parametrize("lambd", [0.0, 0.5, 1.0, 3.0])
def test_gradient_reversal_sign_and_scale(lambd):
    x = torch.randn(4, 3, requires_grad=True)
    w = torch.randn(4, 3)
    y = grad_reverse(x, lambd)
    assert torch.equal(y, x)  # identity forward
    (y * w).sum().backward()
    assert torch.allclose(x.grad, -lambd * w)


def test_reversal_schedule():
    assert reversal_lambda("constant", 0.7, 0.0) == 0.7
    assert reversal_lambda("dann", 1.0, 0.0) == 0.0
    assert reversal_lambda("dann", 2.0, 1.0) == pytest.approx(2.0 * (2 / (1 + math.exp(-10)) - 1))
    assert reversal_lambda("dann", 1.0, 0.5) > reversal_lambda("dann", 1.0, 0.1)
    with pytest.raises(ValueError, match="domain_lambda_schedule"):
        reversal_lambda("cosine", 1.0, 0.5)


def test_triplet_loss_hand_computed():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    n = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    # row 0: d_pos = sqrt(0.16+0.64)=0.894, d_neg = sqrt(2)=1.414 -> max(0, 0.5+0.894-1.414)=0
    # row 1: d_pos = 0, d_neg = sqrt(2) -> 0;  with margin 1.0: row0 0.480, row1 0 -> mean 0.240
    assert TripletLoss(0.5)(a, p, n).item() == pytest.approx(0.0, abs=1e-6)
    expected = (1.0 + math.sqrt(0.8) - math.sqrt(2)) / 2
    assert TripletLoss(1.0)(a, p, n).item() == pytest.approx(expected, rel=1e-5)


def test_domain_loss_is_bce_and_reverses_gradient():
    torch.manual_seed(0)
    loss_mod = DomainLoss(4, hidden=8)
    s = torch.randn(3, 4, requires_grad=True)
    p = torch.randn(2, 4, requires_grad=True)
    loss, acc = loss_mod(s, [p], lambd=1.0)
    logits = loss_mod.classifier(torch.cat([s, p])).squeeze(-1)
    target = torch.tensor([1.0, 1, 1, 0, 0])
    assert loss.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, target).item(), rel=1e-6)
    assert 0.0 <= acc.item() <= 1.0
    # The encoder side receives the negated gradient of the classifier's loss.
    loss.backward()
    s2 = s.detach().clone().requires_grad_(True)
    F.binary_cross_entropy_with_logits(loss_mod.classifier(torch.cat([s2, p.detach()])).squeeze(-1), target).backward()
    assert torch.allclose(s.grad, -s2.grad, atol=1e-6)


def test_semantic_loss_hand_computed():
    vecs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mod = SemanticLoss(2, vecs, negative_lambda=0.5)
    with torch.no_grad():  # identity decoder: decoded = relu-free linear path made identity
        mod.decoder[0].weight.copy_(torch.eye(2)); mod.decoder[0].bias.zero_()
        mod.decoder[2].weight.copy_(torch.eye(2)); mod.decoder[2].bias.zero_()
    s = torch.tensor([[1.0, 1.0]])   # cos to class 0 = 0.7071
    p = torch.tensor([[2.0, 0.0]])   # cos 1
    n = torch.tensor([[0.0, 3.0]])   # class 1 -> cos 1
    loss = mod(s, p, n, torch.tensor([0]), torch.tensor([1]))
    assert loss.item() == pytest.approx(((1 - math.sqrt(0.5)) + 0 + 0) / 3, rel=1e-5)


def test_combined_loss_weights_and_ablation():
    torch.manual_seed(0)
    vecs = torch.randn(3, 5)
    e = [F.normalize(torch.randn(4, 8), dim=-1) for _ in range(3)]
    labels, neg = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 0, 2])
    cfg = LossConfig(triplet_weight=1.0, domain_weight=0.3, semantic_weight=0.2)
    full = DoodleToSearchLoss(cfg, 8, vecs)
    t = full(*e, labels, neg, progress=0.5)
    assert set(t) >= {"loss", "triplet", "domain", "semantic"}
    assert t["loss"].item() == pytest.approx(t["triplet"].item() + 0.3 * t["domain"].item() + 0.2 * t["semantic"].item(),
                                             rel=1e-5)
    only = DoodleToSearchLoss(LossConfig(domain_weight=0, semantic_weight=0), 8, None)
    t2 = only(*e, labels, neg)
    assert set(t2) == {"loss", "triplet"} and t2["loss"].item() == pytest.approx(t2["triplet"].item())
    with pytest.raises(ValueError, match="word vectors"):
        DoodleToSearchLoss(LossConfig(semantic_weight=1.0), 8, None)
