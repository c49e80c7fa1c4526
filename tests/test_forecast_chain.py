"""The chain end to end on the bundled real data: window shards -> forecast training (a real
process) -> rollout of a held-out 256^2 seed from avgpool2(hi(t0)) -> ``mhdsr sample`` of every
lead (``inputs.kind=forecast``) -> ``mhdsr eval`` against the 256^2 truth at t0 + k dt, next to
persistence + bicubic (checked against a direct computation)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from forecast_helpers import run_forecast
from mhdsr.athenak import open_run
from mhdsr.cli import main
from mhdsr.dataset.cadence import lo_of_hi
from mhdsr.errors import CheckpointError
from mhdsr.forecast.rollout import load_forecast_model
from mhdsr.method.grid import upsample_np
from mhdsr.model.inference import load_model
from shard_helpers import HI, LO
from train_helpers import REPO, run_train

pytestmark = [pytest.mark.slow, pytest.mark.dist]


def _nrmse(p, y):
    p, y = p.astype(np.float64), y.astype(np.float64)
    return np.sqrt(((p - y) ** 2).mean((-2, -1))) / y.std((-2, -1))


def test_forecast_then_super_resolve(tmp_path, demo_shards, monkeypatch):
    monkeypatch.chdir(REPO)
    win = tmp_path / "windows"
    assert main(["shard", "build", "--config", "configs/shard/forecast-demo.yaml", f"output_dir={win}",
                 "hi_runs=[]", f"lo_runs=[{LO / 'seed_0002'}]", "forecast.lo_seeds.train=[2]",
                 "forecast.length=4", "forecast.dt_orbits=0.5", "progress=false"]) == 0  # fmt: skip
    fc_run = tmp_path / "fc"
    run_forecast(win, fc_run, "max_steps=2", "model.modes=9", "data.val_samples=0")
    out = tmp_path / "outputs"
    assert main(["forecast", "rollout", "--config", "configs/forecast/rollout-demo.yaml",
                 f"checkpoint={fc_run}", f"output_dir={out / 'rollouts'}", f"inputs.runs=[{HI / 'seed_0004'}]",
                 "inputs.init_snapshots=[16]", "steps=2", "device=cpu"]) == 0  # fmt: skip
    rollout = out / "rollouts" / "mri256_nu3e-5__seed_0004.h5"
    sr_run = tmp_path / "sr"
    run_train(demo_shards, sr_run, "max_steps=1")
    # each stage refuses the other stage's model
    with pytest.raises(CheckpointError, match="is a forecast model"):
        load_model(str(fc_run))
    with pytest.raises(CheckpointError, match="is not a forecast model"):
        load_forecast_model(str(sr_run))
    assert main(["sample", "--config", "configs/sample/forecast-chain.yaml", f"checkpoint={sr_run}",
                 f"shards={demo_shards}", f"output_dir={out / 'chain'}", f"inputs.forecasts=[{rollout}]",
                 "inputs.max_lead=0", "ensemble=2", "sampler.name=euler", "sampler.steps=1", "device=cpu",
                 "progress=false"]) == 0  # fmt: skip
    chain = out / "chain" / "mri256_nu3e-5__seed_0004.h5"
    with h5py.File(chain) as f, h5py.File(rollout) as r:
        assert f.attrs["kind"] == "chain" and f.attrs["lo_kind"] == "forecast"
        assert f["samples"].shape == (2, 2, 8, 256, 256)
        np.testing.assert_array_equal(f["lead"][()], [1, 2])
        np.testing.assert_array_equal(f["snapshot"][()], [18, 20])  # the truth at t0 + k dt
        np.testing.assert_array_equal(f["input"][()], r["forecast"][0])
        samples, init = f["samples"][()], r["init"][0]
    assert main(["eval", "--config", "configs/eval/forecast-demo.yaml", f"samples={out}",
                 f"output_dir={tmp_path / 'eval'}", "forecast.field_leads=[1]",
                 "forecast.operator_rollouts=''", "forecast.climatology.runs=[]"]) == 0  # fmt: skip
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    (ch,) = m["chain"]
    c = ch["curves"]
    run = open_run(HI / "seed_0004")
    y18, y20 = run.read_snapshot(18).data, run.read_snapshot(20).data
    np.testing.assert_array_equal(init, lo_of_hi(run.read_snapshot(16).data))
    for i, y in enumerate((y18, y20)):
        want_p = _nrmse(upsample_np(init, 2, "bicubic"), y)
        got_p = [c["persistence+bicubic"]["nrmse"][x][i] for x in ch["channels"]]
        np.testing.assert_allclose(got_p, want_p, rtol=1e-6)
        want_c = _nrmse(samples[i].astype(np.float64).mean(axis=0), y)
        np.testing.assert_allclose(
            [c["chain"]["nrmse"][x][i] for x in ch["channels"]], want_c, rtol=1e-6
        )
        want_o = _nrmse(upsample_np(lo_of_hi(y), 2, "bicubic"), y)  # perfect forecast + bicubic
        np.testing.assert_allclose(
            [c["truth-lo+bicubic"]["nrmse"][x][i] for x in ch["channels"]], want_o, rtol=1e-6
        )
    assert c["chain"]["lead_orbits"] == [0.5, 1.0] and ch["members"] == 2
    assert set(c["chain"]["band_error"]) == {"resolved", "transition", "generated"}  # hi grid
    assert m["goals"]["chain"]["met"] in (True, False) and len(m["goals"]["chain"]["rows"]) == 2
    check = m["energy_check"]["mri256_nu3e-5/seed_0004"]
    assert check["ke_max_abs_rel"] < 1e-4 and check["me_max_abs_rel"] < 0.02
    assert (
        tmp_path / "eval" / "figures" / "chain_fields_mri256_nu3e-5__seed_0004_lead01.png"
    ).is_file()
