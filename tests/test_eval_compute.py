"""Known-answer tests of the evaluation numbers (mhdsr.eval.scoring / pooling / inputs / report).

Truth = the real demo shards (test split, sim mri256_nu3e-5/seed_0001, 3 snapshots). Sample
files are fabricated from it with controlled errors, so every metric has a value known in
closed form: a perfect ensemble, constant offsets, the bilinear baseline itself.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from eval_helpers import pool, shared_demo_shards, truth_of_sim, up, write_samples
from mhdsr.analysis.pdfs import flatness, increments
from mhdsr.analysis.physics import divb_residual, jz_residual
from mhdsr.analysis.spectra import band_errors, coherence, radial_spectrum
from mhdsr.channels import CHANNELS
from mhdsr.dataset.manifest import read_manifest
from mhdsr.eval.inputs import EvalInputError, ShardTruth, discover
from mhdsr.eval.planning import panel_plan, plan_jobs
from mhdsr.eval.pooling import curve_metrics, per_snapshot, physics_metrics, pool_curves
from mhdsr.eval.reference import reference_stats
from mhdsr.eval.report import check_clean, clean
from mhdsr.eval.scoring import evaluate_sim

SIM = "mri256_nu3e-5/seed_0001"
HELD = "mri128_nu3e-5/seed_0002"
BANDS = ("resolved", "transition", "generated")


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return shared_demo_shards(tmp_path_factory)


@pytest.fixture(scope="module")
def truth3(shards):
    """keys, hi (3, 8, 256, 256), snapshots, times, seed of the test sim."""
    return truth_of_sim(shards, "test", SIM, 3)


@pytest.fixture(scope="module")
def offsets(truth3) -> np.ndarray:
    """Per-channel constant c = 0.5 * std of the channel, shape (8, 1, 1)."""
    hi = truth3[1]
    return (0.5 * hi.std(axis=(0, 2, 3))).astype(np.float32)[:, None, None]


@pytest.fixture(scope="module")
def scored(shards, truth3, offsets, tmp_path_factory):
    """Three methods on the test sim, evaluated once:

    - ``ema/heun-8``: two members, both equal to the truth (a perfect ensemble);
    - ``raw/heun-8``: members truth + 3c and truth + c (known offsets);
    - ``ema/euler_maruyama-16``: one member, the bilinear baseline of the input.
    """
    keys, hi, snaps, times, seed = truth3
    lo = pool(hi)
    root = tmp_path_factory.mktemp("eval_compute") / "samples"
    common = dict(snapshots=snaps, times=times, sim=SIM, sim_seed=seed, keys=keys)
    write_samples(root / "ode" / "perfect.h5", np.stack([hi, hi], 1), lo, **common)
    off = np.stack([hi + 3 * offsets, hi + offsets], 1)
    write_samples(root / "ode_raw" / "offset.h5", off, lo, weights="raw", **common)
    write_samples(
        root / "sde" / "bilinear.h5",
        up(lo, "bilinear")[:, None],
        lo,
        sampler="euler_maruyama",
        steps=16,
        **common,
    )
    files = discover(root)
    truth = ShardTruth(shards, read_manifest(shards))
    jobs = plan_jobs(files, truth)
    results = [evaluate_sim(j, truth, baselines=["bilinear", "bicubic"]) for j in jobs]
    curves = pool_curves(results)["test"]
    m = {n: curve_metrics(c, list(CHANNELS)) for n, c in curves.items()}
    return {"files": files, "jobs": jobs, "curves": curves, "metrics": m, "results": results}


def test_methods_are_named_by_weights_sampler_and_steps(scored) -> None:
    names = sorted(f.method for f in scored["files"])
    assert names == ["ema/euler_maruyama-16", "ema/heun-8", "raw/heun-8"]
    (job,) = scored["jobs"]
    assert (job.sim, job.group, job.split) == (SIM, "test", "test")


def test_perfect_ensemble_scores_zero(scored) -> None:
    m = scored["metrics"]["ema/heun-8"]
    for ch in CHANNELS:
        v = m[ch]
        for k in (
            "rmse",
            "nrmse",
            "rmse_ensemble_mean",
            "nrmse_ensemble_mean",
            "crps",
            "spread",
            "skill",
        ):
            assert v[k] == 0.0, (ch, k, v[k])
        assert math.isnan(v["spread_skill"])  # 0 / 0: report.clean makes it null with a reason
        for b in BANDS:
            assert v["spectral_error"][b] == pytest.approx(0.0, abs=1e-12), (ch, b)
            assert v["coherence"][b] == pytest.approx(1.0, abs=1e-12), (ch, b)
            assert v["coherence_ensemble_mean"][b] == pytest.approx(1.0, abs=1e-12), (ch, b)
            # identical members: member-member coherence 1, as member-truth
            assert v["coherence_member_member"][b] == pytest.approx(1.0, abs=1e-12), (ch, b)
    # PDFs identical to the truth's: W1 = 0, flatness = the truth's
    truth = scored["metrics"]["truth"]
    assert m["jz"]["jz_pdf_w1"] == 0.0
    assert m["jz"]["jz_flatness"] == pytest.approx(truth["jz"]["jz_flatness"], rel=1e-12)
    for ch in ("velx", "vely", "velz"):
        assert set(m[ch]["increment_w1"]) == {"dx1", "dx2", "dx4", "dy1", "dy2", "dy4"}
        assert all(v == 0.0 for v in m[ch]["increment_w1"].values()), ch
        assert m[ch]["increment_flatness"] == pytest.approx(truth[ch]["increment_flatness"])
    # channels a PDF metric does not cover carry no key
    assert "jz_pdf_w1" not in m["density"] and "increment_w1" not in m["jz"]


def test_perfect_ensemble_physics_equals_truth(scored, truth3) -> None:
    curves = scored["curves"]
    pm, pt = physics_metrics(curves["ema/heun-8"]), physics_metrics(curves["truth"])
    assert pm == pytest.approx(pt, rel=1e-12)
    hi = truth3[1]
    assert pt["div_b"] == pytest.approx(float(np.mean(divb_residual(hi, CHANNELS))), rel=1e-12)
    assert pt["jz_curl_b"] == pytest.approx(float(np.mean(jz_residual(hi, CHANNELS))), rel=1e-12)
    assert pt["jz_curl_b"] < 1e-5  # AthenaK's jz is the centred curl of B on its own grid


def test_constant_offsets_give_known_scores(scored, truth3, offsets) -> None:
    # members y + 3c and y + c: single-member RMSE (3c + c)/2 = 2c, ensemble mean y + 2c,
    # CRPS = mean|x - y| - |x1 - x2| / 2 = 2c - c = c, spread^2 = var_ddof1{3c, c} = 2c^2,
    # spread/skill = sqrt(1 + 1/2) * sqrt(2) c / (2 c) = sqrt(3) / 2
    m = scored["metrics"]["raw/heun-8"]
    hi = truth3[1].astype(np.float64)
    for i, ch in enumerate(CHANNELS):
        c = float(offsets[i, 0, 0])
        v = m[ch]
        assert v["rmse"] == pytest.approx(2 * c, rel=1e-4)
        assert v["rmse_ensemble_mean"] == pytest.approx(2 * c, rel=1e-4)
        assert v["nrmse_ensemble_mean"] == pytest.approx(
            np.mean(2 * c / hi[:, i].std(axis=(-2, -1))), rel=1e-4
        )
        assert v["crps"] == pytest.approx(c, rel=1e-4)
        assert v["spread"] == pytest.approx(math.sqrt(2) * c, rel=1e-4)
        assert v["skill"] == pytest.approx(2 * c, rel=1e-4)
        assert v["spread_skill"] == pytest.approx(math.sqrt(3) / 2, rel=1e-4)
        # a constant only moves k = 0, which no band contains (float32 rounding aside): the
        # spectra and the phases are the truth's, and so are the increments
        for b in BANDS:
            assert v["spectral_error"][b] < 1e-3, (ch, b, v["spectral_error"][b])
            assert v["coherence"][b] == pytest.approx(1.0, abs=1e-5), (ch, b)
            assert v["coherence_member_member"][b] == pytest.approx(1.0, abs=1e-5), (ch, b)
        if ch in ("velx", "vely", "velz"):
            assert max(v["increment_w1"].values()) < 1e-4, ch


def test_bilinear_as_a_method_equals_the_bilinear_baseline(scored) -> None:
    m, b = scored["metrics"]["ema/euler_maruyama-16"], scored["metrics"]["bilinear"]
    for ch in CHANNELS:
        for k in ("rmse", "nrmse"):
            assert m[ch][k] == pytest.approx(b[ch][k], rel=1e-12), (ch, k)
        assert m[ch]["rmse_ensemble_mean"] == pytest.approx(b[ch]["rmse"], rel=1e-12)
        assert m[ch]["spectral_error"] == pytest.approx(b[ch]["spectral_error"], rel=1e-12)
        # one member: the ensemble scores are null, each with a reason
        for k in ("crps", "spread", "skill", "spread_skill"):
            assert m[ch][k] is None and "needs >= 2" in m[ch]["null_reasons"][k]
        mm = m[ch]["coherence_member_member"]
        for band in BANDS:
            assert mm[band] is None and "needs >= 2" in mm["null_reasons"][band], (ch, band)
        assert "coherence_member_member" not in b[ch]  # deterministic baseline: not computed
    curves = scored["curves"]
    assert physics_metrics(curves["ema/euler_maruyama-16"]) == pytest.approx(
        physics_metrics(curves["bilinear"]), rel=1e-12
    )


def test_baseline_scores_match_a_direct_computation(scored, truth3) -> None:
    hi = truth3[1].astype(np.float64)
    lo = pool(truth3[1])
    for mode in ("bilinear", "bicubic"):
        u = up(lo, mode).astype(np.float64)
        rmse = np.sqrt(((u - hi) ** 2).mean(axis=(-2, -1))).mean(axis=0)
        e_u = radial_spectrum(u)[1].mean(axis=0)
        k, e_y = radial_spectrum(hi)
        errs = band_errors(e_u, e_y.mean(axis=0), k, 128, 256)
        got = scored["metrics"][mode]
        for i, ch in enumerate(CHANNELS):
            assert got[ch]["rmse"] == pytest.approx(rmse[i], rel=1e-6)
            for b in BANDS:
                assert got[ch]["spectral_error"][b] == pytest.approx(errs[b][i], rel=1e-6)
    # the generated band of bilinear upsampling lacks power: positive error in every channel
    assert all(
        scored["metrics"]["bilinear"][ch]["spectral_error"]["generated"] > 0.1 for ch in CHANNELS
    )


def test_input_spectrum_is_on_the_lo_grid_without_a_generated_band(scored) -> None:
    m = scored["metrics"]["input"]
    cur = scored["curves"]["input"]
    assert cur.spectrum.shape == (8, 64)
    for ch in CHANNELS:
        assert set(m[ch]["spectral_error"]) == {"resolved", "transition"}
        assert "rmse" not in m[ch]


def test_coherence_and_time_series_match_a_direct_computation(scored, truth3) -> None:
    """bilinear: pooled band coherence = mean over snapshots of analysis.coherence; the
    per-snapshot band error = band_errors of that snapshot's spectra alone."""
    hi = truth3[1].astype(np.float64)
    u = up(pool(truth3[1]), "bilinear").astype(np.float64)
    direct = coherence(u, hi, 128, 256)  # (T, C) per band
    got = scored["metrics"]["bilinear"]
    cur = scored["curves"]["bilinear"]
    series = per_snapshot(cur, list(CHANNELS))
    k, e_u = radial_spectrum(u)
    e_y = radial_spectrum(hi)[1]
    for i, ch in enumerate(CHANNELS):
        for b in BANDS:
            assert got[ch]["coherence"][b] == pytest.approx(direct[b][:, i].mean(), rel=1e-9)
            assert series[f"coherence.{b}"][ch] == pytest.approx(direct[b][:, i], rel=1e-9)
        for t in range(3):
            want = band_errors(e_u[t, i], e_y[t, i], k, 128, 256)["generated"]
            assert series["spectral_error.generated"][ch][t] == pytest.approx(float(want), rel=1e-9)
    # bilinear smooths: phases survive in the resolved band, not in the generated one
    assert all(got[ch]["coherence"]["resolved"] > 0.99 for ch in CHANNELS)
    assert all(
        got[ch]["coherence"]["generated"] < got[ch]["coherence"]["resolved"] for ch in CHANNELS
    )
    assert cur.snapshots == [13, 16, 19]


