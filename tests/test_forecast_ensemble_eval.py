"""``mhdsr eval`` of ensemble forecasts: known answers of the ensemble scores per lead (a perfect
ensemble, a calibrated one), the FNO pairing and its errors, the climatology draw from a
synthetic AthenaK run, the chain ensemble grouped by (initial state, lead), the goals and the
report (synthetic HDF5 files written here)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from forecast_helpers import evolving_run, write_rollout
from mhdsr.analysis.scores import crps_fair
from mhdsr.athenak import open_run
from mhdsr.channels import CHANNELS
from mhdsr.cli import main
from mhdsr.dataset.cadence import lo_of_hi
from mhdsr.eval.config import ClimatologyConfig
from mhdsr.eval.forecast import (
    ForecastEvalError,
    climatology_members,
    read_operator_rollouts,
    reduce_rollouts,
    score_chain,
    score_rollout,
)
from mhdsr.method.grid import upsample_np

C, G = len(CHANNELS), 16


def _fields(rng, *shape, scale: float = 1.0) -> np.ndarray:
    x = scale * rng.standard_normal((*shape, C, G, G))
    x[..., 0, :, :] = 1.0 + 0.01 * x[..., 0, :, :]  # density ~ 1 (energies)
    return x.astype(np.float32)


def _nrmse(p, y):
    p, y = p.astype(np.float64), y.astype(np.float64)
    return np.sqrt(((p - y) ** 2).mean((-2, -1))) / y.std((-2, -1))


def _calibrated(rng, n: int, e: int, steps: int, s: float = 0.3):
    """Truth and members exchangeable: both mu + s * N(0, 1) (density kept ~ 1)."""
    mu = _fields(rng, n, 1, steps)
    truth = mu[:, 0] + s * rng.standard_normal((n, steps, C, G, G)).astype(np.float32)
    members = mu + s * rng.standard_normal((n, e, steps, C, G, G)).astype(np.float32)
    truth[..., 0, :, :] = mu[:, 0, :, 0] + 0.01 * (truth[..., 0, :, :] - mu[:, 0, :, 0])
    members[..., 0, :, :] = mu[..., 0, :, :] + 0.01 * (members[..., 0, :, :] - mu[..., 0, :, :])
    return truth, members


def _snaps(n: int, steps: int) -> tuple[list[int], np.ndarray]:
    """Distinct snapshot numbers: init i -> 100 i, truth (i, k) -> 100 i + k + 1."""
    return [100 * i for i in range(n)], np.array(
        [[100 * i + k + 1 for k in range(steps)] for i in range(n)]
    )


def test_perfect_ensemble_scores_zero(tmp_path: Path) -> None:
    """Members equal to the truth: CRPS 0, NRMSE 0, every member's energies and band spectra
    exact; persistence's CRPS is its MAE (one member)."""
    rng = np.random.default_rng(1)
    n, e, steps = 2, 4, 3
    truth, init = _fields(rng, n, steps), _fields(rng, n)
    members = np.repeat(truth[:, None], e, axis=1)
    isn, tsn = _snaps(n, steps)
    p = write_rollout(tmp_path / "r.h5", init=init, truth=truth, tsnap=tsn, init_snapshot=isn,
                      sim="syn/seed_0001", members=members)  # fmt: skip
    s = score_rollout(p)
    assert s.ensemble == e and s.forecaster == "flow" and len(s.members) == e
    fc = reduce_rollouts([s])
    c = fc["all"]["curves"]
    for ch in CHANNELS:
        assert c["model"]["crps"][ch] == pytest.approx([0.0] * steps, abs=1e-7)
        assert c["model"]["nrmse"][ch] == pytest.approx([0.0] * steps, abs=1e-7)
    want = np.mean(
        [np.abs(init[i].astype(np.float64) - truth[i, 1]).mean((-2, -1)) for i in range(n)], axis=0
    )
    np.testing.assert_allclose(
        [c["persistence"]["crps"][ch][1] for ch in CHANNELS], want, rtol=1e-6
    )
    assert "spread_skill" not in c["persistence"]  # one member: no spread
    mem = fc["all"]["members"]
    assert mem["n_members"] == e and np.max(np.abs(mem["ke_rel"])) < 1e-12
    assert max(mem["me_worst_abs_rel"]) < 1e-12
    assert max(max(v) for d in mem["band_error_worst"].values() for v in d.values()) < 1e-9
    np.testing.assert_allclose(mem["ke"][0], fc["all"]["truth"]["ke"], rtol=1e-12)


