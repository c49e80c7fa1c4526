"""Typed configuration of ``mhdsr forecast train`` and ``mhdsr forecast rollout``.

The training config composes the sections every trainer shares (:mod:`mhdsr.runtime.config`:
``optim``, ``engine``, ``ema``, ``checkpoint``, ``log``, ``debug``) with the forecast's own
``data``, ``model`` (:class:`~mhdsr.model.fno.FNOConfig`) and ``loss``; top-level ``run_dir``,
``shards``, ``max_steps`` and ``seed`` mean what they mean for ``mhdsr train``
(docs/design.md "Command-line contract"). The rollout config names a checkpoint, the runs and
initial snapshots, the number of steps and the output folder.

Relative paths are relative to the current working directory (the shipped configs assume the
repository root).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mhdsr.config import require
from mhdsr.model.fno import FNOConfig
from mhdsr.runtime.config import TrainerConfig, trainer_config

Weights = Literal["ema", "raw"]
Device = Literal["auto", "cpu", "cuda"]


@dataclass
class ForecastDataConfig:
    """How windows are streamed and augmented."""

    #: windows per rank per micro-step
    micro_batch: int = 2
    #: DataLoader worker processes per rank (0 = load in the training process)
    workers: int = 1
    #: decoded windows held per worker for stream shuffling
    shuffle_buffer: int = 8
    #: random periodic translation of the whole window by whole lo cells (exact symmetry)
    roll: bool = True
    #: symmetry: one of the 8 R/M/P elements per window, applied to every frame (each maps a
    #: solution of the equations to a solution, docs/design.md "Symmetries"); none: off
    augment: Literal["none", "symmetry"] = "symmetry"
    #: fixed validation windows (the first N of the validation split)
    val_samples: int = 8
    #: manifest split used for validation and the TensorBoard panels
    val_split: str = "val"
    #: sanity mode: train on ONE window (the first of the train split) forever
    overfit: bool = False
    #: batches prefetched per worker
    prefetch: int = 2

    def validate(self) -> None:
        """Raises ConfigError naming ``data.<key>``."""
        require(self.micro_batch >= 1, "data.micro_batch", "an integer >= 1", self.micro_batch)
        require(self.workers >= 0, "data.workers", "an integer >= 0", self.workers)
        require(
            self.shuffle_buffer >= 1, "data.shuffle_buffer", "an integer >= 1", self.shuffle_buffer
        )
        require(self.val_samples >= 0, "data.val_samples", "an integer >= 0", self.val_samples)
        require(self.prefetch >= 1, "data.prefetch", "an integer >= 1", self.prefetch)


@dataclass
class ForecastLossConfig:
    """The training loss (docs/design.md "Forecast stage"), in normalized units.

    ``loss = loss_scale * (one_step_weight * L1 + rollout_weight * LR)``: ``L1`` is the mean
    squared error of every one-step prediction of the window from its true history; ``LR`` the
    mean over ``rollout_steps`` steps of the error of the autoregressive rollout started at the
    first full history of the window, each step fed the previous predictions, with gradients
    through the whole rollout.
    """

    #: weight of the one-step loss
    one_step_weight: float = 1.0
    #: rolled-out steps R (0 = no rollout loss); the window needs history + R snapshots
    rollout_steps: int = 2
    #: weight of the rollout loss
    rollout_weight: float = 1.0
    #: overall factor (keeps logged numbers and gradient clipping in a sensible range)
    loss_scale: float = 1.0

    def validate(self) -> None:
        """Raises ConfigError naming ``loss.<key>``."""
        require(
            self.rollout_steps >= 0, "loss.rollout_steps", "an integer >= 0", self.rollout_steps
        )
        for k in ("one_step_weight", "rollout_weight"):
            require(getattr(self, k) >= 0, f"loss.{k}", ">= 0", getattr(self, k))
        require(self.loss_scale > 0, "loss.loss_scale", "> 0", self.loss_scale)
        require(
            self.one_step_weight > 0 or (self.rollout_weight > 0 and self.rollout_steps > 0),
            "loss.one_step_weight/rollout_weight",
            "a positive weight on a loss that is computed",
            (self.one_step_weight, self.rollout_weight, self.rollout_steps),
        )


@trainer_config
@dataclass
class ForecastTrainConfig(TrainerConfig):
    """``mhdsr forecast train`` configuration: the shared trainer settings
    (:class:`~mhdsr.runtime.config.TrainerConfig`; the window length against ``model.history``
    and ``loss.rollout_steps`` is checked with the manifest) and the forecast sections."""

    #: run folder: checkpoints/, export/, tb/, config.yaml, log.txt
    run_dir: str = "runs/forecast"
    #: window shard folder (task forecast) holding manifest.json
    shards: str = "runs/demo-forecast/shards"
    data: ForecastDataConfig = field(default_factory=ForecastDataConfig)
    model: FNOConfig = field(default_factory=FNOConfig)
    loss: ForecastLossConfig = field(default_factory=ForecastLossConfig)


@dataclass
class RolloutInputsConfig:
    """Which runs and initial snapshots are rolled out (one output file per run)."""

    #: globs of AthenaK run folders: native lo runs on the model's grid, or hi runs of twice
    #: its size (their initial state is avgpool2(hi), truth likewise)
    runs: list[str] = field(default_factory=list)
    #: initial snapshots by file number (empty = every snapshot in the orbit range below that
    #: has the history the model needs)
    init_snapshots: list[int] = field(default_factory=list)
    #: initial snapshots at or after this orbit (one timestep of slack)
    orbit_start: float = 0.0
    #: initial snapshots at or before this orbit (null = no bound)
    orbit_end: float | None = None
    #: keep every stride-th initial snapshot of the selection
    stride: int = 1

    def validate(self) -> None:
        """Raises ConfigError naming ``inputs.<key>``."""
        require(bool(self.runs), "inputs.runs", "a non-empty list of run-folder globs", self.runs)
        require(self.stride >= 1, "inputs.stride", "an integer >= 1", self.stride)
        require(self.orbit_start >= 0, "inputs.orbit_start", ">= 0", self.orbit_start)
        if self.orbit_end is not None:
            require(
                self.orbit_end >= self.orbit_start,
                "inputs.orbit_end",
                f">= inputs.orbit_start={self.orbit_start}",
                self.orbit_end,
            )


@dataclass
class RolloutConfig:
    """``mhdsr forecast rollout`` configuration."""

    #: a forecast run folder (its latest export) or an exported weights file
    checkpoint: str = "runs/demo-forecast/train"
    #: one HDF5 per run + rollout_config.yaml
    output_dir: str = "runs/demo-forecast/rollouts"
    #: which exported weights roll out
    weights: Weights = "ema"
    inputs: RolloutInputsConfig = field(default_factory=RolloutInputsConfig)
    #: autoregressive steps L (lead times dt, 2 dt, ..., L dt)
    steps: int = 8
    #: initial states per network call (does not change the results)
    batch_size: int = 4
    #: spacing tolerance in mean timesteps when looking up the history and the truth
    time_tol: float = 1.5
    #: auto (cuda if visible, else cpu) | cpu | cuda (the local rank's GPU)
    device: Device = "auto"

    def validate(self) -> None:
        """Raises ConfigError naming the key at fault."""
        require(
            bool(self.checkpoint), "checkpoint", "a run folder or weights file", self.checkpoint
        )
        require(bool(self.output_dir), "output_dir", "a folder path", self.output_dir)
        require(self.steps >= 1, "steps", "an integer >= 1", self.steps)
        require(self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size)
        require(self.time_tol > 0, "time_tol", "a number > 0", self.time_tol)
