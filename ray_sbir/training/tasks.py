"""Training tasks: what one training step computes, in a registry.

A task is an ``nn.Module`` that holds the model being trained (``model``: what checkpoints save, and what
``embed``, ``evaluate`` and ``serve`` load), the loss (``criterion``, a :class:`~ray_sbir.losses.CompositeLoss`)
and anything else the step needs (a frozen teacher). ``forward(batch, progress)`` turns one batch of model
inputs into the named loss terms, ``"loss"`` among them. The whole task is what DDP wraps, so the loss heads
are synchronised with the encoders. Tasks know nothing of Ray: the Ray Train loop (``ray_sbir.distributed.train``) calls
the plain functions of ``ray_sbir.training.step`` on them, and tests call them directly.

Adding a task: subclass :class:`Task` in one module, decorate it with ``@register_task("name")``, import the
module in ``ray_sbir/training/__init__.py``; ``train.task: name`` selects it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from ray_sbir import fs
from ray_sbir.config import Config, ConfigError
from ray_sbir.data.samplers import create_sampler, sampler_options
from ray_sbir.data.decode import RenderSpec, render_spec
from ray_sbir.losses import CompositeLoss, TermContext, terms_need_class_vectors
from ray_sbir.models import RetrievalModel
from ray_sbir.registry import Registry, register_section_check
from ray_sbir.training.validation import validation_metrics

PHOTO_INPUTS = ("positive", "negative")
LABEL_INPUTS = ("label", "negative_label")


@dataclass
class TaskInputs:
    """The images one training batch must carry: each named sketch rendering with its spec, and the
    photos (``photo_names``: the batch sampler's, ``positive`` and ``negative`` for triplets) at ``photo_spec``
    (None: the task needs no photos), with the sampler's label columns."""

    sketches: dict[str, RenderSpec]
    photo_spec: RenderSpec | None
    photo_names: tuple[str, ...] = PHOTO_INPUTS
    label_names: tuple[str, ...] = LABEL_INPUTS

    @property
    def image_names(self) -> list[str]:
        return [*self.sketches, *(self.photo_names if self.photo_spec else ())]


@dataclass
class TaskContext:
    """What the driver derived from the data: training classes (label order) and their word vectors."""

    classes: list[str]
    class_vectors: np.ndarray | None = None
    extras: dict = field(default_factory=dict)


class Task(nn.Module):
    registered_name: str = ""  # set by the registry (@register_task)
    # Tensors forward() gives the loss terms (a term needing anything else is a configuration error).
    outputs: tuple[str, ...] = ()
    # Config keys naming checkpoints the task reads (checked to exist when the config is loaded).
    input_checkpoints: tuple[str, ...] = ()
    # Batch samplers (data.sampler.name, ray_sbir.data.samplers) whose batches the task can train on.
    samplers: tuple[str, ...] = ("triplet",)

    model: RetrievalModel
    criterion: CompositeLoss

    @property
    def name(self) -> str:
        return self.registered_name

    # ---- driver side: called before any worker starts

    @classmethod
    def check_config(cls, cfg: Config) -> None:
        """Raise :class:`ConfigError` for settings this task cannot run with."""

    @classmethod
    def prepare_config(cls, cfg: Config) -> Config:
        """The run's resolved config (what checkpoints record); by default ``cfg`` itself."""
        return cfg

    @classmethod
    def inputs(cls, cfg: Config) -> TaskInputs:
        sampler = create_sampler(cfg)
        return TaskInputs({"sketch": render_spec(cfg, "sketch")}, render_spec(cfg, "photo"), sampler.photo_inputs,
                          sampler.label_inputs)

    @classmethod
    def needs_class_vectors(cls, cfg: Config) -> bool:
        return bool(terms_need_class_vectors(cfg.loss.terms))

    # ---- worker side

    def build_criterion(self, cfg: Config, context: TaskContext) -> CompositeLoss:
        vectors = None if context.class_vectors is None else torch.tensor(np.asarray(context.class_vectors))
        criterion = CompositeLoss(cfg.loss.terms, TermContext(cfg.model.embed_dim, self.model.unit_norm, vectors,
                                                              num_classes=len(context.classes), model=self.model))
        missing = sorted(criterion.inputs - set(self.outputs))
        if missing:
            raise ConfigError(f"loss.terms need {missing}, which task {self.name!r} does not produce "
                              f"(it gives {list(self.outputs)})")
        return criterion

    def forward(self, batch: dict[str, torch.Tensor], progress: float) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def validate(self, sketch_batches, photo_batches, device: torch.device, cfg: Config) -> dict[str, float]:
        """Validation metrics on held-out classes (``val_map`` picks the best checkpoint): by default the
        model's retrieval, scored as search scores it."""
        return validation_metrics(self.model, sketch_batches, photo_batches, device, cfg)

    def parameter_groups(self, lr: float, backbone_lr_mult: float) -> list[dict]:
        """Trainable parameters: pretrained backbones at ``lr * backbone_lr_mult``, new heads and loss heads at
        ``lr`` (``base_lr`` kept for the schedule)."""
        backbone, heads = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (backbone if ".backbone." in f".{name}" else heads).append(p)
        heads += [p for p in self.criterion.parameters() if p.requires_grad]
        mult = backbone_lr_mult
        return [{"params": backbone, "lr": lr * mult, "base_lr": lr * mult}, {"params": heads, "lr": lr, "base_lr": lr}]

    def trainable_state(self) -> dict:
        """What a checkpoint stores to resume: the model and the loss heads (a frozen teacher is not saved)."""
        return {"model": self.model.state_dict(), "criterion": self.criterion.state_dict()}

    def load_trainable_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.criterion.load_state_dict(state["criterion"])


TASKS: Registry[type[Task]] = Registry("training task", key="train.task", package="ray_sbir.training")


def register_task(name: str):
    return TASKS.register(name)


def list_tasks() -> list[str]:
    return TASKS.names()


def task_class(name: str) -> type[Task]:
    return TASKS.get(name)


@register_section_check
def validate_task(cfg: Config, check_paths: bool = False) -> None:
    """``train.task`` is registered and the task can run with ``cfg`` (its own ``check_config``)."""
    task = task_class(cfg.train.task)
    sampler = sampler_options(cfg.data.sampler).name
    if sampler not in task.samplers:
        raise ConfigError(f"data.sampler.name: train.task={cfg.train.task} trains on {' or '.join(task.samplers)} "
                          f"batches, got {sampler!r}")
    task.check_config(cfg)
    if check_paths:
        from ray_sbir.checkpoint import resolve_checkpoint

        for key in task.input_checkpoints:
            section, name = key.split(".")
            uri = getattr(getattr(cfg, section), name)
            if not fs.exists(fs.join(resolve_checkpoint(uri), "meta.json")):
                raise ConfigError(f"{key}: no checkpoint at {uri} (expected a checkpoint folder with meta.json, "
                                  "or a run folder holding checkpoints)")


def check_training_inputs(cfg: Config) -> None:
    """What training reads beyond the config's own paths: the class word vectors when the task needs them
    (``class_vectors.txt`` in the dataset root unless ``data.word_vectors`` names a file, checked at load)."""
    if task_class(cfg.train.task).needs_class_vectors(cfg) and not cfg.data.word_vectors:
        default = fs.join(cfg.data.root, "class_vectors.txt")
        if not fs.exists(default):
            names = terms_need_class_vectors(cfg.loss.terms)
            terms = "loss term needs" if len(names) == 1 else "loss terms need"
            raise ConfigError(f"data.word_vectors: the {' and '.join(names)} {terms} class word vectors and "
                              f"{default} does not exist; set data.word_vectors (scripts/make_class_vectors.py makes "
                              f"them) or turn {'it' if len(names) == 1 else 'them'} off "
                              f"({', '.join(f'loss.terms.{n}.weight=0' for n in names)})")


def create_task(cfg: Config, context: TaskContext) -> Task:
    return task_class(cfg.train.task)(cfg, context)