def test_calibrated_ensemble_spread_skill_is_one_and_crps_by_hand(tmp_path: Path) -> None:
    """Truth exchangeable with n = 8 members: the pooled ratio is 1 within 0.1. Derivation:
    P = 2 x 16^2 pooled pixels per channel and lead; skill^2 is a mean of P squared normals
    (relative sd sqrt(2/P) = 0.0625), spread^2 a mean of P variances with n - 1 = 7 degrees
    of freedom (sqrt(2/(7P)) = 0.024); the ratio of their square roots has relative sd
    0.5 sqrt(0.0625^2 + 0.024^2) = 0.033, and 0.1 is 3 sd per value (a test of 8 channels x 3
    leads; the seed is fixed). Members = truth + noise instead (not calibrated) give
    sqrt(n + 1) = 3, which the same check rejects."""
    rng = np.random.default_rng(2)
    n, e, steps = 2, 8, 3
    truth, members = _calibrated(rng, n, e, steps)
    init = _fields(rng, n)
    isn, tsn = _snaps(n, steps)
    p = write_rollout(tmp_path / "r.h5", init=init, truth=truth, tsnap=tsn, init_snapshot=isn,
                      sim="syn/seed_0001", members=members)  # fmt: skip
    c = reduce_rollouts([score_rollout(p)])["all"]["curves"]["model"]
    chans = list(CHANNELS)
    ratios = np.array([c["spread_skill"][ch] for ch in chans])
    assert np.all(np.abs(ratios - 1.0) < 0.1), ratios  # every channel (density: 0.01 s)
    # the pooled ratio by hand (channel velx, lead 2): sqrt(1 + 1/n) rms(spread) / rms(skill)
    k, ci = 1, CHANNELS.index("velx")
    sp = [np.var(members[i, :, k, ci].astype(np.float64), axis=0, ddof=1).mean() for i in range(n)]
    sk = [
        ((members[i, :, k, ci].astype(np.float64).mean(0) - truth[i, k, ci]) ** 2).mean()
        for i in range(n)
    ]
    want = np.sqrt(1 + 1 / e) * np.sqrt(np.mean(sp)) / np.sqrt(np.mean(sk))
    assert c["spread_skill"]["velx"][k] == pytest.approx(want, rel=1e-9)
    want_crps = np.mean([crps_fair(members[i, :, k], truth[i, k]) for i in range(n)], axis=0)
    np.testing.assert_allclose([c["crps"][ch][k] for ch in CHANNELS], want_crps, rtol=1e-9)
    # the ensemble mean is the "model": its NRMSE, not the members'
    want_nrmse = np.mean([_nrmse(members[i, :, k].mean(0), truth[i, k]) for i in range(n)], axis=0)
    np.testing.assert_allclose(
        [c["nrmse"][ch][k] for ch in CHANNELS], want_nrmse, rtol=1e-5, atol=1e-4
    )
    # not calibrated: members centred on the truth are under-dispersed by sqrt(n + 1)
    off = truth[:, None] + 0.3 * rng.standard_normal(members.shape).astype(np.float32)
    p2 = write_rollout(tmp_path / "r2.h5", init=init, truth=truth, tsnap=tsn, init_snapshot=isn,
                       sim="syn/seed_0001", members=off)  # fmt: skip
    c2 = reduce_rollouts([score_rollout(p2)])["all"]["curves"]["model"]
    r2 = np.array([c2["spread_skill"][ch] for ch in chans])
    assert np.all(r2 > 2.5), r2  # sqrt(n + 1) = 3, relative sd ~0.033 per value


def _operator(tmp: Path, name: str, sim: str, init, truth, tsn, isn, fc, dt=0.5) -> Path:
    return write_rollout(tmp / "fno" / name, init=init, truth=truth, tsnap=tsn,
                         init_snapshot=isn, sim=sim, forecast=fc, dt_orbits=dt)  # fmt: skip


