"""``mhdsr launch {train,forecast,sample,rollout,status}``: submit to SLURM (or run locally) with submitit.

    mhdsr launch train  --config TRAIN.yaml  [--launch LAUNCH.yaml] [--dry-run] [--force] [key=value ...]
    mhdsr launch forecast --config FORECAST.yaml [--launch LAUNCH.yaml] [--dry-run] [--force] [key=value ...]
    mhdsr launch sample --config SAMPLE.yaml [--launch LAUNCH.yaml] [--dry-run] [--force] [key=value ...]
    mhdsr launch rollout --config ROLLOUT.yaml [--launch LAUNCH.yaml] [--dry-run] [--force] [key=value ...]
    mhdsr launch status --job-dir DIR

Submission and ``--dry-run`` run the same checks first (:func:`mhdsr.launch.submit.preflight`):
the job's own start-up checks, no live job of the same kind on the same folders (``--force``
overrides), and the request against the SLURM partition (:mod:`mhdsr.launch.cluster`).

``key=value`` overrides are the same as for ``mhdsr train`` / ``mhdsr forecast train`` /
``mhdsr sample`` / ``mhdsr forecast rollout``, plus launch
settings, bare (``nodes=4 time=24h``) or prefixed (``launch.nodes=4``); see
:func:`mhdsr.launch.config.split_overrides` for the (unambiguous) routing rule.
"""

from __future__ import annotations

import argparse
import textwrap

_LAUNCH_HELP = (
    "launch settings YAML (e.g. configs/launch/slurm.yaml); launch keys may also be given as "
    "key=value overrides: executor, nodes, gpus_per_node, tasks_per_node, cpus_per_task, mem_gb, "
    "partition, account, qos, constraint, time, exclusive, array_parallelism, sims_per_task, "
    "max_requeues, job_dir, ...; without this file the schema defaults apply (executor=slurm "
    "time=4h nodes=1 gpus_per_node=0 tasks_per_node=0 cpus_per_task=4: NOT those of "
    "configs/launch/slurm.yaml; `--dry-run` prints them). Shipped: configs/launch/slurm.yaml (GPU "
    "partitions), configs/launch/slurm-cpu.yaml (CPU-only), configs/launch/local.yaml (no SLURM)"
)


_ROUTING = (
    "Each key=value goes to exactly one config: launch.KEY=V to the launch settings; a bare key "
    "whose first part is a field of the {what} config to that config; a bare key that is "
    "a launch field (nodes, time, ...) to the launch settings; any other key is an error. "
    "Everything is validated before submission, and everything the job checks at start is "
    "checked here too (also by --dry-run), with the request against the SLURM partition."
)
_WHAT = {"train": "train", "forecast": "forecast train", "sample": "sample",
         "rollout": "forecast rollout"}  # fmt: skip
#: kinds submitted as a job array over the simulations not yet done
_ARRAYS = ("sample", "rollout")


