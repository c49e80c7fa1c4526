"""The callables that submitit pickles and runs inside jobs (one per task/rank).

They hold only the resolved config as a plain dict, so unpickling is cheap and imports no torch:
submitit installs its timeout/preemption handler right after unpickling, and a signal that
arrives before that would kill the task. Heavy imports happen inside ``__call__``.

Requeue contract (submitit): on the USR2 signal before the time limit, or on preemption, global
rank 0 calls ``checkpoint()``, pickles what it returns, runs ``scontrol requeue`` and exits; the
other ranks are stopped by SLURM. No collective runs in that handler: training saves checkpoints
periodically (``checkpoint.every``) and a restarted job resumes from the NEWEST complete one on
disk (:func:`mhdsr.train.task.train` reads ``run_dir``), not from one fixed at submission.
Sampling and rollout array tasks skip completed files, so a restarted array task redoes only
what is missing.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import submitit
from submitit.helpers import Checkpointable, DelayedSubmission


def _banner(what: str) -> None:
    """One line per task in the job log: who runs where, and which (re)start this is."""
    print(
        f"mhdsr launch: {what} on {socket.gethostname()} pid {os.getpid()} | "
        f"SLURM job {os.environ.get('SLURM_JOB_ID', '-')} "
        f"restart {os.environ.get('SLURM_RESTART_COUNT', '0')}",
        flush=True,
    )


class TrainJob(Checkpointable):
    """Runs ``mhdsr train`` in every task of a (multi-node) job; requeues itself on timeout.

    Each task exports the torch.distributed variables (``MASTER_ADDR``, ``MASTER_PORT``,
    ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``) from its submitit/SLURM
    environment, without narrowing ``CUDA_VISIBLE_DEVICES`` (DeepSpeed selects the GPU from
    ``LOCAL_RANK``), then calls :func:`mhdsr.train.task.train`, the entry of ``mhdsr train``.

    Args:
        train_config: the resolved :class:`~mhdsr.train.config.TrainConfig` as a plain dict
            (:func:`mhdsr.config.to_dict`).
    """

    def __init__(self, train_config: dict[str, Any]) -> None:
        self.train_config = train_config

    @staticmethod
    def task_class(cfg: Any = None) -> type:
        """The task the job trains (built at submission too, to check the data first)."""
        from mhdsr.train.task import SRTask

        return SRTask

    def __call__(self) -> dict[str, Any]:
        """Train (or resume) to ``max_steps``; returns :func:`~mhdsr.train.task.train`'s summary."""
        # Values inherited from the submitting shell (e.g. inside salloc) are stale: overwrite.
        dist = submitit.helpers.TorchDistributedEnvironment().export(
            set_cuda_visible_devices=False, overwrite=True
        )
        _banner(
            f"train rank {dist.rank}/{dist.world_size} (local {dist.local_rank}), "
            f"master {dist.master_addr}:{dist.master_port}"
        )
        from mhdsr.config import from_dict
        from mhdsr.train.config import TrainConfig
        from mhdsr.train.task import train

        return train(from_dict(TrainConfig, self.train_config))

    def checkpoint(self) -> DelayedSubmission:
        """A fresh job (no state carried over): the restart resumes from the newest checkpoint."""
        return DelayedSubmission(TrainJob(self.train_config))


class ForecastTrainJob(TrainJob):
    """:class:`TrainJob` for ``mhdsr forecast train``: the same per-task torch.distributed
    export and requeue contract, running :func:`mhdsr.forecast.task.train` (which resumes from
    the newest checkpoint in ``run_dir``).

    Args:
        train_config: the resolved :class:`~mhdsr.forecast.config.ForecastTrainConfig` as a
            plain dict.
    """

    @staticmethod
    def task_class(cfg: Any = None) -> type:
        """The task the job trains (built at submission too, to check the data first): the
        operator's or the generative forecaster's, by ``cfg.forecaster``."""
        from mhdsr.forecast.task import task_class

        return task_class(cfg)

    def __call__(self) -> dict[str, Any]:
        """Train (or resume) the forecast model to ``max_steps``; returns the run summary."""
        dist = submitit.helpers.TorchDistributedEnvironment().export(
            set_cuda_visible_devices=False, overwrite=True
        )
        _banner(
            f"forecast train rank {dist.rank}/{dist.world_size} (local {dist.local_rank}), "
            f"master {dist.master_addr}:{dist.master_port}"
        )
        from mhdsr.config import from_dict
        from mhdsr.forecast.config import train_schema
        from mhdsr.forecast.task import train

        schema = train_schema(self.train_config.get("forecaster"))
        return train(from_dict(schema, self.train_config))

    def checkpoint(self) -> DelayedSubmission:
        """A fresh job (no state carried over): the restart resumes from the newest checkpoint."""
        return DelayedSubmission(ForecastTrainJob(self.train_config))


