"""mhdsr launch checks without SLURM: the partition check on parsed scontrol records, the
restricted unpickler of result files (a planted pickle is refused, never run), per-sim write
locks, log parsing for status, warnings and help texts."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

from mhdsr.cli import main
from mhdsr.io_utils import sim_lock
from mhdsr.launch import cluster
from mhdsr.launch import status as launch_status
from mhdsr.launch.config import load_launch_config

CPU8 = cluster.Partition("debug", None, None, None, None, [cluster.Node("vm", 8, 22899, 0, "IDLE")])


def _problems(part: cluster.Partition, *over: str, nodes: int = 1, tasks: int = 2) -> str:
    launch = load_launch_config(None, list(over))
    return "\n".join(cluster.request_problems(part, launch, nodes=nodes, tasks_per_node=tasks))


def test_request_problems_name_the_numbers_and_a_fit():
    assert _problems(CPU8, "cpus_per_task=4") == ""
    assert "2 task(s) x cpus_per_task=8 = 16 CPUs per node, but the largest node of partition " \
        "'debug' has 8; use cpus_per_task=4" in _problems(CPU8, "cpus_per_task=8")  # fmt: skip
    assert "use mem_gb=22 or mem_gb=0" in _problems(CPU8, "cpus_per_task=1", "mem_gb=64")
    no_gpu = _problems(CPU8, "cpus_per_task=1", "gpus_per_node=4", tasks=4)
    assert "have no GPUs" in no_gpu and "configs/launch/slurm-cpu.yaml" in no_gpu
    gpu2 = cluster.Partition("g", 60, 2, None, None, [cluster.Node(f"n{i}", 32, 1, 2, "IDLE")
                                                      for i in range(3)])  # fmt: skip
    text = _problems(gpu2, "cpus_per_task=1", "gpus_per_node=4", "time=2h", nodes=3, tasks=4)
    assert "at most 2 GPU(s); use gpus_per_node=2" in text
    assert "time=2h (02:00:00) exceeds the MaxTime of partition 'g' (01:00:00)" in text
    assert "nodes=3, but partition 'g' has 3 node(s) and MaxNodes=2; use nodes=2" in text


def test_gres_parsing():
    assert cluster.gpus_of("gpu:4") == 4 and cluster.gpus_of("gpu:a100:4(S:0-1)") == 4
    assert cluster.gpus_of("(null)") == 0 and cluster.gpus_of("gpu:a100:2,gpu:v100:1") == 3
    assert cluster._expand("0-3%1") == [0, 1, 2, 3] and cluster._expand("1,4-5") == [1, 4, 5]


class _Planted:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _train_record(d: Path, jid: str, run_dir: Path) -> None:
    (d / f"{jid}_submission.json").write_text(json.dumps({
        "kind": "train", "executor": "local", "job_id": jid, "job_ids": [jid],
        "run_dir": str(run_dir), "config": {"max_steps": 4},
    }))  # fmt: skip


def test_status_refuses_a_planted_result_pickle(tmp_path, capsys):
    d = tmp_path / "jobs"
    d.mkdir()
    marker = tmp_path / "pwned"
    _train_record(d, "999999991", tmp_path / "run")
    planted = d / "999999991_0_result.pkl"
    planted.write_bytes(pickle.dumps(("success", _Planted(marker))))
    with pytest.raises(launch_status.UnsafePickleError, match="posix.system|os.system"):
        launch_status.safe_load_result(planted)
    assert main(["launch", "status", "--job-dir", str(d)]) == 1
    out = capsys.readouterr().out
    assert f"unreadable record {planted}: {planted}: refused to unpickle" in out
    assert not marker.exists()  # never run
    # plain results still read
    _train_record(d, "999999992", tmp_path / "run")
    good = d / "999999992_0_result.pkl"
    good.write_bytes(pickle.dumps(("success", {"step": 4, "steps_this_run": 4, "x": [1.5]})))
    assert launch_status.safe_load_result(good)[1]["steps_this_run"] == 4
    st = launch_status.read_status(d)
    entry = next(s for s in st["submissions"] if s["job_id"] == "999999992")
    assert entry["states"] == {"999999992": "COMPLETED"} and entry["own_steps"] == 4


def test_sim_lock_one_writer_at_a_time(tmp_path):
    out = tmp_path / "a.h5"
    with sim_lock(out) as first:
        assert first
        with sim_lock(out) as second:  # another open file description: like another process
            assert not second
    with sim_lock(out) as again:  # released
        assert again


def test_log_parsing_for_status(tmp_path):
    err = tmp_path / "x_0_log.err"
    err.write_text(
        "Traceback (most recent call last):\n  File 'x.py'\n"
        "mhdsr.errors.ShardError: sim a: broken\nsrun: error: vm: task 0: Exited with exit code 1\n"
    )
    assert launch_status.last_error_line(err) == "mhdsr.errors.ShardError: sim a: broken"
    err.write_text("sample euler x1:  25%|##  | 12/48 [00:01<00:03]\rsample x:  50%| 24/48 [")
    assert launch_status.sample_progress(err) == (24, 48)
    line = launch_status._job_line(
        "5_1",
        {"state": "RUNNING", "reason": "None", "restarts": 1, "log": "/j/5_1_0_log.out",
         "started": True, "error": None},
        "task 1: 0/1 sim(s) done, 24/48 samples written",
    )  # fmt: skip
    assert line == (
        "  5_1: RUNNING, restarts 1, task 1: 0/1 sim(s) done, 24/48 samples written, "
        "log 5_1_0_log.out"
    )


def test_ema_warning():
    from types import SimpleNamespace

    from mhdsr.launch.submit import train_warnings

    cfg = SimpleNamespace(max_steps=20, ema=SimpleNamespace(start_step=50))
    assert "EMA never averages" in train_warnings(cfg)[0]
    assert train_warnings(SimpleNamespace(max_steps=60, ema=SimpleNamespace(start_step=50))) == []


def test_help_texts(capsys):
    for argv, text in (
        (["launch", "train", "--help"], "NOT those of"),
        (["launch", "forecast", "--help"], "field of the forecast train config"),
        (["launch", "status", "--help"], "SLURM state with its reason"),
    ):
        with pytest.raises(SystemExit):
            main(argv)
        assert text in " ".join(capsys.readouterr().out.split()), argv


def test_sample_ema_warning(tmp_path):
    from types import SimpleNamespace

    from mhdsr.sample.bulk import ema_warnings

    (tmp_path / "export").mkdir()
    (tmp_path / "config.yaml").write_text("ema:\n  start_step: 50\n")
    plan = SimpleNamespace(lm=SimpleNamespace(path=str(tmp_path / "export" / "w.pt"), step=20))
    (warning,) = ema_warnings(SimpleNamespace(weights="ema"), plan)
    assert "step 20 <= ema.start_step=50" in warning and "equal the raw weights" in warning
    assert ema_warnings(SimpleNamespace(weights="raw"), plan) == []
    plan.lm.step = 60
    assert ema_warnings(SimpleNamespace(weights="ema"), plan) == []
