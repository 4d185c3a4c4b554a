"""One modality's encoder: any timm backbone -> pooling -> linear embedding head -> normalisation.

Backbones are created by name with timm (``timm.create_model(name, num_classes=0, global_pool='')``, options
from ``EncoderConfig.backbone_args`` passed through), so every timm model whose ``forward_features`` returns
a CNN feature map ``[B, C, H, W]`` or a token sequence ``[B, N, C]`` (ViTs, DeiT, CLIP and DINOv2 image
towers) works. Pooling:

- ``attention``: the soft spatial attention of Doodle to Search (Dey et al., CVPR 2019, Sec. 3.1): a 1x1-conv
  MLP scores each position, softmax over positions, ``x + x * mask``, then the average. On a ViT the patch
  tokens are the positions (prefix tokens such as the class token are left out). The residual form starts as
  plain average pooling, so an untrained head scores what the pretrained features score.
- ``mean``: the average of the map, or of the patch tokens.
- ``token``: a ViT's class token (the first prefix token).

Embedding normalisation (``ModelConfig.normalize``): ``l2`` (unit vectors), ``batchnorm`` (BatchNorm1d on the
embedding instead of L2: Seddati et al., "A Recipe for Efficient SBIR Models", arXiv 2305.18988),
``batchnorm_l2`` (both), or ``tanh``: the continuous relaxation of a hash layer (SSAH, Li et al., CVPR 2018,
Sec. 3: ``H = tanh(W f)``; the bits are ``sign(H)``). Frozen backbone groups follow timm's own coarse ``group_matcher`` (stem, then
stages/blocks) and keep their pretrained BatchNorm statistics.
"""

from __future__ import annotations

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import group_modules, group_parameters

from ray_sbir.config import EncoderConfig
from ray_sbir.models.pretrained import load_backbone_weights
from ray_sbir.registry import Registry


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


def create_backbone(cfg: EncoderConfig) -> nn.Module:
    """``timm.create_model`` without classifier or pooling; ``img_size`` passed to models that take it (ViTs)."""
    kwargs = dict(cfg.backbone_args)
    pretrained = cfg.pretrained_weights == "timm"  # timm's own weights: downloads from the hub
    try:
        backbone = timm.create_model(cfg.backbone, pretrained=pretrained, num_classes=0, global_pool="",
                                     **{"img_size": cfg.image_size, **kwargs})
    except TypeError as e:  # CNNs take any input size and have no img_size argument
        if "img_size" not in str(e):
            raise
        backbone = timm.create_model(cfg.backbone, pretrained=pretrained, num_classes=0, global_pool="", **kwargs)
    except RuntimeError as e:
        if not pretrained:
            raise
        raise RuntimeError(f"pretrained_weights=timm: timm could not load weights for {cfg.backbone!r} ({e}); "
                           "give a local weights file instead where the machine has no network") from e
    if cfg.pretrained_weights and not pretrained:
        load_backbone_weights(backbone, cfg.backbone, cfg.pretrained_weights)
    return backbone


def _frozen_groups(backbone: nn.Module, n: int, backbone_name: str) -> list[int]:
    if not hasattr(backbone, "group_matcher"):
        raise ValueError(f"freeze_blocks needs a timm backbone with a group_matcher; {backbone_name!r} has none")
    groups = sorted(group_parameters(backbone, backbone.group_matcher(coarse=True)))
    if n == -1:
        return groups
    if n + 1 > len(groups):
        raise ValueError(f"freeze_blocks={n}, but {backbone_name!r} has {len(groups) - 1} block groups after its stem")
    return groups[: n + 1]  # the stem, then n groups

# Poolings by name (EncoderConfig.pool): a module built from the backbone's channel count, called with the
# feature map ``[B, C, H, W]`` (ViT patch tokens as ``[B, C, N, 1]``) and the raw tokens (None for CNNs),
# returning ``([B, C] pooled features, attention mask or None)``.
POOLS: Registry = Registry("pooling", key="model.sketch.pool", package="ray_sbir.models")


@POOLS.register("attention")
class AttentionPool(SoftAttention):
    """Doodle to Search's soft attention, then the average (its weights keep SoftAttention's names)."""

    def forward(self, feats: torch.Tensor, tokens: torch.Tensor | None = None):
        feats, mask = super().forward(feats)
        return feats.mean(dim=(2, 3)), mask


@POOLS.register("mean")
class MeanPool(nn.Module):
    def __init__(self, channels: int):
        super().__init__()

    def forward(self, feats: torch.Tensor, tokens: torch.Tensor | None = None):
        return feats.mean(dim=(2, 3)), None


@POOLS.register("token", needs_class_token=True)
class ClassTokenPool(MeanPool):
    """A ViT's class token (the first prefix token)."""

    def forward(self, feats: torch.Tensor, tokens: torch.Tensor | None = None):
        if tokens is None:
            raise ValueError("pool=token needs a token backbone (a ViT)")
        return tokens[:, 0], None


