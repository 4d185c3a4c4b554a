"""Embedding distillation: the student's sketch embedding regresses onto the teacher's for the same sketch.

    cosine:  L = mean_i (1 - cos(s(x_i), t(x_i)))
    mse:     L = mean_i ||s(x_i) - t(x_i)||^2

Why this term: the distilled sketch encoder must search the *teacher's* photo index, so the student has to
land in the teacher's coordinates, not merely keep its neighbourhoods. Plain regression onto the teacher's
embeddings does exactly that and is the strongest transfer for this asymmetric setting (queries embedded by
the student, database by the teacher) in Budnik & Avrithis, "Asymmetric metric learning for knowledge
transfer", CVPR 2021 ("plain regression is surprisingly effective ... working best in asymmetric testing");
CLIP-KD (Yang et al., CVPR 2024) finds the same for MSE feature mimicry. Relation-based distillation (RKD,
Park et al., CVPR 2019) is invariant to rotations of the student's space and so cannot give compatibility.
A retrieval term against the frozen teacher photo embeddings (``triplet`` in the ``distill`` task) trains
the asymmetric pairing directly, as Budnik & Avrithis's asymmetric metric learning does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ray_sbir.config import ConfigError
from ray_sbir.losses.registry import LossTerm, TermContext, TermOptions, register_term


@dataclass
class EmbeddingDistillOptions(TermOptions):
    kind: str = "cosine"

    def check(self, where: str) -> None:
        if self.kind not in ("cosine", "mse"):
            raise ConfigError(f"{where}.kind: expected cosine or mse, got {self.kind!r}")


@register_term("distill_embedding", EmbeddingDistillOptions)
class EmbeddingDistillTerm(LossTerm):
    inputs = ("sketch", "teacher_sketch")

    def __init__(self, options: EmbeddingDistillOptions, context: TermContext):
        super().__init__(options)

    def forward(self, outputs, progress):
        s, t = outputs["sketch"].float(), outputs["teacher_sketch"].float()
        if self.options.kind == "cosine":
            loss = (1.0 - F.cosine_similarity(s, t, dim=-1)).mean()
        else:
            loss = (s - t).pow(2).sum(-1).mean()
        return {self.name: loss}
