"""Model registry: SBIR models are created by name, as in timm and open_clip.

``@register_model("name")`` marks a factory ``(ModelConfig) -> RetrievalModel``; ``create_model(cfg)`` builds the
one named by ``cfg.name``. New architectures plug in without touching training or serving code. The registry
also records each model's embedding kind, so a job can plan its index format without building the model.
The model section of a config is checked here when the config is loaded (:func:`check_model_section`).
"""

from __future__ import annotations

import difflib
from typing import Callable

import torch.nn as nn

from ray_sbir import fs
from ray_sbir.config import ModelConfig
from ray_sbir.models.base import EMBEDDING_KINDS, FLOAT
from ray_sbir.registry import ConfigError, Registry, register_section_check

MODELS: Registry[Callable[[ModelConfig], nn.Module]] = Registry("model", key="model.name", package="ray_sbir.models")


def register_model(name: str, embedding_kind: str = FLOAT, check: Callable[[ModelConfig], None] | None = None):
    """Decorator for a factory ``(ModelConfig) -> RetrievalModel``; ``check(model_cfg)`` raises
    :class:`ConfigError` for settings the model cannot be built with (run when a config is loaded)."""
    if embedding_kind not in EMBEDDING_KINDS:
        raise ValueError(f"unknown embedding kind {embedding_kind!r}; expected one of {EMBEDDING_KINDS}")
    return MODELS.register(name, embedding_kind=embedding_kind, check=check)


def model_embedding_kind(cfg: ModelConfig) -> str:
    """``float`` or ``binary``: what the model named by ``cfg.name`` returns (see ``RetrievalModel``)."""
    return MODELS.extra(cfg.name, "embedding_kind")


def list_models() -> list[str]:
    return MODELS.names()


def create_model(cfg: ModelConfig) -> nn.Module:
    return MODELS.get(cfg.name)(cfg)


def _check_encoder(where: str, backbone: str, weights: str | None, check_paths: bool) -> None:
    import timm

    if not timm.is_model(backbone):
        close = difflib.get_close_matches(backbone.split(".")[0], timm.list_models(), n=6, cutoff=0.6)
        raise ConfigError(f"{where}.backbone: {backbone!r} is not a timm model"
                          + (f"; similar names: {', '.join(close)}" if close else " (see timm.list_models())"))
    # The loader's own rule (models.pretrained.load_backbone_weights): a packaged weights name, timm's hub, or a
    # state-dict file.
    from ray_sbir.models.pretrained import PACKAGED_WEIGHTS

    if weights in PACKAGED_WEIGHTS and PACKAGED_WEIGHTS[weights] != backbone:
        raise ConfigError(f"{where}.pretrained_weights: {weights!r} holds {PACKAGED_WEIGHTS[weights]} weights, but "
                          f"{where}.backbone is {backbone!r}")
    if check_paths and weights and weights != "timm" and weights not in PACKAGED_WEIGHTS and not fs.exists(weights):
        raise ConfigError(f"{where}.pretrained_weights: no file {weights} (nor a packaged weights name: "
                          f"{', '.join(PACKAGED_WEIGHTS)}; nor timm)")


@register_section_check
def check_model_section(cfg, check_paths: bool) -> None:
    """``model.name``, each encoder's timm backbone and weights file, ``rerank.head``."""
    from ray_sbir.models.encoders import POOLS
    from ray_sbir.models.similarity import SIMILARITY_HEADS

    check = MODELS.extra(cfg.model.name, "check")
    if check is not None:
        check(cfg.model)
    for modality in ("sketch", "photo"):
        enc = getattr(cfg.model, modality)
        if enc is not None:
            _check_encoder(f"model.{modality}", enc.backbone, enc.pretrained_weights, check_paths)
            POOLS.get(enc.pool, f"model.{modality}.pool")
    SIMILARITY_HEADS.get(cfg.rerank.head)
