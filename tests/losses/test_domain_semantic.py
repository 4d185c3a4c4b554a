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
    loss_mod = DomainClassifier(4, hidden=8, balance="none")
    s = torch.randn(3, 4, requires_grad=True)
    p = torch.randn(2, 4, requires_grad=True)
    loss, acc = loss_mod(s, [p], lambd=1.0)
    logits = loss_mod.classifier(torch.cat([s, p])).squeeze(-1)
    target = torch.tensor([1.0, 1, 1, 0, 0])
    assert loss.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, target).item(), rel=1e-6)
    assert 0.0 <= acc["sketch"].item() <= 1.0 and 0.0 <= acc["photo"].item() <= 1.0
    # The encoder side receives the negated gradient of the classifier's loss.
    loss.backward()
    s2 = s.detach().clone().requires_grad_(True)
    F.binary_cross_entropy_with_logits(loss_mod.classifier(torch.cat([s2, p.detach()])).squeeze(-1), target).backward()
    assert torch.allclose(s.grad, -s2.grad, atol=1e-6)


def test_balanced_domain_loss_against_a_hand_computation():
    """1 sketch, 2 + 2 photos, a classifier fixed by hand: logit = x[0]."""
    mod = DomainClassifier(2, hidden=2, balance="frequency")
    with torch.no_grad():
        first, _, second, _, last = mod.classifier
        first.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        first.bias.zero_()
        second.weight.copy_(torch.eye(2))
        second.bias.zero_()
        last.weight.copy_(torch.tensor([[1.0, -1.0]]))
        last.bias.zero_()
    sketch = torch.tensor([[2.0, 5.0]])
    photos = [torch.tensor([[-1.0, 0.0], [0.5, 1.0]]), torch.tensor([[-3.0, 2.0], [1.5, 0.0]])]
    loss, acc = mod(sketch, photos, lambd=1.0)

    def bce(z, y):
        return -(y * math.log(1 / (1 + math.exp(-z))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-z))))

    photo_logits = [-1.0, 0.5, -3.0, 1.5]
    expected = 0.5 * bce(2.0, 1) + 0.5 * sum(bce(z, 0) for z in photo_logits) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert acc["sketch"].item() == 1.0 and acc["photo"].item() == 0.5  # two photos have logit > 0
    plain = DomainClassifier(2, 2, balance="none")
    plain.load_state_dict(mod.state_dict())
    unbalanced, _ = plain(sketch, photos, 1.0)
    assert unbalanced.item() == pytest.approx((bce(2.0, 1) + sum(bce(z, 0) for z in photo_logits)) / 5, rel=1e-6)


def test_the_constant_photo_answer_is_chance_when_balanced():
    """The collapse our runs logged: a classifier answering "photo" for everything had accuracy 2/3 and the loss
    of the prior; balanced, the best constant answer costs log 2 and scores 1/2."""
    mod = DomainClassifier(3, hidden=4)
    with torch.no_grad():
        for p in mod.parameters():
            p.zero_()
    s, ph = torch.randn(8, 3), [torch.randn(8, 3), torch.randn(8, 3)]
    loss, acc = mod(s, ph, 1.0)
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6)
    with torch.no_grad():
        mod.classifier[-1].bias.fill_(-math.log(2))  # the prior's logit: P(sketch) = 1/3
    balanced, acc = mod(s, ph, 1.0)
    assert balanced.item() > math.log(2)  # the prior is no longer the cheapest constant
    assert (acc["sketch"].item() + acc["photo"].item()) / 2 == 0.5


def test_domain_balance_is_checked():
    with pytest.raises(ConfigError, match="loss.terms.domain.balance"):
        term_options("domain", {"balance": "batches"})


def test_domain_term_ramps_the_reversal_with_progress():
    torch.manual_seed(0)
    term = DomainTerm(term_options("domain", {"reversal": 2.0}), TermContext(embed_dim=4))
    out = {k: torch.randn(3, 4, requires_grad=True) for k in ("sketch", "positive", "negative")}
    values = term(out, progress=0.0)  # dann ramp at 0: no gradient reaches the encoders yet
    assert set(values) == {"domain", "domain_accuracy", "domain_accuracy_sketch", "domain_accuracy_photo"}
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
