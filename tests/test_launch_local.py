"""mhdsr launch without SLURM: config parsing and routing, array planning, and real jobs through
submitit's local executor (2 gloo ranks) and debug executor (in a CLI subprocess)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mhdsr.cli import main
from mhdsr.config import load_config, to_dict
from mhdsr.errors import ConfigError
from mhdsr.launch import status as launch_status
from mhdsr.launch import submit as launcher
from mhdsr.launch.config import (
    LaunchConfig,
    executor_parameters,
    format_minutes,
    load_launch_config,
    parse_time,
    schema_fields,
    split_overrides,
)
from mhdsr.launch.jobs import SampleJob, TrainJob
from mhdsr.train.config import TrainConfig
from train_helpers import TINY, env

REPO = Path(__file__).resolve().parents[1]
TRAIN_YAML = REPO / "configs" / "train" / "cpu-small.yaml"
FAST = [*TINY, "data.workers=0", "data.val_samples=0", "log.every=2", "checkpoint.every=2"]


# ----------------------------------------------------------------------------------------------
# Config: time limits, override routing, validation, submitit parameters
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, minutes",
    [
        ("24h", 1440), ("90m", 90), ("90min", 90), ("1d12h", 2160), ("1h30m", 90), ("45s", 1),
        ("61s", 2), (90, 90), ("90", 90), ("10:30", 11), ("2:00:00", 120), ("1-00:00:00", 1440),
        ("1-12", 2160), ("1-12:30", 2190), ("2-00:00:30", 2881),
    ],
)  # fmt: skip
def test_parse_time(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["", "0", "0m", "h", "24x", "1.5h", "1-", "-5", "1:2:3:4"])
def test_parse_time_rejects(text):
    with pytest.raises(ConfigError, match="launch.time"):
        parse_time(text)


def test_slurm_clock_times_are_not_read_as_base_60_integers(tmp_path):
    # YAML 1.1 would read 2:00:00 as 7200 and 10:30 as 630: 5 days and 10.5 hours
    path = tmp_path / "launch.yaml"
    path.write_text("time: 2:00:00\n")
    assert load_launch_config(path).timeout_min == 120
    assert load_launch_config(path, ["time=10:30"]).timeout_min == 11
    assert load_launch_config(None, ["time='1:30:00'"]).timeout_min == 90
    path.write_text("time: 90\n")
    assert load_launch_config(path).timeout_min == 90


def test_format_minutes():
    assert format_minutes(90) == "01:30:00"
    assert format_minutes(1440 + 61) == "1-01:01:00"


def test_split_overrides_routes_each_key_once():
    target, launch = split_overrides(
        ["max_steps=10", "nodes=4", "launch.time=2h", "engine.zero_stage=1", "gpus_per_node=4",
         "launch.additional_parameters.mail-type=END"],
        TrainConfig, "train",
    )  # fmt: skip
    assert target == ["max_steps=10", "engine.zero_stage=1"]
    assert launch == [
        "nodes=4",
        "time=2h",
        "gpus_per_node=4",
        "additional_parameters.mail-type=END",
    ]


@pytest.mark.parametrize(
    "item, match",
    [
        ("nodez=4", "neither a train config key"),
        ("launch.max_steps=3", "not a launch setting"),
        ("launch=3", "not a launch setting"),
        ("nodes", "key=value"),
    ],
)
def test_split_overrides_errors(item, match):
    with pytest.raises(ConfigError, match=match):
        split_overrides([item], TrainConfig, "train")


def test_split_overrides_refuses_a_key_of_both_schemas():
    @dataclasses.dataclass
    class Clashing:
        time: int = 0

    with pytest.raises(ConfigError, match="both a demo key and a launch key"):
        split_overrides(["time=3"], Clashing, "demo")
    assert split_overrides(["launch.time=3"], Clashing, "demo") == ([], ["time=3"])


def test_launch_keys_never_collide_with_train_or_sample_keys():
    from mhdsr.forecast.config import RolloutConfig
    from mhdsr.sample.config import SampleConfig

    launch = schema_fields(LaunchConfig)
    assert not launch & schema_fields(TrainConfig)
    assert not launch & schema_fields(SampleConfig)
    assert not launch & schema_fields(RolloutConfig)
    assert "launch" not in schema_fields(TrainConfig) | schema_fields(SampleConfig)
    assert "launch" not in schema_fields(RolloutConfig)


def test_shipped_launch_configs_validate():
    slurm = load_launch_config(REPO / "configs/launch/slurm.yaml")
    assert (slurm.executor, slurm.timeout_min, slurm.ranks_per_node()) == ("slurm", 1440, 4)
    local = load_launch_config(REPO / "configs/launch/local.yaml")
    assert (local.executor, local.ranks_per_node()) == ("local", 2)


@pytest.mark.parametrize(
    "over, match",
    [
        (["executor=pbs"], "launch.executor"),
        (["time=soon"], "launch.time"),
        (["nodes=0"], "launch.nodes"),
        (["gpus_per_node=4", "tasks_per_node=2"], "one rank per GPU"),
        (["cpus_per_task=0"], "launch.cpus_per_task"),
        (["time=2m", "signal_delay_s=120"], "launch.signal_delay_s"),
        (["executor=local", "nodes=2"], "local executor"),
        (["executor=debug", "tasks_per_node=2"], "debug runs one process"),
        (["additional_parameters={'bad key': x}"], "not an sbatch option"),
        (["array_parallelism=0"], "launch.array_parallelism"),
        (["mem_gb=abc"], "mem_gb"),
    ],
)
def test_launch_config_errors(over, match):
    with pytest.raises(ConfigError, match=match):
        load_launch_config(None, over)


def test_executor_parameters_always_carry_the_time_limit():
    cfg = load_launch_config(None, ["nodes=2", "gpus_per_node=4", "time=1-00:00:00", "partition=gpu",
                                    "mem_gb=64", "additional_parameters.mail-type=END"])  # fmt: skip
    p = executor_parameters(cfg, nodes=2, tasks_per_node=4, name="x")
    assert p == {
        "name": "x", "timeout_min": 1440, "nodes": 2, "tasks_per_node": 4, "cpus_per_task": 4,
        "slurm_signal_delay_s": 120, "gpus_per_node": 4, "mem_gb": 64.0, "slurm_partition": "gpu",
        "slurm_additional_parameters": {"mail-type": "END"},
    }  # fmt: skip
    bare = executor_parameters(LaunchConfig(), nodes=1, tasks_per_node=1, name="y")
    assert bare["timeout_min"] == 240  # default 4h, never submitit's 5-minute default
    unset = {"slurm_partition", "slurm_account", "slurm_qos", "mem_gb", "gpus_per_node"}
    assert not unset & set(bare)
    local = load_launch_config(None, ["executor=local", "partition=gpu", "setup=['module load x']",
                                      "time=30m", "tasks_per_node=2"])  # fmt: skip
    assert executor_parameters(local, nodes=1, tasks_per_node=2, name="n") == {
        "name": "n", "timeout_min": 30, "tasks_per_node": 2, "cpus_per_task": 4,
    }  # fmt: skip


def test_slurm_script_quotes_values(tmp_path):
    """The sbatch text submitit writes for a hostile partition name stays one quoted word."""
    from submitit.slurm.slurm import _make_sbatch_string

    cfg = load_launch_config(None, ["partition=gpu; rm -rf x", "time=90m"])
    p = executor_parameters(cfg, nodes=1, tasks_per_node=2, name="n")
    text = _make_sbatch_string(
        command="python -m x", folder=tmp_path, job_name=p["name"], time=p["timeout_min"],
        nodes=1, ntasks_per_node=2, partition=p["slurm_partition"],
        signal_delay_s=p["slurm_signal_delay_s"],
    )  # fmt: skip
    assert "#SBATCH --partition='gpu; rm -rf x'" in text
    assert "#SBATCH --time=90" in text
    assert "#SBATCH --signal=USR2@120" in text


# ----------------------------------------------------------------------------------------------
# Array planning and job callables
# ----------------------------------------------------------------------------------------------


def test_plan_array_strides_and_pending_tasks():
    work = [f"s{i}" for i in range(10)]
    assert launcher.plan_array(work, work, 1, 1001) == (10, list(range(10)))
    assert launcher.plan_array(work, ["s3", "s7"], 1, 1001) == (10, [3, 7])
    # 3 sims per task -> n = 4: task k owns k, k+4, k+8
    assert launcher.plan_array(work, ["s1", "s5", "s9", "s2"], 3, 1001) == (4, [1, 2])
    # capped at MaxArraySize: n = 3 tasks for 10 sims
    assert launcher.plan_array(work, ["s0", "s9"], 1, 3) == (3, [0])
    assert launcher.plan_array(work, [], 1, 1001) == (10, [])
    assert launcher.plan_array([], [], 1, 1001) == (0, [])
    with pytest.raises(ValueError, match="not in the work list"):
        launcher.plan_array(work, ["nope"], 1, 10)


def test_plan_array_large_work_list_fits_max_array_size():
    work = [f"s{i}" for i in range(5000)]
    n, tasks = launcher.plan_array(work, work, 1, 1001)
    assert n == 1001 and tasks == list(range(1001))
    owned = [sum(1 for i in range(5000) if i % n == k) for k in range(n)]
    assert max(owned) == 5 and sum(owned) == 5000


def test_train_job_checkpoint_is_a_fresh_job_with_the_same_config():
    cfg = to_dict(load_config(TrainConfig, TRAIN_YAML, ["max_steps=7"]))
    job = TrainJob(cfg)
    delayed = job.checkpoint()
    assert isinstance(delayed.function, TrainJob) and delayed.function is not job
    assert delayed.function.train_config == cfg
    assert delayed.args == () and delayed.kwargs == {}


def test_sample_job_checks_its_index():
    assert SampleJob({}, 1, 2).checkpoint().function.task_index == 1
    with pytest.raises(ValueError, match="task_index 2 not in"):
        SampleJob({}, 2, 2)


def _status_folder(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A job folder with one good train record (debug executor: its result is in the record),
    then one truncated record and one lacking a key (mtimes fix the order)."""
    d = tmp_path / "jobs"
    d.mkdir()
    good = d / "DEBUG_1_submission.json"
    good.write_text(json.dumps({
        "kind": "train", "executor": "debug", "job_id": "DEBUG_1", "job_ids": ["DEBUG_1"],
        "run_dir": str(tmp_path / "run"), "config": {"max_steps": 4},
        "debug_results": {"DEBUG_1": {"step": 4}},
    }))  # fmt: skip
    torn = d / "DEBUG_2_submission.json"
    torn.write_text(good.read_text()[:40])  # e.g. a full disk
    keyless = d / "DEBUG_3_submission.json"
    keyless.write_text(json.dumps({"kind": "sample", "executor": "debug", "job_id": "DEBUG_3"}))
    for k, p in enumerate((good, torn, keyless)):
        os.utime(p, (1_000_000 + k, 1_000_000 + k))
    return d, torn, keyless


