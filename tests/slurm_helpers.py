"""Helpers for tests that use the local one-node SLURM cluster (``scripts/local-slurm.sh``).

The cluster has no accounting daemon, so ``sacct`` has no data. submitit reads job states from
``sacct``: its ``job.state`` stays ``"UNKNOWN"`` and ``job.done()`` only turns true once a result
file exists. A job that is cancelled or killed writes no result file, so ``job.result()`` would
wait forever. The helpers here therefore read job states from ``scontrol show job`` (which knows
every job for ``MinJobAge`` = 600 s after it ends) and bound every wait.

Functions that run inside SLURM jobs also live here: submitit pickles callables by module
reference, so they must be importable by the job's Python. :func:`make_executor` puts ``src/``,
``tests/`` and the repository root on the job's ``PYTHONPATH``.

Typical use (a test module; ``pytest.mark.slurm`` is registered in pyproject.toml)::

    pytestmark = pytest.mark.slurm

    @pytest.fixture(autouse=True)
    def _cluster() -> None:
        require_slurm()                  # skip (or fail when CI=true) without a usable cluster

    def test_x(tmp_path):
        executor = make_executor(tmp_path / "logs", timeout_min=5)
        job = executor.submit(probe_job, 21)
        assert wait_for_job(job, timeout_s=60) == "COMPLETED"
        assert job.result()["value"] == 42
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import submitit

from mhdsr.launch.jobs import TrainJob

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL_SLURM_SCRIPT = REPO_ROOT / "scripts" / "local-slurm.sh"
PARTITION = "debug"

# Node states (sinfo %T) in which the node accepts jobs.
USABLE_NODE_STATES = frozenset({"idle", "mixed", "allocated", "completing", "planned"})

# Job states (squeue %T / scontrol JobState) after which a job never runs again on its own.
TERMINAL_JOB_STATES = frozenset(
    {
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
        "REVOKED",
    }
)

_CMD_TIMEOUT_S = 30.0


class SlurmError(RuntimeError):
    """A SLURM command failed (non-zero exit, timeout, or missing executable)."""


class SlurmJobTimeout(TimeoutError):
    """A job did not reach the awaited state in time (message carries state and log tails)."""


def run_slurm(args: Sequence[str], timeout_s: float = _CMD_TIMEOUT_S) -> str:
    """Runs a SLURM client command and returns its stdout.

    Args:
        args: Command and arguments, e.g. ``["scontrol", "requeue", "12"]``.
        timeout_s: Wall-clock limit for the command in seconds.

    Returns:
        The command's standard output (text).

    Raises:
        SlurmError: The command is missing, timed out, or exited non-zero (stderr included).
    """
    try:
        proc = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError as e:
        raise SlurmError(f"{args[0]} not found: is SLURM installed?") from e
    except subprocess.TimeoutExpired as e:
        raise SlurmError(f"{shlex.join(args)} did not answer within {timeout_s:.0f} s") from e
    if proc.returncode != 0:
        raise SlurmError(
            f"{shlex.join(args)} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}"
        )
    return proc.stdout


# ----------------------------------------------------------------------------------------------
# Cluster availability
# ----------------------------------------------------------------------------------------------


def slurm_status() -> tuple[bool, str]:
    """Probes the local cluster without side effects.

    Returns:
        ``(usable, description)``: usable is True when ``sinfo`` answers, ``srun`` exists, a
        node of partition ``debug`` is idle/mixed/allocated/completing/planned and this host's
        slurmd answers; description says what was found (node states, or why not usable).
    """
    for exe in ("sinfo", "sbatch", "srun", "scontrol", "squeue"):
        if shutil.which(exe) is None:
            return (
                False,
                f"{exe} not on PATH (start the cluster: bash scripts/local-slurm.sh start)",
            )
    try:
        out = run_slurm(["sinfo", "-h", "-N", "-p", PARTITION, "-o", "%N %T"], timeout_s=10)
    except SlurmError as e:
        return False, f"sinfo failed: {e} (bash scripts/local-slurm.sh start)"
    states = dict(line.split()[:2] for line in out.splitlines() if len(line.split()) >= 2)
    if not states:
        return False, f"partition {PARTITION!r} has no nodes"
    desc = ", ".join(f"{node}={state}" for node, state in sorted(states.items()))
    usable = any(state in USABLE_NODE_STATES for state in states.values())
    if usable:
        # slurmctld reports a node whose slurmd died as idle for SlurmdTimeout (300 s).
        try:
            run_slurm(["scontrol", "show", "slurmd"], timeout_s=10)
        except SlurmError as e:
            return False, f"partition {PARTITION}: {desc}, but slurmd does not answer: {e}"
    return usable, f"partition {PARTITION}: {desc}"


# A negative probe is remembered for the session: with slurmctld down, sinfo takes ~9 s to give up.
_UNUSABLE_REASON: str | None = None


def require_slurm() -> None:
    """Returns when the local SLURM cluster is usable; skips the test otherwise.

    When the environment variable ``CI`` is ``"true"`` an unusable cluster is a failure, not a
    skip (CI starts the cluster with ``scripts/local-slurm.sh start`` before pytest).

    Raises:
        pytest.skip.Exception: Cluster not usable and not in CI.
        pytest.fail.Exception: Cluster not usable and ``CI=true``.
    """
    global _UNUSABLE_REASON
    if _UNUSABLE_REASON is None:
        usable, desc = slurm_status()
        if usable:
            return
        _UNUSABLE_REASON = f"local SLURM cluster not usable: {desc}"
    reason = _UNUSABLE_REASON
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} [CI=true: SLURM tests must run]", pytrace=False)
    pytest.skip(reason)


# ----------------------------------------------------------------------------------------------
# Executor with an importable job environment
# ----------------------------------------------------------------------------------------------


def job_pythonpath() -> str:
    """The ``PYTHONPATH`` for SLURM jobs: ``src/``, ``tests/`` and the repo root, absolute."""
    return os.pathsep.join(str(p) for p in (REPO_ROOT / "src", REPO_ROOT / "tests", REPO_ROOT))


def job_setup_lines() -> list[str]:
    """Shell lines for submitit's ``slurm_setup``: export the job ``PYTHONPATH`` (prepended)."""
    path = shlex.quote(job_pythonpath())
    return [f'export PYTHONPATH={path}"${{PYTHONPATH:+:$PYTHONPATH}}"']


