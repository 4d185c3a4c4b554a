"""Models: created by name from the registry (``create_model(cfg)``); plain PyTorch, no Ray."""

from ray_sbir.models.doodle2search import MODALITIES, PHOTO, SKETCH, Encoder, SBIRModel, SoftAttention
from ray_sbir.models.registry import create_model, list_models, register_model

__all__ = [
    "MODALITIES", "PHOTO", "SKETCH", "Encoder", "SBIRModel", "SoftAttention",
    "create_model", "list_models", "register_model",
]
