"""``mhdsr train --config FILE [key=value ...]``: flow-matching training with DeepSpeed.

Single process, or under torchrun / the deepspeed launcher / srun for many; rerunning the
same command resumes from the latest checkpoint in ``run_dir``.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from mhdsr.command import add_config_command

    add_config_command(
        sub,
        "train",
        help="train the velocity network (DeepSpeed; resumable by rerunning)",
        description="Train by flow matching. Works as one process or under torchrun/deepspeed/srun. "
        "Common overrides: run_dir=PATH shards=PATH max_steps=N engine.zero_stage=2 engine.precision=bf16.",
        example="run_dir=PATH max_steps=100 model.width=64",
        schema="mhdsr.train.config:TrainConfig",
        runner="mhdsr.train.cli:run",
    )


def run(cfg: object) -> object:
    """Check the config's paths (``shards``, ``run_dir``) before torch and DeepSpeed are
    imported, so a wrong path is reported in about a second; then train."""
    from mhdsr.runtime.config import check_paths

    check_paths(cfg)
    from mhdsr.train.task import train

    return train(cfg)
