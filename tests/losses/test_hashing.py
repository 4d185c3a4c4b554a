"""Hash-code loss terms (SSAH) against hand computations."""

import math

import pytest
import torch

from ray_sbir.config import ConfigError
from ray_sbir.losses import CompositeLoss, TermContext, term_options
from ray_sbir.losses.hashing import LabelNetworkTerm, pairwise_likelihood, quantization


def test_pairwise_likelihood_by_hand():
    h = torch.tensor([[1.0, -1.0], [0.5, 0.5]])
    g = torch.tensor([[1.0, -1.0], [-1.0, 1.0]])
    s = torch.tensor([[1, 0], [0, 1]])
    # Theta = 1/2 h g^T = [[1, -1], [0, 0]]
    expected = ((math.log1p(math.e) - 1) + math.log1p(math.exp(-1)) + math.log(2) + math.log(2)) / 4
    assert pairwise_likelihood(h, g, s).item() == pytest.approx(expected, rel=1e-6)
    # agreeing codes for similar pairs cost less than disagreeing ones
    assert pairwise_likelihood(g[:1], g[:1], torch.ones(1, 1)) < pairwise_likelihood(g[:1], g[1:], torch.ones(1, 1))


def test_quantization_by_hand_and_gradient():
    h = torch.tensor([[0.5, -0.25], [1.0, -1.0]], requires_grad=True)
    q = quantization(h)
    assert q.item() == pytest.approx((0.25 + 0.5625 + 0 + 0) / 4)
    q.backward()
    assert torch.allclose(h.grad, torch.tensor([[-0.25, 0.375], [0.0, 0.0]]))  # 2 (h - sign h) / 4


def _outputs(bits=8, b=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = {k: torch.tanh(torch.randn(b, bits, generator=g)).requires_grad_() for k in ("sketch", "positive",
                                                                                       "negative")}
    return {**codes, "label": torch.tensor([0, 1, 2, 0]), "negative_label": torch.tensor([1, 2, 0, 2])}


def test_composite_of_hash_terms_and_the_pairwise_term_by_hand():
    out = _outputs()
    loss = CompositeLoss({"pairwise_likelihood": {"weight": 1.0}, "quantization": {"weight": 0.5}},
                         TermContext(embed_dim=8, unit_norm=False, num_classes=3))
    values = loss(out)
    photos = torch.cat([out["positive"], out["negative"]])
    labels = torch.cat([out["label"], out["negative_label"]])
    theta = 0.5 * out["sketch"] @ photos.T
    s = (out["label"][:, None] == labels[None, :]).float()
    by_hand = (torch.log1p(torch.exp(theta)) - s * theta).mean()
    assert values["pairwise_likelihood"].item() == pytest.approx(by_hand.item(), rel=1e-5)
    assert values["loss"].item() == pytest.approx(by_hand.item() + 0.5 * values["quantization"].item(), rel=1e-5)
    values["loss"].backward()
    assert out["sketch"].grad.abs().sum() > 0


def test_label_network_supervises_codes_without_training_on_them():
    torch.manual_seed(0)
    term = LabelNetworkTerm(term_options("label_network", {"hidden": 16, "feature_dim": 8}),
                            TermContext(embed_dim=8, unit_norm=False, num_classes=3))
    out = _outputs()
    values = term(out, 1.0)
    assert set(values) == {"label_network", "label_network_self", "label_network_codes"}
    assert values["label_network"].item() == pytest.approx(
        values["label_network_self"].item() + values["label_network_codes"].item(), rel=1e-5)
    # the supervision equals the pairwise likelihood of class codes vs batch codes, by hand
    _, h, _ = term.net()
    codes = torch.cat([out["sketch"], out["positive"], out["negative"]])
    labels = torch.cat([out["label"], out["label"], out["negative_label"]])
    s = torch.arange(3)[:, None] == labels[None, :]
    assert values["label_network_codes"].item() == pytest.approx(pairwise_likelihood(h, codes, s).item(), rel=1e-5)
    values["label_network"].backward()
    assert out["sketch"].grad.abs().sum() > 0  # the encoders learn from the class codes...
    grads = [p.grad for p in term.net.parameters()]
    assert all(g is not None for g in grads)  # ...and the label network from its own loss

    # A few steps of its own loss: codes of different classes move apart.
    opt = torch.optim.Adam(term.net.parameters(), lr=1e-2)
    for _ in range(100):  # the label network's parameters get gradients only from its own loss
        opt.zero_grad()
        term(out, 1.0)["label_network"].backward()
        opt.step()
    _, h, _ = term.net()
    bits = torch.sign(h)
    distances = [(bits[i] != bits[j]).sum().item() for i, j in ((0, 1), (0, 2), (1, 2))]
    assert min(distances) >= 3, distances  # classes get codes far apart (8 bits)


def test_options_are_validated():
    with pytest.raises(ConfigError, match="label_input"):
        term_options("label_network", {"label_input": "names"})
    with pytest.raises(ConfigError, match="needs class word vectors"):
        LabelNetworkTerm(term_options("label_network", {"label_input": "word_vectors"}),
                         TermContext(embed_dim=8, num_classes=3))
