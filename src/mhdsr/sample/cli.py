"""``mhdsr sample --config FILE [key=value ...]``: bulk inference to one HDF5 file per sim.

Runs as one process, or under torchrun / srun (each rank takes every W-th sim; see
:mod:`mhdsr.sample.bulk`). Rerunning the same command skips complete files. Exit status 0 when
every sim of this task is complete, 1 when some failed (listed), 2 on a configuration error.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``sample`` command (light imports only; torch is imported by the handler)."""
    from mhdsr.command import add_config_command

    p = add_config_command(
        sub,
        "sample",
        help="super-resolve shard splits or AthenaK runs to HDF5 (ODE/SDE samplers)",
        description="Bulk inference: one HDF5 file per input sim, ensemble members in physical "
        "units. Rerunning skips complete files; under torchrun/srun ranks split the sims. "
        "Common overrides: checkpoint=PATH shards=PATH output_dir=PATH inputs.kind=runs "
        "'inputs.runs=[\"data/athenak/mri128_nu3e-5/seed_000[23]\"]' sampler.name=euler_maruyama "
        "sampler.steps=N ensemble=N batch_size=N.",
        example="checkpoint=runs/demo/train output_dir=PATH sampler.steps=8 ensemble=4",
        schema="mhdsr.sample.config:SampleConfig",
        runner="mhdsr.sample.cli:run",
    )
    p.add_argument(
        "--status",
        action="store_true",
        help="check the config, checkpoint and existing files like a run would (a file made with "
        "other settings is an error), list complete / pending sims and exit (no sampling)",
    )


def run(cfg: object, args: argparse.Namespace) -> int:
    """Sample (or, with ``--status``, report complete / pending sims)."""
    import logging

    from mhdsr.sample.bulk import format_summary, prepare, run_sample, status

    if args.status:
        plan = prepare(cfg)  # checks like a run: a file made with other settings is an error
        st = status(cfg, [sim.name for sim in plan.sims])
        n = len(st["done"]) + len(st["pending"])
        print(f"{cfg.output_dir}: {len(st['done'])}/{n} sim(s) complete")
        for name in st["pending"]:
            print(f"  pending {name}")
        return 0
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    res = run_sample(cfg)
    print(format_summary(res, cfg))
    return 1 if res["failed"] else 0
