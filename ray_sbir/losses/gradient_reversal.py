"""Gradient reversal (Ganin & Lempitsky, ICML 2015): identity forward, gradient times ``-lambda`` backward."""

from __future__ import annotations

import math

import torch
import torch.nn as nn


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lambd: float) -> torch.Tensor:
        ctx.lambd = lambd
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.lambd * grad, None


def grad_reverse(x: torch.Tensor, lambd: float = 1.0) -> torch.Tensor:
    """Identity forward; gradient times ``-lambd`` backward."""
    return _ReverseGrad.apply(x, float(lambd))


class GradientReversal(nn.Module):
    def __init__(self, lambd: float = 1.0):
        super().__init__()
        self.lambd = lambd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.lambd)


def reversal_lambda(schedule: str, scale: float, progress: float) -> float:
    """Reversal strength at training ``progress`` in [0, 1].

    ``dann`` is the ramp of Ganin & Lempitsky (2015): 0 at the start, when the domain classifier is still
    random and its reversed gradient only adds noise, rising to ``scale``."""
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return scale
    if schedule == "dann":
        return scale * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)
    raise ValueError(f"unknown reversal schedule {schedule!r}; expected constant or dann")
