"""Checkpoints: a folder with ``state.pt`` (tensors only) and ``meta.json`` (epoch, config, classes, metrics).

``state.pt`` holds plain state dicts, so it loads with ``torch.load(weights_only=True)``: a checkpoint from
object storage can never run pickled code. The folder is what Ray Train persists to the run's storage.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass

import torch

from ray_sbir import fs
from ray_sbir.config import Config, config_from_dict
from ray_sbir.models import SBIRModel, create_model

STATE_FILE = "state.pt"
META_FILE = "meta.json"


@dataclass
class CheckpointMeta:
    epoch: int
    config: Config
    classes: list[str]  # training classes, in label-index order
    metrics: dict

    def to_dict(self) -> dict:
        return {"epoch": self.epoch, "config": self.config.to_dict(), "classes": self.classes, "metrics": self.metrics}


def write_checkpoint(folder: str, *, model: torch.nn.Module, meta: CheckpointMeta,
                     criterion: torch.nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None,
                     scaler: torch.amp.GradScaler | None = None) -> None:
    state = {"model": model.state_dict()}
    if criterion is not None:
        state["criterion"] = criterion.state_dict()
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    buf = io.BytesIO()
    torch.save(state, buf)
    fs.write_bytes(fs.join(folder, STATE_FILE), buf.getvalue())
    fs.write_text(fs.join(folder, META_FILE), json.dumps(meta.to_dict(), indent=2))


def read_meta(folder: str) -> CheckpointMeta:
    uri = fs.join(folder, META_FILE)
    if not fs.exists(uri):
        raise FileNotFoundError(f"not a ray-sbir checkpoint (no {META_FILE}): {folder}")
    d = json.loads(fs.read_text(uri))
    return CheckpointMeta(epoch=d["epoch"], config=config_from_dict(d["config"]), classes=d["classes"],
                          metrics=d.get("metrics", {}))


def read_state(folder: str) -> dict:
    uri = fs.join(folder, STATE_FILE)
    if not fs.exists(uri):
        raise FileNotFoundError(f"not a ray-sbir checkpoint (no {STATE_FILE}): {folder}")
    return torch.load(io.BytesIO(fs.read_bytes(uri)), map_location="cpu", weights_only=True)


def load_model(folder: str, device: str | torch.device = "cpu") -> tuple[SBIRModel, CheckpointMeta]:
    """Rebuild the model from a checkpoint folder (local or URI), weights loaded, in eval mode."""
    meta = read_meta(folder)
    # The checkpoint holds every weight: don't re-read the pretrained file (it may not exist here).
    model_cfg = meta.config.model
    model_cfg.pretrained_weights = None
    model = create_model(model_cfg)
    model.load_state_dict(read_state(folder)["model"])
    return model.to(device).eval(), meta


def latest_checkpoint_dir(run_dir: str) -> str | None:
    """Newest ``checkpoint_*`` folder of a Ray Train run directory (None when there is none)."""
    if not fs.exists(run_dir):
        return None
    dirs = [d for d in fs.list_dirs(run_dir) if os.path.basename(d.rstrip("/")).startswith("checkpoint_")]
    dirs = [d for d in dirs if fs.exists(fs.join(d, META_FILE))]
    return sorted(dirs)[-1] if dirs else None
