"""Plain functions of a training run, shared by the Ray Train loop and by tests: optimizer and schedule, one
optimisation step, validation, and per-epoch bookkeeping. No Ray here: batches are dicts of NumPy arrays or
tensors, from Ray Data or from anywhere else."""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ray_sbir.config import Config
from ray_sbir.data.images import to_model_input
from ray_sbir.training.tasks import Task, TaskInputs


def make_optimizer(task: Task, cfg: Config) -> torch.optim.Optimizer:
    return torch.optim.AdamW(task.parameter_groups(cfg.train.lr, cfg.train.backbone_lr_mult),
                             weight_decay=cfg.train.weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, progress: float) -> None:
    """Cosine decay from each group's base rate to 2% of it: a pure function of progress, so resuming needs no
    scheduler state."""
    factor = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * max(factor, 0.02)


@dataclass
class Precision:
    """Mixed precision on CUDA (bf16 where supported, else fp16 with a gradient scaler); fp32 elsewhere."""

    device: torch.device
    enabled: bool
    dtype: torch.dtype = torch.float32
    scaler: torch.amp.GradScaler = field(init=False)

    def __post_init__(self):
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.enabled and self.dtype == torch.float16)

    @classmethod
    def for_device(cls, device: torch.device, amp: bool) -> "Precision":
        use = amp and device.type == "cuda"
        dtype = torch.bfloat16 if use and torch.cuda.is_bf16_supported() else torch.float16
        return cls(device, use, dtype if use else torch.float32)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype) if self.enabled else nullcontext()


def batch_to_device(batch: dict, inputs: TaskInputs, device: torch.device) -> dict[str, torch.Tensor]:
    """uint8 images -> normalised float model inputs on ``device``; label columns -> int64 tensors."""
    out = {name: to_model_input(torch.as_tensor(batch[name]), device) for name in inputs.image_names}
    for name in inputs.label_names:
        out[name] = torch.as_tensor(batch[name]).to(device)
    return out


def train_step(step_module: nn.Module, optimizer: torch.optim.Optimizer, precision: Precision,
               batch: dict[str, torch.Tensor], progress: float) -> dict[str, float]:
    """One optimisation step of a task (or of the DDP module wrapping it); returns the named terms."""
    set_lr(optimizer, progress)
    with precision.autocast():
        terms = step_module(batch, progress)
    optimizer.zero_grad(set_to_none=True)
    precision.scaler.scale(terms["loss"]).backward()
    precision.scaler.step(optimizer)
    precision.scaler.update()
    return {k: float(v.detach()) for k, v in terms.items()}


class EpochStats:
    """Running means of the step terms, throughput and an ETA for one epoch."""

    def __init__(self, steps: int):
        self.steps, self.done, self.items = steps, 0, 0
        self.sums: dict[str, float] = {}
        self.t0 = time.time()

    def add(self, terms: dict[str, float], items: int) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.done += 1
        self.items += items

    @property
    def seconds(self) -> float:
        return time.time() - self.t0

    def means(self) -> dict[str, float]:
        return {k: v / max(self.done, 1) for k, v in self.sums.items()}

    def rate(self) -> float:
        return self.items / max(self.seconds, 1e-9)

    def eta_seconds(self) -> float:
        return (self.steps - self.done) * self.seconds / max(self.done, 1)
