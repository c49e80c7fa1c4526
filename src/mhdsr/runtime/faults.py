"""Fault injection for tests (``cfg.debug``, never set in production configs), behind the few
named hooks the training loop calls: the loop itself never reads ``cfg.debug``.

Each hook is a no-op unless its ``debug`` key names the current optimizer step (or, for
:func:`stop_now`, the number of steps taken in this process).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from mhdsr.runtime.config import DebugConfig

log = logging.getLogger("mhdsr.train")


def before_step(debug: DebugConfig, step: int, rank: int) -> None:
    """``debug.raise_at_step``: an error inside the loop at that step (on ``raise_on_rank``)."""
    if debug.raise_at_step and step == debug.raise_at_step and debug.raise_on_rank in (-1, rank):
        raise RuntimeError(f"debug.raise_at_step={step}: injected failure on rank {rank}")


def loss(debug: DebugConfig, step: int, is_main: bool, value: Tensor) -> Tensor:
    """``debug.nonfinite_loss_steps`` (a NaN loss on rank 0) and ``debug.zero_grad_steps``."""
    if step in debug.nonfinite_loss_steps and is_main:
        value = value * float("nan")
    if step in debug.zero_grad_steps:
        value = value * 0.0
    return value


@contextlib.contextmanager
def backward(debug: DebugConfig, step: int, is_main: bool, module: Any) -> Iterator[None]:
    """Around the backward pass: ``debug.nonfinite_grad_steps`` makes the first parameter's
    gradient inf on rank 0."""
    hook = None
    if step in debug.nonfinite_grad_steps and is_main:
        p0 = next(module.parameters())
        hook = p0.register_hook(lambda g: torch.full_like(g, float("inf")))
    try:
        yield
    finally:
        if hook is not None:
            hook.remove()


def stop_now(debug: DebugConfig, steps_here: int, step: int, last: bool) -> bool:
    """``debug.stop_after``: leave the loop (as if killed) after that many steps in this
    process, without a final checkpoint."""
    if debug.stop_after and steps_here >= debug.stop_after and not last:
        log.info(
            "debug.stop_after=%d reached at step %d: exiting without a final checkpoint",
            debug.stop_after, step,
        )  # fmt: skip
        return True
    return False
