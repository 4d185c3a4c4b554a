"""How a trained encoder runs at inference time: memory layout, bfloat16 autocast, ``torch.compile`` and int8
dynamic quantisation of its linear layers, each a switch of :class:`InferenceSettings`, applied by
:class:`InferenceEncoder` (the sketch encoder of the endpoint and of ``bench/bench_student.py``).

None of them changes the weights a checkpoint holds; bf16 and int8 change the arithmetic, so their embeddings
differ slightly from fp32's and their retrieval quality is measured beside their speed (``docs/benchmarks.md``,
"A small sketch encoder"). Sources: PyTorch's CPU performance guides (channels-last for convolutions through
oneDNN, ``torch.autocast("cpu", dtype=torch.bfloat16)`` on CPUs with AVX512-BF16 or AMX) and
``torch.ao.quantization.quantize_dynamic`` (weights int8, activations quantised per batch at run time; it
covers ``nn.Linear`` only, so a convolutional backbone keeps almost all its work in float).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

import numpy as np
import torch
from torch import nn

from ray_sbir.config import ConfigError
from ray_sbir.data.images import to_model_input

logger = logging.getLogger("ray_sbir.models")


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """``channels_last``: NHWC inputs (what :func:`~ray_sbir.data.images.to_model_input` makes; ``False`` turns
    them back to NCHW, for measuring); ``bf16``: autocast to bfloat16; ``compile``: ``torch.compile`` the
    encoder; ``int8_linear``: dynamic int8 quantisation of ``nn.Linear`` layers (CPU only); ``flip_average``:
    mirror averaging (it changes the embeddings: an index must be embedded with it too)."""

    channels_last: bool = True
    bf16: bool = False
    compile: bool = False
    int8_linear: bool = False
    flip_average: bool = False  # the mean of the image's and its mirror's embeddings (:func:`encode`)

    @classmethod
    def from_dict(cls, value: dict[str, Any] | None, where: str = "inference") -> "InferenceSettings":
        value = dict(value or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {unknown}; known: {sorted(known)}")
        for key, v in value.items():
            if not isinstance(v, bool):
                raise ConfigError(f"{where}.{key} must be true or false, got {v!r}")
        return cls(**value)

    def to_dict(self) -> dict[str, bool]:
        return dataclasses.asdict(self)

    def label(self) -> str:
        """``fp32 NHWC``, ``bf16 NHWC + compile``, ...: how a bench row names these settings."""
        parts = ["bf16" if self.bf16 else "fp32", "NHWC" if self.channels_last else "NCHW"]
        parts += [name for name, on in (("compile", self.compile), ("int8 linear", self.int8_linear),
                                        ("mirror", self.flip_average)) if on]
        return " + ".join([" ".join(parts[:2]), *parts[2:]])


def bf16_supported(device: torch.device) -> bool:
    """Whether bfloat16 arithmetic is native here (CUDA with bf16, or a CPU with AVX512-BF16 / AMX): elsewhere
    autocast to bf16 runs emulated, slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


# Pixels one forward pass covers on a CPU: a larger batch is split into passes of at most this many (four 224 px
# images). A convolutional encoder's activations outgrow the CPU's caches as the batch grows, and every image then
# costs more: a batch of 16 Sketchy sketches through EfficientNet-Lite0 at 224 px, one thread, embeds at 107
# sketches/s in passes of 4, 71 in passes of 8 and 75 in one pass; Lite2 at 260 px at 51/s in passes of 2 against
# 33 in one; the demo's 64 px encoder takes a whole batch of 32 in one pass. docs/benchmarks.md, "Encoder passes
# on a CPU" (bench/bench_encode_passes.py). GPUs take the batch whole.
# A CPU with other caches may want another budget: the environment variable RAY_SBIR_CPU_PASS_PIXELS sets it in
# every process that inherits it (0: one pass per batch, as before this limit).
PASS_PIXELS_ENV = "RAY_SBIR_CPU_PASS_PIXELS"


def _pass_pixels() -> int:
    raw = os.environ.get(PASS_PIXELS_ENV, "").strip()
    if not raw:
        return 4 * 224 * 224
    if not raw.isdigit():
        raise ValueError(f"environment variable {PASS_PIXELS_ENV}={raw!r}: expected a whole number of pixels "
                         "(0: one forward pass per batch)")
    return int(raw)