class Encoder(nn.Module):
    """Backbone -> pooling -> ``Linear(C, embed_dim)`` -> BatchNorm1d (optional) -> L2 or tanh (optional)."""

    def __init__(self, cfg: EncoderConfig, embed_dim: int, normalize: str = "l2"):
        super().__init__()
        self.cfg = cfg
        self.image_size = cfg.image_size
        self.backbone = create_backbone(cfg)
        self.prefix_tokens = int(getattr(self.backbone, "num_prefix_tokens", 0))
        if POOLS.extra(cfg.pool, "needs_class_token") and self.prefix_tokens < 1:
            raise ValueError(f"pool={cfg.pool} needs a backbone with a class token; {cfg.backbone!r} has none")
        channels = self.backbone.num_features
        # Named `attention` so that checkpoints keep their parameter names (attention.conv1, ...).
        self.attention = POOLS.get(cfg.pool)(channels)
        self.head = nn.Linear(channels, embed_dim)
        self.norm = nn.BatchNorm1d(embed_dim) if normalize.startswith("batchnorm") else None
        self.l2 = normalize in ("l2", "batchnorm_l2")
        self.tanh = normalize == "tanh"
        self._frozen_modules: list[nn.Module] = []
        if cfg.freeze_blocks:
            self._freeze(cfg.freeze_blocks)

    def _freeze(self, n: int) -> None:
        matcher = self.backbone.group_matcher(coarse=True) if hasattr(self.backbone, "group_matcher") else None
        frozen = set(_frozen_groups(self.backbone, n, self.cfg.backbone))
        params = dict(self.backbone.named_parameters())
        for gid, names in group_parameters(self.backbone, matcher).items():
            if gid in frozen:
                for name in names:
                    params[name].requires_grad_(False)
        modules = dict(self.backbone.named_modules())
        self._frozen_modules = [modules[name] for gid, names in group_modules(self.backbone, matcher).items()
                                if gid in frozen for name in names]

    def freeze(self) -> "Encoder":
        """Freeze the whole encoder (weights and BatchNorm statistics), for good: ``train()`` keeps it in eval."""
        self.requires_grad_(False)
        self._frozen_modules = [self]
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self._frozen_modules:  # frozen layers keep their pretrained BatchNorm statistics
            nn.Module.train(m, False)
        return self

    def backbone_features(self) -> "BackboneFeatures":
        """The backbone's globally pooled features as a module (sharing this encoder's backbone): what the
        backbone's ImageNet classifier reads. A deep copy taken before training is a frozen teacher."""
        return BackboneFeatures(self.backbone, self.prefix_tokens)

    def forward(self, x: torch.Tensor, return_attention: bool = False, return_features: bool = False):
        """The embedding; with ``return_attention`` also the attention mask (``[B, 1, H, W]`` or None), with
        ``return_features`` also the globally pooled backbone features ``[B, C]`` (:class:`BackboneFeatures`)."""
        feats, tokens = feature_map(self.backbone, x, self.prefix_tokens)
        pooled, mask = self.attention(feats, tokens)
        emb = self.head(pooled)
        if self.norm is not None:
            emb = self.norm(emb)
        emb = emb.float()
        if self.l2:
            emb = F.normalize(emb, dim=-1)
        elif self.tanh:
            emb = torch.tanh(emb)
        extra = (mask,) * return_attention + (global_pool(feats, tokens, self.prefix_tokens),) * return_features
        return (emb, *extra) if extra else emb


def feature_map(backbone: nn.Module, x: torch.Tensor, prefix_tokens: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``backbone.forward_features`` as a ``[B, C, H, W]`` map (a ViT's patch tokens as ``[B, C, N, 1]``) and the
    raw tokens (None for CNNs)."""
    feats, tokens = backbone.forward_features(x), None
    if feats.ndim == 3:  # tokens [B, N, C]
        tokens = feats
        feats = tokens[:, prefix_tokens:].transpose(1, 2).unsqueeze(-1)  # [B, C, N, 1]: the positions
    elif getattr(backbone, "output_fmt", "NCHW") == "NHWC":
        feats = feats.permute(0, 3, 1, 2)
    return feats, tokens


def global_pool(feats: torch.Tensor, tokens: torch.Tensor | None, prefix_tokens: int) -> torch.Tensor:
    """What a timm classifier head reads: the class token of a ViT that has one, else the average."""
    if tokens is not None and prefix_tokens:
        return tokens[:, 0]
    return feats.mean(dim=(2, 3))


class BackboneFeatures(nn.Module):
    """Images -> the backbone's globally pooled features ``[B, C]``."""

    def __init__(self, backbone: nn.Module, prefix_tokens: int = 0):
        super().__init__()
        self.backbone = backbone
        self.prefix_tokens = prefix_tokens

    @property
    def num_features(self) -> int:
        return int(self.backbone.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats, tokens = feature_map(self.backbone, x, self.prefix_tokens)
        return global_pool(feats, tokens, self.prefix_tokens)
