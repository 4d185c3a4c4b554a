"""The in-batch contrastive term against a NumPy computation of the formula in its docstring."""

import math

import numpy as np
import pytest
import torch

from ray_sbir.config import ConfigError
from ray_sbir.losses import CompositeLoss, TermContext, term_options
from ray_sbir.losses.contrastive import ContrastiveTerm


def _term(**options):
    return ContrastiveTerm(term_options("contrastive", options), TermContext(embed_dim=3))


def _reference(s, x, labels, photo_labels, tau, directions="both", pair=False):
    """-1/|P| sum log softmax over each anchor's row, anchors without positives left out, per direction."""
    s = s / np.linalg.norm(s, axis=1, keepdims=True)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    z = s @ x.T / tau
    pos = np.zeros_like(z, dtype=bool)
    if pair:
        pos[np.arange(len(s)), np.arange(len(s))] = True
    else:
        pos = labels[:, None] == photo_labels[None, :]

    def one(logits, positive):
        losses = []
        for row, p in zip(logits, positive):
            if not p.any():
                continue
            log_softmax = row - math.log(np.exp(row).sum())
            losses.append(-log_softmax[p].mean())
        return np.mean(losses)

    parts = {"sketch_to_photo": [one(z, pos)], "photo_to_sketch": [one(z.T, pos.T)]}
    parts["both"] = parts["sketch_to_photo"] + parts["photo_to_sketch"]
    return float(np.mean(parts[directions]))


@pytest.fixture
def batch():
    rng = np.random.default_rng(3)
    sketch, photos = rng.normal(size=(4, 3)), rng.normal(size=(6, 3))
    labels, photo_labels = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0, 3, 3])  # class 2 has no photo, 3 no sketch
    out = {"sketch": torch.tensor(sketch, dtype=torch.float32), "photos": torch.tensor(photos, dtype=torch.float32),
           "label": torch.tensor(labels), "photo_label": torch.tensor(photo_labels)}
    return out, (sketch, photos, labels, photo_labels)


@pytest.mark.parametrize("directions", ["both", "sketch_to_photo", "photo_to_sketch"])
def test_class_positives_match_the_formula(batch, directions):
    out, (s, x, y, yx) = batch
    term = _term(temperature=0.1, directions=directions)
    assert term(out, 1.0)["contrastive"].item() == pytest.approx(_reference(s, x, y, yx, 0.1, directions), rel=1e-5)


def test_pair_positives_are_the_diagonal(batch):
    out, (s, x, y, yx) = batch
    term = _term(temperature=0.5, positives="pair", directions="sketch_to_photo")
    assert term(out, 1.0)["contrastive"].item() == pytest.approx(
        _reference(s, x, y, yx, 0.5, "sketch_to_photo", pair=True), rel=1e-5)


def test_learned_temperature_is_a_trained_parameter_and_fixed_is_not(batch):
    out, _ = batch
    learned = _term(temperature=0.07)
    assert [n for n, _ in learned.named_parameters()] == ["logit_scale"]
    assert learned.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    values = learned(out, 1.0)
    values["contrastive"].backward()
    assert learned.logit_scale.grad is not None and learned.logit_scale.grad.abs().item() > 0
    assert values["contrastive_temperature"].item() == pytest.approx(0.07, rel=1e-5)
    fixed = _term(temperature=0.07, learn_temperature=False)
    assert list(fixed.parameters()) == [] and "logit_scale" in fixed.state_dict()
    # The clip: a logit scale above log(max_logit_scale) is used as the maximum.
    with torch.no_grad():
        learned.logit_scale.fill_(10.0)
    assert learned(out, 1.0)["contrastive_temperature"].item() == pytest.approx(0.01, rel=1e-5)


def test_a_batch_of_one_class_gives_zero_and_stays_in_the_graph():
    sketch = torch.randn(3, 3, requires_grad=True)
    out = {"sketch": sketch, "photos": torch.randn(3, 3), "label": torch.tensor([0, 0, 0]),
           "photo_label": torch.tensor([1, 1, 1])}
    loss = _term()(out, 1.0)["contrastive"]
    assert loss.item() == 0.0
    loss.backward()
    assert sketch.grad is not None


def test_options_are_checked():
    with pytest.raises(ConfigError, match="loss.terms.contrastive.directions"):
        term_options("contrastive", {"directions": "sideways"})
    with pytest.raises(ConfigError, match="loss.terms.contrastive.temperature: must be > 0"):
        term_options("contrastive", {"temperature": 0})
    with pytest.raises(ConfigError, match="exceeds max_logit_scale"):
        term_options("contrastive", {"temperature": 0.001})
    with pytest.raises(ConfigError, match="loss.terms.contrastive.positives"):
        term_options("contrastive", {"positives": "instance"})


def test_composite_loss_reads_the_in_batch_outputs():
    loss = CompositeLoss({"contrastive": {"weight": 2.0}, "triplet": {"weight": 1.0, "mining": "batch_hard"}},
                         TermContext(embed_dim=3))
    assert loss.inputs == {"sketch", "label", "photos", "photo_label"}
