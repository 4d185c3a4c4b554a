"""Loss terms for cross-modal hash codes (SSAH: Li, Deng, Liu, Liu, Tao, Gao, "Self-Supervised Adversarial
Hashing Networks for Cross-Modal Retrieval", CVPR 2018, arXiv 1804.01223, Sec. 3), adapted to sketch-photo
batches with one class label per image. The codes are the ``tanh`` relaxations ``H`` in (-1, 1)^K that a
``hash_dual_encoder`` returns; the bits are ``B = sign(H)``.

Pairwise likelihood (SSAH eq. 2-4, after DCMH, Jiang and Li, CVPR 2017): for codes ``h_i`` (queries) and
``g_j`` (items) with ``S_ij = 1`` when they share a label, ``Theta_ij = 1/2 h_i^T g_j`` and

    J = - mean_ij ( S_ij Theta_ij - log(1 + exp(Theta_ij)) ) = mean_ij ( softplus(Theta_ij) - S_ij Theta_ij )

(the negative log-likelihood of ``p(S_ij = 1) = sigmoid(Theta_ij)``; SSAH sums, we average over pairs so the
weight does not depend on the batch size). Minimising it makes codes of one class agree in sign (small Hamming
distance: ``h^T g = K - 2 hamming(h, g)`` for binary codes) and codes of two classes disagree.

Quantisation (SSAH's ``||H - B||_F^2`` term): ``mean (H - sign(H))^2`` per bit, so the relaxed codes approach
their signs and ranking by Hamming distance agrees with what training optimised.

Label network (SSAH Sec. 3.1, "LabNet"): an MLP from each training class (its one-hot label, or its word
vector) to semantic features ``F^l``, a code ``H^l = tanh(.)`` and a label prediction. It is trained by its own
loss (eq. 1: pairwise likelihood on features and on codes among classes, quantisation, label prediction
``||L_hat - L||^2``) and supervises both encoders: the pairwise likelihood between each class code ``H^l_c``
(detached: SSAH alternates, the label network is fixed while the image networks learn) and the batch's codes,
``S_cj = 1`` when image ``j`` is of class ``c`` (eq. 4 with the label network's codes as the target side).
SSAH's adversarial modality discriminators are the ``domain`` term (gradient reversal) applied to the codes.

Sources and deviations. The paper's body was read through copies of its equations (its LabNet loss
``L^l = alpha J1 + gamma J2 + eta ||H^l - B^l||^2 + beta ||L_hat - L||^2``, image/text losses with the label
network's ``F^l``/``H^l`` on the anchor side, discriminators between each modality's features and ``F^l``); the
official code is github.com/lelan-li/SSAH (TensorFlow; all weights 1, 16-bit default). That code squares the
pairwise terms, uses ``S = 0.999`` for similar pairs and anchors them on a stored matrix of all training
items' codes; we keep the paper's plain negative log-likelihood, ``S`` in {0, 1}, and per-batch pairs. Our
label network sees one row per training class (single-label data), not one per item; its features are linear
(see :class:`LabelNetwork`). Our discriminator separates sketch codes from photo codes (a modality
discriminator), where SSAH separates each modality's features from the label network's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ray_sbir.config import ConfigError
from ray_sbir.losses.registry import LossTerm, TermContext, TermOptions, register_term

CODES = ("sketch", "positive", "negative")


def pairwise_likelihood(h: torch.Tensor, g: torch.Tensor, similar: torch.Tensor) -> torch.Tensor:
    """``mean_ij softplus(Theta_ij) - S_ij Theta_ij`` with ``Theta = 1/2 h g^T`` (``similar``: ``S``, 0/1)."""
    theta = 0.5 * h.float() @ g.float().T
    return (F.softplus(theta) - similar.float() * theta).mean()


def quantization(h: torch.Tensor) -> torch.Tensor:
    """``mean (H - sign(H))^2``: how far the relaxed codes are from their bits."""
    h = h.float()
    return (h - torch.sign(h).detach()).pow(2).mean()


@register_term("pairwise_likelihood")
class PairwiseLikelihoodTerm(LossTerm):
    """Cross-modal: every sketch code against every photo code of the batch (positives and negatives)."""

    inputs = ("sketch", "positive", "negative", "label", "negative_label")

    def __init__(self, options: TermOptions, context: TermContext):
        super().__init__(options)

    def forward(self, outputs, progress):
        photos = torch.cat([outputs["positive"], outputs["negative"]])
        photo_labels = torch.cat([outputs["label"], outputs["negative_label"]])
        similar = outputs["label"][:, None] == photo_labels[None, :]
        return {self.name: pairwise_likelihood(outputs["sketch"], photos, similar)}


@register_term("quantization")
class QuantizationTerm(LossTerm):
    inputs = CODES

    def __init__(self, options: TermOptions, context: TermContext):
        super().__init__(options)

    def forward(self, outputs, progress):
        return {self.name: quantization(torch.cat([outputs[k] for k in CODES]))}


@dataclass
class LabelNetworkOptions(TermOptions):
    # SSAH's LabNet input is the multi-hot label; word vectors (the class vectors of the run) let the label
    # network place unseen-class-like inputs too. onehot | word_vectors
    label_input: str = "onehot"
    hidden: int = 512  # SSAH: a 4096-unit layer for its multi-label sets; our label sets are small
    feature_dim: int = 512
    # LabNet's own loss (SSAH eq. 1: alpha, gamma, eta, beta), relative to its supervision of the encoders.
    alpha: float = 1.0  # features: pairwise likelihood among classes
    gamma: float = 1.0  # codes: pairwise likelihood among classes
    eta: float = 1.0  # quantisation of the class codes
    beta: float = 1.0  # label prediction

    def check(self, where: str) -> None:
        if self.label_input not in ("onehot", "word_vectors"):
            raise ConfigError(f"{where}.label_input: expected onehot or word_vectors, got {self.label_input!r}")
        for name in ("hidden", "feature_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name}: must be >= 1, got {getattr(self, name)}")


class LabelNetwork(nn.Module):
    """SSAH's LabNet: class input -> hidden -> semantic features ``F^l`` -> code ``H^l`` and label prediction."""

    def __init__(self, inputs: torch.Tensor, bits: int, hidden: int, feature_dim: int):
        super().__init__()
        self.register_buffer("class_inputs", inputs.float(), persistent=False)
        classes = inputs.shape[0]
        # Linear features (no ReLU after the last layer): with one label per class the pairwise likelihood
        # wants features of different classes anti-correlated, which non-negative features cannot be -- they
        # collapse to zero and every class gets the same code.
        self.features = nn.Sequential(nn.Linear(inputs.shape[1], hidden), nn.ReLU(inplace=True),
                                      nn.Linear(hidden, feature_dim))
        self.hash = nn.Linear(feature_dim, bits)
        self.classify = nn.Linear(feature_dim, classes)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(F^l, H^l, label logits)`` of every training class."""
        f = self.features(self.class_inputs)
        return f, torch.tanh(self.hash(f)), self.classify(f)


@register_term("label_network", LabelNetworkOptions)
class LabelNetworkTerm(LossTerm):
    """The label network's own loss plus its codes supervising both encoders' codes (see the module doc).
    Returns ``label_network`` (the sum) and, for the logs, ``label_network_self`` and ``label_network_codes``."""

    inputs = ("sketch", "positive", "negative", "label", "negative_label")

    @classmethod
    def needs_class_vectors(cls, options: LabelNetworkOptions) -> bool:
        return options.label_input == "word_vectors"

    def __init__(self, options: LabelNetworkOptions, context: TermContext):
        super().__init__(options)
        if options.label_input == "word_vectors":
            if context.class_vectors is None:
                raise ConfigError("loss term label_network with label_input=word_vectors needs class word vectors "
                                  "(data.word_vectors)")
            inputs = torch.as_tensor(context.class_vectors).float()
        else:
            if context.num_classes is None:
                raise ConfigError("loss term label_network needs the number of training classes")
            inputs = torch.eye(context.num_classes)
        self.net = LabelNetwork(inputs, context.embed_dim, options.hidden, options.feature_dim)

    def forward(self, outputs, progress):
        o = self.options
        f, h, logits = self.net()
        same = torch.eye(len(h), dtype=torch.bool, device=h.device)  # one label per class: S = I
        own = (o.alpha * pairwise_likelihood(f, f, same) + o.gamma * pairwise_likelihood(h, h, same)
               + o.eta * quantization(h)
               + o.beta * (torch.sigmoid(logits) - same.float()).pow(2).mean())
        codes = torch.cat([outputs[k] for k in CODES])
        labels = torch.cat([outputs["label"], outputs["label"], outputs["negative_label"]])
        classes = torch.arange(len(h), device=h.device)
        supervise = pairwise_likelihood(h.detach(), codes, classes[:, None] == labels[None, :])
        return {self.name: own + supervise, f"{self.name}_self": own.detach(),
                f"{self.name}_codes": supervise.detach()}
