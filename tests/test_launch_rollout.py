"""``mhdsr launch rollout``: forecast rollouts as a job array over the runs not yet rolled out.

Planning (which sims are pending, which array task owns which run), ``run_rollout``'s array
split, bit-identical files whichever task writes them, the debug and local executors end to
end, a rerun submitting nothing, and the refusals (exit 2, no traceback) before submitting.
The SLURM run is in tests/test_launch_slurm.py.
"""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path

import h5py
import pytest

from forecast_helpers import rollout_overrides, tiny_forecaster
from mhdsr.cli import main
from mhdsr.config import load_config, to_dict
from mhdsr.dataset.h5layout import output_path
from mhdsr.errors import ConfigError
from mhdsr.forecast.config import RolloutConfig
from mhdsr.forecast.rollout import list_work, run_rollout, status
from mhdsr.launch import submit as launcher
from mhdsr.launch.config import load_launch_config
from mhdsr.launch.jobs import RolloutJob
from train_helpers import REPO

pytestmark = pytest.mark.dist  # the fixture trains the forecaster as a real process

LOCAL = REPO / "configs/launch/local.yaml"


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, Path]:
    """A 2-step tiny forecaster and three synthetic 32^2 runs (``<root>/syn/seed_*``)."""
    return tiny_forecaster(tmp_path_factory.mktemp("launchroll"))


def _cfg(setup, out: Path, *extra: str) -> RolloutConfig:
    ckpt, runs = setup
    return load_config(RolloutConfig, None, [*rollout_overrides(ckpt, runs, out), *extra])


def _same_file(a: Path, b: Path) -> None:
    """Every dataset bit-identical, every attribute but the path-free ones equal."""
    with h5py.File(a) as fa, h5py.File(b) as fb:
        assert sorted(fa) == sorted(fb)
        for k in fa:
            assert fa[k][()].tobytes() == fb[k][()].tobytes(), k
        assert json.loads(fa.attrs["settings"]) == json.loads(fb.attrs["settings"])
        assert fa.attrs["complete"] and fb.attrs["complete"]


