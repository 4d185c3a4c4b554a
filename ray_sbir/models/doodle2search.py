"""The Doodle-to-Search model (Dey et al., CVPR 2019): two CNN encoders with soft attention.

Each encoder is a timm backbone -> soft spatial attention -> global average pooling -> embedding head ->
L2 normalisation. The sketch and photo encoders have separate weights by default but start from the same
weights (same pretrained backbone, same head initialisation): the untrained model then scores exactly what
the pretrained features score, and SBIR training only has to improve on that.
"""

from __future__ import annotations

import copy

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from ray_sbir.config import ModelConfig
from ray_sbir.models.pretrained import load_backbone_weights
from ray_sbir.models.registry import register_model

SKETCH, PHOTO = "sketch", "photo"
MODALITIES = (SKETCH, PHOTO)


class SoftAttention(nn.Module):
    """1x1 conv -> ReLU -> 1x1 conv -> softmax over positions; returns ``x + x * mask`` and the mask.

    The residual form keeps the backbone's features intact at initialisation-scale masks, so attention can
    only re-weight positions, not erase the signal."""

    def __init__(self, channels: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or max(channels // 8, 16)
        self.conv1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.conv2 = nn.Conv2d(hidden, 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = x.shape
        logits = self.conv2(F.relu(self.conv1(x)))
        mask = torch.softmax(logits.view(b, 1, h * w), dim=-1).view(b, 1, h, w)
        return x + x * mask, mask


class Encoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        # num_classes=0/global_pool='' -> forward_features gives the spatial map the attention needs.
        self.backbone = timm.create_model(cfg.backbone, pretrained=False, num_classes=0, global_pool="")
        if cfg.pretrained_weights:
            load_backbone_weights(self.backbone, cfg.backbone, cfg.pretrained_weights)
        channels = self.backbone.num_features
        self.attention = SoftAttention(channels) if cfg.attention else None
        self.head = nn.Linear(channels, cfg.embed_dim)
        self.norm = nn.BatchNorm1d(cfg.embed_dim) if cfg.batch_norm else None
        self.frozen_blocks = cfg.freeze_blocks
        if cfg.freeze_blocks:
            self._freeze(cfg.freeze_blocks)

    def _freeze(self, n: int) -> None:
        blocks = getattr(self.backbone, "blocks", None) or getattr(self.backbone, "stages", None)
        if blocks is None:
            raise ValueError(f"model.freeze_blocks needs a backbone with `blocks`/`stages`; {type(self.backbone)}")
        if n > len(blocks):
            raise ValueError(f"model.freeze_blocks={n} but the backbone has {len(blocks)} blocks")
        stem = [m for name, m in self.backbone.named_children() if name in ("conv_stem", "bn1", "stem")]
        for module in [*stem, *list(blocks)[:n]]:
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen_blocks:  # frozen layers keep their pretrained BatchNorm statistics
            blocks = getattr(self.backbone, "blocks", None) or getattr(self.backbone, "stages", None)
            for name, m in self.backbone.named_children():
                if name in ("conv_stem", "bn1", "stem"):
                    m.eval()
            for m in list(blocks)[: self.frozen_blocks]:
                m.eval()
        return self

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        feats = self.backbone.forward_features(x)
        mask = None
        if self.attention is not None:
            feats, mask = self.attention(feats)
        emb = self.head(feats.mean(dim=(2, 3)))
        if self.norm is not None:
            emb = self.norm(emb)
        emb = F.normalize(emb.float(), dim=-1)
        return (emb, mask) if return_attention else emb


class SBIRModel(nn.Module):
    """Sketch and photo encoders; ``encode(x, modality)`` returns L2-normalised embeddings."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.sketch_encoder = Encoder(cfg)
        # deepcopy (not a second Encoder()) so both start from identical weights, heads included.
        self.photo_encoder = self.sketch_encoder if cfg.shared_encoder else copy.deepcopy(self.sketch_encoder)

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    def encoder(self, modality: str) -> Encoder:
        if modality == SKETCH:
            return self.sketch_encoder
        if modality == PHOTO:
            return self.photo_encoder
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")

    def encode(self, x: torch.Tensor, modality: str) -> torch.Tensor:
        return self.encoder(modality)(x)

    def forward(self, sketch: torch.Tensor, photo: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sketch_encoder(sketch), self.photo_encoder(photo)


@register_model("doodle2search")
def doodle2search(cfg: ModelConfig) -> SBIRModel:
    return SBIRModel(cfg)
