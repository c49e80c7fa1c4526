"""``mhdsr eval --config FILE [key=value ...]``: metrics.json + figures + report.md.

Light at import (the handler imports numpy, h5py, torch and matplotlib), so ``mhdsr --help``
stays fast. Common overrides: ``samples=PATH shards=PATH output_dir=PATH max_panels=N``.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``eval`` command."""
    from mhdsr.cli import add_config_args

    p = sub.add_parser(
        "eval",
        help="score sample files against the truth and baselines (metrics.json, figures, report)",
        description="Evaluate every *.h5 below `samples` (one (method, sim) result each) against "
        "the pixel truth in `shards` (test/val sims) or the mean spectrum of the reference split "
        "(held-out native-lo sims), next to bilinear and bicubic baselines. Writes "
        "output_dir/metrics.json, output_dir/figures/*.png, output_dir/report.md and output_dir/summary.md (the summary table).",
    )
    add_config_args(p, example="samples=runs/demo/samples output_dir=runs/demo/eval max_panels=2")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from mhdsr.cli import config_from_args
    from mhdsr.eval.config import EvalConfig

    cfg = config_from_args(EvalConfig, args)
    if cfg is None:
        return 0
    from mhdsr.eval.run import run_eval

    run_eval(cfg)
    return 0
