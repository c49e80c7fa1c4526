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

Speed options (``engine.*``, each leaves results unchanged within float tolerance, tested on the
CPU): ``fused_adamw`` (:func:`use_fused_adamw`), ``channels_last`` (:func:`to_channels_last`),
``tf32`` (:func:`set_tf32`, CUDA only) and ``compile`` (:func:`compile_engine`, after the EMA
copy is made: a deep copy of a compiled module would call the original's compiled forward).
"""

from __future__ import annotations

import math
import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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


def use_fused_adamw(setting: str, device: torch.device) -> bool:
    """Whether AdamW runs its fused kernel: ``engine.fused_adamw`` = ``on`` | ``off`` | ``auto``
    (fused on CUDA only). The fused kernel computes the same update as the foreach one within
    float rounding (tested on the CPU, where torch also has it)."""
    if setting == "auto":
        return device.type == "cuda"
    return setting == "on"


def set_tf32(enabled: bool) -> None:
    """fp32 matrix products (cuBLAS) and convolutions (cuDNN) on TF32 tensor cores, or IEEE fp32
    (process-wide torch settings; they only act on CUDA kernels)."""
    mode = "tf32" if enabled else "ieee"
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode
    else:  # pragma: no cover - older torch
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def _channels_last_inputs(_module: nn.Module, args: tuple) -> tuple:
    return tuple(
        a.contiguous(memory_format=torch.channels_last)
        if torch.is_tensor(a) and a.ndim == 4 and a.is_floating_point()
        else a
        for a in args
    )


def _nhwc_conv_forward(self: nn.Conv2d, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``nn.Conv2d._conv_forward`` with its input in channels-last format (after the padding,
    for a non-zero ``padding_mode``: ``F.pad`` returns a contiguous NCHW tensor)."""
    nhwc = torch.channels_last
    if self.padding_mode != "zeros":
        x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
        return F.conv2d(
            x.contiguous(memory_format=nhwc), weight, bias, self.stride, 0, self.dilation,
            self.groups,
        )  # fmt: skip
    return F.conv2d(
        x.contiguous(memory_format=nhwc), weight, bias, self.stride, self.padding, self.dilation,
        self.groups,
    )  # fmt: skip


def to_channels_last(model: nn.Module) -> nn.Module:
    """Channels-last (NHWC) activations: every 4-D float positional input of the model's forward
    is made channels-last (a forward pre-hook) and so is the (padded) input of every
    ``nn.Conv2d`` (its ``_conv_forward``), so convolutions run and return NHWC: torch picks the
    output format from the input's OR the weight's (``suggest_memory_format``), and circular
    padding (``F.pad``) alone would return NCHW.

    The weights stay contiguous: DeepSpeed broadcasts each parameter as a ``uint8`` view at
    start-up, which a channels-last weight refuses ("self.stride(-1) must be 1 to view Float as
    Byte", measured with deepspeed 0.19.8 at every ZeRO stage), and ZeRO-1/2 replace the
    parameters by views of flat contiguous buffers. Values are unchanged: only strides differ
    (results equal within float rounding, tested). A deep copy (the EMA model) keeps the
    setting."""
    model.register_forward_pre_hook(_channels_last_inputs)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m._conv_forward = types.MethodType(_nhwc_conv_forward, m)
    return model


def compile_engine(engine: Any, backend: str = "inductor") -> None:
    """``torch.compile`` the engine's model in place (DeepSpeed's ``engine.compile``:
    ``nn.Module.compile``; parameter names, checkpoints and exports are unchanged). Call after
    the EMA copy exists. Compilation happens at the first forward of each new input shape or
    mode (training crops, full-field validation)."""
    engine.compile(backend=backend)


def build_engine(cfg: Any, model: nn.Module, world_size: int, precision: str, device: torch.device):
    """``deepspeed.initialize`` with our optimizer; returns ``(engine, ds_config)``.

    Applies ``engine.channels_last`` and ``engine.fused_adamw`` (``engine.compile`` is
    :func:`compile_engine`, called by the trainer once the EMA copy exists).
    """
    import deepspeed

    if precision == "bf16" and cfg.engine.zero_stage == 0:  # precision=auto resolved to bf16
        raise ConfigError(BF16_ZERO0)
    model = model.to(device)
    if getattr(cfg.engine, "channels_last", False):
        to_channels_last(model)
    ds_cfg = deepspeed_config(cfg, world_size, precision)
    o = cfg.optim
    opt = GuardedAdamW(
        model.parameters(),
        lr=o.lr,
        betas=tuple(o.betas),
        eps=o.eps,
        weight_decay=o.weight_decay,
        clip=o.grad_clip if ds_cfg["gradient_clipping"] == 0.0 else 0.0,
        fused=use_fused_adamw(getattr(cfg.engine, "fused_adamw", "auto"), device),
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
