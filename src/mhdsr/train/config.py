"""Typed configuration of ``mhdsr train`` (one YAML file; no separate DeepSpeed JSON).

Top-level keys ``run_dir``, ``shards`` and ``max_steps`` are the overrides the command-line
contract names (docs/design.md). The optimizer, engine, EMA, checkpoint, log and debug sections
are shared with every trainer (:mod:`mhdsr.runtime.config`); the DeepSpeed config dict is
*generated* from them (:func:`mhdsr.runtime.engine.deepspeed_config`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mhdsr.config import require
from mhdsr.errors import ConfigError
from mhdsr.method.config import MethodConfig
from mhdsr.model.config import ModelConfig
from mhdsr.runtime.config import TrainerConfig, trainer_config

__all__ = ["DataConfig", "MethodConfig", "TrainConfig"]


@dataclass
class DataConfig:
    """How training batches are streamed and cut."""

    #: samples per rank per micro-step (DeepSpeed train_micro_batch_size_per_gpu)
    micro_batch: int = 4
    #: DataLoader worker processes per rank (0 = load in the training process)
    workers: int = 2
    #: decoded samples held per worker for stream shuffling (shards are pre-shuffled)
    shuffle_buffer: int = 16
    #: random periodic crop size in hi pixels (0 = full fields); a multiple of the model's size
    crop: int = 0
    #: random periodic translation by even offsets (a symmetry of the equations)
    roll: bool = True
    #: symmetry: one of the 8 elements of the shearing box's R/M/P group per sample (uniform);
    #: none: no augmentation (docs/design.md, "Symmetries")
    augment: Literal["none", "symmetry"] = "symmetry"
    #: fixed validation samples (first N of the validation split in the window below)
    val_samples: int = 64
    #: manifest split used for validation (and for the TensorBoard panels)
    val_split: str = "val"
    #: validation and panel samples start at this orbit (the turbulent window: MRI runs turn
    #: nonlinear at ~2.5 orbits); 0 = every snapshot
    val_orbit_start: float = 2.5
    #: sanity mode: train on ONE real sample (first of the train split) forever
    overfit: bool = False
    #: batches prefetched per worker
    prefetch: int = 2
    #: page-locked (pinned) batches, so the host-to-GPU copy is asynchronous (CUDA runs only)
    pin_memory: bool = True
    #: keep the loader workers between checkpoint segments (the stream restarts at every
    #: checkpoint; persistent workers restart it without new processes: same batches, tested)
    persistent_workers: bool = False

    def validate(self) -> None:
        """Raises ConfigError naming ``data.<key>``."""
        require(self.micro_batch >= 1, "data.micro_batch", "an integer >= 1", self.micro_batch)
        require(self.workers >= 0, "data.workers", "an integer >= 0", self.workers)
        require(
            self.shuffle_buffer >= 1, "data.shuffle_buffer", "an integer >= 1", self.shuffle_buffer
        )
        require(self.crop >= 0, "data.crop", "0 (full field) or a crop size", self.crop)
        require(self.val_samples >= 0, "data.val_samples", "an integer >= 0", self.val_samples)
        require(self.prefetch >= 1, "data.prefetch", "an integer >= 1", self.prefetch)
        require(self.val_orbit_start >= 0, "data.val_orbit_start", ">= 0", self.val_orbit_start)


@trainer_config
@dataclass
class TrainConfig(TrainerConfig):
    """``mhdsr train`` configuration: the shared trainer settings
    (:class:`~mhdsr.runtime.config.TrainerConfig`) and the super-resolution sections."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)

    def validate_task(self) -> None:
        """The crop against the model's levels."""
        m = self.model.size_multiple
        if self.data.crop and self.data.crop % max(m, 2):
            raise ConfigError(
                f"config key 'data.crop': {self.data.crop} must be a multiple of {max(m, 2)} (model levels)"
            )