def test_fno_pairing_and_its_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n, e, steps = 2, 3, 2
    truth, members = _calibrated(rng, n, e, steps)
    init = _fields(rng, n)
    isn, tsn = _snaps(n, steps)
    p = write_rollout(tmp_path / "r.h5", init=init, truth=truth, tsnap=tsn, init_snapshot=isn,
                      sim="syn/seed_0001", members=members)  # fmt: skip
    fno = _fields(rng, n, steps)
    # the FNO file lists the initial states in the other order: pairing is by snapshot
    _operator(tmp_path, "a.h5", "syn/seed_0001", init[::-1], truth[::-1], tsn[::-1], isn[::-1],
              fno[::-1])  # fmt: skip
    ops = read_operator_rollouts(str(tmp_path / "fno" / "*.h5"))
    s = score_rollout(p, operators=ops)
    c = reduce_rollouts([s])["all"]["curves"]
    want = np.mean([_nrmse(fno[i, 1], truth[i, 1]) for i in range(n)], axis=0)
    np.testing.assert_allclose([c["fno"]["nrmse"][ch][1] for ch in CHANNELS], want, rtol=1e-5)
    mae = np.mean(
        [np.abs(fno[i, 0].astype(np.float64) - truth[i, 0]).mean((-2, -1)) for i in range(n)],
        axis=0,
    )
    np.testing.assert_allclose([c["fno"]["crps"][ch][0] for ch in CHANNELS], mae, rtol=1e-6)
    # another sim only: refused, naming the rollout file and the FNO file
    other = tmp_path / "other"
    _operator(other, "b.h5", "syn/seed_0009", init, truth, tsn, isn, fno)
    with pytest.raises(
        ForecastEvalError, match=r"r\.h5: no FNO rollout of sim syn/seed_0001.*b\.h5"
    ):
        score_rollout(p, operators=read_operator_rollouts(str(other / "fno" / "*.h5")))
    dt = tmp_path / "dt"
    _operator(dt, "c.h5", "syn/seed_0001", init, truth, tsn, isn, fno, dt=0.25)
    with pytest.raises(ForecastEvalError, match=r"r\.h5: its step dt = 0\.5 orbits differs.*c\.h5"):
        score_rollout(p, operators=read_operator_rollouts(str(dt / "fno" / "*.h5")))
    miss = tmp_path / "miss"
    _operator(miss, "d.h5", "syn/seed_0001", init[:1], truth[:1], tsn[:1], isn[:1], fno[:1])
    with pytest.raises(ForecastEvalError, match=r"has no initial snapshot \[100\]"):
        score_rollout(p, operators=read_operator_rollouts(str(miss / "fno" / "*.h5")))
    run = tmp_path / "run"  # same sim and snapshot numbers, other fields: another run
    _operator(run, "e.h5", "syn/seed_0001", init + 1.0, truth, tsn, isn, fno)
    with pytest.raises(ForecastEvalError, match=r"initial snapshot 0 differs from the FNO.*e\.h5"):
        score_rollout(p, operators=read_operator_rollouts(str(run / "fno" / "*.h5")))
    with pytest.raises(ForecastEvalError, match="forecaster = operator"):
        read_operator_rollouts(str(p))  # an ensemble rollout is no FNO baseline


def _clim_run(root: Path, n: int = 2 * G) -> Path:
    """A synthetic AthenaK run of twice the rollout grid, snapshots 0..7 at 0.5 orbit."""
    return evolving_run(
        root / "train" / "seed_0007", 7, n, list(range(8)), [0.5 * i for i in range(8)]
    )


