"""Exponential moving average of the weights: a full fp32 copy, never swapped into training.

Update after each optimizer step (Karras et al. 2022/2024 keep the EMA as a separate network;
DeepSpeed has no EMA API, issue 2056)::

    ema <- beta * ema + (1 - beta) * theta,   beta = min(decay, (1 + n) / (10 + n)) with warm-up

where ``n`` counts EMA updates since ``start_step`` (before it, the EMA tracks the raw weights).
The warm-up form is the one of Polyak-style averaging in TensorFlow's ExponentialMovingAverage
``num_updates`` rule. ``theta`` are the FULL fp32 weights: the module's own parameters in fp32
training; in bf16 training the fp32 master weights gathered with DeepSpeed's
``safe_get_full_fp32_param`` (a collective: every rank calls :meth:`EMA.update`).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def full_fp32_params(module: nn.Module, precision: str) -> dict[str, torch.Tensor]:
    """Full fp32 values of every parameter (views in fp32 training; gathered copies in bf16).

    Collective in bf16 mode: call on every rank.
    """
    if precision == "fp32":
        return {n: p.detach() for n, p in module.named_parameters()}
    from deepspeed.utils import safe_get_full_fp32_param

    out = {}
    for n, p in module.named_parameters():
        full = safe_get_full_fp32_param(p)
        out[n] = (full if full is not None else p.detach()).float()
    return out


class EMA:
    """fp32 EMA network (a deep copy of the model architecture in fp32 on ``device``).

    Args:
        model: the (unwrapped) model; its current fp32 values initialize the EMA.
        decay: target decay per optimizer step.
        start_step: EMA copies the raw weights until this step.
        warmup: use the ``(1 + n) / (10 + n)`` warm-up.
        every: update every N steps with ``beta**N``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        decay: float,
        start_step: int = 0,
        warmup: bool = True,
        every: int = 1,
    ) -> None:
        self.model = copy.deepcopy(model).float().eval().requires_grad_(False)
        self.decay, self.start_step, self.warmup, self.every = decay, start_step, warmup, every
        self.updates = 0  # EMA updates since start_step

    def beta(self) -> float:
        """Current per-update decay (before the ``every`` power)."""
        if not self.warmup:
            return self.decay
        n = self.updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, step: int, source: dict[str, torch.Tensor]) -> None:
        """Apply one update for optimizer step ``step`` (1-based) from fp32 ``source`` weights."""
        params = dict(self.model.named_parameters())
        if step <= self.start_step:
            for n, p in params.items():
                p.copy_(source[n])
            return
        beta = self.beta() ** self.every
        for n, p in params.items():
            p.lerp_(source[n].to(p.device, torch.float32), 1.0 - beta)
        self.updates += 1

    def state_dict(self) -> dict:
        return {
            "weights": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "updates": self.updates,
            "decay": self.decay,
        }

    def load_state_dict(self, sd: dict) -> None:
        self.model.load_state_dict(sd["weights"])
        self.updates = int(sd["updates"])
