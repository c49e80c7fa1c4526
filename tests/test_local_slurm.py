"""Real tests of the local one-node SLURM cluster (scripts/local-slurm.sh) and of the submitit
plumbing the launch code relies on: submission, multi-task jobs, cancellation without sacct,
and preemption -> requeue -> resume."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from slurm_helpers import (
    LOCAL_SLURM_SCRIPT,
    PARTITION,
    USABLE_NODE_STATES,
    RequeueProbe,
    cancel_job,
    job_info,
    make_executor,
    probe_job,
    rank_report,
    release_job,
    require_slurm,
    restart_count,
    run_slurm,
    wait_for_job,
    wait_for_state,
)

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(180)]


@pytest.fixture(autouse=True)
def _cluster() -> None:
    require_slurm()


def _wait_for_file(path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{path} not written within {timeout_s:.0f} s")
        time.sleep(0.1)


def _slurmctld_pid() -> str:
    return Path("/run/slurmctld.pid").read_text().strip()


def test_single_node_partition_is_usable() -> None:
    out = run_slurm(["sinfo", "-h", "-N", "-p", PARTITION, "-o", "%N|%T|%l|%P"])
    rows = [line.split("|") for line in out.splitlines()]
    assert len(rows) == 1, out
    _node, state, time_limit, partition = rows[0]
    assert state in USABLE_NODE_STATES
    assert time_limit == "infinite"
    assert partition == f"{PARTITION}*"  # the default partition
    status = subprocess.run(
        ["bash", str(LOCAL_SLURM_SCRIPT), "status"], capture_output=True, text=True, timeout=30
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert any(f": {s}" in status.stdout for s in USABLE_NODE_STATES), status.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="local-slurm.sh start needs root")
def test_start_again_is_fast_and_keeps_daemons() -> None:
    pid_before = _slurmctld_pid()
    t0 = time.monotonic()
    proc = subprocess.run(
        ["bash", str(LOCAL_SLURM_SCRIPT), "start"], capture_output=True, text=True, timeout=90
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert elapsed < 15.0
    assert _slurmctld_pid() == pid_before  # same configuration: no restart


def test_submitit_job_returns_value(tmp_path: Path) -> None:
    job = make_executor(tmp_path, timeout_min=5).submit(probe_job, 21)
    assert wait_for_job(job, timeout_s=60) == "COMPLETED"
    out = job.result()
    assert out["value"] == 42
    assert out["slurm_job_id"] == job.job_id
    assert out["python"] == sys.executable


def test_two_tasks_report_their_procid(tmp_path: Path) -> None:
    job = make_executor(tmp_path, timeout_min=5, tasks_per_node=2).submit(rank_report)
    assert wait_for_job(job, timeout_s=60) == "COMPLETED"
    reports = sorted(job.results(), key=lambda r: r["procid"])
    assert [r["procid"] for r in reports] == [0, 1]
    assert [r["localid"] for r in reports] == [0, 1]
    assert [r["global_rank"] for r in reports] == [0, 1]
    assert all(r["ntasks"] == 2 and r["num_tasks"] == 2 for r in reports)


def test_cancelled_job_is_seen_without_sacct(tmp_path: Path) -> None:
    # submitit alone would wait forever here: no sacct data and no result file.
    job = make_executor(tmp_path, timeout_min=5).submit(time.sleep, 120)
    wait_for_state(job.job_id, {"RUNNING"}, timeout_s=30)
    cancel_job(job.job_id)
    assert wait_for_job(job, timeout_s=30) == "CANCELLED"
    assert not job.paths.result_pickle.exists()


def test_preempted_job_requeues_itself_and_resumes(tmp_path: Path) -> None:
    marker = tmp_path / "runs.txt"
    job = make_executor(tmp_path / "logs", timeout_min=5).submit(RequeueProbe(), str(marker), 90.0)
    wait_for_state(job.job_id, {"RUNNING"}, timeout_s=30)
    _wait_for_file(marker, timeout_s=30)  # written after submitit installed its signal handler

    # submitit's preemption signal: rank 0 checkpoints and runs `scontrol requeue` itself.
    run_slurm(["scancel", "--signal=USR2", job.job_id])
    wait_for_state(job.job_id, {"PENDING"}, timeout_s=30)
    assert restart_count(job.job_id) == 1
    info = job_info(job.job_id)
    assert info is not None
    hold_s = (datetime.fromisoformat(info["EligibleTime"]) - datetime.now()).total_seconds()
    assert -2.0 <= hold_s <= 15.0  # cred_expire=10 (stock SLURM: 120 s + scheduler pass)

    release_job(job.job_id)
    t_release = time.monotonic()
    state = wait_for_job(job, timeout_s=60)
    assert state == "COMPLETED"
    assert time.monotonic() - t_release < 30.0
    assert job.result() == [0, 1]  # SLURM_RESTART_COUNT of both runs