def register(sub: argparse._SubParsersAction) -> None:
    from mhdsr.command import add_config_args

    p = sub.add_parser(
        "launch",
        help="submit training / sampling / forecast rollouts to SLURM with submitit (or run "
        "locally)",
        description="Submit jobs with submitit. Training (SR or forecast): one multi-node job, "
        "one rank per GPU, requeued on timeout/preemption and resumed from the newest "
        "checkpoint. Sampling and forecast rollouts: a job array over the simulations not yet "
        "generated (complete files with the same settings are skipped).",
    )
    lsub = p.add_subparsers(dest="launch_command", metavar="WHAT", required=True)
    for kind, text, example in (
        ("train", "submit a training job (TRAIN config + launch settings)",
         "mhdsr launch train --config configs/train/gpu-40m.yaml --launch "
         "configs/launch/slurm.yaml nodes=4 gpus_per_node=4 partition=gpu time=24h "
         "engine.device=auto\n"
         "  mhdsr launch train --config configs/train/cpu-small.yaml --launch "
         "configs/launch/slurm-cpu.yaml tasks_per_node=2 cpus_per_task=4  # CPU-only cluster"),
        ("forecast", "submit a forecast training job (FORECAST train config + launch settings)",
         "mhdsr launch forecast --config configs/forecast/cpu-small.yaml --launch "
         "configs/launch/slurm.yaml nodes=1 gpus_per_node=4 partition=gpu time=12h "
         "engine.device=auto"),
        ("sample", "submit a sampling job array (SAMPLE config + launch settings)",
         "mhdsr launch sample --config SAMPLE.yaml --launch configs/launch/slurm.yaml "
         "gpus_per_node=1 array_parallelism=16 time=2h"),
        ("rollout", "submit a forecast rollout job array (ROLLOUT config + launch settings): "
         "array task k of n rolls out runs k, k+n, ... of those without a complete file "
         "made with the same settings; resubmitting does only what is missing",
         "mhdsr launch rollout --config configs/forecast/rollout-demo.yaml --launch "
         "configs/launch/slurm.yaml gpus_per_node=1 sims_per_task=4 array_parallelism=16 "
         "time=2h"),
    ):  # fmt: skip
        q = lsub.add_parser(
            kind,
            help=text,
            description=textwrap.fill(f"{text}. {_ROUTING.format(what=_WHAT[kind])}", 79),
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        overrides = (
            "array_parallelism=8 time=2h" if kind in _ARRAYS else "nodes=2 gpus_per_node=4 time=24h"
        )
        add_config_args(q, print_config=False, example=overrides)  # --dry-run prints both
        q.add_argument("--launch", metavar="FILE", default=None, help=_LAUNCH_HELP)
        q.add_argument(
            "--dry-run",
            action="store_true",
            help="run every check a submission makes (the job's own start-up checks, live jobs "
            "on the same folders, the request against the SLURM partition) and print what would "
            "be submitted; submit nothing",
        )
        q.add_argument(
            "--force",
            action="store_true",
            help=f"submit even if a {kind} job for the same "
            f"{'output_dir' if kind in _ARRAYS else 'run_dir'} or job folder is still pending "
            "or running",
        )
        q.set_defaults(func=_run, kind=kind)
    s = lsub.add_parser(
        "status",
        help="what a job folder's submissions did: job states; sims done/failed/pending; train step",
        description="Per submission in a job folder (--job-dir: the submission's job_dir, by default "
        "<run_dir>/jobs or <output_dir>/jobs): "
        "each job's SLURM state with its reason (e.g. PENDING (Resources)), restarts, its log file, "
        "its own progress (training: steps this job made; sampling and rollouts: sims per array "
        "task, and samples for sampling) and, for FAILED, the last error line of its log; then "
        "the sims done / failed / pending now. Exit status 1 if a record or result file cannot "
        "be read.",
    )
    s.add_argument("--job-dir", required=True, metavar="DIR", help="job folder of a launch")
    s.set_defaults(func=_status)


def _target_schema(kind: str, args: argparse.Namespace | None = None) -> type:
    if kind == "train":
        from mhdsr.train.config import TrainConfig

        return TrainConfig
    if kind == "forecast":  # the operator or the generative forecaster: the file says which
        from mhdsr.forecast.config import train_schema_of

        return train_schema_of(args)
    if kind == "rollout":
        from mhdsr.forecast.config import RolloutConfig

        return RolloutConfig
    from mhdsr.sample.config import SampleConfig

    return SampleConfig


def _run(args: argparse.Namespace) -> int:
    import sys

    from mhdsr.config import load_config, to_yaml
    from mhdsr.launch import status as launch_status
    from mhdsr.launch import submit as launcher
    from mhdsr.launch.config import executor_parameters, load_launch_config, split_overrides

    schema = _target_schema(args.kind, args)
    target_over, launch_over = split_overrides(args.overrides, schema, args.kind)
    launch = load_launch_config(args.launch, launch_over)
    cfg = load_config(schema, args.config, target_over)
    trains = args.kind in ("train", "forecast")  # a forecast job is a training job
    factory = None
    if args.kind == "forecast":
        from mhdsr.launch.jobs import ForecastTrainJob

        factory = ForecastTrainJob
        if not launch.job_name:
            launch.job_name = "mhdsr-forecast"
    if args.dry_run:
        task_cls = factory.task_class(cfg) if factory is not None else None
        pre = launcher.preflight(
            "train" if trains else args.kind, cfg, launch, force=args.force, task_cls=task_cls
        )
        name = launch.job_name or f"mhdsr-{args.kind}"
        params = executor_parameters(
            launch, nodes=pre.nodes, tasks_per_node=pre.tasks_per_node, name=name
        )
        print(f"# {args.kind} config\n{to_yaml(pre.cfg)}# launch config\n{to_yaml(launch)}", end="")
        print(f"# submitit parameters ({launch.executor})")
        for k, v in params.items():
            print(f"#   {k}: {v!r}")
        if pre.partition and pre.partition.startswith("partition "):
            print(f"# fits {pre.partition}")
        elif pre.partition:
            print(f"# {pre.partition}")
        if args.kind in _ARRAYS:
            print(f"# {launcher.describe_bulk_plan(args.kind, pre.cfg, launch)}")
        for w in pre.warnings:
            print(f"warning: {w}", file=sys.stderr)
        print("# checks passed; dry run: nothing submitted")
        return 0
    if factory is not None:
        sub = launcher.submit_train(cfg, launch, job_factory=factory, force=args.force)
    elif args.kind == "train":
        sub = launcher.submit_train(cfg, launch, force=args.force)
    else:
        sub = launcher.submit_bulk(args.kind, cfg, launch, force=args.force)
        if sub is None:
            print(f"nothing to submit: every simulation is complete in {cfg.output_dir}")
            return 0
    print(launcher.describe(sub, launch), flush=True)
    if launch.executor == "debug":
        print(launch_status.format_status(launch_status.read_status(sub.job_dir)))
    return 0


def _status(args: argparse.Namespace) -> int:
    from mhdsr.launch import status as launch_status

    st = launch_status.read_status(args.job_dir)
    print(launch_status.format_status(st))
    return 1 if st["unreadable"] else 0
