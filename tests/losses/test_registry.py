from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from ray_sbir.config import ConfigError, load_config
from ray_sbir.losses import CompositeLoss, LossTerm, TermContext, TermOptions, list_terms, register_term


def _outputs():
    torch.manual_seed(0)
    e = [F.normalize(torch.randn(4, 8), dim=-1) for _ in range(3)]
    return {"sketch": e[0], "positive": e[1], "negative": e[2], "label": torch.tensor([0, 1, 2, 0]),
            "negative_label": torch.tensor([1, 2, 0, 2])}


def test_weighted_sum_of_named_terms():
    ctx = TermContext(embed_dim=8, class_vectors=torch.randn(3, 5))
    full = CompositeLoss({"triplet": {"weight": 1.0}, "domain": {"weight": 0.3}, "semantic": {"weight": 0.2}}, ctx)
    t = full(_outputs(), progress=0.5)
    assert set(t) == {"loss", "triplet", "domain", "domain_accuracy", "domain_accuracy_sketch",
                      "domain_accuracy_photo", "semantic"}
    assert t["loss"].item() == pytest.approx(t["triplet"].item() + 0.3 * t["domain"].item()
                                             + 0.2 * t["semantic"].item(), rel=1e-5)
    only = CompositeLoss({"triplet": {}, "domain": {"weight": 0}, "semantic": {"weight": 0}}, TermContext(8))
    assert list(only.terms) == ["triplet"]  # weight 0: not even built (no word vectors needed)
    t2 = only(_outputs())
    assert set(t2) == {"loss", "triplet"} and t2["loss"].item() == pytest.approx(t2["triplet"].item())
    assert only.inputs == {"sketch", "positive", "negative"}


def test_config_errors_name_the_term_and_option():
    with pytest.raises(ConfigError, match="loss.terms.tripplet: unknown loss term .tripplet.; registered: .*triplet"):
        load_config(None, ["loss.terms={tripplet: {weight: 1}}"])
    with pytest.raises(ConfigError, match="loss.terms.domain.weight: must be >= 0"):
        load_config(None, ["loss.terms.domain.weight=-1"])
    with pytest.raises(ConfigError, match="every term has weight 0"):
        CompositeLoss({"triplet": {"weight": 0}}, TermContext(8))


def test_a_new_term_is_one_registered_class():
    @dataclass
    class CenterOptions(TermOptions):
        scale: float = 1.0

    @register_term("test_center_distance", CenterOptions)
    class CenterTerm(LossTerm):
        inputs = ("sketch", "positive")

        def __init__(self, options, context):
            super().__init__(options)

        def forward(self, outputs, progress):
            d = (outputs["sketch"] - outputs["positive"]).pow(2).sum(-1).mean()
            return {self.name: self.options.scale * d}

    assert "test_center_distance" in list_terms()
    cfg = load_config(None, ["loss.terms={triplet: {weight: 1}, test_center_distance: {weight: 0.5, scale: 2}}"])
    loss = CompositeLoss(cfg.loss.terms, TermContext(8))
    out = _outputs()
    t = loss(out)
    expected = 2 * (out["sketch"] - out["positive"]).pow(2).sum(-1).mean()
    assert t["test_center_distance"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert t["loss"].item() == pytest.approx(t["triplet"].item() + 0.5 * expected.item(), rel=1e-6)
