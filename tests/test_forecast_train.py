"""``mhdsr forecast train`` as real processes (DeepSpeed ZeRO-2 on CPU): it trains through the
shared loop, resumes bit-exactly, refuses a changed model or super-resolution shards, exports
what a rollout needs; and the window stream's augmentation maps windows to windows."""

from __future__ import annotations

import pytest
import torch

from forecast_helpers import run_forecast, window_shards
from mhdsr.model.export import load_export
from train_helpers import summary

pytestmark = pytest.mark.dist


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return window_shards(tmp_path_factory.mktemp("fwin"))


def _export(run_dir, step):
    return load_export(run_dir / "export" / f"weights_step_{step:08d}.pt")


def test_resume_is_bit_exact(shards, tmp_path):
    """6 steps in one go == 3 steps, stop, rerun to 6: same raw and EMA weights, counters."""
    common = ["checkpoint.every=3", "log.val_every=3"]
    a, b = tmp_path / "a", tmp_path / "b"
    run_forecast(shards, a, "max_steps=6", *common)
    run_forecast(shards, b, "max_steps=3", *common)
    p = run_forecast(shards, b, "max_steps=6", *common)
    assert "resume from step_00000003 (deepspeed)" in p.stdout
    ea, eb = _export(a, 6), _export(b, 6)
    assert set(ea["raw"]) == set(eb["raw"]) and any(k.endswith("_ri") for k in ea["raw"])
    for k in ea["raw"]:
        torch.testing.assert_close(ea["raw"][k], eb["raw"][k], rtol=0, atol=0)
        torch.testing.assert_close(ea["ema"][k], eb["ema"][k], rtol=0, atol=0)
    sa, sb = summary(a), summary(b)
    assert (sa["step"], sa["samples_seen"]) == (sb["step"], sb["samples_seen"]) == (6, 12)
    # it learned something and logged validation against persistence
    assert "val/one_step_persistence" in p.stdout
    assert ea["kind"] == "forecast" and ea["method"]["dt_orbits"] == 0.5
    assert ea["method"]["history"] == 1 and ea["method"]["grid"] == [32, 32]
    assert ea["raw"].keys() == ea["ema"].keys()
    # weights differ from the initial ones (the steps were applied)
    first = _export(b, 3)
    assert any(not torch.equal(first["raw"][k], ea["raw"][k]) for k in ea["raw"])


def test_refusals(shards, tmp_path, demo_shards):
    run = tmp_path / "r"
    run_forecast(shards, run, "max_steps=1")
    p = run_forecast(shards, run, "max_steps=2", "model.width=12", check=False)
    assert p.returncode == 2 and "model.width: 8 -> 12" in p.stderr
    p = run_forecast(demo_shards, tmp_path / "sr", "max_steps=1", check=False)
    assert p.returncode == 2 and "not forecast windows" in p.stderr
    p = run_forecast(shards, tmp_path / "long", "max_steps=1", "loss.rollout_steps=4", check=False)
    assert p.returncode == 2 and "need windows of 5 snapshots" in p.stderr


def test_augmentation_is_a_symmetry_of_whole_windows():
    """Rolls and R/M/P elements act on every frame of a window alike (keyed by the generator)."""
    from types import SimpleNamespace

    from mhdsr.forecast.data import WindowData
    from mhdsr.method import symmetry

    task = WindowData.__new__(WindowData)
    task.cfg = SimpleNamespace(data=SimpleNamespace(roll=True, augment="symmetry"))
    task.channels = ["density", "velx", "vely", "velz", "Bx", "By", "Bz", "jz"]
    seq = torch.randn(3, 4, 8, 16, 16)
    out = task.augment(seq, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    sy, sx = torch.randint(0, 16, (3,), generator=g), torch.randint(0, 16, (3,), generator=g)
    elems = symmetry.draw(3, g)
    for i in range(3):
        want = symmetry.apply(
            torch.roll(seq[i], (int(sy[i]), int(sx[i])), (-2, -1)), int(elems[i]), task.channels
        )
        torch.testing.assert_close(out[i], want, rtol=0, atol=0)


def test_launch_forecast_runs_the_same_entry_point(shards, tmp_path):
    """`mhdsr launch forecast` (debug executor: the job runs in the launching process) trains
    through ForecastTrainJob; its keys never clash with the launch keys; a requeue is a fresh
    job with the same config."""
    import subprocess
    import sys

    from forecast_helpers import TINY_FNO
    from mhdsr.forecast.config import ForecastTrainConfig
    from mhdsr.launch.config import LaunchConfig, schema_fields
    from mhdsr.launch.jobs import ForecastTrainJob
    from train_helpers import REPO, env

    assert not schema_fields(LaunchConfig) & schema_fields(ForecastTrainConfig)
    job = ForecastTrainJob({"run_dir": "x", "max_steps": 3})
    again = job.checkpoint().function
    assert isinstance(again, ForecastTrainJob) and again.train_config == job.train_config
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "mhdsr", "launch", "forecast", "--config",
           str(REPO / "configs/forecast/cpu-small.yaml"), f"shards={shards}", f"run_dir={run}",
           "max_steps=2", *TINY_FNO, "executor=debug", "gpus_per_node=0"]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env(), cwd=REPO)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "submitted train job" in p.stdout and (run / "export" / "latest").is_file()
    assert (
        load_export(run / "export" / (run / "export/latest").read_text().strip())["kind"]
        == "forecast"
    )
