"""mhdsr launch checks on the real one-node SLURM cluster (scripts/local-slurm.sh; 8 CPUs, no
GPUs, partition debug): the CPU launch config and every suggested fix submit; impossible requests
are refused with the numbers; duplicate submissions are refused; run_dir clashes fail in
--dry-run; status shows reason, restarts, the job's own steps and a failed job's error line.

Jobs that only need to be *accepted* are submitted with ``--begin=now+1hour`` (they pend with
Reason=BeginTime, use no CPU) and cancelled at once; every wait is bounded.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from mhdsr.cli import main
from mhdsr.config import load_config
from mhdsr.launch import status as launch_status
from mhdsr.launch import submit as launcher
from mhdsr.launch.config import load_launch_config
from mhdsr.train.config import TrainConfig
from slurm_helpers import (
    PARTITION,
    FailingTrainJob,
    cancel_job,
    job_state,
    require_slurm,
    wait_for_job,
    wait_for_state,
)
from train_helpers import TINY, run_train

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[1]
TRAIN_YAML = str(REPO / "configs" / "train" / "cpu-small.yaml")
GPU_LAUNCH = str(REPO / "configs" / "launch" / "slurm.yaml")
CPU_LAUNCH = str(REPO / "configs" / "launch" / "slurm-cpu.yaml")
TRAIN = [*TINY, "data.workers=0", "data.val_samples=0", "max_steps=2"]
LATER = "additional_parameters.begin=now+1hour"  # accepted, pends (BeginTime), never runs


@pytest.fixture(autouse=True)
def _cluster() -> None:
    require_slurm()


@pytest.fixture(autouse=True)
def _tests_importable_in_jobs(monkeypatch) -> None:
    here = str(Path(__file__).resolve().parent)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, demo_shards) -> Path:
    """A run folder with a checkpoint at step 2 (TINY model, width 8)."""
    run_dir = tmp_path_factory.mktemp("slurm_checks") / "run"
    run_train(demo_shards, run_dir, "data.workers=0", "data.val_samples=0", "max_steps=2")
    return run_dir


def _train(capsys, *argv: str) -> tuple[int, str, str, str | None]:
    """Run ``mhdsr launch train ...``; returns (exit, stdout, stderr, submitted job id)."""
    capsys.readouterr()
    rc = main(["launch", "train", "--config", TRAIN_YAML, *argv])
    out, err = capsys.readouterr()
    m = re.search(r"submitted train job (\d+) \(slurm\)", out)
    jid = m.group(1) if m else None
    if jid:
        cancel_job(jid)  # only acceptance matters here
    return rc, out, err, jid


def test_cpu_config_and_every_suggested_fix_submit(tmp_path, demo_shards, capsys):
    base = [*TRAIN, f"shards={demo_shards}", f"partition={PARTITION}", LATER]

    def run_dir(name: str) -> str:
        return f"run_dir={tmp_path / name}"

    # the GPU config with the cpu train config: points to the CPU launch config ...
    rc, _, err, _ = _train(capsys, "--launch", GPU_LAUNCH, *base, run_dir("a"))
    assert rc == 2 and "configs/launch/slurm-cpu.yaml" in err and "engine.device=auto" in err
    # ... and following the GPU advice on this CPU-only cluster: refused before sbatch, pointing
    # to the CPU config again (sbatch would say "Invalid generic resource (gres) specification")
    rc, _, err, _ = _train(
        capsys, "--launch", GPU_LAUNCH, *base, run_dir("b"), "engine.device=auto"
    )
    assert rc == 2 and "have no GPUs" in err and "configs/launch/slurm-cpu.yaml" in err
    assert not (tmp_path / "b" / "jobs").exists() or not list((tmp_path / "b" / "jobs").iterdir())
    # the CPU config (the fix both suggest) submits: 2 ranks x 4 CPUs
    rc, out, _, jid = _train(capsys, "--launch", CPU_LAUNCH, *base, run_dir("c"))
    assert rc == 0 and jid and "1 node(s) x 2 rank(s)" in out
    # gpus_per_node=0 alone: one rank, said out loud, with the fix ...
    rc, out, _, jid = _train(capsys, "--launch", GPU_LAUNCH, *base, run_dir("d"), "gpus_per_node=0")
    assert rc == 0 and "x 1 rank(s)" in out and "tasks_per_node=N" in out
    # ... which, with slurm.yaml's cpus_per_task=8, no node here can hold: refused with the fix
    rc, _, err, _ = _train(
        capsys, "--launch", GPU_LAUNCH, *base, run_dir("e"), "gpus_per_node=0", "tasks_per_node=2"
    )
    assert rc == 2 and "= 16 CPUs per node, but the largest node" in err
    assert "has 8; use cpus_per_task=4" in err
    rc, _, _, jid = _train(
        capsys,
        *("--launch", GPU_LAUNCH, *base, run_dir("f"), "gpus_per_node=0", "tasks_per_node=2"),
        "cpus_per_task=4",
    )
    assert rc == 0 and jid


def test_impossible_requests_refused_with_numbers_also_in_dry_run(tmp_path, demo_shards, capsys):
    base = ["--launch", CPU_LAUNCH, *TRAIN, f"shards={demo_shards}", f"partition={PARTITION}",
            f"run_dir={tmp_path / 'run'}"]  # fmt: skip
    for extra, text in (
        (["cpus_per_task=8"], "2 task(s) x cpus_per_task=8 = 16 CPUs per node"),
        (["mem_gb=100000"], "mem_gb=100000 per node, but the largest node"),
        (["nodes=2"], "nodes=2, but partition 'debug' has 1 node(s); use nodes=1"),
    ):
        for dry in ([], ["--dry-run"]):
            rc, _, err, jid = _train(capsys, *base, *extra, *dry)
            assert rc == 2 and jid is None, err
            assert "could never start in partition 'debug'" in err and text in err, err
    rc, _, err, _ = _train(capsys, *base, "partition=nope", "--dry-run")
    assert rc == 2 and "no partition 'nope' (partitions: debug)" in err
    rc, out, _, _ = _train(capsys, *base, "--dry-run")
    assert rc == 0 and "# fits partition debug: 1 node(s), up to 8 CPUs" in out


def test_duplicate_submission_refused_unless_force(tmp_path, demo_shards, capsys):
    run_dir = tmp_path / "run"
    argv = ["launch", "train", "--config", TRAIN_YAML, "--launch", CPU_LAUNCH, *TRAIN,
            f"shards={demo_shards}", f"partition={PARTITION}", f"run_dir={run_dir}", LATER]  # fmt: skip
    assert main(argv) == 0
    first = re.search(r"submitted train job (\d+)", capsys.readouterr().out).group(1)
    try:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"already has a live train job: {first} (PENDING)" in err and "--force" in err
        # another job folder, same run_dir: still refused (the run_dir lists its job folders)
        assert main([*argv, f"job_dir={tmp_path / 'other'}", "--dry-run"]) == 2
        assert f"live train job: {first}" in capsys.readouterr().err
        assert main([*argv, "--force"]) == 0
        second = re.search(r"submitted train job (\d+)", capsys.readouterr().out).group(1)
        cancel_job(second)
    finally:
        cancel_job(first)
    wait_for_state(first, {"CANCELLED"}, timeout_s=30)
    assert main(argv) == 0  # nothing live any more
    cancel_job(re.search(r"submitted train job (\d+)", capsys.readouterr().out).group(1))


def test_run_dir_clash_fails_at_dry_run_and_submission(tiny_run, demo_shards, capsys):
    argv = ["launch", "train", "--config", TRAIN_YAML, "--launch", CPU_LAUNCH, *TRAIN,
            f"shards={demo_shards}", f"partition={PARTITION}", f"run_dir={tiny_run}",
            "model.width=12"]  # fmt: skip
    for dry in (["--dry-run"], []):
        capsys.readouterr()
        assert main([*argv, *dry]) == 2
        err = capsys.readouterr().err
        assert "holds a checkpoint trained with different settings (model.width: 8 -> 12)" in err
    assert not list((tiny_run / "jobs").glob("*_submission.json"))


def test_status_reason_own_steps_restarts_and_error_line(tiny_run, demo_shards, capsys):
    cfg = load_config(TrainConfig, TRAIN_YAML, [*TRAIN, f"shards={demo_shards}",
                                                f"run_dir={tiny_run}"])  # fmt: skip
    launch = load_launch_config(
        CPU_LAUNCH, [f"partition={PARTITION}", "tasks_per_node=1", "cpus_per_task=1", LATER]
    )
    sub = launcher.submit_train(cfg, launch)
    jid = sub.main_id
    try:
        text = launch_status.format_status(launch_status.read_status(sub.job_dir))
        assert f"{jid}: PENDING (BeginTime), restarts 0, 0 step(s) by this job, not started" in text
        assert "run_dir now at step 2 of 2" in text
    finally:
        cancel_job(jid)
    wait_for_state(jid, {"CANCELLED"}, timeout_s=30)
    st = launch_status.read_status(sub.job_dir)
    entry = next(s for s in st["submissions"] if s["job_id"] == jid)
    assert entry["own_steps"] == 0 and entry["step"] == 2  # never ran: not "step 2 of 2" done

    # a job that fails inside: FAILED with the error line, not a traceback to dig out
    launch = load_launch_config(CPU_LAUNCH, [f"partition={PARTITION}", "tasks_per_node=1",
                                             "cpus_per_task=1", "time=5m"])  # fmt: skip
    sub = launcher.submit_train(cfg, launch, job_factory=FailingTrainJob)
    assert wait_for_job(sub.jobs[0], timeout_s=120) == "FAILED"
    capsys.readouterr()
    assert main(["launch", "status", "--job-dir", str(sub.job_dir)]) == 0
    text = capsys.readouterr().out
    jid = sub.main_id
    line = (
        f"  {jid}: FAILED (NonZeroExitCode), restarts 0, 0 step(s) by this job, log {jid}_0_log.out"
    )
    assert line in text, text
    assert "    error: RuntimeError: planted failure in the job (FailingTrainJob)" in text
    assert job_state(sub.main_id) == "FAILED"


def test_sample_array_duplicates_refused_and_a_locked_sim_left_alone(
    tmp_path, demo_shards, tiny_run, capsys
):
    from mhdsr.sample.bulk import list_work, sim_lock
    from mhdsr.sample.config import SampleConfig
    from mhdsr.sample.h5out import output_path

    out = tmp_path / "samples"
    over = [f"checkpoint={tiny_run}", f"output_dir={out}", f"shards={demo_shards}",
            "inputs.split=heldout", "inputs.stride=8", "ensemble=1", "sampler.name=euler",
            "sampler.steps=1", "device=cpu"]  # fmt: skip
    slurm = [f"partition={PARTITION}", "cpus_per_task=1", "time=10m", "array_parallelism=2"]
    cfg = load_config(SampleConfig, None, over)
    work = list_work(cfg)
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    argv = ["launch", "sample", "--config", str(empty), "--launch", CPU_LAUNCH, *over, *slurm]

    # a queued array blocks a second one on the same output_dir (naming it) unless --force
    capsys.readouterr()
    assert main([*argv, LATER]) == 0
    first = re.search(r"submitted sample array (\d+)", capsys.readouterr().out).group(1)
    try:
        assert main([*argv, "--dry-run"]) == 2
        assert f"already has a live sample job: {first}_0 (PENDING)" in capsys.readouterr().err
    finally:
        cancel_job(first)
    wait_for_state(f"{first}_0", {"CANCELLED"}, timeout_s=30)

    # sim 0 is being written by another live process (it holds the sim's lock): task 0 of the
    # new array leaves it alone, task 1 writes sim 1
    out.mkdir(parents=True, exist_ok=True)
    with sim_lock(output_path(out, work[0])) as held:
        assert held
        sub = launcher.submit_sample(cfg, load_launch_config(CPU_LAUNCH, slurm))
        assert sub is not None and sub.tasks == [0, 1]
        for j in sub.jobs:
            assert wait_for_job(j, timeout_s=150) == "COMPLETED"
    r0, r1 = (j.result() for j in sub.jobs)
    assert r0["busy"] == [work[0]] and r0["done"] == [] and r1["done"] == [work[1]]
    assert not output_path(out, work[0]).exists()
    capsys.readouterr()
    assert main(["launch", "status", "--job-dir", str(out / "jobs")]) == 0
    text = capsys.readouterr().out
    sid = sub.main_id
    assert f"  {first}_0: CANCELLED" in text and "not started" in text
    assert (
        f"  {sid}_0: COMPLETED, restarts 0, task 0: 0/1 sim(s) done, log {sid}_0_0_log.out" in text
    )
    assert (
        f"  {sid}_1: COMPLETED, restarts 0, task 1: 1/1 sim(s) done, log {sid}_1_0_log.out" in text
    )
    assert text.splitlines()[-1] == f"sims now: 1 done, 0 failed, 1 pending in {out}"
