"""``mhdsr eval --config FILE [key=value ...]``: metrics.json + figures + report.md.

Light at import (the handler imports numpy, h5py, torch and matplotlib), so ``mhdsr --help``
stays fast. Common overrides: ``samples=PATH shards=PATH output_dir=PATH max_panels=N``.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``eval`` command."""
    from mhdsr.command import add_config_command

    add_config_command(
        sub,
        "eval",
        help="score sample files against the truth and baselines (metrics.json, figures, report)",
        description="Evaluate every *.h5 below `samples` (one (method, sim) result each) against "
        "the pixel truth in `shards` (test/val sims) or the mean spectrum of the reference split "
        "(held-out native-lo sims), next to interpolation baselines. Writes output_dir/metrics.json, "
        "output_dir/figures/*.png, output_dir/report.md and output_dir/summary.md (the summary table).",
        example="samples=runs/demo/samples output_dir=runs/demo/eval max_panels=2",
        schema="mhdsr.eval.config:EvalConfig",
        runner="mhdsr.eval.run:run_eval",
    )