def test_truth_flatness_is_the_pooled_flatness_of_its_increments(scored, truth3) -> None:
    hi = truth3[1].astype(np.float64)
    truth = scored["metrics"]["truth"]
    for ch in ("velx", "vely", "velz"):
        c = CHANNELS.index(ch)
        want = np.mean([flatness(increments(hi[t, c], 2, -2)) for t in range(3)])
        assert truth[ch]["increment_flatness"]["dy2"] == pytest.approx(want, rel=1e-9)
        assert truth[ch]["increment_flatness"]["dy2"] > 3.0  # intermittent: heavier than Gaussian
    assert set(truth["density"]) == set()  # the truth has no pixel or spectral entries


def test_reference_split_statistics(shards) -> None:
    truth = ShardTruth(shards, read_manifest(shards))
    ref = reference_stats(truth, "test", list(CHANNELS), cap=10**6)
    _, hi, _, _, _ = truth_of_sim(shards, "test", SIM)
    assert ref.n_snapshots == hi.shape[0] == 4
    np.testing.assert_allclose(ref.hi_spectrum, radial_spectrum(hi)[1].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(
        ref.lo_spectrum, radial_spectrum(pool(hi))[1].mean(axis=0), rtol=1e-12
    )
    vals = np.concatenate(ref.lo_values[7])
    assert vals.size == 4 * 128 * 128  # cap not reached: every value kept
    np.testing.assert_allclose(np.sort(vals), np.sort(pool(hi)[:, 7].ravel()))
    with pytest.raises(EvalInputError, match="no hi split 'nope'"):
        reference_stats(truth, "nope", list(CHANNELS), cap=10**6)


def test_derived_file_of_an_unknown_sim_is_refused(shards, truth3, tmp_path) -> None:
    keys, hi, snaps, times, _ = truth3
    write_samples(
        tmp_path / "x.h5",
        hi[:1, None],
        pool(hi[:1]),
        snapshots=snaps[:1],
        times=times[:1],
        sim="mri256_nu3e-5/seed_0042",
        sim_seed=42,
        keys=["s0042_n00013"],
    )
    truth = ShardTruth(shards, read_manifest(shards))
    with pytest.raises(EvalInputError, match="seed_0042' has no truth in the shards"):
        plan_jobs(discover(tmp_path), truth)
    # right sim, but a snapshot the shards do not hold
    write_samples(
        tmp_path / "x.h5",
        hi[:1, None],
        pool(hi[:1]),
        snapshots=np.array([99]),
        times=times[:1],
        sim=SIM,
        sim_seed=1,
        keys=["s0001_n00099"],
    )
    with pytest.raises(EvalInputError, match="s0001_n00099"):
        plan_jobs(discover(tmp_path), truth)


def test_same_method_in_two_folders_gets_the_folder_in_its_name(shards, truth3, tmp_path) -> None:
    keys, hi, snaps, times, seed = truth3
    for d in ("ckpt_a", "ckpt_b"):
        write_samples(
            tmp_path / d / "s.h5",
            hi[:1, None],
            pool(hi[:1]),
            snapshots=snaps[:1],
            times=times[:1],
            sim=SIM,
            sim_seed=seed,
            keys=keys[:1],
        )
    assert sorted(f.method for f in discover(tmp_path)) == [
        "ema/heun-8 [ckpt_a]",
        "ema/heun-8 [ckpt_b]",
    ]


def test_unfinished_or_malformed_files_are_refused(truth3, tmp_path) -> None:
    import h5py

    keys, hi, snaps, times, seed = truth3
    p = write_samples(
        tmp_path / "a.h5",
        hi[:1, None],
        pool(hi[:1]),
        snapshots=snaps[:1],
        times=times[:1],
        sim=SIM,
        sim_seed=seed,
        keys=keys[:1],
    )
    with h5py.File(p, "a") as f:
        f.attrs["complete"] = False
    with pytest.raises(EvalInputError, match="complete is false"):
        discover(tmp_path)
    with h5py.File(p, "a") as f:
        f.attrs["complete"] = True
        del f["snapshot"]
    with pytest.raises(EvalInputError, match="missing dataset 'snapshot'"):
        discover(tmp_path)


def test_panel_plan_spreads_snapshots_over_sims(scored) -> None:
    (job,) = scored["jobs"]  # 3 snapshots: 13, 16, 19
    assert panel_plan([job], 1) == {SIM: [16]}
    assert panel_plan([job], 2) == {SIM: [13, 19]}
    assert panel_plan([job], 5) == {SIM: [13, 16, 19]}
    assert panel_plan([job], 0) == {}


def test_clean_turns_non_finite_numbers_into_nulls_with_reasons() -> None:
    raw = {
        "a": float("nan"),
        "b": [1.0, float("inf")],
        "c": {"d": np.float32(2.5)},
        "e": None,
        "null_reasons": {"e": "not computed"},
    }
    out = clean(raw)
    assert out["a"] is None and "non-finite" in out["null_reasons"]["a"]
    assert out["b"] == [1.0, None] and "b[1]" in out["null_reasons"]
    assert out["c"] == {"d": 2.5} and isinstance(out["c"]["d"], float)
    assert out["null_reasons"]["e"] == "not computed"
    check_clean(out)
    with pytest.raises(ValueError, match="x is null without a reason"):
        check_clean({"x": None})


def test_physics_is_skipped_with_a_note_without_bx_by_jz(shards, truth3, tmp_path) -> None:
    keys, hi, snaps, times, seed = truth3
    chs = ("density", "velx")
    x = hi[:1, [CHANNELS.index(c) for c in chs]]
    write_samples(
        tmp_path / "s" / "a.h5",
        np.stack([x, x], 1),
        pool(x),
        snapshots=snaps[:1],
        times=times[:1],
        sim=SIM,
        sim_seed=seed,
        keys=keys[:1],
        channels=chs,
    )
    # a hidden name is a sample run's temporary file: ignored
    (tmp_path / "s" / ".b.h5").write_bytes(b"partial")
    truth = ShardTruth(shards, read_manifest(shards))
    (job,) = plan_jobs(discover(tmp_path / "s"), truth)
    res = evaluate_sim(job, truth, baselines=["bicubic"])
    assert all(physics_metrics(c) is None for c in res.curves.values())
    assert any("physics consistency (div_b, jz_curl_b) skipped" in n for n in res.notes)
    m = curve_metrics(res.curves["ema/heun-8"], chs)
    assert set(m) == set(chs) and m["velx"]["rmse"] == 0.0


def test_input_that_is_not_avgpool2_of_the_truth_is_refused(shards, truth3, tmp_path) -> None:
    keys, hi, snaps, times, seed = truth3
    lo = pool(hi[:1])
    lo[0, 3] *= 1.01  # velz input 1% off: not the avgpool2 of the shards' field
    write_samples(
        tmp_path / "a.h5",
        hi[:1, None],
        lo,
        snapshots=snaps[:1],
        times=times[:1],
        sim=SIM,
        sim_seed=seed,
        keys=keys[:1],
    )
    truth = ShardTruth(shards, read_manifest(shards))
    (job,) = plan_jobs(discover(tmp_path), truth)
    with pytest.raises(EvalInputError, match="not avgpool2 of the truth") as e:
        evaluate_sim(job, truth, baselines=[])
    msg = str(e.value)
    assert "a.h5" in msg and f"snapshot {snaps[0]}" in msg and "['velz']" in msg
    assert float(msg.split(" = ")[1].split(" ")[0]) == pytest.approx(0.01, rel=0.05)
