"""The ``distill`` task: a small sketch encoder (the student) learns a trained model's embedding space.

The teacher is a checkpoint of any task (``distill.teacher``). The trained model keeps the teacher's photo
encoder, frozen and unchanged, beside the student sketch encoder (``model.sketch``: for example
``mobilenetv3_small_100`` or ``efficientnet_lite0`` at a smaller image size). Photo embeddings are therefore
exactly the teacher's: an index the teacher embedded stays valid, and the student's sketch embeddings search
it. ``embed_dim`` and ``normalize`` are the teacher's (they define the space).

Loss terms: ``distill_embedding`` (student sketch embedding onto the teacher's embedding of the same sketch,
rendered at each encoder's own input size with the same augmentation), optionally with ``triplet`` /
``relative_triplet``, which here score the student's sketches against the frozen teacher photo embeddings:
the asymmetric pairing used at search time. Sources in ``ray_sbir.losses.distill``. The approach follows
Seddati et al. 2023 (a small sketch encoder distilled from a bigger model, photo side kept), whose exact
distillation loss is not available to us.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from ray_sbir.checkpoint import load_model, read_meta
from ray_sbir.config import Config, ConfigError
from ray_sbir.data.decode import RenderSpec
from ray_sbir.losses import term_inputs
from ray_sbir.models import create_model
from ray_sbir.training.tasks import PHOTO_INPUTS, Task, TaskContext, TaskInputs, register_task

logger = logging.getLogger("ray_sbir.training")


@register_task("distill")
class DistillTask(Task):
    outputs = ("sketch", "teacher_sketch", "positive", "negative", "label", "negative_label")

    input_checkpoints = ("distill.teacher",)

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        if not cfg.distill.teacher:
            raise ConfigError("train.task=distill needs distill.teacher: the checkpoint folder of the teacher")
        if cfg.model.shared_encoder:
            raise ConfigError("train.task=distill trains a sketch encoder beside the teacher's photo encoder; "
                              "model.shared_encoder must be false")

    @classmethod
    def prepare_config(cls, cfg: Config) -> Config:
        teacher = read_meta(cfg.distill.teacher).config.model
        # The photo side and the space are the teacher's; its weights are copied in, never re-read.
        photo = dataclasses.replace(teacher.encoder_config("photo"), pretrained_weights=None, freeze_blocks=0)
        model = dataclasses.replace(cfg.model, embed_dim=teacher.embed_dim, normalize=teacher.normalize,
                                    shared_encoder=False, share_backbone=False, photo=photo)
        return dataclasses.replace(cfg, model=model)

    @classmethod
    def inputs(cls, cfg: Config) -> TaskInputs:
        base = super().inputs(cfg)
        teacher = read_meta(cfg.distill.teacher).config
        teacher_spec = RenderSpec(teacher.model.sketch.image_size, teacher.data.line_width, teacher.data.padding)
        needs_photos = bool(set(PHOTO_INPUTS) & term_inputs(cfg.loss.terms))
        return TaskInputs({**base.sketches, "teacher_sketch": teacher_spec},
                          base.photo_spec if needs_photos else None)

    def __init__(self, cfg: Config, context: TaskContext):
        super().__init__()
        teacher, _ = load_model(cfg.distill.teacher)
        self.model = create_model(cfg.model)
        self.model.encoder("photo").load_state_dict(teacher.encoder("photo").state_dict())
        self.model.encoder("photo").freeze()  # the teacher's photo space, unchanged
        if cfg.distill.init == "teacher":
            init_from_teacher(self.model.encoder("sketch"), teacher.encoder("sketch"), cfg.distill.teacher)
        teacher.keep_only("sketch").encoder("sketch").freeze()
        self.teacher = teacher
        self.criterion = self.build_criterion(cfg, context)

    def forward(self, batch: dict[str, torch.Tensor], progress: float) -> dict[str, torch.Tensor]:
        outputs = {"sketch": self.model.encode(batch["sketch"], "sketch"),
                   "label": batch["label"], "negative_label": batch["negative_label"]}
        with torch.no_grad():
            outputs["teacher_sketch"] = self.teacher.encode(batch["teacher_sketch"], "sketch")
            if all(name in batch for name in PHOTO_INPUTS):
                photos = self.model.encode(torch.cat([batch["positive"], batch["negative"]]), "photo")
                n = len(batch["positive"])
                outputs.update(positive=photos[:n], negative=photos[n:])
        return self.criterion(outputs, progress)


def init_from_teacher(student: torch.nn.Module, teacher: torch.nn.Module, where: str) -> int:
    """Copy every tensor of ``teacher`` whose name and shape ``student`` shares (``distill.init: teacher``);
    returns how many. ``ConfigError`` when the backbones share nothing (another architecture: use scratch)."""
    theirs = teacher.state_dict()
    mine = student.state_dict()
    shared = {k: v for k, v in theirs.items() if k in mine and mine[k].shape == v.shape}
    if not any(k.startswith("backbone.") for k in shared):
        raise ConfigError(f"distill.init=teacher: the student's sketch encoder shares no backbone tensor with "
                          f"the teacher's ({where}); give the teacher's backbone or distill.init=scratch")
    student.load_state_dict(shared, strict=False)
    logger.info("student sketch encoder initialised from the teacher: %d of %d tensors", len(shared), len(mine))
    return len(shared)
