"""Checkpoints are not trusted (issue 19): no code runs from a checkpoint pickle, and no
unreadable checkpoint, foreign step folder, second trainer or full disk goes unnoticed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mhdsr.errors import CheckpointError, ConfigError
from mhdsr.runtime import checkpoint as ckpt
from train_helpers import env, run_train


class _Evil:
    """A pickle whose loading runs a shell command (creates ``marker``)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _meta(folder: Path, step: int, **extra) -> None:
    meta = {"step": step, "world_size": 1, "zero_stage": 1, "precision": "fp32", **extra}
    (folder / "meta.json").write_text(json.dumps(meta))


def _checkpoint(run: Path, step: int = 2) -> Path:
    d = run / "checkpoints" / ckpt.tag_for(step)
    d.mkdir(parents=True)
    _meta(d, step)
    (run / "checkpoints" / "latest").write_text(d.name + "\n")
    return d


# ---------------------------------------------------------------------------- no code from pickles


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "name", ["mp_rank_00_model_states.pt", "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"]
)
def test_a_planted_pickle_is_refused_and_never_run(demo_shards, tmp_path, name) -> None:
    """Before: a pickle whose ``__reduce__`` runs a command, saved as a DeepSpeed checkpoint
    file, ran when ``mhdsr train`` resumed."""
    run, marker = tmp_path / "run", tmp_path / "marker"
    d = _checkpoint(run)
    torch.save({"module": _Evil(marker)}, d / name)
    p = run_train(demo_shards, run, "max_steps=4", "engine.zero_stage=1", check=False, timeout=200)
    assert p.returncode != 0
    out = p.stdout + p.stderr
    assert str(d / name) in out and "refused" in out, out[-3000:]
    assert not marker.exists()


def test_check_file_refuses_a_pickle_that_runs_code(tmp_path) -> None:
    marker = tmp_path / "marker"
    f = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": {"w": torch.zeros(2)}, "x": _Evil(marker)}, f)
    with pytest.raises(CheckpointError, match=f"{f}: refused"):
        ckpt.check_file(f)
    assert not marker.exists()


def test_check_file_accepts_tensors_and_containers(tmp_path) -> None:
    from collections import OrderedDict

    f = tmp_path / "ok.pt"
    torch.save({"module": OrderedDict(w=torch.ones(3)), "n": 3, "s": "x", "l": [1.0]}, f)
    ckpt.check_file(f)


def test_a_truncated_checkpoint_file_is_named(tmp_path) -> None:
    """Before: ``[Errno 22] Invalid argument`` naming no file."""
    f = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": {"w": torch.zeros(1000)}}, f)
    f.write_bytes(f.read_bytes()[:300])
    with pytest.raises(CheckpointError, match=f"{f}: unreadable checkpoint file"):
        ckpt.check_file(f)


# ---------------------------------------------------------------------------- never a silent fresh start


def test_a_garbled_meta_json_stops_resume(tmp_path) -> None:
    """Before: the only checkpoint was skipped and the run started afresh from step 0."""
    d = _checkpoint(tmp_path)
    (d / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=f"{d / 'meta.json'}: unreadable"):
        ckpt.find_latest(tmp_path)


def test_a_meta_json_missing_a_key_stops_resume(tmp_path) -> None:
    d = _checkpoint(tmp_path)
    (d / "meta.json").write_text(json.dumps({"step": 2}))
    with pytest.raises(CheckpointError, match="meta.json"):
        ckpt.find_latest(tmp_path)


def test_deleted_checkpoints_with_an_export_stop_resume(tmp_path) -> None:
    """Before: ``export/`` held step 4, the checkpoint folder was gone: a fresh run."""
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "weights_step_00000004.pt").write_bytes(b"x")
    (tmp_path / "export" / "latest").write_text("weights_step_00000004.pt\n")
    with pytest.raises(CheckpointError, match="export/latest names step 4"):
        ckpt.find_latest(tmp_path)
    _checkpoint(tmp_path, step=2)  # an older checkpoint than the export: still refused
    with pytest.raises(CheckpointError, match="newest checkpoint is step_00000002"):
        ckpt.find_latest(tmp_path)


def test_latest_naming_a_deleted_checkpoint_stops_resume(tmp_path) -> None:
    _checkpoint(tmp_path, step=2)
    (tmp_path / "checkpoints" / "latest").write_text("step_00000004\n")
    with pytest.raises(CheckpointError, match="step_00000004"):
        ckpt.find_latest(tmp_path)