class ArrayJob(Checkpointable):
    """Array task ``task_index`` of ``num_tasks`` of a bulk job (sampling, rollouts): runs its
    share of the work list, items k, k + n, k + 2n, ... (n = ``num_tasks``).

    The bulk runners skip complete output files and write atomically, so a rerun, requeue or
    resubmission only does what is missing: the inherited ``checkpoint()`` resubmits the same
    call. Subclasses name the config schema and the runner (:meth:`run`).

    Args:
        config: the resolved config as a plain dict.
        task_index: k, in ``[0, num_tasks)``.
        num_tasks: n, the stride over the work list.
    """

    #: the banner's word for the task ("sample task 3/16")
    what = "array"

    def __init__(self, config: dict[str, Any], task_index: int, num_tasks: int) -> None:
        if not 0 <= task_index < num_tasks:
            raise ValueError(f"task_index {task_index} not in [0, {num_tasks})")
        self.config = config
        self.task_index = task_index
        self.num_tasks = num_tasks

    def __call__(self) -> dict[str, Any]:
        """Returns the runner's summary (sim names done / skipped / ... of this task)."""
        _banner(f"{self.what} task {self.task_index}/{self.num_tasks}")
        if not logging.getLogger().handlers:  # as the CLI: progress lines in the job log
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        return self.run()

    def run(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError


class SampleJob(ArrayJob):
    """Sampling array task: :func:`mhdsr.sample.bulk.run_sample` on simulations k, k + n, ... of
    ``list_work(cfg)`` (see :class:`ArrayJob`).

    Args:
        sample_config: the resolved sample config as a plain dict.
        task_index: k, in ``[0, num_tasks)``.
        num_tasks: n, the stride over the work list.
    """

    what = "sample"

    @property
    def sample_config(self) -> dict[str, Any]:
        return self.config

    def run(self) -> dict[str, Any]:
        """Returns :func:`~mhdsr.sample.bulk.run_sample`'s summary: ``done``, ``skipped``,
        ``failed`` (simulation names of this task), ``errors``, ``samples``, timings."""
        from mhdsr.config import from_dict
        from mhdsr.sample.bulk import run_sample
        from mhdsr.sample.config import SampleConfig

        cfg = from_dict(SampleConfig, self.config)
        return run_sample(cfg, task_index=self.task_index, num_tasks=self.num_tasks)


class RolloutJob(ArrayJob):
    """Forecast rollout array task: :func:`mhdsr.forecast.rollout.run_rollout` on runs k, k + n,
    ... of ``mhdsr.forecast.rollout.list_work(cfg)`` (see :class:`ArrayJob`); a run's file is
    the same whichever task writes it.

    Args:
        config: the resolved :class:`~mhdsr.forecast.config.RolloutConfig` as a plain dict.
        task_index: k, in ``[0, num_tasks)``.
        num_tasks: n, the stride over the work list.
    """

    what = "rollout"

    def run(self) -> dict[str, Any]:
        """Returns :func:`~mhdsr.forecast.rollout.run_rollout`'s summary: ``done``,
        ``skipped``, ``busy`` (sim names of this task), ``files``, ``seconds``."""
        from mhdsr.config import from_dict
        from mhdsr.forecast.config import RolloutConfig
        from mhdsr.forecast.rollout import run_rollout

        cfg = from_dict(RolloutConfig, self.config)
        return run_rollout(cfg, task_index=self.task_index, num_tasks=self.num_tasks)