def test_climatology_draw_from_an_athenak_run(tmp_path: Path) -> None:
    run = _clim_run(tmp_path)
    cfg = ClimatologyConfig(runs=[str(tmp_path / "train" / "seed_*")], orbit_start=1.0,
                            orbit_end=2.5, members=3, seed=4)  # fmt: skip
    x, picks = climatology_members(cfg, list(CHANNELS), G)
    assert x.shape == (3, C, G, G) and x.dtype == np.float32
    snaps = [q["snapshot"] for q in picks]
    assert len(set(snaps)) == 3 and set(snaps) <= {2, 3, 4, 5}  # orbits 1.0 .. 2.5
    r = open_run(run)
    for q, xm in zip(picks, x):
        np.testing.assert_array_equal(xm, lo_of_hi(r.read_snapshot(q["snapshot"], CHANNELS).data))
    x2, picks2 = climatology_members(cfg, list(CHANNELS), G)  # keyed: the same draw
    assert picks2 == picks and np.array_equal(x, x2)
    with pytest.raises(ForecastEvalError, match="fewer than members = 5"):
        climatology_members(ClimatologyConfig(runs=cfg.runs, orbit_start=1.0, orbit_end=2.5,
                                              members=5), list(CHANNELS), G)  # fmt: skip
    with pytest.raises(ForecastEvalError, match="is 32x32, the rollouts are 8x8"):
        climatology_members(cfg, list(CHANNELS), 8)
    # scored as an ensemble at every (initial state, lead): CRPS by hand
    rng = np.random.default_rng(5)
    truth, members = _calibrated(rng, 2, 3, 2)
    isn, tsn = _snaps(2, 2)
    p = write_rollout(tmp_path / "r.h5", init=_fields(rng, 2), truth=truth, tsnap=tsn,
                      init_snapshot=isn, sim="syn/seed_0001", members=members)  # fmt: skip
    c = reduce_rollouts([score_rollout(p, climatology=x)])["all"]["curves"]["climatology"]
    want = np.mean([crps_fair(x, truth[i, 1]) for i in range(2)], axis=0)
    np.testing.assert_allclose([c["crps"][ch][1] for ch in CHANNELS], want, rtol=1e-9)
    assert "spread_skill" in c


def test_chain_ensemble_grouped_by_init_and_lead(tmp_path: Path) -> None:
    """Chain rows of 2 forecast members x 2 leads, 2 SR samples each: the ensemble at (init,
    lead) is the 4 samples of both members; fno+spline and persistence+spline by hand."""
    hi = evolving_run(tmp_path / "hi" / "seed_0004", 4, 2 * G, [0, 1, 2], [0.0, 0.5, 1.0])
    run = open_run(hi)
    y = {s: run.read_snapshot(s, CHANNELS).data for s in (0, 1, 2)}
    lo = {s: lo_of_hi(v) for s, v in y.items()}
    rng = np.random.default_rng(6)
    e, steps = 2, 2
    truth = np.stack([lo[1], lo[2]])[None]
    scale = np.abs(truth).max(axis=(-2, -1), keepdims=True)
    members = truth[:, None] + 0.2 * scale[:, None] * rng.standard_normal((1, e, steps, C, G, G))
    p = write_rollout(tmp_path / "out" / "rollouts" / "r.h5", init=lo[0][None], truth=truth,
                      tsnap=np.array([[1, 2]]), init_snapshot=[0], sim="hi/seed_0004",
                      members=members.astype(np.float32), run_dir=str(hi), lo_kind="avgpool2_hi")  # fmt: skip
    fno = truth.copy()  # a perfect FNO: fno+spline = spline of the truth's lo field
    _operator(tmp_path, "f.h5", "hi/seed_0004", lo[0][None], truth, np.array([[1, 2]]), [0], fno)
    with h5py.File(p) as f:
        mem = f["members"][()]
    rows = [(k, m) for k in range(steps) for m in range(e)]
    inputs = np.stack([mem[0, m, k] for k, m in rows])
    samples = np.stack([np.stack([upsample_np(inputs[t], 2, "bicubic")
                                  + 0.01 * rng.standard_normal((C, 2 * G, 2 * G)).astype(np.float32)
                                  for _ in range(2)]) for t in range(len(rows))])  # fmt: skip
    chain = tmp_path / "out" / "chain" / "c.h5"
    chain.parent.mkdir(parents=True)
    with h5py.File(chain, "w") as f:
        f["samples"], f["input"] = samples.astype(np.float32), inputs
        f["init_index"] = np.zeros(len(rows), np.int64)
        f["lead"] = np.array([k + 1 for k, _ in rows])
        f["member"] = np.array([m for _, m in rows])
        f["snapshot"] = np.array([k + 1 for k, _ in rows])
        f["time"] = np.zeros(len(rows))
        f.attrs.update({"kind": "chain", "sim": "hi/seed_0004", "channels": list(CHANNELS),
                        "forecast_file": str(p), "complete": True})  # fmt: skip
    ops = read_operator_rollouts(str(tmp_path / "fno" / "*.h5"))
    s = score_rollout(p, operators=ops)
    ch = score_chain(chain, {s.sim: s})
    assert [(g["lead"], g["rows"], g["members"]) for g in ch["groups"]] == [(1, 2, 4), (2, 2, 4)]
    c = ch["curves"]
    for k in range(steps):
        ens = samples[2 * k : 2 * k + 2].reshape(4, C, 2 * G, 2 * G)
        yk = y[k + 1]
        np.testing.assert_allclose([c["chain"]["crps"][x][k] for x in CHANNELS],
                                   crps_fair(ens, yk), rtol=1e-7)  # fmt: skip
        np.testing.assert_allclose([c["chain"]["nrmse"][x][k] for x in CHANNELS],
                                   _nrmse(ens.astype(np.float64).mean(0), yk), rtol=1e-5)  # fmt: skip
        np.testing.assert_allclose([c["fno+spline"]["nrmse"][x][k] for x in CHANNELS],
                                   _nrmse(upsample_np(lo[k + 1], 2, "spline"), yk), rtol=1e-5)  # fmt: skip
        np.testing.assert_allclose([c["persistence+spline"]["nrmse"][x][k] for x in CHANNELS],
                                   _nrmse(upsample_np(lo[0], 2, "spline"), yk), rtol=1e-5)  # fmt: skip
    assert c["chain member"]["n"] == [4, 4] and c["chain"]["n"] == [1, 1]
    assert set(c["chain member"]["band_error"]) == {"resolved", "transition", "generated"}
    # a row whose input is another member's forecast is refused
    with h5py.File(chain, "a") as f:
        f["member"][0] = 1
    with pytest.raises(ForecastEvalError, match=r"row 0 .*member 1.*not member 1 of the forecast"):
        score_chain(chain, {s.sim: s})


