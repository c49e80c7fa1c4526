"""``mhdsr forecast rollout``: the HDF5 layout, truth and history from the header times, native
and avgpool2-ed runs, numbers equal to a direct rollout, skipping complete files, resuming after
a kill, refusing other settings."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import torch

from forecast_helpers import evolving_run, run_forecast, window_shards
from mhdsr.athenak import open_run
from mhdsr.cli import main
from mhdsr.dataset.cadence import lo_of_hi
from mhdsr.forecast.loss import rollout
from mhdsr.forecast.rollout import load_forecast_model
from train_helpers import REPO

pytestmark = pytest.mark.dist


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("froll")
    shards = window_shards(root)
    run_forecast(shards, root / "train", "max_steps=2")
    # a hi run of twice the grid (64^2, numbered at 0.25 orbit, file 3 missing) and the val run
    hi = evolving_run(root / "hi" / "seed_0003", 3, 64, [0, 2, 4, 6, 10],
                      [0.0, 0.5, 1.0, 1.5, 2.5])  # fmt: skip
    return root, root / "train", hi, root / "syn" / "seed_0002"


def _args(root, ckpt, runs, out, *extra):
    return ["forecast", "rollout", "--config", str(REPO / "configs/forecast/rollout-demo.yaml"),
            f"checkpoint={ckpt}", f"output_dir={out}", f"inputs.runs=[{','.join(map(str, runs))}]",
            "inputs.orbit_start=0.5", "inputs.orbit_end=1.0", "inputs.stride=1", "steps=3",
            "device=cpu", *extra]  # fmt: skip


def test_layout_truth_and_numbers(setup, tmp_path):
    root, ckpt, hi, lo = setup
    out = tmp_path / "out"
    assert main(_args(root, ckpt, [lo, hi], out)) == 0
    with h5py.File(out / "syn__seed_0002.h5") as f:
        assert f.attrs["kind"] == "forecast" and f.attrs["lo_kind"] == "native_lo"
        assert f.attrs["complete"] and f.attrs["finite"]
        assert f["forecast"].shape == (2, 3, 8, 32, 32)  # t0 = 0.5, 1.0 orbit (files 1, 2)
        np.testing.assert_array_equal(f["init_snapshot"][()], [1, 2])
        np.testing.assert_array_equal(f["prev_snapshot"][()], [0, 1])
        np.testing.assert_array_equal(f["truth_snapshot"][()], [[2, 3, 4], [3, 4, -1]])
        np.testing.assert_allclose(f["lead_orbits"][()], [0.5, 1.0, 1.5])
        run = open_run(lo)
        np.testing.assert_array_equal(f["truth"][0, 1], run.read_snapshot(3).data)
        assert np.isnan(f["truth"][1, 2]).all()
        np.testing.assert_allclose(
            f["time"][0], run.snapshot_time(1)[0] + np.pi * np.array([1, 2, 3])
        )
        # the forecast is the exported EMA model rolled out from (x(t0 - dt), x(t0))
        fm = load_forecast_model(str(ckpt), "ema")
        states = torch.from_numpy(np.stack([run.read_snapshot(0).data, run.read_snapshot(1).data]))[
            None, -fm.history :
        ]  # the history the model takes (configs/forecast/cpu-small.yaml: 1)
        want = fm.norm.denormalize(
            rollout(fm.model, fm.norm.normalize(states), torch.full((1,), 0.5), 3)
        )
        np.testing.assert_allclose(f["forecast"][0], want[0].numpy(), rtol=1e-5, atol=1e-6)
    with h5py.File(out / "hi__seed_0003.h5") as f:
        assert f.attrs["lo_kind"] == "avgpool2_hi"
        np.testing.assert_array_equal(f["init_snapshot"][()], [2, 4])  # 0.5 and 1.0 orbit
        # truth by time: 2.0 orbits (file 8) is missing, 2.5 orbits (file 10) is found past the gap
        np.testing.assert_array_equal(f["truth_snapshot"][()], [[4, 6, -1], [6, -1, 10]])
        np.testing.assert_array_equal(f["init"][1], lo_of_hi(open_run(hi).read_snapshot(4).data))


def test_skip_resume_and_refusal(setup, tmp_path, capsys):
    root, ckpt, hi, lo = setup
    out = tmp_path / "out"
    assert main(_args(root, ckpt, [lo], out)) == 0
    path = out / "syn__seed_0002.h5"
    with h5py.File(path) as f:
        ref = f["forecast"][()]
    mtime = path.stat().st_mtime_ns
    assert main(_args(root, ckpt, [lo], out)) == 0  # complete with the same settings: kept
    assert path.stat().st_mtime_ns == mtime
    # a killed run leaves a temporary file and no output: the rerun removes it and writes the
    # same numbers (a kill inside h5py's write is what the temporary name protects against)
    path.unlink()
    stale = out / f".{path.name}.tmp-99999"
    stale.write_bytes(b"half-written")
    assert main(_args(root, ckpt, [lo, hi], out)) == 0
    assert not stale.exists() and not list(out.glob(".*.tmp-*"))
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["forecast"][()], ref)
    # other settings: refused, the file kept
    capsys.readouterr()
    assert main(_args(root, ckpt, [lo], out, "steps=2")) == 2
    err = capsys.readouterr().err
    assert "made with other settings" in err and "steps: 3 -> 2" in err
    assert os.path.exists(path)


def test_bad_inputs_are_refused(setup, tmp_path, capsys):
    root, ckpt, hi, lo = setup
    # the model takes x(t) alone (history 1): the first snapshot is a valid initial state,
    # without the previous one (prev NaN, prev_snapshot -1)
    assert main(_args(root, ckpt, [lo], tmp_path / "o", "inputs.init_snapshots=[0]")) == 0
    with h5py.File(tmp_path / "o" / "syn__seed_0002.h5") as f:
        assert list(f["prev_snapshot"][()]) == [-1] and np.isnan(f["prev"][0]).all()
    assert main(_args(root, ckpt, [lo], tmp_path / "o", "inputs.init_snapshots=[9]")) == 2
    assert "has no snapshot(s) [9]" in capsys.readouterr().err
    bad = evolving_run(tmp_path / "b16" / "seed_0005", 5, 16, [0, 1], [0.0, 0.5])
    assert main(_args(root, ckpt, [bad], tmp_path / "o")) == 2
    assert "the model forecasts on 32x32" in capsys.readouterr().err
