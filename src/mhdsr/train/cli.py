"""``mhdsr train --config FILE [key=value ...]``: flow-matching training with DeepSpeed.

Single process, or under torchrun / the deepspeed launcher / srun for many; rerunning the
same command resumes from the latest checkpoint in ``run_dir``.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from mhdsr.cli import add_config_args

    p = sub.add_parser(
        "train",
        help="train the velocity network (DeepSpeed; resumable by rerunning)",
        description="Train by flow matching. Works as one process or under torchrun/deepspeed/srun. "
        "Common overrides: run_dir=PATH shards=PATH max_steps=N engine.zero_stage=2 engine.precision=bf16.",
    )
    add_config_args(p, example="run_dir=PATH max_steps=100 model.width=64")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from mhdsr.cli import config_from_args
    from mhdsr.train.config import TrainConfig

    cfg = config_from_args(TrainConfig, args)
    if cfg is None:
        return 0
    from mhdsr.train.loop import train

    train(cfg)
    return 0
