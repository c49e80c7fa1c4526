"""Typed configuration of ``mhdsr train`` (one YAML file; no separate DeepSpeed JSON).

Top-level keys ``run_dir``, ``shards`` and ``max_steps`` are the overrides the command-line
contract names (DESIGN.md). Every field has a one-line comment with its unit. The DeepSpeed
config dict is *generated* from this schema (:func:`mhdsr.train.engine.deepspeed_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mhdsr.channels import CHANNELS, channel_indices
from mhdsr.config import require
from mhdsr.errors import ConfigError
from mhdsr.model.config import ModelConfig


@dataclass
class DataConfig:
    micro_batch: int = (
        4  # samples per rank per micro-step (DeepSpeed train_micro_batch_size_per_gpu)
    )
    workers: int = 2  # DataLoader worker processes per rank (0 = load in the training process)
    shuffle_buffer: int = (
        16  # decoded samples held per worker for stream shuffling (shards are pre-shuffled)
    )
    crop: int = 0  # random periodic crop size in hi pixels (0 = full fields); multiple of the model's size_multiple
    roll: bool = (
        True  # random periodic translation (exact symmetry of the shearing box's in-plane fields)
    )
    val_samples: int = 64  # fixed validation samples (first N of the val split, deterministic)
    val_split: str = "val"  # manifest split used for validation
    overfit: bool = (
        False  # sanity mode: train on ONE real sample (first of the train split) forever
    )
    prefetch: int = 2  # batches prefetched per worker

    def validate(self) -> None:
        require(self.micro_batch >= 1, "data.micro_batch", "an integer >= 1", self.micro_batch)
        require(self.workers >= 0, "data.workers", "an integer >= 0", self.workers)
        require(
            self.shuffle_buffer >= 1, "data.shuffle_buffer", "an integer >= 1", self.shuffle_buffer
        )
        require(self.crop >= 0, "data.crop", "0 (full field) or a crop size", self.crop)
        require(self.val_samples >= 0, "data.val_samples", "an integer >= 0", self.val_samples)
        require(self.prefetch >= 1, "data.prefetch", "an integer >= 1", self.prefetch)


@dataclass
class MethodConfig:
    sigma: float = 0.1  # std of the noise added to u at t = 0 (normalized units)
    loss_scale: float = 100.0  # loss = loss_scale * mean((v - v*)^2)
    t_dist: str = "uniform"  # uniform | logit_normal
    t_min: float = 1e-4  # training/sampling time range [t_min, t_max]
    t_max: float = 1.0 - 1e-4
    logit_mean: float = 0.0  # logit-normal location
    logit_std: float = 1.0  # logit-normal scale
    upsample: str = "bilinear"  # u = Up(lo): bilinear | bicubic (periodic)

    def validate(self) -> None:
        require(self.sigma > 0, "method.sigma", "> 0", self.sigma)
        require(self.loss_scale > 0, "method.loss_scale", "> 0", self.loss_scale)
        require(
            self.t_dist in ("uniform", "logit_normal"),
            "method.t_dist",
            "uniform | logit_normal",
            self.t_dist,
        )
        require(
            0.0 <= self.t_min < self.t_max <= 1.0,
            "method.t_min/t_max",
            "0 <= t_min < t_max <= 1",
            (self.t_min, self.t_max),
        )
        require(
            self.upsample in ("bilinear", "bicubic"),
            "method.upsample",
            "bilinear | bicubic",
            self.upsample,
        )


@dataclass
class OptimConfig:
    lr: float = 2e-4  # peak learning rate
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])  # AdamW betas
    eps: float = 1e-8  # AdamW epsilon
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    grad_clip: float = 1.0  # global gradient-norm clip (always set: DeepSpeed's default changed)
    grad_accum: int = 1  # micro-steps per optimizer step
    warmup_steps: int = 100  # linear warm-up from 0 to lr, in optimizer steps
    schedule: str = "constant"  # after warm-up: constant | cosine | inverse_sqrt
    min_lr_ratio: float = 0.1  # cosine floor as a fraction of lr
    decay_steps: int = 0  # cosine length in steps after warm-up (0 = until max_steps)

    def validate(self) -> None:
        require(self.lr > 0, "optim.lr", "> 0", self.lr)
        require(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "optim.betas",
            "two values in [0, 1)",
            self.betas,
        )
        require(
            self.grad_clip > 0,
            "optim.grad_clip",
            "> 0 (gradient clipping is always on)",
            self.grad_clip,
        )
        require(self.grad_accum >= 1, "optim.grad_accum", "an integer >= 1", self.grad_accum)
        require(self.warmup_steps >= 0, "optim.warmup_steps", ">= 0", self.warmup_steps)
        require(
            self.schedule in ("constant", "cosine", "inverse_sqrt"),
            "optim.schedule",
            "constant | cosine | inverse_sqrt",
            self.schedule,
        )
        require(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio", "in [0, 1]", self.min_lr_ratio)


@dataclass
class EngineConfig:
    device: str = "auto"  # cpu | cuda | auto (cuda when available)
    backend: str = "auto"  # gloo | nccl | auto (nccl on cuda, gloo on cpu)
    precision: str = "auto"  # fp32 | bf16 | auto (bf16 on cuda, fp32 on cpu)
    zero_stage: int = 2  # DeepSpeed ZeRO stage 0 | 1 | 2 (3 is refused: EMA needs full params)
    allgather_bucket_size: int = 50_000_000  # ZeRO-1/2 communication bucket (elements)
    reduce_bucket_size: int = 50_000_000
    compile: bool = False  # torch.compile the model (GPU)

    def validate(self) -> None:
        require(
            self.device in ("cpu", "cuda", "auto"),
            "engine.device",
            "cpu | cuda | auto",
            self.device,
        )
        require(
            self.backend in ("gloo", "nccl", "auto"),
            "engine.backend",
            "gloo | nccl | auto",
            self.backend,
        )
        require(
            self.precision in ("fp32", "bf16", "auto"),
            "engine.precision",
            "fp32 | bf16 | auto",
            self.precision,
        )
        if self.zero_stage == 3:
            raise ConfigError(
                "config key 'engine.zero_stage': ZeRO stage 3 is not supported: the fp32 EMA needs full "
                "parameters every step, and a ~40M-parameter UNet gains nothing from stage 3; use 1 or 2"
            )
        require(self.zero_stage in (0, 1, 2), "engine.zero_stage", "0, 1 or 2", self.zero_stage)
        if self.precision == "bf16" and self.zero_stage == 0:
            raise ConfigError(BF16_ZERO0)


#: DeepSpeed 0.19 accepts bf16 without ZeRO only with bf16 gradient accumulation.
BF16_ZERO0 = (
    "config keys 'engine.precision'/'engine.zero_stage': bf16 needs ZeRO stage 1 or 2 (DeepSpeed "
    "without ZeRO would accumulate gradients in bf16; mhdsr keeps fp32 gradient accumulation)"
)


@dataclass
class EMAConfig:
    decay: float = 0.9999  # EMA decay per optimizer step
    start_step: int = 0  # EMA = raw weights until this step, then averaging starts
    warmup: bool = True  # effective decay min(decay, (1 + n) / (10 + n)), n = steps since start
    every: int = (
        1  # update every N steps (decay applied as decay**N); >1 saves gathers in bf16 ZeRO
    )

    def validate(self) -> None:
        require(0 <= self.decay < 1, "ema.decay", "in [0, 1)", self.decay)
        require(self.start_step >= 0, "ema.start_step", ">= 0", self.start_step)
        require(self.every >= 1, "ema.every", ">= 1", self.every)


@dataclass
class CheckpointConfig:
    every: int = (
        500  # DeepSpeed checkpoint + weights export every N optimizer steps (and at the end)
    )
    keep: int = 3  # keep the last K checkpoints and exports

    def validate(self) -> None:
        require(self.every >= 1, "checkpoint.every", ">= 1", self.every)
        require(self.keep >= 1, "checkpoint.keep", ">= 1", self.keep)


@dataclass
class LogConfig:
    every: int = 10  # console + TensorBoard scalars every N steps
    val_every: int = 200  # validation loss every N steps and at the end (0 = never)
    image_every: int = 500  # comparison panels + spectra every N steps and at the end (0 = never)
    image_steps: int = 8  # sampler steps for the logged panels (Heun ODE, Euler-Maruyama SDE)
    t_bins: int = 4  # loss logged per t-bin
    tensorboard: bool = True

    def validate(self) -> None:
        require(self.every >= 1, "log.every", ">= 1", self.every)
        require(
            self.val_every >= 0 and self.image_every >= 0,
            "log.val_every/image_every",
            ">= 0",
            (self.val_every, self.image_every),
        )
        require(self.t_bins >= 1, "log.t_bins", ">= 1", self.t_bins)


@dataclass
class DebugConfig:
    nonfinite_loss_steps: list[int] = field(
        default_factory=list
    )  # inject NaN loss (rank 0) at these steps
    nonfinite_grad_steps: list[int] = field(
        default_factory=list
    )  # inject inf gradient (rank 0) at these steps
    zero_grad_steps: list[int] = field(
        default_factory=list
    )  # multiply the loss by 0 at these steps
    stop_after: int = 0  # exit (as if killed) after this many optimizer steps in this process


@dataclass
class TrainConfig:
    """``mhdsr train`` configuration."""

    run_dir: str = "runs/train"  # run folder: checkpoints/, export/, tb/, config.yaml, log.txt
    shards: str = "runs/demo/shards"  # shard folder holding manifest.json
    max_steps: int = 1000  # optimizer steps in total (resume continues to this)
    seed: int = 0  # base seed: data streams, noise, t, crops (all derived per rank/step)
    channels: list[str] = field(default_factory=list)  # channel subset by name; empty = all 8
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)

    @property
    def channel_names(self) -> list[str]:
        """The trained channels in canonical order of the config (all 8 when empty)."""
        return [CHANNELS[i] for i in channel_indices(self.channels)]

    def validate(self) -> None:
        require(self.max_steps >= 1, "max_steps", "an integer >= 1", self.max_steps)
        require(bool(self.run_dir), "run_dir", "a folder path", self.run_dir)
        require(bool(self.shards), "shards", "a shard folder path", self.shards)
        names = self.channel_names  # raises on unknown / repeated names
        if self.model.channels != len(names):
            raise ConfigError(
                f"config key 'model.channels': {self.model.channels} but {len(names)} channel(s) are "
                f"trained ({names}); set model.channels={len(names)}"
            )
        m = self.model.size_multiple
        if self.data.crop and self.data.crop % max(m, 2):
            raise ConfigError(
                f"config key 'data.crop': {self.data.crop} must be a multiple of {max(m, 2)} (model levels)"
            )
