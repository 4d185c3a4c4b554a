"""The interface every SBIR model implements, and every caller uses.

Training tasks, the embedding job, QuickDraw indexing, evaluation and serving only call what is defined here:
they never reach into a model's sub-modules. A new architecture is one module that subclasses
:class:`RetrievalModel` and registers a factory (``ray_sbir.models.registry``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

SKETCH, PHOTO = "sketch", "photo"
MODALITIES = (SKETCH, PHOTO)

FLOAT = "float"  # dense float vectors, scored by inner product
BINARY = "binary"  # hash codes: encode() returns their relaxation in (-1, 1), the bits are its signs (Hamming)
EMBEDDING_KINDS = (FLOAT, BINARY)


def device_for(use_gpu: bool) -> torch.device:
    """Where a model or a search shard runs: CUDA when asked for and present, else the CPU (every path runs on
    both; tests run the CPU one)."""
    return torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")


def check_modality(modality: str) -> str:
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
    return modality


class RetrievalModel(nn.Module):
    """Encodes images of either modality into one embedding space.

    ``encode(images, modality)`` takes normalised float images ``[B, 3, S, S]`` (``ray_sbir.data.images
    .to_model_input``) at ``input_size(modality)`` and returns ``[B, embed_dim]``. For ``embedding_kind``
    ``float`` the retrieval score of a query and an item is the inner product of what ``encode`` returns
    (cosine when ``unit_norm``), in training, evaluation and search alike; for ``binary`` it is the Hamming
    distance of the signs of what ``encode`` returns (``embed_dim`` bits; ``ray_sbir.search.hamming.pack_codes``).
    """

    embedding_kind: str = FLOAT

    @property
    def embed_dim(self) -> int:
        raise NotImplementedError

    @property
    def unit_norm(self) -> bool:
        """Whether embeddings are L2-normalised (then Euclidean distance and inner product rank alike)."""
        raise NotImplementedError

    def input_size(self, modality: str) -> int:
        """Side in pixels of the square images ``encode`` expects for ``modality``."""
        raise NotImplementedError

    def encode(self, images: torch.Tensor, modality: str) -> torch.Tensor:
        raise NotImplementedError

    def encode_with_features(self, images: torch.Tensor, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``encode``'s embedding and the backbone's globally pooled features ``[B, C]`` (what the backbone's
        ImageNet classifier reads: the knowledge-preservation loss term's input)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose backbone features")

    def backbone_features(self, modality: str) -> nn.Module:
        """A module mapping ``modality``'s images to the features of :meth:`encode_with_features` (sharing this
        model's weights: a deep copy taken before training is a frozen teacher)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose backbone features")

    def pretrained_classifier(self, modality: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The ImageNet classifier ``(weight [classes, C], bias [classes])`` shipped with ``modality``'s
        pretrained backbone weights, or None where they have none."""
        return None

    def keep_only(self, modality: str) -> "RetrievalModel":
        """Drop the weights only the other modality needs (a serving replica encodes sketches only)."""
        return self

    def describe(self) -> dict:
        """What the model is, for checkpoints, ``/info`` and logs."""
        return {"embed_dim": self.embed_dim, "embedding_kind": self.embedding_kind, "unit_norm": self.unit_norm,
                "input_size": {m: self.input_size(m) for m in MODALITIES}}