def make_executor(
    folder: str | os.PathLike[str],
    *,
    timeout_min: int = 5,
    tasks_per_node: int = 1,
    cpus_per_task: int = 1,
    **slurm_params: Any,
) -> submitit.AutoExecutor:
    """Builds a submitit executor for the local cluster (partition ``debug``).

    Jobs run with the submitting interpreter (``sys.executable``) and see ``src/``, ``tests/``
    and the repository root on ``PYTHONPATH``, so callables defined in ``mhdsr`` or in this
    module unpickle in the job.

    Args:
        folder: Log/pickle folder (one node: a pytest ``tmp_path`` is fine).
        timeout_min: Job time limit in minutes (submitit sends its timeout signal 90 s before;
            with ``timeout_min <= 10`` every USR2 counts as a timeout for submitit).
        tasks_per_node: SLURM tasks (processes) per node.
        cpus_per_task: CPUs per task.
        **slurm_params: Extra ``slurm_*`` parameters for ``update_parameters`` (e.g.
            ``slurm_signal_delay_s=30``); a given ``slurm_setup`` is appended to the PYTHONPATH
            export.

    Returns:
        The configured ``submitit.AutoExecutor`` (cluster ``"slurm"``).

    Raises:
        SlurmError: ``srun`` is not available (submitit would silently fall back otherwise).
    """
    if shutil.which("srun") is None:
        raise SlurmError("srun not on PATH: the local SLURM cluster is not installed")
    setup = job_setup_lines() + list(slurm_params.pop("slurm_setup", []))
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(
        timeout_min=timeout_min,
        tasks_per_node=tasks_per_node,
        cpus_per_task=cpus_per_task,
        slurm_partition=PARTITION,
        slurm_setup=setup,
        **slurm_params,
    )
    return executor


# ----------------------------------------------------------------------------------------------
# Job state (squeue / scontrol, never sacct)
# ----------------------------------------------------------------------------------------------

_KEY_VALUE = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=(\S*)")


