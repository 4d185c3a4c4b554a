"""Model registry: SBIR models are created by name, as in timm and open_clip.

``@register_model("name")`` marks a factory ``(ModelConfig) -> RetrievalModel``; ``create_model(cfg)`` builds the
one named by ``cfg.name``. New architectures plug in without touching training or serving code. The registry
also records each model's embedding kind, so a job can plan its index format without building the model.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from ray_sbir.config import ModelConfig
from ray_sbir.models.base import EMBEDDING_KINDS, FLOAT

_MODELS: dict[str, Callable[[ModelConfig], nn.Module]] = {}
_KINDS: dict[str, str] = {}


def register_model(name: str, embedding_kind: str = FLOAT):
    if embedding_kind not in EMBEDDING_KINDS:
        raise ValueError(f"unknown embedding kind {embedding_kind!r}; expected one of {EMBEDDING_KINDS}")

    def wrap(factory: Callable[[ModelConfig], nn.Module]):
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = factory
        _KINDS[name] = embedding_kind
        return factory

    return wrap


def model_embedding_kind(cfg: ModelConfig) -> str:
    """``float`` or ``binary``: what the model named by ``cfg.name`` returns (see ``RetrievalModel``)."""
    if cfg.name not in _KINDS:
        raise ValueError(f"unknown model {cfg.name!r} (model.name); registered: {', '.join(list_models())}")
    return _KINDS[cfg.name]


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(cfg: ModelConfig) -> nn.Module:
    try:
        factory = _MODELS[cfg.name]
    except KeyError:
        raise ValueError(f"unknown model {cfg.name!r} (model.name); registered: {', '.join(list_models())}") from None
    return factory(cfg)
