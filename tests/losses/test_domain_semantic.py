import math

import pytest
import torch
import torch.nn.functional as F

from ray_sbir.config import ConfigError
from ray_sbir.losses import TermContext, grad_reverse, reversal_lambda, term_options
from ray_sbir.losses.domain import DomainClassifier, DomainTerm
from ray_sbir.losses.semantic import SemanticDecoder, SemanticTerm


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
    with pytest.raises(ValueError, match="reversal schedule"):
        reversal_lambda("cosine", 1.0, 0.5)
    with pytest.raises(ConfigError, match="loss.terms.domain.schedule"):
        term_options("domain", {"schedule": "cosine"})


def test_domain_loss_is_bce_and_reverses_gradient():
    torch.manual_seed(0)
    loss_mod = DomainClassifier(4, hidden=8)
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


def test_domain_term_ramps_the_reversal_with_progress():
    torch.manual_seed(0)
    term = DomainTerm(term_options("domain", {"reversal": 2.0}), TermContext(embed_dim=4))
    out = {k: torch.randn(3, 4, requires_grad=True) for k in ("sketch", "positive", "negative")}
    values = term(out, progress=0.0)  # dann ramp at 0: no gradient reaches the encoders yet
    assert set(values) == {"domain", "domain_accuracy"}
    values["domain"].backward()
    assert torch.count_nonzero(out["sketch"].grad) == 0


def test_semantic_loss_hand_computed():
    vecs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mod = SemanticDecoder(2, vecs, negative_reversal=0.5)
    with torch.no_grad():  # identity decoder: decoded = relu-free linear path made identity
        mod.decoder[0].weight.copy_(torch.eye(2)); mod.decoder[0].bias.zero_()
        mod.decoder[2].weight.copy_(torch.eye(2)); mod.decoder[2].bias.zero_()
    s = torch.tensor([[1.0, 1.0]])   # cos to class 0 = 0.7071
    p = torch.tensor([[2.0, 0.0]])   # cos 1
    n = torch.tensor([[0.0, 3.0]])   # class 1 -> cos 1
    loss = mod(s, p, n, torch.tensor([0]), torch.tensor([1]))
    assert loss.item() == pytest.approx(((1 - math.sqrt(0.5)) + 0 + 0) / 3, rel=1e-5)


def test_semantic_term_needs_word_vectors():
    with pytest.raises(ConfigError, match="word vectors"):
        SemanticTerm(term_options("semantic", {}), TermContext(embed_dim=4))
