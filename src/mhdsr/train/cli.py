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
    add_config_args(p)
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from mhdsr.config import load_config, to_yaml
    from mhdsr.train.config import TrainConfig

    cfg = load_config(TrainConfig, args.config, args.overrides)
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    from mhdsr.train.loop import train

    train(cfg)
    return 0
