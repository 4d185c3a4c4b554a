"""similarity_regression against a hand computation (Garcia & Vogiatzis: |s - (cos +- delta)|)."""

import pytest
import torch

from ray_sbir.losses import CompositeLoss, TermContext


def test_similarity_regression_by_hand():
    s = torch.tensor([0.9, 0.1, -0.2, 0.5, 0.3])
    c = torch.tensor([0.6, 0.4, 0.0, 0.2, 0.3])
    y = torch.tensor([1.0, -1.0, -1.0, 0.0, 0.0])
    out = {"pair_score": s, "pair_cosine": c, "pair_label": y}
    loss = CompositeLoss({"similarity_regression": {"weight": 1.0, "margin": 0.2}}, TermContext(4))
    # targets 0.8, 0.2, -0.2, 0.2, 0.3 -> errors 0.1, 0.1, 0.0, 0.3, 0.0
    # balanced: mean(pos) 0.1 + mean(neg) 0.05 + mean(warm-up) 0.15
    assert loss(out, 0.5)["similarity_regression"].item() == pytest.approx(0.1 + 0.05 + 0.15, abs=1e-6)
    plain = CompositeLoss({"similarity_regression": {"weight": 1.0, "margin": 0.2, "balance": False}}, TermContext(4))
    assert plain(out, 0.5)["loss"].item() == pytest.approx(0.5 / 5, abs=1e-6)