def test_status_reports_unreadable_records_and_reads_the_others(tmp_path, capsys):
    d, torn, keyless = _status_folder(tmp_path)
    st = launch_status.read_status(d)
    assert [(s["job_id"], s["states"]) for s in st["submissions"]] == [
        ("DEBUG_1", {"DEBUG_1": "COMPLETED"})
    ]
    assert [u["record"] for u in st["unreadable"]] == [str(torn), str(keyless)]
    assert st["unreadable"][0]["error"].startswith("not valid JSON (Unterminated string")
    assert st["unreadable"][1]["error"] == "key 'job_ids' is missing or not a list"
    main(["launch", "status", "--job-dir", str(d)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert out.splitlines()[:2] == [
        f"unreadable record {torn}: {st['unreadable'][0]['error']} (passed over)",
        f"unreadable record {keyless}: key 'job_ids' is missing or not a list (passed over)",
    ]
    assert "train DEBUG_1 (debug): 1 COMPLETED" in out and "step 0 of 4" in out


def test_status_exits_1_when_a_record_is_unreadable(tmp_path, capsys):
    d, _, _ = _status_folder(tmp_path)
    assert main(["launch", "status", "--job-dir", str(d)]) == 1


# ----------------------------------------------------------------------------------------------
# CLI without submitting
# ----------------------------------------------------------------------------------------------


def test_dry_run_multi_node_gpu_validates_and_submits_nothing(
    tmp_path, demo_shards, capsys, monkeypatch
):
    from mhdsr.launch import cluster

    gpu = cluster.Partition("gpu", 2880, None, None, None,
                            [cluster.Node(f"g{i}", 64, 512_000, 4, "IDLE") for i in range(4)])  # fmt: skip
    monkeypatch.setattr(cluster, "read_partition", lambda name="": gpu)
    monkeypatch.setattr("shutil.which", lambda exe: f"/usr/bin/{exe}")
    run_dir = tmp_path / "run"
    argv = ["launch", "train", "--config", str(REPO / "configs/train/gpu-40m.yaml"), "--launch",
            str(REPO / "configs/launch/slurm.yaml"), "--dry-run", f"shards={demo_shards}",
            f"run_dir={run_dir}", "nodes=4", "time=1-00:00:00", "launch.partition=gpu",
            "max_steps=9"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "max_steps: 9" in out and "precision: bf16" in out and "zero_stage: 2" in out
    for line in ("nodes: 4", "tasks_per_node: 4", "gpus_per_node: 4", "timeout_min: 1440",
                 "slurm_partition: 'gpu'", "slurm_signal_delay_s: 120"):  # fmt: skip
        assert f"#   {line}" in out
    assert "# fits partition gpu: 4 node(s), up to 64 CPUs, 500.0 GB, 4 GPU(s) per node" in out
    assert out.rstrip().endswith("nothing submitted")
    assert not run_dir.exists()


def test_cli_rejects_before_submitting(tmp_path, demo_shards, capsys):
    base = ["launch", "train", "--config", str(TRAIN_YAML), f"shards={demo_shards}",
            f"run_dir={tmp_path / 'r'}", "executor=local"]  # fmt: skip
    assert main([*base, "nodez=2"]) == 2
    assert "'nodez' is neither" in capsys.readouterr().err
    assert main([*base, "gpus_per_node=2", "engine.device=cpu"]) == 2
    err = capsys.readouterr().err
    assert "configs/launch/slurm-cpu.yaml" in err and "engine.device=auto" in err
    assert main(["launch", "train", "--config", str(TRAIN_YAML), f"shards={tmp_path}",
                 f"run_dir={tmp_path / 'r'}", "executor=local"]) == 2  # fmt: skip
    assert "no manifest.json" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------------------------
# Real jobs: local executor (2 ranks), debug executor (CLI subprocess)
# ----------------------------------------------------------------------------------------------


def _wait_local(sub: launcher.Submission, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(j.done() for j in sub.jobs):
        if time.monotonic() > deadline:
            for j in sub.jobs:
                j.cancel()
            tails = [Path(j.paths.stdout).read_text()[-3000:] for j in sub.jobs]
            pytest.fail(f"local jobs not done after {timeout_s} s:\n" + "\n".join(tails))
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.dist
def test_local_executor_trains_two_ranks(tmp_path, demo_shards, monkeypatch, capsys):
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run_dir = tmp_path / "run"
    cfg = load_config(TrainConfig, TRAIN_YAML, [*FAST, f"shards={demo_shards}", f"run_dir={run_dir}",
                                                 "max_steps=4"])  # fmt: skip
    launch = load_launch_config(REPO / "configs/launch/local.yaml", ["time=10m"])
    sub = launcher.submit_train(cfg, launch)
    _wait_local(sub, timeout_s=240)

    results = sub.jobs[0].results()  # one summary per rank
    assert [r["step"] for r in results] == [4, 4]
    assert [r["world_size"] for r in results] == [2, 2]
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_00000004"
    assert sub.job_dir == run_dir / "jobs"
    jid = sub.main_id
    saved = yaml.safe_load((sub.job_dir / f"{jid}_train.yaml").read_text())
    assert saved["max_steps"] == 4 and saved["run_dir"] == str(run_dir)
    assert yaml.safe_load((sub.job_dir / f"{jid}_launch.yaml").read_text())["tasks_per_node"] == 2
    record = json.loads(sub.record.read_text())
    assert record["kind"] == "train" and record["job_ids"] == [jid]
    log0 = Path(sub.jobs[0].paths.stdout).read_text()
    assert "train rank 0/2" in log0 and "world 2 (env)" in log0

    text = launcher.describe(sub, launch)
    assert f"tail -f {sub.job_dir / f'{jid}_0_log.out'}" in text
    assert main(["launch", "status", "--job-dir", str(sub.job_dir)]) == 0
    out = capsys.readouterr().out
    assert f"train {jid} (local): 1 COMPLETED" in out and "step 4 of 4" in out


@pytest.mark.slow
def test_debug_executor_runs_in_the_cli_process(tmp_path, demo_shards):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "mhdsr", "launch", "train", "--config", str(TRAIN_YAML),
           "executor=debug", "time=10m", *FAST, f"shards={demo_shards}", f"run_dir={run_dir}",
           "max_steps=2"]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env(), cwd=tmp_path,
                       stdin=subprocess.DEVNULL)  # fmt: skip
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "submitted train job DEBUG_" in p.stdout
    assert "(debug): 1 COMPLETED" in p.stdout and "step 2 of 2" in p.stdout
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_00000002"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, demo_shards) -> Path:
    """A 2-step tiny training run (its export is what the sampling tests load)."""
    from train_helpers import run_train

    run_dir = tmp_path_factory.mktemp("launch_tiny") / "run"
    run_train(demo_shards, run_dir, "data.workers=0", "data.val_samples=0", "max_steps=2")
    return run_dir


def sample_overrides(run_dir: Path, shards: Path, out: Path) -> list[str]:
    """Two held-out sims, one snapshot each, one 1-step Euler member: seconds per sim."""
    return [f"checkpoint={run_dir}", f"output_dir={out}", f"shards={shards}",
            "inputs.split=heldout", "inputs.stride=8", "ensemble=1", "sampler.name=euler",
            "sampler.steps=1", "progress=false", "device=cpu"]  # fmt: skip


@pytest.mark.slow
def test_local_executor_samples_missing_sims_only(tmp_path, demo_shards, tiny_run, capsys):
    from mhdsr.sample.bulk import list_work, status
    from mhdsr.sample.config import SampleConfig

    out = tmp_path / "samples"
    over = sample_overrides(tiny_run, demo_shards, out)
    cfg = load_config(SampleConfig, None, over)
    launch = load_launch_config(REPO / "configs/launch/local.yaml", ["time=10m"])
    work = list_work(cfg)
    assert len(work) == 2

    sub = launcher.submit_sample(cfg, launch)
    assert sub is not None and (sub.num_tasks, sub.tasks) == (2, [0, 1])
    _wait_local(sub, timeout_s=240)
    assert [j.result()["done"] for j in sub.jobs] == [[work[0]], [work[1]]]
    assert status(cfg) == {"done": work, "pending": []}
    files = sorted(out.glob("*.h5"))
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    assert len(files) == 2

    # rerun: nothing pending -> nothing submitted
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    argv = ["launch", "sample", "--config", str(empty), "--launch",
            str(REPO / "configs/launch/local.yaml"), *over]  # fmt: skip
    assert main(argv) == 0
    assert "nothing to submit" in capsys.readouterr().out
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes

    # one file lost -> only the task that owns it runs, the other file is not touched
    files[1].unlink()
    sub2 = launcher.submit_sample(cfg, launch)
    assert sub2 is not None and (sub2.num_tasks, sub2.tasks) == (2, [1])
    _wait_local(sub2, timeout_s=240)
    assert sub2.jobs[0].result()["done"] == [work[1]]
    assert files[1].is_file() and files[0].stat().st_mtime_ns == mtimes[files[0]]

    assert main(["launch", "status", "--job-dir", str(out / "jobs")]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[-1] == f"sims now: 2 done, 0 failed, 0 pending in {out}"
    assert f"sample {sub.main_id} (local): 2 COMPLETED" in text  # one local job per task
    assert f"sample {sub2.main_id} (local): 1 COMPLETED" in text
    assert (
        "submitted for 2 sim(s); failed: 0" in text and "submitted for 1 sim(s); failed: 0" in text
    )
