"""Checkpoints: a folder with ``state.pt`` (tensors only) and ``meta.json`` (epoch, config, classes, metrics).

``state.pt`` holds plain state dicts (``model``, and to resume: ``criterion``, ``optimizer``, ``scaler``), so it
loads with ``torch.load(weights_only=True)``: a checkpoint from object storage can never run pickled code.
``meta.json`` records the run's resolved config (with ``train.task`` and the full ``model`` section), so
:func:`load_model` rebuilds the model of any task with no other input. The folder is what Ray Train persists
to the run's storage.

Wherever a checkpoint is asked for (``--checkpoint``, ``distill.teacher``, ``rerank.encoder``, serving), a Ray
Train **run folder** works too: it stands for its best checkpoint (:func:`resolve_checkpoint`), so commands
need not name an epoch that ``train.checkpoints_to_keep`` may have deleted.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
from dataclasses import dataclass

import torch

from ray_sbir import fs
from ray_sbir.config import Config, ConfigError, config_from_dict
from ray_sbir.models import RetrievalModel, create_model

logger = logging.getLogger("ray_sbir.checkpoint")

STATE_FILE = "state.pt"
META_FILE = "meta.json"
FORMAT_VERSION = 2


@dataclass
class CheckpointMeta:
    epoch: int
    config: Config
    classes: list[str]  # training classes, in label-index order
    metrics: dict

    @property
    def task(self) -> str:
        return self.config.train.task

    def apply_to(self, cfg: Config) -> Config:
        """``cfg`` with this checkpoint's model and input rendering (size, line width, padding), not the config
        file's: what embedding or evaluating with the checkpoint must use."""
        cfg.model, cfg.data.line_width, cfg.data.padding = (self.config.model, self.config.data.line_width,
                                                            self.config.data.padding)
        return cfg

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, "epoch": self.epoch, "task": self.task,
                "config": self.config.to_dict(), "classes": self.classes, "metrics": self.metrics}


def write_checkpoint(folder: str, state: dict, meta: CheckpointMeta) -> None:
    """``state``: ``{"model": ..., "criterion": ..., "optimizer": ..., "scaler": ...}`` state dicts (model required)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    fs.write_bytes(fs.join(folder, STATE_FILE), buf.getvalue())
    fs.write_text(fs.join(folder, META_FILE), json.dumps(meta.to_dict(), indent=2))


def resolve_checkpoint(folder: str) -> str:
    """``folder`` when it is a checkpoint (it has ``meta.json``); a run folder (``checkpoint_*`` folders inside)
    -> its best checkpoint: the highest validation ``score`` its ``meta.json`` records (the latest epoch among
    equals), as Ray Train ranks them. Anything else is returned as it is, for the reader's error to name."""
    if fs.exists(fs.join(folder, META_FILE)) or not fs.exists(folder):
        return folder
    candidates = []
    for d in _checkpoint_dirs(folder):
        try:
            meta = json.loads(fs.read_text(fs.join(d, META_FILE)))
            score = float(meta.get("metrics", {}).get("score", float("nan")))
        except (ValueError, TypeError, AttributeError):
            continue  # a damaged checkpoint is never the best one
        candidates.append((-math.inf if math.isnan(score) else score, int(meta.get("epoch", -1)), d))
    if not candidates:
        return folder
    score, epoch, best = max(candidates)
    logger.info("run folder %s: its best checkpoint is %s (epoch %d, score %.4f, of %d)", folder, best, epoch + 1,
                score, len(candidates))
    return best


def read_meta(folder: str) -> CheckpointMeta:
    folder = resolve_checkpoint(folder)
    uri = fs.join(folder, META_FILE)
    if not fs.exists(uri):
        raise FileNotFoundError(f"not a ray-sbir checkpoint (no {META_FILE}): {folder}")
    try:
        d = json.loads(fs.read_text(uri))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{uri} is not valid JSON ({e}): not a ray-sbir checkpoint, or a damaged one") from None
    if not isinstance(d, dict) or not {"epoch", "config", "classes"} <= set(d):
        raise ConfigError(f"{uri} lacks epoch, config or classes: not a ray-sbir checkpoint's meta.json")
    if d.get("format_version", 1) < FORMAT_VERSION:
        raise ConfigError(f"{folder} was written by an older ray-sbir (flat model/loss config, checkpoint format 1); "
                          "this version cannot rebuild its model: train it again with the current version")
    try:
        config = config_from_dict(d["config"])
    except ConfigError as e:
        raise ConfigError(f"{uri}: {e}") from None
    return CheckpointMeta(epoch=d["epoch"], config=config, classes=d["classes"], metrics=d.get("metrics", {}))


def read_state(folder: str) -> dict:
    folder = resolve_checkpoint(folder)
    uri = fs.join(folder, STATE_FILE)
    if not fs.exists(uri):
        raise FileNotFoundError(f"not a ray-sbir checkpoint (no {STATE_FILE}): {folder}")
    return torch.load(io.BytesIO(fs.read_bytes(uri)), map_location="cpu", weights_only=True)


def model_config_for_loading(config: Config):
    """The checkpoint's model config without pretrained-weight sources: the checkpoint holds every weight, and
    the pretrained file (or the network, for timm's weights) may not exist where it is loaded."""
    m = config.model
    photo = None if m.photo is None else dataclasses.replace(m.photo, pretrained_weights=None)
    return dataclasses.replace(m, sketch=dataclasses.replace(m.sketch, pretrained_weights=None), photo=photo)


def load_model(folder: str, device: str | torch.device = "cpu") -> tuple[RetrievalModel, CheckpointMeta]:
    """Rebuild the model of a checkpoint folder (local or URI) of any task, weights loaded, in eval mode."""
    folder = resolve_checkpoint(folder)
    meta = read_meta(folder)
    model = create_model(model_config_for_loading(meta.config))
    model.load_state_dict(read_state(folder)["model"])
    return model.to(device).eval(), meta


def latest_checkpoint_dir(run_dir: str) -> str | None:
    """Newest ``checkpoint_*`` folder of a Ray Train run directory (None when there is none)."""
    if not fs.exists(run_dir):
        return None
    dirs = _checkpoint_dirs(run_dir)
    return sorted(dirs)[-1] if dirs else None


def _checkpoint_dirs(run_dir: str) -> list[str]:
    """The ``checkpoint_*`` folders of a run directory that hold a ``meta.json``."""
    return [d for d in fs.list_dirs(run_dir)
            if os.path.basename(d.rstrip("/")).startswith("checkpoint_") and fs.exists(fs.join(d, META_FILE))]
