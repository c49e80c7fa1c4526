"""The contract between a trainer and :func:`mhdsr.runtime.loop.fit`: the :class:`Task` a stage
plugs in and the :class:`TrainState` the loop advances and checkpoints (its own module so that
the loop and :mod:`~mhdsr.runtime.checkpoint` share it without importing each other)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from mhdsr.runtime.monitor import Monitor


class Task(Protocol):
    """What a trainer plugs into :func:`fit` (see :class:`mhdsr.train.task.SRTask`).

    Attributes:
        frozen_keys: top-level config keys that define the model; resuming a run whose stored
            config differs in one of them is refused.
        normalization: ``{"mean": [...], "std": [...], ...}`` recorded with every checkpoint and
            export; resuming on data with other statistics is refused.
        manifest_sha256: hash of the training shards' manifest (recorded).
        overfit: one fixed batch every step (the "overfit one batch" sanity check).
        notes: lines for the run log, logged once logging is set up (e.g. which sample the
            overfit mode uses).
    """

    frozen_keys: tuple[str, ...]
    normalization: dict[str, list[float]]
    manifest_sha256: str
    overfit: bool
    notes: list[str]

    def build_model(self) -> nn.Module:
        """A fresh model (called after ``torch.manual_seed(cfg.seed)`` on every rank)."""

    def batches(self, segment: int) -> Iterator[dict[str, Any]]:
        """The rank's infinite batch stream restarted at optimizer step ``segment``; each batch
        holds ``"x"`` (a tensor) and, from a shard stream, ``"worker"`` and ``"skipped"``."""

    def loss(
        self, model: Callable[..., Tensor], x: Tensor, gen: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(loss, per_sample (B,), t (B,) or None)`` of one micro-batch ``x`` on the device;
        all randomness from ``gen`` (keyed by step and micro-step)."""

    def validate(self, model: nn.Module, ema_model: nn.Module) -> dict[str, float]:
        """Validation scalars of the raw and EMA weights (collective: every rank calls it)."""

    def images(
        self, step: int, model: nn.Module, ema_model: nn.Module, monitor: Monitor
    ) -> dict[str, float]:
        """Draw TensorBoard panels with ``monitor.figure`` (main rank only); returns extra
        scalars to log."""

    def export_fields(self) -> dict[str, Any]:
        """Payload entries of the export beyond weights and step (model config, channels,
        normalization, method, ...): everything inference needs."""

    def describe(self) -> str:
        """One phrase for the start-up log line (e.g. the channels)."""

    # Optional: ``flops_per_sample(model) -> float``, the model FLOPs of one training sample
    # (forward + backward, :func:`mhdsr.runtime.flops.training_flops` at the training input
    # size), counted once at start-up for the MFU. A task without it is counted generically:
    # every model call of the first micro-step is recorded (:class:`~mhdsr.runtime.flops.CallRecorder`)
    # and counted on a meta copy of the model.


@dataclass
class TrainState:
    """Everything that changes while training (saved with each checkpoint), and the open batch
    iterator of the segment (not saved; closed however training ends)."""

    step: int = 0
    samples_seen: int = 0
    skipped_nonfinite: int = 0
    last_loss: float = float("nan")
    worker_skips: dict[int, int] = field(default_factory=dict)
    batches: Iterator[dict[str, Any]] | None = field(default=None, repr=False)

    @property
    def skipped_shards(self) -> int:
        return sum(self.worker_skips.values())
