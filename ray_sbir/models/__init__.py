"""Models: created by name from the registry (``create_model(cfg)``), used through one interface
(:class:`~ray_sbir.models.base.RetrievalModel`); plain PyTorch, no Ray."""

from ray_sbir.models.base import BINARY, EMBEDDING_KINDS, FLOAT, MODALITIES, PHOTO, SKETCH, RetrievalModel
from ray_sbir.models.registry import create_model, list_models, model_embedding_kind, register_model

# Importing a model module registers it.
from ray_sbir.models import dual_encoder, similarity  # noqa: E402,F401  isort: skip

__all__ = [
    "BINARY", "EMBEDDING_KINDS", "FLOAT", "MODALITIES", "PHOTO", "SKETCH", "RetrievalModel",
    "create_model", "list_models", "model_embedding_kind", "register_model",
]
