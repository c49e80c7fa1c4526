"""Submit training jobs and sampling / rollout job arrays with submitit; say where they and their logs are.

Side effects live here (the CLI only parses and prints). A submission writes into the job folder
(``launch.job_dir``, default ``<run_dir>/jobs`` or ``<output_dir>/jobs``), next to submitit's own
``<id>_submitted.pkl`` / ``<id>_<task>_log.out`` / ``<id>_<task>_log.err`` files:

    <id>_<kind>.yaml        resolved train, sample or rollout config the job runs
    <id>_launch.yaml        resolved launch config
    <id>_submission.json    what was submitted (kind, executor, job ids, array plan, time)

``<id>`` is the SLURM job id (array: the array job id), the local controller's pid, or submitit's
debug id. :func:`mhdsr.launch.status.read_status` turns a job folder back into a done / failed / pending
summary.

Nothing here builds a shell command from config values: SLURM options become ``#SBATCH`` lines
that submitit quotes, and the SLURM client commands run with argument lists.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit

from mhdsr.config import to_dict, to_yaml
from mhdsr.errors import ConfigError, MhdsrError
from mhdsr.io_utils import write_json_atomic, write_text_atomic
from mhdsr.launch.config import LaunchConfig, executor_parameters, format_minutes
from mhdsr.launch.jobs import RolloutJob, SampleJob, TrainJob

#: SLURM states after which a job does not run again by itself (squeue / scontrol names)
ENDED_STATES = frozenset(
    {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
     "DEADLINE", "OUT_OF_MEMORY", "REVOKED"}
)  # fmt: skip


class LaunchError(MhdsrError):
    """A submission cannot be made (no SLURM on this machine, missing inputs, sbatch refused)."""


@dataclass
class Submission:
    """What one ``mhdsr launch`` call submitted.

    Attributes:
        kind: ``"train"``, or a bulk kind (:data:`BULK_KINDS`: ``"sample"``, ``"rollout"``).
        executor: ``slurm`` | ``local`` | ``debug``.
        job_dir: the submitit folder (absolute).
        jobs: submitit jobs; training: one (``nodes * ranks`` tasks); sampling / rollouts: one
            per array element, in the order of ``tasks``.
        record: the ``<id>_submission.json`` file.
        num_tasks: bulk: the stride n of the work list (0 for training).
        tasks: bulk: the task index k run by each array element (empty for training).
        pending: bulk: the simulations that were missing at submission.
    """

    kind: str
    executor: str
    job_dir: Path
    jobs: list[Any]
    record: Path
    num_tasks: int = 0
    tasks: list[int] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def main_id(self) -> str:
        """The job id (SLURM: the array job id for an array; debug/local: the first job's id)."""
        jid = str(self.jobs[0].job_id)
        return jid.split("_", 1)[0] if self.executor == "slurm" else jid


# ----------------------------------------------------------------------------------------------
# Executors
# ----------------------------------------------------------------------------------------------


def _package_root() -> Path:
    """The folder that holds the ``mhdsr`` package the submitting process imported."""
    import mhdsr

    return Path(mhdsr.__file__).resolve().parent.parent


@contextlib.contextmanager
def _submission_env() -> Iterator[None]:
    """Environment seen by ``sbatch`` / the local controller while submitting.

    Jobs inherit the submitting environment (SLURM's default ``--export=ALL``): SLURM_*,
    SUBMITIT_* and torch.distributed variables of an enclosing allocation are hidden (they would
    confuse the job), and the package root is prepended to ``PYTHONPATH`` as an absolute path so
    the pickled callables import the same ``mhdsr`` even when it is not pip-installed.
    """
    with submitit.helpers.clean_env():
        old = os.environ.get("PYTHONPATH")
        parts = [str(_package_root())] + [
            str(Path(p).resolve()) for p in (old or "").split(os.pathsep) if p
        ]
        os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = old


def make_executor(
    launch: LaunchConfig, job_dir: Path, *, nodes: int, tasks_per_node: int, name: str
) -> submitit.AutoExecutor:
    """A submitit executor for ``launch.executor`` with every SLURM option of ``launch``.

    Args:
        launch: validated launch config.
        job_dir: submitit folder (created).
        nodes: nodes per job.
        tasks_per_node: processes per node.
        name: job name.

    Returns:
        The configured ``submitit.AutoExecutor``.

    Raises:
        LaunchError: ``executor=slurm`` but ``srun`` is not on PATH, or SLURM refused an option.
    """
    job_dir.mkdir(parents=True, exist_ok=True)
    try:
        ex = submitit.AutoExecutor(
            folder=job_dir,
            cluster=launch.executor,
            slurm_max_num_timeout=launch.max_requeues,
            local_max_num_timeout=launch.max_requeues,
        )
    except RuntimeError as e:  # SlurmExecutor: 'Could not detect "srun"'
        raise LaunchError(
            f"executor=slurm but this machine has no SLURM client ({e}); run on a login node, "
            "or use executor=local"
        ) from None
    params = executor_parameters(launch, nodes=nodes, tasks_per_node=tasks_per_node, name=name)
    try:
        ex.update_parameters(**params)
    except (ValueError, NameError) as e:
        raise LaunchError(f"submitit rejected the launch parameters: {e}") from None
    return ex


_SUBMITIT_TEMP = re.compile(r"^([0-9a-f]{32}\.pkl|\.submission_file_[0-9a-f]{32}\.sh)$")


def _submit(ex: submitit.AutoExecutor, calls: Sequence[Any]) -> list[Any]:
    """Submit zero-argument callables (several: one job array).

    Raises:
        LaunchError: sbatch refused the job (its message included); submitit's temporary
            pickles of the failed submission are removed from the job folder.
    """
    before = set(ex.folder.iterdir()) if ex.folder.is_dir() else set()
    try:
        with _submission_env():
            if len(calls) == 1:
                return [ex.submit(calls[0])]
            return list(ex.submit_array(list(calls)))
    except submitit.core.utils.FailedJobError as e:
        for path in set(ex.folder.iterdir()) - before:
            if _SUBMITIT_TEMP.match(path.name):
                path.unlink(missing_ok=True)
        raise LaunchError(f"submission failed: {str(e).strip()}") from None


# ----------------------------------------------------------------------------------------------
# Before submitting: live jobs of the same kind, what the partition offers
# ----------------------------------------------------------------------------------------------

#: the file in a run_dir / output_dir that lists the job folders of its submissions
LEDGER = ".mhdsr-launch.jsonl"


def _job_alive(executor: str, job_id: str, squeue: dict[str, tuple[str, str]]) -> str | None:
    """The job's state if it is queued or running (may still write), else None."""
    if executor == "slurm":
        st = squeue.get(job_id)
        return st[0] if st is not None and st[0] not in ENDED_STATES else None
    if executor == "local" and job_id.isdigit():
        try:
            os.kill(int(job_id), 0)
        except OSError:
            return None
        return "RUNNING"
    return None


def live_jobs(kind: str, job_dir: Path, base: str | Path) -> list[tuple[str, str, Path]]:
    """Submissions of ``kind`` for the same job folder or run/output folder that are still
    PENDING/RUNNING (or otherwise not ended): ``[(job id, state, record), ...]``.

    Looks at the records in ``job_dir``, in ``<base>/jobs`` and in every job folder that
    ``<base>/.mhdsr-launch.jsonl`` lists (a custom ``job_dir`` of an earlier submission).
    """
    import json

    from mhdsr.launch.cluster import squeue_states

    dirs = [job_dir, Path(base) / "jobs"]
    ledger = Path(base) / LEDGER
    if ledger.is_file():
        for line in ledger.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                dirs.append(Path(json.loads(line)["job_dir"]))
    found: list[tuple[str, str, Path]] = []
    for d in dict.fromkeys(p.resolve() for p in dirs):
        for rec_path in sorted(d.glob("*_submission.json")) if d.is_dir() else []:
            try:
                rec = json.loads(rec_path.read_text())
                ids, executor = [str(j) for j in rec["job_ids"]], str(rec["executor"])
            except (OSError, ValueError, TypeError, KeyError):
                continue
            if rec.get("kind") != kind:
                continue
            sq = squeue_states(ids) if executor == "slurm" else {}
            for jid in ids:
                state = _job_alive(executor, jid, sq)
                if state is not None:
                    found.append((jid, state, rec_path))
    return found


def refuse_duplicates(kind: str, job_dir: Path, base: str | Path, what: str) -> None:
    """Raise if a live submission of ``kind`` uses the same job folder or ``base`` folder.

    Raises:
        LaunchError: naming the live job id(s), their state and record; ``--force`` overrides.
    """
    live = live_jobs(kind, job_dir, base)
    if live:
        ids = ", ".join(f"{j} ({s})" for j, s, _ in live[:8])
        raise LaunchError(
            f"{what} {base} already has a live {kind} job: {ids}, recorded in {live[0][2]}; "
            f"wait for it, cancel it (scancel {live[0][0].split('_', 1)[0]}), or pass --force to "
            "submit another one anyway"
        )


def check_partition(launch: LaunchConfig, *, nodes: int, tasks_per_node: int) -> str | None:
    """For ``executor=slurm``: refuse a request the partition can never run (see
    :func:`mhdsr.launch.cluster.check_request`); returns a summary of the partition."""
    if launch.executor != "slurm":
        return None
    import shutil

    from mhdsr.launch.cluster import check_request

    if shutil.which("scontrol") is None:  # e.g. --dry-run on a laptop; sbatch is refused later
        return "no partition checked (no SLURM client on this machine)"

    return check_request(launch, nodes=nodes, tasks_per_node=tasks_per_node)


def _append_ledger(base: str | Path, sub: Submission) -> None:
    import json

    with contextlib.suppress(OSError):
        Path(base).mkdir(parents=True, exist_ok=True)
        with (Path(base) / LEDGER).open("a") as f:
            f.write(json.dumps({"kind": sub.kind, "job_id": sub.main_id,
                                "job_dir": str(sub.job_dir)}) + "\n")  # fmt: skip


@dataclass
class Preflight:
    """What :func:`preflight` found: the config with absolute paths, the job folder, warnings,
    and the partition summary (SLURM)."""

    cfg: Any
    job_dir: Path
    warnings: list[str]
    partition: str | None
    nodes: int
    tasks_per_node: int


def preflight(
    kind: str, cfg: Any, launch: LaunchConfig, *, force: bool = False, task_cls: Any = None
) -> Preflight:
    """Every check made before a submission (also by ``--dry-run``): the job's own start-up
    checks (:func:`check_train` / :func:`check_sample` / :func:`check_rollout`), no live job of
    the same kind on the same folders (unless ``force``), and the request against the SLURM
    partition. ``kind``: ``train`` or a bulk kind (:data:`BULK_KINDS`).

    Raises:
        ConfigError, LaunchError, MhdsrError: the first check that fails.
    """
    if kind == "train":
        cfg = absolute_train_config(cfg)
        warnings = check_train(cfg, launch, task_cls)
        base, what, nodes, tasks = cfg.run_dir, "run_dir", launch.nodes, launch.ranks_per_node()
        if not launch.tasks_per_node and not launch.gpus_per_node:
            warnings.append(
                "gpus_per_node=0 and tasks_per_node=0: one rank per node; for N CPU ranks set "
                "tasks_per_node=N (configs/launch/slurm-cpu.yaml)"
            )
    else:
        api = bulk_api(kind)
        cfg = api.absolute(cfg)
        warnings = api.check(cfg, launch)
        base, what, nodes, tasks = cfg.output_dir, "output_dir", 1, 1
    job_dir = default_job_dir(launch, base)
    if not force:
        refuse_duplicates(kind, job_dir, base, what)
    part = check_partition(launch, nodes=nodes, tasks_per_node=tasks)
    return Preflight(cfg, job_dir, warnings, part, nodes, tasks)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def default_job_dir(launch: LaunchConfig, base: str | Path) -> Path:
    """``launch.job_dir`` if set, else ``<base>/jobs`` (absolute)."""
    return Path(launch.job_dir or Path(base) / "jobs").expanduser().resolve()


def check_train(cfg: Any, launch: LaunchConfig, task_cls: Any = None) -> list[str]:
    """Everything a training job would refuse at start, checked before submission.

    Device against GPUs, the shard folder (manifest, channels, split, validation window: the
    task is built from the shards as the job would), and, when ``run_dir`` already holds a
    checkpoint, that the model-defining settings and the normalization match it (the job would
    refuse to resume otherwise).

    Args:
        cfg: train (or forecast train) config with absolute paths.
        launch: launch config.
        task_cls: the task class the job builds (``SRTask`` by default).

    Returns:
        Warnings (e.g. ``max_steps`` below ``ema.start_step``), each one line.

    Raises:
        ConfigError: CUDA requested without GPUs, GPUs requested for a cpu-only config, or the
            run folder's checkpoint was trained with other settings.
        LaunchError: the shard folder has no ``manifest.json``.
        MhdsrError: the shards cannot be used (what the job would raise).
    """
    if launch.gpus_per_node == 0 and cfg.engine.device == "cuda":
        raise ConfigError(
            "config key 'engine.device' is cuda but launch.gpus_per_node=0: on a GPU cluster use "
            "--launch configs/launch/slurm.yaml (gpus_per_node=4); on a CPU-only cluster "
            "engine.device=cpu"
        )
    if launch.gpus_per_node > 0 and cfg.engine.device == "cpu":
        raise ConfigError(
            f"launch.gpus_per_node={launch.gpus_per_node} but engine.device=cpu: on a CPU-only "
            "cluster use --launch configs/launch/slurm-cpu.yaml (or gpus_per_node=0 "
            "tasks_per_node=N cpus_per_task=M); on a GPU cluster set engine.device=auto"
        )
    if not (Path(cfg.shards) / "manifest.json").is_file():
        raise LaunchError(f"shards={cfg.shards}: no manifest.json there (build shards first)")
    if task_cls is None:
        from mhdsr.train.task import SRTask as task_cls
    from mhdsr.runtime import checkpoint as ckpt
    from mhdsr.runtime.checkpoint import check_frozen, check_normalization

    task = task_cls(cfg, None)  # reads and checks the data description, as the job does first
    latest = ckpt.find_latest(cfg.run_dir)
    if latest is not None:
        if latest.config is not None:
            check_frozen(cfg, latest.config, task.frozen_keys)
        check_normalization(
            cfg,
            latest.normalization,
            task.normalization,
            task.manifest_sha256,
            latest.manifest_sha256,
        )
    return train_warnings(cfg)


def train_warnings(cfg: Any) -> list[str]:
    """Settings that run but are probably not meant (one line each)."""
    warn = []
    ema = getattr(cfg, "ema", None)
    if ema is not None and cfg.max_steps <= ema.start_step:
        warn.append(
            f"max_steps={cfg.max_steps} <= ema.start_step={ema.start_step}: the EMA never "
            "averages, the exported 'ema' weights (sampling's default weights=ema) equal the "
            "raw weights; lower ema.start_step or train longer"
        )
    return warn


def check_sample(cfg: Any, launch: LaunchConfig) -> list[str]:
    """Everything a sampling task would refuse at start, checked before submission: device
    against GPUs, the checkpoint, the inputs and their channels, resolutions, sampler options,
    and existing output files made with other settings (``mhdsr.sample.bulk.prepare`` on cpu).

    Returns:
        Warnings (e.g. EMA weights that equal the raw weights).

    Raises:
        ConfigError: ``device=cuda`` without ``gpus_per_node``; see ``prepare``.
        LaunchError: no checkpoint.
        MhdsrError: what the job would raise in ``prepare``.
    """
    if cfg.device == "cuda" and launch.gpus_per_node == 0:
        raise ConfigError(
            "config key 'device' is cuda but launch.gpus_per_node=0: request a GPU per array "
            "task (gpus_per_node=1) or sample with device=cpu"
        )
    if not Path(cfg.checkpoint).exists():
        raise LaunchError(f"checkpoint={cfg.checkpoint}: no such run folder or weights file")
    from mhdsr.sample.bulk import prepare

    plan = prepare(cfg, "cpu")
    return sample_warnings(cfg, plan)


def sample_warnings(cfg: Any, plan: Any) -> list[str]:
    """See :func:`mhdsr.sample.bulk.ema_warnings` (the sampling task logs the same lines)."""
    from mhdsr.sample.bulk import ema_warnings

    return ema_warnings(cfg, plan)


def check_rollout(cfg: Any, launch: LaunchConfig) -> list[str]:
    """Everything a rollout array task would refuse at start, checked before submission:
    device against GPUs, the checkpoint (exists, is a forecast export), the inputs (globs,
    grids, initial snapshots), existing output files made with other settings
    (:func:`mhdsr.forecast.rollout.prepare` on cpu), and that ``output_dir`` can be written.

    Returns:
        Warnings (none so far).

    Raises:
        ConfigError: ``device=cuda`` without ``gpus_per_node``; an unwritable ``output_dir``;
            see ``prepare``.
        LaunchError: no checkpoint.
        MhdsrError: what the job would raise in ``prepare``.
    """
    if cfg.device == "cuda" and launch.gpus_per_node == 0:
        raise ConfigError(
            "config key 'device' is cuda but launch.gpus_per_node=0: request a GPU per array "
            "task (gpus_per_node=1) or roll out with device=cpu"
        )
    if not Path(cfg.checkpoint).exists():
        raise LaunchError(f"checkpoint={cfg.checkpoint}: no such run folder or weights file")
    from mhdsr.forecast.rollout import prepare
    from mhdsr.io_utils import make_output_dir

    prepare(cfg, "cpu")
    make_output_dir(cfg.output_dir, "output_dir")
    return []


def absolute_train_config(cfg: Any) -> Any:
    """Copy of a train config with ``run_dir`` and ``shards`` absolute (jobs may run elsewhere)."""
    return dataclasses.replace(
        cfg, run_dir=str(Path(cfg.run_dir).resolve()), shards=str(Path(cfg.shards).resolve())
    )


def submit_train(
    cfg: Any,
    launch: LaunchConfig,
    *,
    job_factory: Callable[[dict[str, Any]], Any] = TrainJob,
    force: bool = False,
) -> Submission:
    """Submit one training job: ``nodes`` x ``ranks_per_node`` tasks running :class:`TrainJob`.

    The debug executor runs the job in this process before returning.

    Args:
        cfg: validated :class:`~mhdsr.train.config.TrainConfig` (paths made absolute here).
        launch: validated launch config.
        job_factory: builds the submitted callable from the config dict; a subclass of
            :class:`TrainJob` (extra per-task setup) may be given, :class:`TrainJob` by default.
        force: submit even if a training job for the same run_dir / job folder is live.

    Returns:
        The :class:`Submission` (its record and resolved configs are written in the job folder).

    Raises:
        ConfigError, LaunchError, MhdsrError: see :func:`preflight` and :func:`make_executor`.
    """
    task_cls = getattr(job_factory, "task_class", TrainJob.task_class)(cfg)
    pre = preflight("train", cfg, launch, force=force, task_cls=task_cls)
    cfg, job_dir = pre.cfg, pre.job_dir
    ex = make_executor(
        launch,
        job_dir,
        nodes=launch.nodes,
        tasks_per_node=launch.ranks_per_node(),
        name=launch.job_name or "mhdsr-train",
    )
    cfg_dict = to_dict(cfg)
    (job,) = _submit(ex, [job_factory(cfg_dict)])
    sub = Submission("train", launch.executor, job_dir, [job], Path(), warnings=pre.warnings)
    from mhdsr.runtime import checkpoint as ckpt

    latest = ckpt.find_latest(cfg.run_dir)
    extra: dict[str, Any] = {
        "run_dir": cfg.run_dir,
        "step_at_submission": latest.step if latest else 0,
    }
    _append_ledger(cfg.run_dir, sub)
    if launch.executor == "debug":
        # runs here, now (an exception propagates, after submitit's pdb hook)
        extra["debug_results"] = {str(job.job_id): job.result()}
    sub.record = _write_record(sub, cfg, launch, extra=extra)
    return sub


# ----------------------------------------------------------------------------------------------
# Job arrays over simulations: sampling, forecast rollouts
# ----------------------------------------------------------------------------------------------


def plan_array(
    work: Sequence[str], pending: Sequence[str], sims_per_task: int, max_tasks: int
) -> tuple[int, list[int]]:
    """Split a work list into strided tasks and pick the tasks that still have work.

    Task k of n owns items k, k + n, k + 2n, ... of ``work`` (the order of ``list_work``), with
    n = min(ceil(len(work) / sims_per_task), max_tasks), so no task owns more than
    ``max(sims_per_task, ceil(len(work) / max_tasks))`` items and an array never exceeds
    ``max_tasks`` (SLURM's MaxArraySize). The stride depends only on the work list, so the same
    simulation always belongs to the same task index.

    Args:
        work: all simulation names, in ``list_work`` order.
        pending: names not yet complete (a subset of ``work``).
        sims_per_task: target items per task (>= 1).
        max_tasks: upper bound on n (>= 1).

    Returns:
        ``(n, tasks)``: the stride and the sorted task indices owning at least one pending item
        (empty when nothing is pending; n = 0 for an empty work list).

    Raises:
        ValueError: ``pending`` names something not in ``work``.
    """
    if not work:
        return 0, []
    index = {name: i for i, name in enumerate(work)}
    unknown = [p for p in pending if p not in index]
    if unknown:
        raise ValueError(f"pending items not in the work list: {unknown[:5]}")
    n = max(1, min(math.ceil(len(work) / sims_per_task), max_tasks))
    return n, sorted({index[p] % n for p in pending})


@dataclass(frozen=True)
class BulkAPI:
    """What the array machinery needs of one bulk kind (sampling, forecast rollouts).

    Attributes:
        kind: ``sample`` | ``rollout`` (the record's ``kind``, the job-folder file names).
        schema: the config class.
        list_work: ``cfg -> [sim name, ...]`` in work order (task k of n owns k, k + n, ...).
        status: ``cfg -> {"done": [...], "pending": [...]}`` from the files on disk.
        job: the :class:`~mhdsr.launch.jobs.ArrayJob` subclass run by each array element.
        absolute: ``cfg -> cfg`` with the paths made absolute (jobs may run elsewhere).
        check: ``(cfg, launch) -> warnings``: the task's own start-up checks.
    """

    kind: str
    schema: type
    list_work: Callable[[Any], list[str]]
    status: Callable[[Any], dict[str, list[str]]]
    job: type
    absolute: Callable[[Any], Any]
    check: Callable[[Any, LaunchConfig], list[str]]


#: the kinds submitted as job arrays over simulations
BULK_KINDS = ("sample", "rollout")


def bulk_api(kind: str) -> BulkAPI:
    """The :class:`BulkAPI` of ``kind`` (imports its package on use).

    Raises:
        ValueError: not a bulk kind.
    """
    if kind == "sample":
        from mhdsr.sample.bulk import list_work, status
        from mhdsr.sample.config import SampleConfig

        return BulkAPI("sample", SampleConfig, list_work, status, SampleJob,
                       absolute_sample_config, check_sample)  # fmt: skip
    if kind == "rollout":
        from mhdsr.forecast.config import RolloutConfig
        from mhdsr.forecast.rollout import list_work, status

        return BulkAPI("rollout", RolloutConfig, list_work, status, RolloutJob,
                       absolute_rollout_config, check_rollout)  # fmt: skip
    raise ValueError(f"not a bulk kind: {kind!r} (one of {', '.join(BULK_KINDS)})")


def sample_api() -> tuple[Any, Any, Any]:
    """``(SampleConfig, list_work, status)`` of :mod:`mhdsr.sample` (imported on use)."""
    api = bulk_api("sample")
    return api.schema, api.list_work, api.status


def _absolute(p: str) -> str:
    return str(Path(p).expanduser().resolve()) if p else p


def absolute_sample_config(cfg: Any) -> Any:
    """Copy of a sample config with ``checkpoint``, ``output_dir``, ``shards`` and the
    ``inputs.runs`` globs absolute (relative to this process's working directory)."""
    inputs = dataclasses.replace(cfg.inputs, runs=[_absolute(g) for g in cfg.inputs.runs])
    return dataclasses.replace(
        cfg,
        checkpoint=_absolute(cfg.checkpoint),
        output_dir=_absolute(cfg.output_dir),
        shards=_absolute(cfg.shards),
        inputs=inputs,
    )


def absolute_rollout_config(cfg: Any) -> Any:
    """Copy of a rollout config with ``checkpoint``, ``output_dir`` and the ``inputs.runs``
    globs absolute (relative to this process's working directory)."""
    inputs = dataclasses.replace(cfg.inputs, runs=[_absolute(g) for g in cfg.inputs.runs])
    return dataclasses.replace(
        cfg, checkpoint=_absolute(cfg.checkpoint), output_dir=_absolute(cfg.output_dir),
        inputs=inputs,
    )  # fmt: skip


def plan_bulk(
    kind: str, cfg: Any, launch: LaunchConfig
) -> tuple[list[str], list[str], int, list[int]]:
    """The array a sampling or rollout launch would submit now: ``(work, pending, n, tasks)``.

    ``work`` and ``pending`` come from the kind's ``list_work`` / ``status`` (the files on
    disk); ``n`` and ``tasks`` from :func:`plan_array`, capped by ``max_array_size`` on SLURM
    and by ``array_parallelism`` for the local and debug executors (which have no queue).
    """
    api = bulk_api(kind)
    work = list(api.list_work(cfg))
    pending = list(api.status(cfg)["pending"])
    cap = launch.max_array_size if launch.executor == "slurm" else launch.array_parallelism
    n, tasks = plan_array(work, pending, launch.sims_per_task, cap)
    return work, pending, n, tasks


def plan_sample(cfg: Any, launch: LaunchConfig) -> tuple[list[str], list[str], int, list[int]]:
    """:func:`plan_bulk` of a sampling launch."""
    return plan_bulk("sample", cfg, launch)


def plan_rollout(cfg: Any, launch: LaunchConfig) -> tuple[list[str], list[str], int, list[int]]:
    """:func:`plan_bulk` of a rollout launch."""
    return plan_bulk("rollout", cfg, launch)


def describe_bulk_plan(kind: str, cfg: Any, launch: LaunchConfig) -> str:
    """One line: how many sims are pending and which array tasks would run them."""
    work, pending, n, tasks = plan_bulk(kind, cfg, launch)
    if not tasks:
        return f"nothing to submit: all {len(work)} simulation(s) complete"
    return (
        f"{len(pending)} of {len(work)} simulation(s) pending -> {len(tasks)} task(s) of stride {n} "
        f"(indices {','.join(map(str, tasks))}), at most {launch.array_parallelism} at once"
    )


def describe_sample_plan(cfg: Any, launch: LaunchConfig) -> str:
    """:func:`describe_bulk_plan` of a sampling launch."""
    return describe_bulk_plan("sample", cfg, launch)


def submit_bulk(
    kind: str, cfg: Any, launch: LaunchConfig, *, force: bool = False
) -> Submission | None:
    """Submit a job array over the simulations that are not complete yet (``kind``: ``sample``
    or ``rollout``).

    Returns None (and submits nothing) when every simulation is complete. Otherwise one array
    element per task index k that owns pending work (:func:`plan_array`); the element runs the
    kind's job (:class:`~mhdsr.launch.jobs.SampleJob`: ``run_sample(cfg, task_index=k,
    num_tasks=n)``; :class:`~mhdsr.launch.jobs.RolloutJob`: ``run_rollout(...)`` likewise). The
    array runs at most ``launch.array_parallelism`` elements at once. The local executor starts
    every element at once, so there the number of tasks is capped by ``array_parallelism``
    instead of ``max_array_size``; the debug executor runs them one after another in this
    process.

    Args:
        kind: ``sample`` | ``rollout``.
        cfg: validated config of that kind (paths made absolute here).
        launch: validated launch config.
        force: submit even if a job of this kind for the same output_dir / job folder is live
            (each sim file is still written by one task at a time: tasks lock it).

    Returns:
        The :class:`Submission`, or None when nothing is pending.

    Raises:
        ConfigError, LaunchError, MhdsrError: see :func:`preflight` and :func:`make_executor`.
    """
    api = bulk_api(kind)
    pre = preflight(kind, cfg, launch, force=force)
    cfg, job_dir = pre.cfg, pre.job_dir
    work, pending, n, tasks = plan_bulk(kind, cfg, launch)
    if not tasks:
        return None
    ex = make_executor(
        launch, job_dir, nodes=1, tasks_per_node=1, name=launch.job_name or f"mhdsr-{kind}"
    )
    if launch.executor == "slurm":
        ex.update_parameters(slurm_array_parallelism=launch.array_parallelism)
    cfg_dict = to_dict(cfg)
    jobs = _submit(ex, [api.job(cfg_dict, k, n) for k in tasks])
    sub = Submission(kind, launch.executor, job_dir, jobs, Path(), n, tasks, pending,
                     warnings=pre.warnings)  # fmt: skip
    extra = {"output_dir": str(cfg.output_dir), "work": len(work)}
    _append_ledger(cfg.output_dir, sub)
    if launch.executor == "debug":  # run here, now, one after another
        extra["debug_results"] = {str(j.job_id): j.result() for j in jobs}
    sub.record = _write_record(sub, cfg, launch, extra=extra)
    return sub


def submit_sample(cfg: Any, launch: LaunchConfig, *, force: bool = False) -> Submission | None:
    """:func:`submit_bulk` of sampling: the array runs ``run_sample`` (see there)."""
    return submit_bulk("sample", cfg, launch, force=force)


def submit_rollout(cfg: Any, launch: LaunchConfig, *, force: bool = False) -> Submission | None:
    """:func:`submit_bulk` of forecast rollouts: array element k runs
    ``run_rollout(cfg, task_index=k, num_tasks=n)`` over the runs without a complete file made
    with the same settings."""
    return submit_bulk("rollout", cfg, launch, force=force)


# ----------------------------------------------------------------------------------------------
# Records, messages
# ----------------------------------------------------------------------------------------------


def _write_record(sub: Submission, cfg: Any, launch: LaunchConfig, extra: dict[str, Any]) -> Path:
    """Write the resolved configs and ``<id>_submission.json``; returns the record path."""
    prefix = sub.job_dir / sub.main_id
    cfg_file = Path(f"{prefix}_{sub.kind}.yaml")
    launch_file = Path(f"{prefix}_launch.yaml")
    write_text_atomic(cfg_file, to_yaml(cfg))
    write_text_atomic(launch_file, to_yaml(launch))
    record = Path(f"{prefix}_submission.json")
    write_json_atomic(record, {
        "kind": sub.kind, "executor": sub.executor, "job_id": sub.main_id,
        "job_ids": [str(j.job_id) for j in sub.jobs], "num_tasks": sub.num_tasks, "tasks": sub.tasks,
        "pending_at_submission": sub.pending, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "time_limit": format_minutes(launch.timeout_min), "config_file": cfg_file.name,
        "launch_file": launch_file.name, "config": to_dict(cfg), "argv": sys.argv, **extra,
    })  # fmt: skip
    return record


def log_paths(job: Any) -> tuple[Path, Path]:
    """(stdout, stderr) log files of a job's task 0 (absolute)."""
    return Path(job.paths.stdout), Path(job.paths.stderr)


def describe(sub: Submission, launch: LaunchConfig) -> str:
    """Human text for a submission: ids, job folder, resolved configs, logs, how to follow them."""
    lines = []
    if sub.kind == "train":
        shape = f"{launch.nodes} node(s) x {launch.ranks_per_node()} rank(s)"
        if launch.gpus_per_node:
            shape += f", {launch.gpus_per_node} GPU(s)/node"
        lines.append(f"submitted train job {sub.main_id} ({sub.executor}): {shape}, time limit "
                     f"{format_minutes(launch.timeout_min)}, requeues on timeout/preemption")  # fmt: skip
    else:
        ids = ",".join(str(k) for k in sub.tasks)
        lines.append(
            f"submitted {sub.kind} {'array' if len(sub.jobs) > 1 else 'job'} {sub.main_id} ({sub.executor}): "
            f"{len(sub.jobs)} task(s) of stride {sub.num_tasks} for {len(sub.pending)} pending sim(s), "
            f"at most {launch.array_parallelism} at once, time limit {format_minutes(launch.timeout_min)}"
        )
        lines.append(f"  task indices : {ids}")
    out, err = log_paths(sub.jobs[0])
    lines += [
        f"  job folder   : {sub.job_dir}",
        f"  record       : {sub.record}",
        f"  logs         : {out}",
        f"                 {err}",
    ]
    if len(sub.jobs) > 1:
        lines.append(
            f"                 (one pair per array task: {sub.main_id}_<i>_0_log.out, i = 0..{len(sub.jobs) - 1})"
        )
    lines.append(f"  follow       : tail -f {out}")
    if sub.executor == "slurm":
        lines.append(f"                 squeue -j {sub.main_id}")
    lines.append(f"  status       : mhdsr launch status --job-dir {sub.job_dir}")
    lines += [f"warning: {w}" for w in sub.warnings]
    return "\n".join(lines)