def job_info(job_id: str) -> dict[str, str] | None:
    """``scontrol show job -o`` for one job as a dict (keys as printed, e.g. ``JobState``).

    Args:
        job_id: SLURM job id, ``"123"`` or an array element ``"123_4"``.

    Returns:
        The job's fields, or None when slurmctld does not know the job (never submitted, or
        purged ``MinJobAge`` seconds after it ended). For a pending array element that SLURM has
        not split off yet, the fields of the pending array record.

    Raises:
        SlurmError: scontrol failed for another reason.
    """
    try:
        out = run_slurm(["scontrol", "show", "job", "-o", str(job_id)])
    except SlurmError as e:
        if "Invalid job id" in str(e):
            return None
        raise
    records = [dict(_KEY_VALUE.findall(line)) for line in out.splitlines() if line.strip()]
    if not records:
        return None
    main, _, task = str(job_id).partition("_")
    if task:
        for rec in records:
            if rec.get("ArrayJobId") == main and rec.get("ArrayTaskId") == task:
                return rec
    return records[0]


def job_state(job_id: str) -> str | None:
    """The job's SLURM state (e.g. ``"PENDING"``, ``"RUNNING"``, ``"COMPLETED"``).

    Args:
        job_id: SLURM job id (``"123"`` or ``"123_4"``).

    Returns:
        The state without flags, or None when slurmctld does not know the job.
    """
    info = job_info(job_id)
    if info is None:
        return None
    return info.get("JobState", "UNKNOWN")


def _result_files_exist(job: submitit.Job) -> bool:
    jobs = [job.task(k) for k in range(job.num_tasks)]
    return all(j.paths.result_pickle.exists() for j in jobs)


def _tail(path: Path, n_lines: int = 15) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no file)"
    return "\n".join(lines[-n_lines:]) or "(empty)"


def describe_job(job: submitit.Job) -> str:
    """One diagnostic text for a job: SLURM state, reason, restarts and log tails."""
    try:
        info = job_info(job.job_id) or {}
    except SlurmError as e:
        info = {"error": str(e)}
    fields = ("JobState", "Reason", "Restarts", "ExitCode", "EligibleTime", "StartTime")
    head = " ".join(f"{k}={info[k]}" for k in fields if k in info) or "unknown to scontrol"
    return (
        f"job {job.job_id}: {head}\n"
        f"--- stdout (tail) ---\n{_tail(job.paths.stdout)}\n"
        f"--- stderr (tail) ---\n{_tail(job.paths.stderr)}"
    )


def wait_for_state(
    job_id: str, states: Iterable[str], timeout_s: float, poll_s: float = 0.25
) -> str:
    """Polls until the job's SLURM state is one of ``states``.

    Args:
        job_id: SLURM job id.
        states: Awaited states, e.g. ``{"RUNNING"}``.
        timeout_s: Longest wait in seconds.
        poll_s: Seconds between polls.

    Returns:
        The state reached.

    Raises:
        SlurmJobTimeout: Not reached within ``timeout_s`` (or the job ended in another state,
            which is reported at once).
    """
    wanted = {s.upper() for s in states}
    deadline = time.monotonic() + timeout_s
    state: str | None = None
    while True:
        state = job_state(job_id)
        if state in wanted:
            return state
        if state in TERMINAL_JOB_STATES:
            raise SlurmJobTimeout(f"job {job_id} ended {state} while waiting for {sorted(wanted)}")
        if time.monotonic() >= deadline:
            raise SlurmJobTimeout(
                f"job {job_id} still {state} after {timeout_s:.0f} s (waiting for {sorted(wanted)})"
            )
        time.sleep(poll_s)