def test_eval_cli_ensemble_goals_report_and_figures(tmp_path: Path, monkeypatch, repo) -> None:
    """The whole forecast evaluation of a calibrated 8-member ensemble with the FNO and
    climatology baselines: every goal row present and decided as the numbers say, the report's
    tables and figures; without the baselines their goals say why."""
    monkeypatch.chdir(repo)
    rng = np.random.default_rng(8)
    n, e, steps = 2, 8, 3
    truth, members = _calibrated(rng, n, e, steps)
    init = truth[:, 0] + 2.0 * rng.standard_normal((n, C, G, G)).astype(np.float32)  # poor
    init[:, 0] = truth[:, 0, 0] * 1.01
    isn, tsn = _snaps(n, steps)
    write_rollout(tmp_path / "samples" / "r.h5", init=init, truth=truth, tsnap=tsn,
                  init_snapshot=isn, sim="syn/seed_0001", members=members)  # fmt: skip
    _operator(
        tmp_path, "f.h5", "syn/seed_0001", init, truth, tsn, isn, init[:, None].repeat(steps, 1)
    )
    _clim_run(tmp_path)
    base = ["eval", "--config", "configs/eval/forecast-demo.yaml", f"samples={tmp_path / 'samples'}",
            "forecast.hst_check=false", "forecast.field_leads=[1]", "forecast.operator_rollouts=''",
            "forecast.climatology.runs=[]"]  # fmt: skip
    assert main([*base, f"output_dir={tmp_path / 'eval0'}"]) == 0
    g0 = json.loads((tmp_path / "eval0" / "metrics.json").read_text())["goals"]["ensemble"]
    assert (
        g0["crps_fno"]["met"] is None
        and "operator_rollouts" in g0["crps_fno"]["null_reasons"]["met"]
    )
    assert (
        g0["crps_climatology"]["met"] is None
        and "climatology" in g0["crps_climatology"]["null_reasons"]["met"]
    )
    assert main([*base, f"output_dir={tmp_path / 'eval'}",
                 f"forecast.operator_rollouts={tmp_path / 'fno' / '*.h5'}",
                 f"forecast.climatology.runs=[{tmp_path / 'train' / 'seed_*'}]",
                 "forecast.climatology.members=4", "forecast.ensemble_goal_orbits=1.5",
                 "forecast.climatology.orbit_start=0.0", "forecast.climatology.orbit_end=1.0e9"]) == 0  # fmt: skip
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert (m["version"], m["kind"]) == (2, "forecast")
    assert {"crps", "spread_skill", "jz_pdf_w1", "div_b"} <= set(m["metric_definitions"])
    c = m["forecast"]["all"]["curves"]
    assert {"model", "persistence", "fno", "climatology"} <= set(c)
    assert len(m["forecast"]["climatology"]["picks"]) == 4
    g = m["goals"]["ensemble"]
    assert set(g) == {"ensemble_size", "member_energy", "member_spectra", "finite_bounded",
                      "crps_persistence", "crps_fno", "crps_climatology_early", "crps_climatology",
                      "nrmse_persistence", "nrmse_fno", "spread_skill", "corr_lead", "chain_spectra",
                      "chain_crps_persistence", "chain_crps_fno"}  # fmt: skip
    assert g["ensemble_size"]["met"] is True and g["spread_skill"]["met"] is True
    # the FNO here is persistence: the calibrated ensemble beats both
    assert g["crps_persistence"]["met"] is True and g["crps_fno"]["met"] is True
    assert g["nrmse_fno"]["value"] == pytest.approx(g["nrmse_persistence"]["value"])
    ratio = max(c["model"]["crps"][ch][j] / c["persistence"]["crps"][ch][j]
                for ch in CHANNELS for j in range(steps))  # fmt: skip
    assert g["crps_persistence"]["value"] == pytest.approx(ratio)
    assert g["finite_bounded"]["met"] is None  # 1.5 of 4 orbits rolled out
    assert (
        g["chain_spectra"]["met"] is None
        and "no chain" in g["chain_spectra"]["null_reasons"]["met"]
    )
    mem = m["forecast"]["all"]["members"]
    worst = max(max(mem["ke_worst_abs_rel"]), max(mem["me_worst_abs_rel"]))
    assert g["member_energy"]["value"] == pytest.approx(worst)
    assert g["member_energy"]["met"] is (worst <= 0.1)
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "Ensemble-forecast goals" in report and "CRPS/σ climatology" in report
    assert "KE err worst member" in report
    for name in ("forecast_ensemble_energy_vs_lead.png", "forecast_ensemble_spectra.png",
                 "forecast_crps_vs_lead.png"):  # fmt: skip
        assert (tmp_path / "eval" / "figures" / name).is_file() and f"figures/{name}" in report


