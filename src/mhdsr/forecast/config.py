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
from typing import Any, Literal

from mhdsr.config import require
from mhdsr.errors import ConfigError
from mhdsr.method.config import MethodConfig, SamplerConfig
from mhdsr.model.config import ModelConfig
from mhdsr.model.fno import FNOConfig
from mhdsr.runtime.config import TrainerConfig, trainer_config

Weights = Literal["ema", "raw"]
Device = Literal["auto", "cpu", "cuda"]
#: where the generative forecaster's flow starts: x(t) itself, or the operator's one-step mean
Source = Literal["persistence", "operator"]


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
    """``mhdsr forecast train`` configuration of the deterministic operator (the FNO): the
    shared trainer settings (:class:`~mhdsr.runtime.config.TrainerConfig`; the window length
    against ``model.history`` and ``loss.rollout_steps`` is checked with the manifest) and the
    forecast sections."""

    #: which forecaster this config trains: the deterministic neural operator
    forecaster: Literal["operator"] = "operator"
    #: run folder: checkpoints/, export/, tb/, config.yaml, log.txt
    run_dir: str = "runs/forecast"
    #: window shard folder (task forecast) holding manifest.json
    shards: str = "runs/demo-forecast/shards"
    data: ForecastDataConfig = field(default_factory=ForecastDataConfig)
    model: FNOConfig = field(default_factory=FNOConfig)
    loss: ForecastLossConfig = field(default_factory=ForecastLossConfig)


@dataclass
class FlowSourceConfig:
    """Where the generative forecaster's flow starts (docs/forecast.md "The generative
    forecaster"): the mean ``u`` of the source of ``x(t + dt)``."""

    #: persistence: u = x(t); operator: u = F(x(t)), the deterministic operator's one-step mean
    #: (the operator predicts the mean, the flow generates the rest)
    source: Source = "persistence"
    #: the operator (source operator): an FNO run folder (its latest export) or export file of
    #: `mhdsr forecast train` with history 1 and this window cadence; copied into every export
    operator: str = ""
    #: which of the operator's exported weights
    operator_weights: Weights = "ema"

    def validate(self) -> None:
        """Raises ConfigError naming ``forecast.<key>``."""
        if self.source == "operator":
            require(
                bool(self.operator), "forecast.operator",
                "an FNO run folder or export file (forecast.source=operator)", self.operator,
            )  # fmt: skip


@trainer_config
@dataclass
class FlowForecastTrainConfig(TrainerConfig):
    """``mhdsr forecast train`` configuration of the generative forecaster: conditional flow
    matching for ``p(x(t + dt) | x(t))`` on the lo grid with the super-resolution engine's
    method (``method``: :class:`~mhdsr.method.config.MethodConfig`, residual formulation and
    instance scale from ``x(t)``), UNet (``model``), loss, EMA, DeepSpeed, checkpoints and
    launch; the windows' pairs ``(x_s, x_{s+1})`` are the training pairs."""

    #: which forecaster this config trains: the generative (flow-matching) forecaster
    forecaster: Literal["flow"] = "flow"
    #: run folder: checkpoints/, export/, tb/, config.yaml, log.txt
    run_dir: str = "runs/forecast-flow"
    #: window shard folder (task forecast) holding manifest.json
    shards: str = "runs/demo-forecast/shards"
    data: ForecastDataConfig = field(default_factory=ForecastDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    #: the SR recipe without the projection, with the residual level b = a and the pooled s_r
    #: the forecaster was measured with (docs/forecast.md)
    method: MethodConfig = field(
        default_factory=lambda: MethodConfig(
            project=False, residual_kmin=0, residual_estimator="pooled"
        )
    )
    forecast: FlowSourceConfig = field(default_factory=FlowSourceConfig)

    def validate_task(self) -> None:
        """The method against forecasting (no block means to project onto) and the network's
        conditioning width against the source (``model.cond_channels`` 0 is filled in:
        ``channels`` for persistence, ``2 * channels`` for the operator, which also sees x(t))."""
        self.forecast.validate()
        if self.method.project:
            raise ConfigError(
                "config key 'method.project': a forecast has no input block means to project "
                "onto; set method.project=false"
            )
        if self.method.degrade:
            raise ConfigError(
                "config key 'method.degrade': degradation matching filters the avgpool2 input "
                "of super-resolution pairs; a forecast has none (set method.degrade=false)"
            )
        c = self.model.channels
        want = 2 * c if self.forecast.source == "operator" else c
        if self.model.cond_channels == 0:
            self.model.cond_channels = want
        if self.model.cond_channels != want:
            raise ConfigError(
                f"config key 'model.cond_channels': source {self.forecast.source!r} conditions on "
                f"{want} channels, got {self.model.cond_channels} (set 0 to fill it in)"
            )


def train_schema(forecaster: str | None) -> type:
    """The train config class of a ``forecaster`` value (``None`` or ``operator``: the FNO;
    ``flow``: the generative forecaster).

    Raises:
        ConfigError: any other value (names the key ``forecaster``).
    """
    if forecaster in (None, "operator"):
        return ForecastTrainConfig
    if forecaster == "flow":
        return FlowForecastTrainConfig
    raise ConfigError(f"config key 'forecaster': expected operator or flow, got {forecaster!r}")


def train_schema_of(args: Any) -> type:
    """The train config class of ``mhdsr forecast train --config FILE [key=value ...]``: the
    file's top-level ``forecaster`` key (an override ``forecaster=...`` wins). An unreadable
    file gives the operator's class; loading it then reports the problem with the file."""
    value = None
    for o in getattr(args, "overrides", None) or []:
        if o.startswith("forecaster="):
            value = o.partition("=")[2]
    if value is None:
        value = forecaster_of_file(getattr(args, "config", None))
    return train_schema(value)


def forecaster_of_file(path: str | None) -> str | None:
    """The top-level ``forecaster`` value of a YAML config file (None: absent or unreadable)."""
    import yaml

    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    v = doc.get("forecaster") if isinstance(doc, dict) else None
    return None if v is None else str(v)


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
    #: members E per initial state (generative forecaster: E trajectories, each with its own
    #: keyed noise (sim, initial snapshot, step, member); the operator is deterministic: 1)
    ensemble: int = 8
    #: the flow sampler of each step (generative forecaster; NFE per step = the sampler's)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    #: base seed of the rollout noise
    seed: int = 0
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
        require(self.ensemble >= 1, "ensemble", "an integer >= 1", self.ensemble)
        self.sampler.validate()
        require(self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size)
        require(self.time_tol > 0, "time_tol", "a number > 0", self.time_tol)