def test_an_empty_run_dir_is_a_fresh_run_and_a_partial_save_is_ignored(tmp_path) -> None:
    assert ckpt.find_latest(tmp_path) is None
    (tmp_path / "checkpoints" / ("step_00000002" + ckpt.PARTIAL)).mkdir(parents=True)
    assert ckpt.find_latest(tmp_path) is None
    d = _checkpoint(tmp_path, step=2)
    assert ckpt.find_latest(tmp_path).path == d


def test_a_step_folder_linking_to_another_run_is_refused(tmp_path) -> None:
    other = _checkpoint(tmp_path / "other", step=6)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / other.name).symlink_to(other, target_is_directory=True)
    with pytest.raises(CheckpointError, match="outside the folder|symbolic link"):
        ckpt.find_latest(run)


# ---------------------------------------------------------------------------- one trainer per run_dir


def test_a_second_trainer_on_a_run_dir_is_refused(tmp_path) -> None:
    busy = f"run_dir {tmp_path} is in use.*pid {os.getpid()}"
    with ckpt.run_lock(tmp_path), pytest.raises(ConfigError, match=busy), ckpt.run_lock(tmp_path):
        pass
    assert not (tmp_path / ckpt.LOCK_NAME).exists()


@pytest.mark.timeout(300)
def test_mhdsr_train_refuses_a_run_dir_in_use(demo_shards, tmp_path) -> None:
    """Before: a second trainer on the same run_dir interleaved its checkpoints with the
    first one's."""
    run = tmp_path / "run"
    run.mkdir()
    with ckpt.run_lock(run):
        p = run_train(demo_shards, run, "max_steps=2", check=False, timeout=200)
    assert p.returncode != 0
    out = p.stdout + p.stderr
    assert f"run_dir {run} is in use" in out and f"pid {os.getpid()}" in out, out[-3000:]
    assert not (run / "checkpoints").exists()


def test_a_killed_trainer_leaves_no_stale_lock(tmp_path) -> None:
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom mhdsr.runtime.checkpoint import run_lock\n"
        "with run_lock(Path(sys.argv[1])):\n    print('locked', flush=True)\n    time.sleep(60)\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env()
    )
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=f"pid {p.pid}"), ckpt.run_lock(tmp_path):
            pass
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    time.sleep(0.1)
    with ckpt.run_lock(tmp_path):  # the lock file is left, the lock is not
        pass


# ---------------------------------------------------------------------------- config


def test_an_unknown_val_split_is_a_config_error(demo_shards, tmp_path) -> None:
    """Before: ``data.val_split=foo`` silently turned validation off."""
    from mhdsr.config import load_config
    from mhdsr.runtime.config import check_paths
    from mhdsr.train.config import TrainConfig

    cfg = load_config(
        TrainConfig, None, [f"shards={demo_shards}", f"run_dir={tmp_path}", "data.val_split=foo"]
    )
    with pytest.raises(ConfigError, match="data.val_split.*'foo'"):
        check_paths(cfg)


# ---------------------------------------------------------------------------- disk full


class _FullDiskEngine:
    """Writes part of a checkpoint, then fails like a full disk."""

    def save_checkpoint(self, save_dir, tag, client_state, save_latest):
        d = Path(save_dir) / tag
        d.mkdir(parents=True)
        (d / "mp_rank_00_model_states.pt").write_bytes(b"half")
        raise OSError(28, "No space left on device")


def test_a_full_disk_at_save_names_the_path_and_leaves_nothing_to_resume(tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"step_00000004\.partial.*No space left"):
        ckpt.write_checkpoint(_FullDiskEngine(), tmp_path, 4, {}, {}, keep=2, is_main=True)
    assert list((tmp_path / "checkpoints").iterdir()) == []
    assert ckpt.find_latest(tmp_path) is None


def test_a_save_renames_the_complete_checkpoint(tmp_path) -> None:
    class Engine:
        def save_checkpoint(self, save_dir, tag, client_state, save_latest):
            (Path(save_dir) / tag).mkdir(parents=True)
            torch.save({"module": {}}, Path(save_dir) / tag / "mp_rank_00_model_states.pt")

    meta = {"world_size": 1, "zero_stage": 1, "precision": "fp32"}
    for step in (2, 4, 6):
        ckpt.write_checkpoint(Engine(), tmp_path, step, {}, meta, keep=2, is_main=True)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest", "step_00000004", "step_00000006"]
    assert ckpt.find_latest(tmp_path).step == 6
    ckpt.check_files(tmp_path / "checkpoints" / "step_00000006")


def test_save_errors_are_named(tmp_path) -> None:
    msg = "PytorchStreamWriter failed writing file data/0: file write failed"
    with pytest.raises(CheckpointError, match=f"writing {tmp_path / 'x'} failed"):  # noqa: SIM117
        with ckpt._disk_errors(tmp_path / "x"):
            raise RuntimeError(msg)
