"""Model registry: SBIR models are created by name, as in timm and open_clip.

``@register_model("name")`` marks a factory ``(ModelConfig) -> RetrievalModel``; ``create_model(cfg)`` builds the
one named by ``cfg.name``. New architectures plug in without touching training or serving code.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from ray_sbir.config import ModelConfig

_MODELS: dict[str, Callable[[ModelConfig], nn.Module]] = {}


def register_model(name: str):
    def wrap(factory: Callable[[ModelConfig], nn.Module]):
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = factory
        return factory

    return wrap


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(cfg: ModelConfig) -> nn.Module:
    try:
        factory = _MODELS[cfg.name]
    except KeyError:
        raise ValueError(f"unknown model {cfg.name!r} (model.name); registered: {', '.join(list_models())}") from None
    return factory(cfg)
