"""Config sections shared by every trainer (``mhdsr train`` and ``mhdsr forecast train``).

The optimizer, DeepSpeed engine, EMA, checkpoint, logging and fault-injection sections have the
same meaning in every training config; each trainer's schema composes them with its own data,
model and method sections. Fields with a fixed set of values are ``Literal`` types: OmegaConf
rejects any other value with the list of valid ones, so the choices live in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from mhdsr.config import require
from mhdsr.errors import ConfigError

Device = Literal["auto", "cpu", "cuda"]
Backend = Literal["auto", "gloo", "nccl"]
Precision = Literal["auto", "fp32", "bf16"]

#: DeepSpeed 0.19 accepts bf16 without ZeRO only with bf16 gradient accumulation.
BF16_ZERO0 = (
    "config keys 'engine.precision'/'engine.zero_stage': bf16 needs ZeRO stage 1 or 2 (DeepSpeed "
    "without ZeRO would accumulate gradients in bf16; mhdsr keeps fp32 gradient accumulation)"
)


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule (a pure function of the optimizer step)."""

    #: peak learning rate
    lr: float = 2e-4
    #: AdamW betas
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    #: AdamW epsilon
    eps: float = 1e-8
    #: AdamW decoupled weight decay
    weight_decay: float = 0.0
    #: global gradient-norm clip (always on: DeepSpeed's default changed between releases)
    grad_clip: float = 1.0
    #: micro-steps per optimizer step
    grad_accum: int = 1
    #: linear warm-up from 0 to lr, in optimizer steps
    warmup_steps: int = 100
    #: after warm-up: constant, cosine to min_lr_ratio * lr, or lr * sqrt(warmup / step)
    schedule: Literal["constant", "cosine", "inverse_sqrt"] = "constant"
    #: cosine floor as a fraction of lr
    min_lr_ratio: float = 0.1
    #: cosine length in steps after warm-up (0 = until max_steps)
    decay_steps: int = 0

    def validate(self) -> None:
        """Raises ConfigError naming ``optim.<key>``."""
        require(self.lr > 0, "optim.lr", "> 0", self.lr)
        require(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "optim.betas",
            "two values in [0, 1)",
            self.betas,
        )
        require(
            self.grad_clip > 0, "optim.grad_clip", "> 0 (clipping is always on)", self.grad_clip
        )
        require(self.grad_accum >= 1, "optim.grad_accum", "an integer >= 1", self.grad_accum)
        require(self.warmup_steps >= 0, "optim.warmup_steps", ">= 0", self.warmup_steps)
        require(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", "in [0, 1]", self.min_lr_ratio)
        require(self.decay_steps >= 0, "optim.decay_steps", ">= 0", self.decay_steps)


@dataclass
class EngineConfig:
    """Where and how the model computes (DeepSpeed engine)."""

    #: cpu | cuda | auto (cuda when a GPU is visible)
    device: Device = "auto"
    #: gloo | nccl | auto (nccl on cuda, gloo on cpu)
    backend: Backend = "auto"
    #: fp32 | bf16 | auto (bf16 on cuda, fp32 on cpu)
    precision: Precision = "auto"
    #: DeepSpeed ZeRO stage (3 is refused: the fp32 EMA needs full parameters every step)
    zero_stage: int = 2
    #: ZeRO-1/2 communication buckets (elements)
    allgather_bucket_size: int = 50_000_000
    reduce_bucket_size: int = 50_000_000
    #: torch.compile the model (DeepSpeed's engine.compile: nn.Module.compile in place, inductor
    #: backend; weights and exports unchanged). For GPUs; on a CPU it needs a C++ compiler and
    #: compiles for minutes. A speed option: bench-gpu measures it (benchmarks/gpu_check.py)
    compile: bool = False
    #: channels-last (NHWC) activations: the model's 4-D inputs are made channels-last and the
    #: convolutions follow (weights stay contiguous for DeepSpeed). For GPU tensor cores; same
    #: results within float tolerance (tested on the CPU)
    channels_last: bool = False
    #: fp32 matrix products and convolutions on TF32 tensor cores (CUDA only; in bf16 runs only
    #: the fp32 parts are affected). Off = IEEE fp32
    tf32: bool = True
    #: AdamW's fused kernel: auto (on CUDA), on (also on a CPU), off (foreach). Works with ZeRO
    #: 0, 1 and 2 (DeepSpeed steps our AdamW on its fp32 partitions)
    fused_adamw: Literal["auto", "on", "off"] = "auto"
    #: peak TFLOP/s of one device for the MFU in the logs; 0 = from the table of known GPUs
    #: (mhdsr.runtime.flops.KNOWN_PEAKS) or, on a CPU, a matrix product measured at start-up
    peak_tflops: float = 0.0
    #: seconds a rank waits in a collective (all-reduce, barrier, checkpoint) for the other
    #: ranks before it gives up with an error: a rank that died or hangs cannot leave the others
    #: waiting forever (the process-group timeout of gloo and NCCL)
    dist_timeout_s: float = 600.0

    def validate(self) -> None:
        """Raises ConfigError naming ``engine.<key>``."""
        require(
            self.dist_timeout_s > 0, "engine.dist_timeout_s", "> 0 seconds", self.dist_timeout_s
        )
        require(self.peak_tflops >= 0, "engine.peak_tflops", ">= 0 (0 = auto)", self.peak_tflops)
        if self.zero_stage == 3:
            raise ConfigError(
                "config key 'engine.zero_stage': ZeRO stage 3 is not supported: the fp32 EMA needs full "
                "parameters every step, and a ~40M-parameter UNet gains nothing from stage 3; use 1 or 2"
            )
        require(self.zero_stage in (0, 1, 2), "engine.zero_stage", "0, 1 or 2", self.zero_stage)
        if self.precision == "bf16" and self.zero_stage == 0:
            raise ConfigError(BF16_ZERO0)


@dataclass
class EMAConfig:
    """Exponential moving average of the weights (:mod:`mhdsr.runtime.ema`)."""

    #: EMA decay per optimizer step
    decay: float = 0.9999
    #: the EMA equals the raw weights until this step, then averaging starts
    start_step: int = 0
    #: effective decay min(decay, (1 + n) / (10 + n)), n = updates since start_step
    warmup: bool = True
    #: update every N steps (decay applied as decay**N); > 1 saves gathers in bf16 ZeRO
    every: int = 1

    def validate(self) -> None:
        """Raises ConfigError naming ``ema.<key>``."""
        require(0 <= self.decay < 1, "ema.decay", "in [0, 1)", self.decay)
        require(self.start_step >= 0, "ema.start_step", ">= 0", self.start_step)
        require(self.every >= 1, "ema.every", ">= 1", self.every)


@dataclass
class CheckpointConfig:
    """DeepSpeed checkpoint + plain-weights export cadence."""

    #: checkpoint and export every N optimizer steps (and at the end)
    every: int = 500
    #: keep the last K checkpoints and exports
    keep: int = 3

    def validate(self) -> None:
        """Raises ConfigError naming ``checkpoint.<key>``."""
        require(self.every >= 1, "checkpoint.every", ">= 1", self.every)
        require(self.keep >= 1, "checkpoint.keep", ">= 1", self.keep)


@dataclass
class LogConfig:
    """Console, log.txt and TensorBoard."""

    #: console + TensorBoard scalars every N steps
    every: int = 10
    #: validation loss every N steps and at the end (0 = never)
    val_every: int = 200
    #: sample panels + spectra every N steps and at the end (0 = never)
    image_every: int = 500
    #: sampler steps for the logged panels (super-resolution: Heun ODE and Euler-Maruyama SDE)
    image_steps: int = 8
    #: training loss logged per t-bin (super-resolution)
    t_bins: int = 4
    #: write TensorBoard event files to run_dir/tb
    tensorboard: bool = True

    def validate(self) -> None:
        """Raises ConfigError naming ``log.<key>``."""
        require(self.every >= 1, "log.every", ">= 1", self.every)
        require(
            self.val_every >= 0 and self.image_every >= 0,
            "log.val_every/image_every",
            ">= 0",
            (self.val_every, self.image_every),
        )
        require(self.t_bins >= 1, "log.t_bins", ">= 1", self.t_bins)
        require(self.image_steps >= 1, "log.image_steps", ">= 1", self.image_steps)


@dataclass
class DebugConfig:
    """Fault injection for tests (never set in production configs)."""

    #: inject a NaN loss (rank 0) at these optimizer steps
    nonfinite_loss_steps: list[int] = field(default_factory=list)
    #: inject an inf gradient (rank 0) at these optimizer steps
    nonfinite_grad_steps: list[int] = field(default_factory=list)
    #: multiply the loss by 0 at these optimizer steps
    zero_grad_steps: list[int] = field(default_factory=list)
    #: exit (as if killed) after this many optimizer steps in this process
    stop_after: int = 0
    #: raise an error inside the training loop at this optimizer step (0 = never)
    raise_at_step: int = 0
    #: only on this rank (-1 = every rank): the other ranks go on to the next collective
    raise_on_rank: int = -1


@dataclass
class TrainerConfig:
    """The settings every trainer shares (``mhdsr train``, ``mhdsr forecast train``): each
    trainer's config subclasses it and adds its own ``data`` and ``model`` (and method or loss)
    sections; :func:`mhdsr.runtime.loop.fit` reads only these fields and ``data.micro_batch``
    (``data.val_split`` is checked against the manifest). Its :meth:`validate` is the one
    cross-section check of every trainer."""

    #: run folder: checkpoints/, export/, tb/, config.yaml, log.txt
    run_dir: str = "runs/train"
    #: shard folder holding manifest.json
    shards: str = "runs/demo/shards"
    #: optimizer steps in total (resume continues to this)
    max_steps: int = 1000
    #: base seed: data streams, noise, augmentation (all derived per rank/step)
    seed: int = 0
    #: channel subset by name; empty = all 8
    channels: list[str] = field(default_factory=list)
    optim: OptimConfig = field(default_factory=OptimConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)

    @property
    def channel_names(self) -> list[str]:
        """The trained channels in canonical order of the config (all 8 when empty)."""
        from mhdsr.channels import CHANNELS, channel_indices

        return [CHANNELS[i] for i in channel_indices(self.channels)]

    def validate(self) -> None:
        """Cross-section checks (each section checks its own keys), then the trainer's own
        :meth:`validate_task`."""
        require(self.max_steps >= 1, "max_steps", "an integer >= 1", self.max_steps)
        require(bool(self.run_dir), "run_dir", "a folder path", self.run_dir)
        require(bool(self.shards), "shards", "a shard folder path", self.shards)
        names = self.channel_names  # raises on unknown / repeated names
        model = getattr(self, "model", None)
        if model is not None and model.channels != len(names):
            raise ConfigError(
                f"config key 'model.channels': {model.channels} but {len(names)} channel(s) are "
                f"trained ({names}); set model.channels={len(names)}"
            )
        self.validate_task()

    def validate_task(self) -> None:
        """Checks of a trainer's own sections across each other (none by default)."""


def trainer_config(cls: type) -> type:
    """Class decorator (above ``@dataclass``) of a :class:`TrainerConfig` subclass: its fields
    in the order of the YAML files and of every recorded config (``run_dir`` ... ``channels``,
    then the trainer's own sections, then the shared ones), not base-class first."""
    fields_ = cls.__dataclass_fields__  # type: ignore[attr-defined]
    shared = list(TrainerConfig.__dataclass_fields__)
    head = shared[: shared.index("optim")]
    own = [k for k in fields_ if k not in shared]
    cls.__dataclass_fields__ = {k: fields_[k] for k in head + own + shared[len(head) :]}  # type: ignore[attr-defined]
    return cls


def check_paths(cfg: Any) -> None:
    """Check a training config's paths on disk before anything slow happens (importing torch
    and DeepSpeed, starting the process group): the shard folder ``shards`` holds a valid
    manifest (:func:`mhdsr.dataset.manifest.read_manifest`, which validates it) and the run
    folder ``run_dir`` is a writable folder or can be created. Imports only light modules.

    Raises:
        ShardError: ``shards`` is missing, or its manifest is missing or invalid (names the
            key ``shards``).
        ConfigError: ``data.val_split`` names no split of the manifest, or ``run_dir`` cannot
            be created or written (names the key).
    """
    from mhdsr.dataset.manifest import read_manifest
    from mhdsr.errors import ShardError
    from mhdsr.io_utils import check_output_dir

    try:
        manifest = read_manifest(cfg.shards)
    except ShardError as e:
        raise ShardError(f"config key 'shards': {e}") from None
    split = getattr(getattr(cfg, "data", None), "val_split", None)
    splits = manifest.get("splits") or {}
    if split is not None and split not in splits:
        raise ConfigError(
            f"config key 'data.val_split': {split!r} is not a split of {cfg.shards} "
            f"(splits: {', '.join(sorted(splits))})"
        )
    check_output_dir(cfg.run_dir, "run_dir")
