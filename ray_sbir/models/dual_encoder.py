"""A sketch encoder and a photo encoder into one embedding space (Doodle to Search, Dey et al., CVPR 2019).

Each modality has its own :class:`~ray_sbir.models.encoders.Encoder` configuration, so the two may differ:
a small sketch backbone beside a bigger photo backbone (Seddati et al. 2023 find the photo domain needs the
higher capacity), other input sizes, other pretrained weights, other frozen blocks. When the photo section is
left out, the photo encoder is built like the sketch encoder and starts from identical weights (heads
included): the untrained model then scores exactly what the pretrained features score, and SBIR training only
has to improve on that. ``shared_encoder`` uses one encoder for both.

``share_backbone``: one backbone network for both modalities, with per-modality normalisation layers (each
modality keeps its own BatchNorm / LayerNorm weights and statistics), pooling and embedding head: the
convolution and linear weights of the backbone are the same parameters on both sides, so the model has one
backbone's weights, both sides start in one space, and each modality still normalises its own activations
(sketches and photos have very different statistics).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ray_sbir.config import ConfigError, ModelConfig
from ray_sbir.models.base import BINARY, PHOTO, SKETCH, RetrievalModel, check_modality
from ray_sbir.models.encoders import Encoder
from ray_sbir.models.registry import register_model


class DualEncoder(RetrievalModel):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.sketch_encoder = Encoder(cfg.sketch, cfg.embed_dim, cfg.normalize)
        if cfg.shared_encoder:
            self.photo_encoder = self.sketch_encoder
        elif cfg.share_backbone:
            self.photo_encoder = copy.deepcopy(self.sketch_encoder)
            tie_backbone_weights(self.photo_encoder.backbone, self.sketch_encoder.backbone)
        elif cfg.photo is None:
            # deepcopy (not a second Encoder()) so both start from identical weights, heads included.
            self.photo_encoder = copy.deepcopy(self.sketch_encoder)
        else:
            self.photo_encoder = Encoder(cfg.photo, cfg.embed_dim, cfg.normalize)

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    @property
    def unit_norm(self) -> bool:
        return self.cfg.unit_norm

    def input_size(self, modality: str) -> int:
        return self.cfg.encoder_config(check_modality(modality)).image_size

    def encoder(self, modality: str) -> Encoder:
        enc = self.sketch_encoder if check_modality(modality) == SKETCH else self.photo_encoder
        if enc is None:
            raise ValueError(f"this model was reduced to the other modality (keep_only); no {modality} encoder")
        return enc

    def encode(self, images: torch.Tensor, modality: str) -> torch.Tensor:
        return self.encoder(modality)(images)

    def encode_with_features(self, images: torch.Tensor, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(modality)(images, return_features=True)

    def backbone_features(self, modality: str) -> nn.Module:
        return self.encoder(modality).backbone_features()

    def pretrained_classifier(self, modality: str):
        from ray_sbir.models.pretrained import load_classifier

        return load_classifier(self.cfg.encoder_config(modality).pretrained_weights)

    def keep_only(self, modality: str) -> "DualEncoder":
        if check_modality(modality) == SKETCH and self.photo_encoder is not self.sketch_encoder:
            self.photo_encoder = None
        elif modality == PHOTO and self.photo_encoder is not self.sketch_encoder:
            self.sketch_encoder = None
        return self


NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def tie_backbone_weights(copy_: nn.Module, source: nn.Module) -> None:
    """Make every parameter of ``copy_`` (a deep copy of ``source``) outside its normalisation layers the very
    parameter of ``source`` (one set of weights, trained by both modalities); normalisation layers stay apart."""
    theirs = dict(source.named_modules())
    for name, module in copy_.named_modules():
        if isinstance(module, NORM_LAYERS):
            continue
        for pname, _ in list(module.named_parameters(recurse=False)):
            setattr(module, pname, getattr(theirs[name], pname))


@register_model("dual_encoder")
def dual_encoder(cfg: ModelConfig) -> DualEncoder:
    return DualEncoder(cfg)


class HashDualEncoder(DualEncoder):
    """The dual encoder with a hash layer: ``embed_dim`` bits, ``tanh`` relaxation while training (SSAH, Li et
    al., CVPR 2018), ``sign`` when indexing and searching (Hamming distance)."""

    embedding_kind = BINARY

    def __init__(self, cfg: ModelConfig):
        check_hash_config(cfg)
        super().__init__(cfg)


def check_hash_config(cfg: ModelConfig) -> None:
    if cfg.normalize != "tanh":
        raise ConfigError(f"model.normalize: hash_dual_encoder needs tanh (the relaxed code), got {cfg.normalize!r}")
    if not 8 <= cfg.embed_dim <= 256:
        raise ConfigError(f"model.embed_dim: hash_dual_encoder's code length in bits must be 8-256, got "
                          f"{cfg.embed_dim}")


@register_model("hash_dual_encoder", embedding_kind=BINARY, check=check_hash_config)
def hash_dual_encoder(cfg: ModelConfig) -> HashDualEncoder:
    return HashDualEncoder(cfg)