def wait_for_job(
    job: submitit.Job,
    timeout_s: float,
    poll_s: float = 0.25,
    cancel_on_timeout: bool = True,
) -> str:
    """Waits, bounded, until a submitit SLURM job has ended; never relies on ``sacct``.

    The job has ended when SLURM reports a terminal state (see ``TERMINAL_JOB_STATES``), or when
    slurmctld no longer knows it and all its result files exist. ``job.result()`` only returns
    once result files exist: call it after this returns ``"COMPLETED"`` (or ``"FAILED"``, whose
    result file holds the traceback); after ``"CANCELLED"``/``"TIMEOUT"`` it would block.

    Args:
        job: A job from ``executor.submit`` (single or multi-task; array element ids work).
        timeout_s: Longest wait in seconds.
        poll_s: Seconds between polls.
        cancel_on_timeout: ``scancel`` the job before raising, so a stuck job cannot block the
            one-node cluster for later tests.

    Returns:
        The terminal SLURM state, or ``"UNKNOWN"`` when the job was purged from slurmctld and
        its result files exist.

    Raises:
        SlurmJobTimeout: Not ended within ``timeout_s``; the message has the state and log tails.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        state = job_state(job.job_id)
        if state in TERMINAL_JOB_STATES:
            return state
        if state is None and _result_files_exist(job):
            return "UNKNOWN"
        if time.monotonic() >= deadline:
            message = f"not ended after {timeout_s:.0f} s\n{describe_job(job)}"
            if cancel_on_timeout:
                cancel_job(job.job_id)
            raise SlurmJobTimeout(message)
        time.sleep(poll_s)


# ----------------------------------------------------------------------------------------------
# Job control
# ----------------------------------------------------------------------------------------------


def cancel_job(job_id: str) -> None:
    """``scancel`` the job (a no-op for jobs that already ended)."""
    run_slurm(["scancel", str(job_id)])


def requeue_job(job_id: str) -> None:
    """``scontrol requeue``: stop a running job and put it back in the queue.

    The running processes get SIGTERM, then SIGKILL after KillWait (5 s on the local cluster;
    submitit ignores SIGTERM). The job then pends with Reason=BeginTime for cred_expire + 1 s
    (11 s locally, 121 s on a stock SLURM) unless :func:`release_job` is called.
    """
    run_slurm(["scontrol", "requeue", str(job_id)])


#: AuthInfo=cred_expire of scripts/local-slurm.sh
CRED_EXPIRE_S = 10


def release_job(job_id: str) -> None:
    """Makes a pending (e.g. just requeued) job eligible now: ``scontrol update StartTime=now``.

    A job that is no longer pending (it started or ended meanwhile) is left alone.

    Raises:
        SlurmError: The update failed while the job is still pending.
    """
    # A requeue revokes the job's credential; a job made startable before that credential has
    # expired is killed at once as "non-startable ... Job credential revoked" (seen here with
    # the release 0.3 s after the requeue). Wait out the local config's cred_expire (10 s) + 1.
    time.sleep(CRED_EXPIRE_S + 1)
    try:
        run_slurm(["scontrol", "update", f"JobId={job_id}", "StartTime=now"])
    except SlurmError:
        if job_state(job_id) == "PENDING":
            raise


def restart_count(job_id: str) -> int:
    """How many times SLURM has restarted (requeued) the job: ``Restarts`` in scontrol.

    Raises:
        SlurmError: slurmctld does not know the job.
    """
    info = job_info(job_id)
    if info is None:
        raise SlurmError(f"job {job_id} unknown to slurmctld")
    return int(info.get("Restarts", "0"))


# ----------------------------------------------------------------------------------------------
# Callables run inside SLURM jobs (importable by module reference)
# ----------------------------------------------------------------------------------------------


def probe_job(x: int) -> dict[str, Any]:
    """Job function: returns ``2 * x`` with the job's SLURM id, interpreter and host name."""
    import socket
    import sys

    return {
        "value": 2 * x,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "python": sys.executable,
        "hostname": socket.gethostname(),
    }


def rank_report() -> dict[str, int]:
    """Job function: each task reports its SLURM and submitit rank variables (ints)."""
    env = submitit.JobEnvironment()
    return {
        "procid": int(os.environ["SLURM_PROCID"]),
        "localid": int(os.environ["SLURM_LOCALID"]),
        "ntasks": int(os.environ["SLURM_NTASKS"]),
        "global_rank": env.global_rank,
        "num_tasks": env.num_tasks,
    }


class RequeueProbe(submitit.helpers.Checkpointable):
    """Job callable that waits to be preempted on its first run and returns on its second.

    Every run appends ``SLURM_RESTART_COUNT`` (0 on the first run) to ``marker``. On the first
    run it sleeps up to ``hold_s`` seconds, for the test to send submitit's preemption signal
    (``job._interrupt()``); submitit then calls :meth:`checkpoint` (inherited: resubmit the same
    call) and requeues the job with ``scontrol requeue``. On a later run it returns the list of
    restart counts read back from ``marker``.
    """

    def __call__(self, marker: str, hold_s: float) -> list[int]:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        path = Path(marker)
        with path.open("a") as f:
            f.write(f"{restarts}\n")
        if restarts == 0:
            time.sleep(hold_s)  # interrupted here; a test that never signals sees [0] returned
        return [int(line) for line in path.read_text().split()]


