"""DeepSpeed engine built from the typed config (users never write a DeepSpeed JSON).

:func:`deepspeed_config` generates the dict; :func:`build_engine` wraps the model. Choices:

* optimizer: our :class:`GuardedAdamW` (``torch.optim.AdamW``, fused on CUDA) handed to
  DeepSpeed as a client optimizer. ZeRO-1/2 and DeepSpeed's bf16 optimizer skip a step whose
  gradient norm is NaN/inf and count it in ``engine.skipped_steps``; with ZeRO-0 in fp32,
  DeepSpeed calls the optimizer directly, so the guard does the same there (it also clips and
  reports the pre-clip norm). Either way a non-finite loss or gradient leaves weights finite.
* ``gradient_clipping`` is always set explicitly (its default changed between DeepSpeed 0.16
  and 0.19); ``data_types.grad_accum_dtype`` is fp32.
* the learning rate is set by us each step from :func:`lr_at` (warm-up, then constant / cosine
  / inverse-sqrt) as a pure function of the optimizer step, so resume needs no scheduler state.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from mhdsr.errors import ConfigError
from mhdsr.runtime.config import BF16_ZERO0


def lr_at(cfg: Any, step: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up over
    ``optim.warmup_steps`` to ``optim.lr``, then constant, cosine to ``min_lr_ratio * lr`` over
    ``decay_steps`` (default: the rest of ``max_steps``), or ``lr * sqrt(warmup / step)``."""
    o = cfg.optim
    if o.warmup_steps and step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    if o.schedule == "constant":
        return o.lr
    if o.schedule == "inverse_sqrt":
        return o.lr * math.sqrt(max(o.warmup_steps, 1) / max(step + 1, 1))
    span = o.decay_steps or max(cfg.max_steps - o.warmup_steps, 1)
    frac = min(max(step - o.warmup_steps, 0) / span, 1.0)
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


class GuardedAdamW(torch.optim.AdamW):
    """AdamW that skips the whole step when any gradient is NaN/inf (sets ``overflow``, which
    DeepSpeed counts in ``skipped_steps``) and optionally clips, recording the pre-clip norm in
    ``_global_grad_norm``. Gradients are identical on all ranks when it runs un-partitioned
    (ZeRO-0, after DeepSpeed's all-reduce), so every rank takes the same decision."""

    def __init__(self, params: Any, *, clip: float = 0.0, **kw: Any) -> None:
        super().__init__(params, **kw)
        self.clip = clip
        self.overflow = False
        self._global_grad_norm: float | None = None

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
        if grads:
            norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])
            )
            self._global_grad_norm = float(norm)
            if not math.isfinite(self._global_grad_norm):
                self.overflow = True
                for g in grads:
                    g.zero_()
                return None
            if self.clip > 0 and self._global_grad_norm > self.clip:
                for g in grads:
                    g.mul_(self.clip / (self._global_grad_norm + 1e-6))
        self.overflow = False
        return super().step(closure)


def deepspeed_config(cfg: Any, world_size: int, precision: str) -> dict[str, Any]:
    """The DeepSpeed config dict for this run (recorded in the run folder)."""
    guard_clips = cfg.engine.zero_stage == 0 and precision == "fp32"
    zero: dict[str, Any] = {"stage": cfg.engine.zero_stage}
    if cfg.engine.zero_stage in (1, 2):
        zero |= {
            "allgather_bucket_size": cfg.engine.allgather_bucket_size,
            "reduce_bucket_size": cfg.engine.reduce_bucket_size,
            "overlap_comm": cfg.engine.zero_stage == 2,
            "contiguous_gradients": True,
        }
    return {
        "train_micro_batch_size_per_gpu": cfg.data.micro_batch,
        "gradient_accumulation_steps": cfg.optim.grad_accum,
        "train_batch_size": cfg.data.micro_batch * cfg.optim.grad_accum * world_size,
        # stage 0 + fp32: the guarded optimizer clips (and reports the pre-clip norm)
        "gradient_clipping": 0.0 if guard_clips else cfg.optim.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16", "check_grad_overflow": True},
        "fp16": {"enabled": False},
        "data_types": {"grad_accum_dtype": "fp32"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def build_engine(cfg: Any, model: nn.Module, world_size: int, precision: str, device: torch.device):
    """``deepspeed.initialize`` with our optimizer; returns ``(engine, ds_config)``."""
    import deepspeed

    if precision == "bf16" and cfg.engine.zero_stage == 0:  # precision=auto resolved to bf16
        raise ConfigError(BF16_ZERO0)
    model = model.to(device)
    ds_cfg = deepspeed_config(cfg, world_size, precision)
    o = cfg.optim
    opt = GuardedAdamW(
        model.parameters(),
        lr=o.lr,
        betas=tuple(o.betas),
        eps=o.eps,
        weight_decay=o.weight_decay,
        clip=o.grad_clip if ds_cfg["gradient_clipping"] == 0.0 else 0.0,
        fused=device.type == "cuda",
    )
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=ds_cfg)
    return engine, ds_cfg


def set_lr(engine: Any, lr: float) -> None:
    """Set the learning rate of every param group (the ZeRO wrapper shares the inner groups)."""
    for g in engine.optimizer.param_groups:
        g["lr"] = lr


def grad_norm(engine: Any) -> float:
    """Pre-clip global gradient norm of the last optimizer step (nan if unknown)."""
    n = engine.get_global_grad_norm()
    if n is None:
        n = getattr(engine.optimizer, "_global_grad_norm", None)
    if n is None:
        return float("nan")
    return float(n.item() if torch.is_tensor(n) else n)