def _wait_local(sub: launcher.Submission, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(j.done() for j in sub.jobs):
        if time.monotonic() > deadline:
            for j in sub.jobs:
                j.cancel()
            tails = [Path(j.paths.stderr).read_text()[-3000:] for j in sub.jobs]
            pytest.fail(f"local jobs not done after {timeout_s} s:\n" + "\n".join(tails))
        time.sleep(0.2)


def test_rollout_job_checks_its_index_and_requeues_the_same_call():
    with pytest.raises(ValueError, match="task_index 2 not in"):
        RolloutJob({}, 2, 2)
    job = RolloutJob({"steps": 2}, 1, 3)
    again = job.checkpoint()
    assert isinstance(again.function, RolloutJob)
    assert (again.function.config, again.function.task_index, again.function.num_tasks) == (
        {"steps": 2}, 1, 3,
    )  # fmt: skip
    back = pickle.loads(pickle.dumps(job))
    assert (back.config, back.task_index, back.num_tasks) == ({"steps": 2}, 1, 3)


def test_plan_split_and_identical_files(setup, tmp_path):
    out, ref = tmp_path / "out", tmp_path / "ref"
    cfg = _cfg(setup, out)
    work = list_work(cfg)
    assert work == ["syn/seed_0001", "syn/seed_0002", "syn/seed_0003"]
    assert status(cfg) == {"done": [], "pending": work}
    launch = load_launch_config(LOCAL, ["array_parallelism=2"])
    assert launcher.plan_rollout(cfg, launch) == (work, work, 2, [0, 1])

    # array task 1 of 2 does run 1 only; task 0 then owns everything pending
    res = run_rollout(cfg, task_index=1, num_tasks=2)
    assert (res["done"], res["skipped"], res["task_index"], res["num_tasks"]) == (
        [work[1]],
        [],
        1,
        2,
    )
    assert sorted(p.name for p in out.glob("*.h5")) == [output_path(out, work[1]).name]
    assert status(cfg) == {"done": [work[1]], "pending": [work[0], work[2]]}
    assert launcher.plan_rollout(cfg, launch)[2:] == (2, [0])
    assert run_rollout(cfg, task_index=0, num_tasks=2)["done"] == [work[0], work[2]]
    assert status(cfg)["pending"] == []
    assert launcher.plan_rollout(cfg, launch)[2:] == (2, [])

    # one process, no split: the same bytes
    whole = run_rollout(_cfg(setup, ref))
    assert whole["done"] == work and (whole["task_index"], whole["num_tasks"]) == (0, 1)
    for w in work:
        _same_file(output_path(out, w), output_path(ref, w))

    # a file made with other settings is pending for status and refused by the rollout
    other = _cfg(setup, out, "steps=1")
    assert status(other) == {"done": [], "pending": work}
    with pytest.raises(ConfigError, match="made with other settings"):
        run_rollout(other, task_index=0, num_tasks=2)
    with pytest.raises(ConfigError, match="task_index < num_tasks"):
        run_rollout(cfg, task_index=2, num_tasks=2)
    with pytest.raises(ConfigError, match="both task_index and num_tasks"):
        run_rollout(cfg, task_index=0)


def test_debug_executor_cli_end_to_end_then_rerun_submits_nothing(setup, tmp_path, capsys):
    ckpt, runs = setup
    out = tmp_path / "out"
    over = [*rollout_overrides(ckpt, runs, out), "executor=debug", "time=10m",
            "array_parallelism=2"]  # fmt: skip
    argv = ["launch", "rollout", "--config", str(REPO / "configs/forecast/rollout-demo.yaml")]
    assert main([*argv, "--dry-run", *over]) == 0
    text = capsys.readouterr().out
    assert "# 3 of 3 simulation(s) pending -> 2 task(s) of stride 2 (indices 0,1)" in text
    assert "dry run: nothing submitted" in text and not (out / "jobs").exists()

    assert main([*argv, *over]) == 0
    text = capsys.readouterr().out
    assert "submitted rollout array DEBUG_" in text and "2 task(s) of stride 2" in text
    assert "for 3 pending sim(s)" in text
    assert f"sims now: 3 done, 0 failed, 0 pending in {out}" in text
    records = sorted((out / "jobs").glob("*_submission.json"))
    assert len(records) == 1
    rec = json.loads(records[0].read_text())
    assert rec["kind"] == "rollout" and rec["tasks"] == [0, 1] and rec["work"] == 3
    assert (
        rec["config"]["output_dir"] == str(out) and Path(rec["config"]["checkpoint"]).is_absolute()
    )
    assert len(list(out.glob("*.h5"))) == 3 and (out / "rollout_config.yaml").is_file()

    mtimes = {f: f.stat().st_mtime_ns for f in out.glob("*.h5")}
    assert main([*argv, *over]) == 0
    assert "nothing to submit: every simulation is complete" in capsys.readouterr().out
    assert sorted((out / "jobs").glob("*_submission.json")) == records
    assert {f: f.stat().st_mtime_ns for f in out.glob("*.h5")} == mtimes

    assert main(["launch", "status", "--job-dir", str(out / "jobs")]) == 0
    text = capsys.readouterr().out
    assert f"rollout {rec['job_id']} (debug): 2 COMPLETED" in text
    assert "task 0: 2/2 sim(s) done" in text and "task 1: 1/1 sim(s) done" in text
    assert text.splitlines()[-1] == f"sims now: 3 done, 0 failed, 0 pending in {out}"


@pytest.mark.slow
def test_local_executor_rolls_out_missing_runs_only(setup, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out, ref = tmp_path / "out", tmp_path / "ref"
    cfg = _cfg(setup, out)
    work = list_work(cfg)
    launch = load_launch_config(LOCAL, ["time=10m", "array_parallelism=2"])
    sub = launcher.submit_rollout(cfg, launch)
    assert sub is not None and (sub.kind, sub.num_tasks, sub.tasks) == ("rollout", 2, [0, 1])
    _wait_local(sub, timeout_s=300)
    assert [j.result()["done"] for j in sub.jobs] == [[work[0], work[2]], [work[1]]]
    assert "rollout task 1/2" in Path(sub.jobs[1].paths.stdout).read_text()
    run_rollout(_cfg(setup, ref))  # the same files from one process
    for w in work:
        _same_file(output_path(out, w), output_path(ref, w))

    # one file lost -> only the task that owns it runs; the others are not touched
    files = {w: output_path(out, w) for w in work}
    mtimes = {w: f.stat().st_mtime_ns for w, f in files.items()}
    files[work[1]].unlink()
    sub2 = launcher.submit_rollout(cfg, launch)
    assert sub2 is not None and (sub2.num_tasks, sub2.tasks, sub2.pending) == (2, [1], [work[1]])
    _wait_local(sub2, timeout_s=300)
    assert sub2.jobs[0].result()["done"] == [work[1]]
    _same_file(files[work[1]], output_path(ref, work[1]))
    for w in (work[0], work[2]):
        assert files[w].stat().st_mtime_ns == mtimes[w]
    assert launcher.submit_rollout(cfg, launch) is None

    assert main(["launch", "status", "--job-dir", str(out / "jobs")]) == 0
    text = capsys.readouterr().out
    assert f"rollout {sub.main_id} (local): 2 COMPLETED" in text
    assert f"rollout {sub2.main_id} (local): 1 COMPLETED" in text
    assert "submitted for 3 sim(s); failed: 0" in text
    assert "submitted for 1 sim(s); failed: 0" in text
    assert text.splitlines()[-1] == f"sims now: 3 done, 0 failed, 0 pending in {out}"


def test_bad_input_exit_2_before_submitting(setup, tmp_path, capsys):
    ckpt, runs = setup
    out = tmp_path / "out"
    base = ["launch", "rollout", "--config", str(REPO / "configs/forecast/rollout-demo.yaml")]
    good = [*rollout_overrides(ckpt, runs, out), "executor=local", "time=10m"]
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    sr_like = tmp_path / "weights.yaml"
    sr_like.write_text("a: 1\n")
    cases = [
        ([f"checkpoint={tmp_path / 'nope'}"], "checkpoint="),
        ([f"checkpoint={junk}"], str(junk)),
        ([f"inputs.runs=[{tmp_path / 'none_*'}]"], "inputs.runs"),
        (["steps=0"], "steps"),
        (["no_such_key=1"], "no_such_key"),
        (["device=cuda"], "gpus_per_node=0"),
        (["time=forever"], "time"),
    ]
    for extra, needle in cases:
        t0 = time.monotonic()
        assert main([*base, *good, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, (extra, err)
        assert time.monotonic() - t0 < 60, extra
        assert not (out / "jobs").exists() or not list((out / "jobs").glob("*_submission.json"))

    # a file made with other settings is refused at submission, naming the file
    run_rollout(_cfg(setup, out, "steps=1"), task_index=0, num_tasks=3)
    assert main([*base, *good]) == 2
    err = capsys.readouterr().err
    assert "made with other settings" in err and "steps: 1 -> 2" in err

    # a live rollout submission for the same output folder is refused (--force overrides)
    out2 = tmp_path / "out2"
    jobs = out2 / "jobs"
    jobs.mkdir(parents=True)
    (jobs / "123_submission.json").write_text(json.dumps({
        "kind": "rollout", "executor": "local", "job_id": str(os.getpid()),
        "job_ids": [str(os.getpid())],
    }))  # fmt: skip
    over2 = [*rollout_overrides(ckpt, runs, out2), "executor=local", "time=10m"]
    assert main([*base, *over2, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "already has a live rollout job" in err and "--force" in err
    assert main([*base, *over2, "--dry-run", "--force"]) == 0
    assert "3 of 3 simulation(s) pending" in capsys.readouterr().out


def test_help_texts(capsys):
    for argv, text in (
        (["launch", "rollout", "--help"], "field of the forecast rollout config"),
        (["launch", "rollout", "--help"], "resubmitting does only what is missing"),
        (["launch", "--help"], "forecast rollouts"),
    ):
        with pytest.raises(SystemExit):
            main(argv)
        assert text in " ".join(capsys.readouterr().out.split()), argv


def test_record_round_trips_through_status_schema(setup, tmp_path):
    """The rollout record carries every key status reads (a config dict that validates)."""
    cfg = launcher.absolute_rollout_config(_cfg(setup, tmp_path / "o"))
    assert Path(cfg.checkpoint).is_absolute() and all(
        Path(g).is_absolute() for g in cfg.inputs.runs
    )
    from mhdsr.config import from_dict

    assert to_dict(from_dict(RolloutConfig, to_dict(cfg))) == to_dict(cfg)
    assert launcher.bulk_api("rollout").job is RolloutJob
    with pytest.raises(ValueError, match="not a bulk kind"):
        launcher.bulk_api("train")
