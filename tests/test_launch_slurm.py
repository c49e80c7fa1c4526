"""mhdsr launch on the real one-node SLURM cluster (scripts/local-slurm.sh): a 2-rank training job
requeued mid-run, a training job hitting a (shortened) time limit, and a sampling and a forecast
rollout job array, each with one task requeued. Every wait is bounded; job states come from squeue/scontrol (no sacct here).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import submitit

from mhdsr.cli import main
from mhdsr.config import load_config
from mhdsr.launch import submit as launcher
from mhdsr.launch.config import load_launch_config
from mhdsr.runtime.checkpoint import find_latest
from mhdsr.train.config import TrainConfig
from slurm_helpers import (
    PARTITION,
    SlowTrainJob,
    job_state,
    release_job,
    requeue_job,
    require_slurm,
    restart_count,
    run_seconds,
    set_time_limit,
    wait_for_job,
    wait_for_path,
    wait_for_state,
)
from train_helpers import TINY, run_train

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[1]
TRAIN_YAML = str(REPO / "configs" / "train" / "cpu-small.yaml")
TRAIN = [*TINY, "data.workers=0", "data.val_samples=0", "log.every=2", "checkpoint.every=2"]
# time <= 10 min: submitit counts every USR2 as a timeout
REQUEUE_STEPS = 300
SLURM = ["executor=slurm", f"partition={PARTITION}", "cpus_per_task=1", "time=10m"]


@pytest.fixture(autouse=True)
def _cluster() -> None:
    require_slurm()


@pytest.fixture(autouse=True)
def _tests_importable_in_jobs(monkeypatch) -> None:
    """Test-only callables (SlowTrainJob) are pickled by module reference: the jobs, which
    inherit the submitting environment, must be able to import tests/slurm_helpers.py."""
    here = str(Path(__file__).resolve().parent)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    )


def _log(run_or_out: Path, job_id: str, task: int = 0) -> str:
    return (run_or_out / "jobs" / f"{job_id}_{task}_log.out").read_text()


def test_train_two_ranks_requeued_midrun_resume_newest_checkpoint(tmp_path, demo_shards, capsys):
    run_dir = tmp_path / "run"
    # enough steps that the run cannot finish between the first checkpoint and the requeue's
    # SIGKILL (KillWait 5 s; an idle machine runs this tiny model at ~10 steps/s)
    argv = ["launch", "train", "--config", TRAIN_YAML, *TRAIN, f"shards={demo_shards}",
            f"run_dir={run_dir}", f"max_steps={REQUEUE_STEPS}", "checkpoint.every=20", *SLURM,
            "tasks_per_node=2"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    jid = re.search(r"submitted train job (\d+) \(slurm\): 1 node\(s\) x 2 rank\(s\)", out).group(1)
    assert f"tail -f {run_dir / 'jobs' / f'{jid}_0_log.out'}" in out and f"squeue -j {jid}" in out
    job = submitit.SlurmJob(run_dir / "jobs", jid, tasks=[0, 1])

    wait_for_path(
        run_dir / "checkpoints" / "latest", timeout_s=240, job_id=jid
    )  # running, step >= 2
    requeue_job(jid)  # what a preemption by the scheduler does
    wait_for_state(jid, {"PENDING"}, timeout_s=60)
    newest = find_latest(run_dir)
    assert newest is not None and newest.step < REQUEUE_STEPS
    release_job(jid)
    assert wait_for_job(job, timeout_s=240) == "COMPLETED"

    results = job.results()
    assert [r["step"] for r in results] == [REQUEUE_STEPS] * 2 and results[0]["world_size"] == 2
    assert results[0]["resumed_from"] == newest.tag and results[0]["resume_mode"] == "deepspeed"
    assert restart_count(jid) == 1
    assert f"resume from {newest.tag} (deepspeed)" in _log(run_dir, jid)
    assert find_latest(run_dir).step == REQUEUE_STEPS
    assert (run_dir / "jobs" / f"{jid}_train.yaml").is_file()


def test_train_hitting_time_limit_requeues_itself_and_resumes(tmp_path, demo_shards):
    run_dir = tmp_path / "run"
    cfg = load_config(TrainConfig, TRAIN_YAML, [*TRAIN, f"shards={demo_shards}",
                                                f"run_dir={run_dir}", "max_steps=70"])  # fmt: skip
    launch = load_launch_config(None, [*SLURM, "tasks_per_node=2", "signal_delay_s=110"])
    # >= 0.5 s per step: still training 35 s after the first checkpoint on any machine
    sub = launcher.submit_train(cfg, launch, job_factory=SlowTrainJob)
    jid, job = sub.main_id, sub.jobs[0]

    wait_for_path(run_dir / "checkpoints" / "latest", timeout_s=240, job_id=jid)
    # New limit: 70-130 s from now. slurmctld checks limits every 30 s; it sends USR2 at the
    # first check with <= 110 + 30 s left (the next one) and kills >= 70 s from now.
    set_time_limit(jid, math.ceil((run_seconds(jid) + 70) / 60))
    wait_for_state(jid, {"PENDING"}, timeout_s=90)  # rank 0's submitit handler requeued it
    assert restart_count(jid) == 1
    newest = find_latest(run_dir)
    set_time_limit(jid, 10)  # the restart gets the full limit again
    release_job(jid)
    assert wait_for_job(job, timeout_s=240) == "COMPLETED"

    results = job.results()
    assert [r["step"] for r in results] == [70, 70]
    assert results[0]["resumed_from"] == newest.tag and newest.step < 70
    log = _log(run_dir, jid) + (run_dir / "jobs" / f"{jid}_0_log.err").read_text()
    assert "this job is timed-out" in log and f"Requeued job {jid} (2 remaining timeouts)" in log
    assert f"resume from {newest.tag}" in log
    assert restart_count(jid) == 1


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, demo_shards) -> Path:
    run_dir = tmp_path_factory.mktemp("slurm_tiny") / "run"
    run_train(demo_shards, run_dir, "data.workers=0", "data.val_samples=0", "max_steps=2")
    return run_dir


def test_sample_array_requeue_one_task_then_rerun_is_noop(tmp_path, demo_shards, tiny_run, capsys):
    from mhdsr.sample.bulk import list_work, status
    from mhdsr.sample.config import SampleConfig
    from mhdsr.sample.h5out import output_path

    out = tmp_path / "samples"
    over = [f"checkpoint={tiny_run}", f"output_dir={out}", f"shards={demo_shards}",
            "inputs.split=heldout", "inputs.stride=8", "ensemble=1", "sampler.name=euler",
            "sampler.steps=1", "progress=false", "device=cpu"]  # fmt: skip
    cfg = load_config(SampleConfig, None, over)
    launch_over = [*SLURM, "array_parallelism=1"]  # one at a time: task 1 starts after task 0
    work = list_work(cfg)
    files = [output_path(out, w) for w in work]

    sub = launcher.submit_sample(cfg, load_launch_config(None, launch_over))
    assert sub is not None and (sub.num_tasks, sub.tasks) == (2, [0, 1])
    j0, j1 = sub.jobs
    assert (j0.job_id, j1.job_id) == (f"{sub.main_id}_0", f"{sub.main_id}_1")
    assert wait_for_job(j0, timeout_s=180) == "COMPLETED"
    mtime0 = files[0].stat().st_mtime_ns

    wait_for_state(j1.job_id, {"RUNNING"}, timeout_s=60)
    assert not files[1].exists()  # requeued mid-run (the task needs seconds to import torch)
    requeue_job(j1.job_id)
    wait_for_state(j1.job_id, {"PENDING"}, timeout_s=60)
    release_job(j1.job_id)
    assert wait_for_job(j1, timeout_s=180) == "COMPLETED"

    assert restart_count(j1.job_id) == 1
    assert restart_count(j0.job_id) == 0 and job_state(j0.job_id) == "COMPLETED"
    assert files[0].stat().st_mtime_ns == mtime0  # the sibling's output was not touched
    assert status(cfg) == {"done": work, "pending": []}
    assert j0.result()["done"] == [work[0]]
    r1 = j1.result()  # the rerun wrote it, or found it complete if run 1 finished in KillWait
    assert r1["done"] + r1["skipped"] == [work[1]] and r1["failed"] == []

    # resubmitting with everything complete submits nothing
    records = sorted((out / "jobs").glob("*_submission.json"))
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    capsys.readouterr()
    assert main(["launch", "sample", "--config", str(empty), *over, *launch_over]) == 0
    assert "nothing to submit" in capsys.readouterr().out
    assert sorted((out / "jobs").glob("*_submission.json")) == records
    assert main(["launch", "status", "--job-dir", str(out / "jobs")]) == 0
    text = capsys.readouterr().out
    assert f"sample {sub.main_id} (slurm): 2 COMPLETED" in text
    assert text.splitlines()[-1] == f"sims now: 2 done, 0 failed, 0 pending in {out}"


def test_sbatch_refusal_is_one_clear_error(tmp_path, demo_shards, capsys):
    run_dir = tmp_path / "run"
    argv = ["launch", "train", "--config", TRAIN_YAML, f"shards={demo_shards}",
            f"run_dir={run_dir}", *SLURM, "constraint=no-such-feature"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: submission failed: sbatch: error: " in err and "feature" in err.lower()
    assert list((run_dir / "jobs").iterdir()) == []  # no leftovers, no record


@pytest.fixture(scope="module")
def tiny_forecast(tmp_path_factory) -> tuple[Path, str]:
    from forecast_helpers import tiny_forecaster

    return tiny_forecaster(tmp_path_factory.mktemp("slurm_forecast"))


def test_rollout_array_requeue_one_task_then_rerun_is_noop(tmp_path, tiny_forecast, capsys):
    from forecast_helpers import rollout_overrides
    from mhdsr.dataset.h5layout import output_path
    from mhdsr.forecast.config import RolloutConfig
    from mhdsr.forecast.rollout import list_work, run_rollout, status

    ckpt, runs = tiny_forecast
    out, ref = tmp_path / "rollouts", tmp_path / "ref"
    over = rollout_overrides(ckpt, runs, out)
    cfg = load_config(RolloutConfig, None, over)
    launch_over = [*SLURM, "array_parallelism=1", "sims_per_task=2"]  # tasks one at a time
    work = list_work(cfg)
    files = [output_path(out, w) for w in work]

    sub = launcher.submit_rollout(cfg, load_launch_config(None, launch_over))
    assert sub is not None and (sub.kind, sub.num_tasks, sub.tasks) == ("rollout", 2, [0, 1])
    j0, j1 = sub.jobs
    assert (j0.job_id, j1.job_id) == (f"{sub.main_id}_0", f"{sub.main_id}_1")
    assert wait_for_job(j0, timeout_s=180) == "COMPLETED"
    mtimes = {f: f.stat().st_mtime_ns for f in (files[0], files[2])}

    wait_for_state(j1.job_id, {"RUNNING"}, timeout_s=60)
    assert not files[1].exists()  # requeued mid-run (the task needs seconds to import torch)
    requeue_job(j1.job_id)
    wait_for_state(j1.job_id, {"PENDING"}, timeout_s=60)
    release_job(j1.job_id)
    assert wait_for_job(j1, timeout_s=180) == "COMPLETED"

    assert restart_count(j1.job_id) == 1 and restart_count(j0.job_id) == 0
    assert {f: f.stat().st_mtime_ns for f in mtimes} == mtimes  # task 0's files not touched
    assert status(cfg) == {"done": work, "pending": []}
    assert j0.result()["done"] == [work[0], work[2]]
    r1 = j1.result()  # the rerun wrote it, or found it complete if run 1 finished in KillWait
    assert r1["done"] + r1["skipped"] == [work[1]]
    run_rollout(load_config(RolloutConfig, None, rollout_overrides(ckpt, runs, ref)))
    for w, f in zip(work, files):  # the numbers one process writes (a SLURM task may run
        # torch with another thread count: FFT/matmul sums then differ at float32 rounding)
        with h5py.File(f) as a, h5py.File(output_path(ref, w)) as b:
            np.testing.assert_allclose(a["forecast"][()], b["forecast"][()], rtol=1e-5, atol=1e-6)

    # resubmitting with everything complete submits nothing
    records = sorted((out / "jobs").glob("*_submission.json"))
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    capsys.readouterr()
    assert main(["launch", "rollout", "--config", str(empty), *over, *launch_over]) == 0
    assert "nothing to submit" in capsys.readouterr().out
    assert sorted((out / "jobs").glob("*_submission.json")) == records
    assert main(["launch", "status", "--job-dir", str(out / "jobs")]) == 0
    text = capsys.readouterr().out
    assert f"rollout {sub.main_id} (slurm): 2 COMPLETED" in text
    assert text.splitlines()[-1] == f"sims now: 3 done, 0 failed, 0 pending in {out}"