CPU_PASS_PIXELS = _pass_pixels()


def images_per_pass(x: torch.Tensor) -> int:
    """How many images of ``x`` (``[B, C, H, W]``) one forward pass takes on its device: all on a GPU (or with
    :data:`CPU_PASS_PIXELS` 0), on a CPU as many as :data:`CPU_PASS_PIXELS` allows (at least one)."""
    if x.device.type != "cpu" or not CPU_PASS_PIXELS:
        return max(1, len(x))
    return max(1, CPU_PASS_PIXELS // max(1, int(x.shape[-1]) * int(x.shape[-2])))


def _forward(model: nn.Module, x: torch.Tensor, modality: str) -> torch.Tensor:
    limit = images_per_pass(x)
    if limit >= len(x):
        return model.encode(x, modality)
    passes = -(-len(x) // limit)
    step = -(-len(x) // passes)  # passes of equal size: 64 images under a limit of 49 run as 32 + 32, not 49 + 15
    # eval mode: each image's embedding does not depend on the others in its pass
    return torch.cat([model.encode(x[i:i + step], modality) for i in range(0, len(x), step)])


def encode(model: nn.Module, x: torch.Tensor, modality: str, *, flip_average: bool = False) -> torch.Tensor:
    """``model.encode(x, modality)``, or with ``flip_average`` the mean of the embeddings of ``x`` and of its
    left-right mirror (test-time augmentation; unit-norm models' means renormalised, a binary model's tanh
    relaxations averaged, so its code is the sign of the mean). Every path that embeds for an index or a query
    calls this (the Ray embedding and QuickDraw jobs, ``ray-sbir evaluate``, the endpoint's encoder), so a
    gallery embedded with the mirror is queried with it too.

    Why: sketches and photos of a class are drawn or taken facing either way, and the encoder is not mirror
    invariant; the mean of both views is a cheaper ensemble than a second model (measured in
    ``docs/benchmarks.md``, "Mirror averaging"): the views are encoded as one batch twice as large, twice the
    encoder's work. On a CPU a batch runs as forward passes of :func:`images_per_pass` images (the model in eval
    mode: the embeddings are the same). (Dimension -1 of the NCHW tensor is the width, whatever the memory
    format.)"""
    if not flip_average:
        return _forward(model, x, modality)
    both = _forward(model, torch.cat([x, torch.flip(x, dims=[-1])]), modality)
    mean = (both[:len(x)] + both[len(x):]) / 2
    return torch.nn.functional.normalize(mean, dim=-1) if getattr(model, "unit_norm", False) else mean


class _Encode(nn.Module):
    """``model.encode(x, modality)`` as a module's ``forward``: what ``torch.compile`` and quantisation take."""

    def __init__(self, model: nn.Module, modality: str, flip_average: bool = False):
        super().__init__()
        self.model, self.modality, self.flip_average = model, modality, flip_average

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return encode(self.model, x, self.modality, flip_average=self.flip_average)


class InferenceEncoder:
    """One modality's encoder of ``model`` (in eval mode), run with ``settings``: ``uint8 [B, S, S(, 3)]``
    images -> ``float32 [B, D]`` embeddings (NumPy), as the endpoint and the benches call it."""

    def __init__(self, model: nn.Module, modality: str, settings: InferenceSettings = InferenceSettings(),
                 device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.settings = settings
        module: nn.Module = _Encode(model.eval(), modality, settings.flip_average)
        if settings.int8_linear:
            if self.device.type != "cpu":
                raise ConfigError("inference.int8_linear runs on CPU only (dynamic quantisation has no CUDA kernels)")
            module = torch.ao.quantization.quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8)
        if settings.bf16 and not bf16_supported(self.device):
            logger.warning("inference.bf16 on %s without native bfloat16: it runs emulated, slower than fp32",
                           self.device)
        self.module = torch.compile(module) if settings.compile else module

    def __call__(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(images))
        x = to_model_input(x, self.device)
        if not self.settings.channels_last:
            x = x.contiguous()
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                    enabled=self.settings.bf16):
            return self.module(x).float().cpu().numpy()