def test_finite_span_pools_rollouts_of_different_lengths(tmp_path: Path) -> None:
    """A finite 1-step rollout does not shorten the finite span of a finite 3-step one; a NaN
    at step 2 of the longer one does."""
    from mhdsr.eval.forecast import reduce_rollouts, score_rollout

    rng = np.random.default_rng(3)
    files = []
    for name, steps in (("a", 1), ("b", 3)):
        truth, members = _calibrated(rng, 1, 2, steps)
        isn, tsn = _snaps(1, steps)
        files.append(write_rollout(tmp_path / f"{name}.h5", init=truth[:, 0], truth=truth,
                                   tsnap=tsn, init_snapshot=isn, sim=f"syn/seed_000{len(files)}",
                                   members=members))  # fmt: skip
    out = reduce_rollouts([score_rollout(f) for f in files])
    assert out["all"]["rollout_orbits"] == 1.5 and out["all"]["finite_orbits"] == 1.5
    truth, members = _calibrated(rng, 1, 2, 3)
    members[:, :, 1] = np.nan
    isn, tsn = _snaps(1, 3)
    bad = write_rollout(tmp_path / "c.h5", init=truth[:, 0], truth=truth, tsnap=tsn,
                        init_snapshot=isn, sim="syn/seed_0009", members=members)  # fmt: skip
    out = reduce_rollouts([score_rollout(f) for f in (*files, bad)])
    assert out["all"]["finite_orbits"] == 0.5
