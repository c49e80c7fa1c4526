"""``mhdsr forecast {train,rollout}``: the forecast of the lo-grid evolution (the deterministic
neural operator and the generative forecaster).

``train`` runs as one process or under torchrun / the deepspeed launcher / srun (rerunning the
same command resumes from the latest checkpoint in ``run_dir``); ``mhdsr launch forecast``
submits it to SLURM. ``rollout`` writes autoregressive forecasts from chosen initial snapshots,
one HDF5 file per run (rerunning completes what is missing).
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``forecast`` command (light imports only; the work is imported by the handlers)."""
    from mhdsr.command import add_config_command

    p = sub.add_parser(
        "forecast",
        help="train the forecasters (FNO, generative) and roll them out as ensembles (lo grid)",
        description="Forecast the coarse (128^2) evolution: a Fourier neural operator "
        "(forecaster: operator) and the generative forecaster (forecaster: flow: conditional "
        "flow matching of x(t+dt) | x(t) with the super-resolution engine); the "
        "super-resolution model restores the small scales of each member at each lead "
        "(`mhdsr sample` with inputs.kind=forecast).",
    )
    fsub = p.add_subparsers(dest="forecast_command", metavar="ACTION", required=True)
    add_config_command(
        fsub,
        "train",
        help="train a forecaster: the operator (FNO) or the generative one (DeepSpeed; resumable)",
        description="Train on window shards: `forecaster: operator` (the config's top-level key; "
        "the default) trains the FNO (one-step + rolled-out loss), `forecaster: flow` the "
        "generative forecaster (conditional flow matching with the super-resolution engine, "
        "source persistence or operator). Works as one process or under torchrun/deepspeed/srun. "
        "Common overrides: run_dir=PATH shards=PATH max_steps=N engine.zero_stage=2 "
        "engine.precision=bf16.",
        example="run_dir=PATH max_steps=100",
        schema="mhdsr.forecast.config:train_schema_of",
        runner="mhdsr.forecast.task:train",
    )
    add_config_command(
        fsub,
        "rollout",
        help="autoregressive rollouts from initial snapshots to HDF5 (one file per run)",
        description="Roll the exported forecaster out for `steps` steps from the chosen "
        "initial snapshots of each run in inputs.runs (native lo runs, or hi runs via avgpool2); "
        "writes forecast (N_init, L, C, h, w) in physical units (a generative forecaster: "
        "`ensemble` member trajectories (N_init, E, L, C, h, w) with keyed noise and their mean) "
        "and the truth where it exists. "
        "Complete files with the same settings are kept, so a rerun only does what is missing.",
        example="checkpoint=PATH output_dir=PATH steps=8",
        schema="mhdsr.forecast.config:RolloutConfig",
        runner="mhdsr.forecast.rollout:run_rollout_cli",
    )
