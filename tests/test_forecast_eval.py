"""``mhdsr eval`` of rollout files: per-lead scores of the model, persistence and linear
extrapolation against hand-computed values, the correlation-0.5 lead, the goals, dispatch by file
kind; the energy cross-check against AthenaK's history file on the bundled data."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from mhdsr.athenak.history import energies_at, read_history
from mhdsr.channels import CHANNELS
from mhdsr.cli import main
from mhdsr.eval.forecast import energy_check
from shard_helpers import LO

N, L, C, G = 2, 3, 8, 16


def _fields(rng, *shape):
    x = rng.standard_normal((*shape, C, G, G)).astype(np.float32)
    x[..., 0, :, :] = 1.0 + 0.01 * x[..., 0, :, :]  # density ~ 1 (energies)
    return x


@pytest.fixture()
def rollout_file(tmp_path: Path) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    truth = _fields(rng, N, L)
    init, prev = _fields(rng, N), _fields(rng, N)
    # one run's snapshots: the same snapshot number holds the same field everywhere in the file
    init[1], truth[1, 0], truth[1, 1] = truth[0, 0], truth[0, 1], truth[0, 2]
    fc = truth.copy()  # perfect at leads 1 and 2 ...
    fc[:, 2] = _fields(rng, N)  # ... unrelated at lead 3
    tsnap = np.array([[1, 2, 3], [2, 3, -1]])
    truth[1, 2] = np.nan
    d = {"truth": truth, "init": init, "prev": prev, "forecast": fc, "tsnap": tsnap}
    out = tmp_path / "samples" / "rollouts"
    out.mkdir(parents=True)
    path = out / "syn__seed_0001.h5"
    with h5py.File(path, "w") as f:
        f["forecast"], f["truth"], f["init"], f["prev"] = fc, truth, init, prev
        f["truth_snapshot"] = tsnap
        f["init_snapshot"] = np.array([0, 1])
        f["prev_snapshot"] = np.array([5, -1])  # the second initial state has no x(t0 - dt)
        f["lead"] = np.arange(1, L + 1)
        f["lead_orbits"] = 0.5 * np.arange(1, L + 1)
        f["time"] = np.zeros((N, L))
        f.attrs.update({"kind": "forecast", "channels": list(CHANNELS), "sim": "syn/seed_0001",
                        "sim_seed": 1, "lo_kind": "native_lo", "run_dir": str(tmp_path),
                        "dt_orbits": 0.5, "complete": True, "finite": True})  # fmt: skip
    return tmp_path, d


def _eval(tmp: Path, *extra: str) -> dict:
    args = ["eval", "--config", "configs/eval/forecast-demo.yaml", f"samples={tmp / 'samples'}",
            f"output_dir={tmp / 'eval'}", "forecast.hst_check=false", "forecast.field_leads=[1]",
            "forecast.operator_rollouts=''", "forecast.climatology.runs=[]", *extra]  # fmt: skip
    assert main(args) == 0
    return json.loads((tmp / "eval" / "metrics.json").read_text())


def _nrmse(p, y):
    return np.sqrt(((p.astype(np.float64) - y) ** 2).mean((-2, -1))) / y.astype(np.float64).std(
        (-2, -1)
    )


def _corr(p, y):
    return np.array([np.corrcoef(p[c].ravel(), y[c].ravel())[0, 1] for c in range(C)])


def _ke(x):
    x = x.astype(np.float64)
    return (0.5 * x[0] * (x[1] ** 2 + x[2] ** 2 + x[3] ** 2)).mean()


def test_scores_against_hand_computed_values(rollout_file, capsys, monkeypatch, repo) -> None:
    monkeypatch.chdir(repo)
    tmp, d = rollout_file
    m = _eval(tmp)
    assert (m["version"], m["kind"]) == (2, "forecast") and "definitions" not in m
    assert {"rmse", "nrmse", "corr", "ke_rel", "me_rel"} <= set(m["metric_definitions"])
    c = m["forecast"]["all"]["curves"]
    y, x0, xp = d["truth"], d["init"], d["prev"]
    # persistence, lead 1 (both initial states) and lead 3 (the first only)
    want1 = (_nrmse(x0[0], y[0, 0]) + _nrmse(x0[1], y[1, 0])) / 2
    got1 = [c["persistence"]["nrmse"][ch][0] for ch in CHANNELS]
    np.testing.assert_allclose(got1, want1, rtol=1e-6)
    np.testing.assert_allclose(
        [c["persistence"]["corr"][ch][2] for ch in CHANNELS], _corr(x0[0], y[0, 2]), rtol=1e-6
    )
    assert c["persistence"]["n"] == [2, 2, 1] and c["model"]["n"] == [2, 2, 1]
    want_ke = ((_ke(x0[0]) / _ke(y[0, 1]) - 1) + (_ke(x0[1]) / _ke(y[1, 1]) - 1)) / 2
    assert c["persistence"]["ke_rel"][1] == pytest.approx(want_ke, rel=1e-6)
    # linear extrapolation x0 + k (x0 - x(t0 - dt)): only the first initial state has x(t0 - dt)
    lin = x0[0].astype(np.float64) + 2 * (x0[0].astype(np.float64) - xp[0])
    assert c["linear"]["n"] == [1, 1, 1]
    np.testing.assert_allclose(
        [c["linear"]["nrmse"][ch][1] for ch in CHANNELS], _nrmse(lin, y[0, 1]), rtol=1e-6
    )
    # the model is the truth at leads 1-2: NRMSE 0, corr 1, no band or energy error
    assert max(c["model"]["nrmse"][ch][1] for ch in CHANNELS) == 0.0
    assert min(c["model"]["corr"][ch][0] for ch in CHANNELS) == pytest.approx(1.0)
    assert c["model"]["band_error"]["resolved"]["velx"][:2] == [0.0, 0.0]
    assert set(c["model"]["band_error"]) == {"resolved", "transition"}  # lo grid: no generated band
    assert c["model"]["ke_rel"][:2] == [0.0, 0.0]
    # correlation-0.5 leads: persistence (unrelated fields) at the first lead, the model at 1.5
    assert c["persistence"]["corr_lead"]["velx"] == 0.5 and c["model"]["corr_lead"]["velx"] == 1.5
    g = m["goals"]
    assert g["one_step"]["met"] is True and g["corr_lead"]["met"] is True
    assert g["energy"]["met"] is True and g["energy"]["leads_orbits"] == [0.5, 1.0]
    assert g["finite"]["met"] is None and g["chain"]["met"] is None  # 1.5 of 4 orbits; no chain
    out = capsys.readouterr().out
    assert "Forecast lead-time table" in out and "| 0.50 | 2 | 0 |" in out
    report = (tmp / "eval" / "report.md").read_text()
    assert (
        "forecast_nrmse_vs_lead.png" in report
        and (tmp / "eval/figures/forecast_corr_vs_lead.png").is_file()
    )


def test_sr_and_forecast_files_are_not_mixed(rollout_file, capsys, monkeypatch, repo) -> None:
    monkeypatch.chdir(repo)
    tmp, _ = rollout_file
    with h5py.File(tmp / "samples" / "sr.h5", "w") as f:
        f["samples"] = np.zeros((1, 1, 1, 4, 4), np.float32)
    args = ["eval", "--config", "configs/eval/forecast-demo.yaml", f"samples={tmp / 'samples'}",
            f"output_dir={tmp / 'eval'}"]  # fmt: skip
    assert main(args) == 2
    assert "mixes super-resolution sample files" in capsys.readouterr().err


def test_history_file_and_the_energy_cross_check() -> None:
    """The fields' KE agrees with AthenaK's history to its 6 printed digits; the cell-centred
    ME is a little BELOW the history's (which averages the squared face fields)."""
    h = read_history(LO / "seed_0003" / "mri2d.mhd.hst")
    assert list(h)[:3] == ["time", "dt", "mass"] and "3-ME" in h and np.all(np.diff(h["time"]) > 0)
    ke, me = energies_at(h, np.array([0.0]))
    assert me[0] == pytest.approx(1.25e-4) and ke[0] == pytest.approx(5.01e-9, rel=0.01)
    res = energy_check(str(LO / "seed_0003"), [6, 12, 18])
    assert res["ke_max_abs_rel"] < 1e-4
    assert all(-0.03 < r < 0 for r in res["me_rel"]), res["me_rel"]