# ----------------------------------------------------------------------------------------------
# mhdsr launch tests: time limits, files, a throttled training callable
# ----------------------------------------------------------------------------------------------


def set_time_limit(job_id: str, minutes: int) -> None:
    """``scontrol update JobId=... TimeLimit=<minutes>`` (works on running and pending jobs).

    SLURM then sends the job's ``--signal`` at the first time-limit check (every 30 s in
    slurmctld) at which the remaining time is at most ``signal delay + 30 s``, and ends the job
    at the first check after the new end time.
    """
    run_slurm(["scontrol", "update", f"JobId={job_id}", f"TimeLimit={int(minutes)}"])


def run_seconds(job_id: str) -> int:
    """How long the job's current run has been running (scontrol ``RunTime``), in seconds.

    Raises:
        SlurmError: slurmctld does not know the job.
    """
    info = job_info(job_id)
    if info is None:
        raise SlurmError(f"job {job_id} unknown to slurmctld")
    days, _, hms = info.get("RunTime", "0:0:0").rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return ((int(days or 0) * 24 + h) * 60 + m) * 60 + s


def wait_for_path(
    path: Path, timeout_s: float, poll_s: float = 0.2, job_id: str | None = None
) -> None:
    """Waits, bounded, until ``path`` exists; with ``job_id``, fails at once if that job ends first.

    Raises:
        TimeoutError: not there after ``timeout_s`` seconds.
        SlurmError: the job reached a terminal state before writing ``path``.
    """
    deadline = time.monotonic() + timeout_s
    last_check = 0.0
    while not path.exists():
        now = time.monotonic()
        if now >= deadline:
            raise TimeoutError(f"{path} not written within {timeout_s:.0f} s")
        if job_id is not None and now - last_check > 2.0:
            last_check = now
            state = job_state(job_id)
            if state is None or state in TERMINAL_JOB_STATES:
                raise SlurmError(f"job {job_id} ended ({state}) before writing {path}")
        time.sleep(poll_s)


class SlowTrainJob(TrainJob):
    """``mhdsr.launch.jobs.TrainJob`` whose data loader waits ``step_sleep_s`` before each batch.

    Test-only: SLURM delivers a job's time-limit signal at its 30-second checks, so a test must
    be sure the training is still running up to 30 s after it shortens the time limit, on any
    machine. The throttle changes nothing else: the signal, submitit's handler, ``checkpoint()``
    (inherited: the restart runs a plain, unthrottled ``TrainJob``) and the resume are the real
    ones. The patch lives in the job's own process only.
    """

    def __init__(self, train_config: dict[str, Any], step_sleep_s: float = 0.5) -> None:
        super().__init__(train_config)
        self.step_sleep_s = step_sleep_s

    def __call__(self) -> dict[str, Any]:
        from mhdsr.train import task

        make_loader, pause = task.make_loader, self.step_sleep_s

        def slow_loader(*args: Any, **kwargs: Any) -> _SlowLoader:
            return _SlowLoader(make_loader(*args, **kwargs), pause)

        task.make_loader = slow_loader
        return super().__call__()


class _SlowBatches:
    """A segment's batches (``mhdsr.dataset.stream.Loader.segment``), ``pause`` s before each."""

    def __init__(self, batches: Any, pause: float) -> None:
        self._batches, self._pause = batches, pause

    def __iter__(self) -> _SlowBatches:
        return self

    def __next__(self) -> Any:
        batch = next(self._batches)
        time.sleep(self._pause)
        return batch

    def close(self) -> None:
        self._batches.close()

    def shutdown(self) -> None:
        self._batches.shutdown()


class _SlowLoader:
    """A ``Loader`` whose segments are :class:`_SlowBatches`; everything else is the loader's."""

    def __init__(self, loader: Any, pause: float) -> None:
        self._loader, self._pause = loader, pause

    def segment(self, segment: int) -> _SlowBatches:
        return _SlowBatches(self._loader.segment(segment), self._pause)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class FailingTrainJob(TrainJob):
    """``TrainJob`` that fails at once in the job (test-only: a failure the submission-time
    checks cannot see), so ``mhdsr launch status`` must show FAILED and the error line."""

    def __call__(self) -> dict[str, Any]:
        raise RuntimeError("planted failure in the job (FailingTrainJob)")
