"""The stochastic baselines of mhdsr eval (docs/design.md, "Baselines") with known answers.

- spectral-noise = spline + a Gaussian random field: on average over members its spectrum is
  the spline's plus the target, within the sampling error of the members (computed here);
  its target is max(E_train - E_spline, 0) of the train split's mean spectra.
- noise = the flow's start u + sigma * std_c * eps: (x - u) / (sigma std_c) is N(0, 1).
- Both are reproducible per (seed, sim seed, snapshot, member), whatever the ensemble size.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from eval_helpers import pool, read_split, shared_demo_shards, truth_of_sim, up, write_samples
from mhdsr.analysis.spectra import band_edges, n_shells, power_spectrum
from mhdsr.channels import CHANNELS
from mhdsr.dataset.manifest import read_manifest
from mhdsr.errors import ConfigError
from mhdsr.eval.baselines import BASELINE_NAMES, BASELINES, BaselineInputs, make_baseline
from mhdsr.eval.config import EvalConfig
from mhdsr.eval.inputs import EvalInputError, ShardTruth, discover
from mhdsr.eval.planning import check_baselines
from mhdsr.eval.reference import train_spectra
from mhdsr.method.grid import avgpool2_np, upsample_np


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return shared_demo_shards(tmp_path_factory)


def _lo(n: int = 32, c: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(c, n, n)).astype(np.float32)


def test_the_names_live_in_one_place():
    assert BASELINE_NAMES == ("bilinear", "bicubic", "spline", "spectral-noise", "noise")
    assert tuple(BASELINES) == BASELINE_NAMES
    assert EvalConfig().baselines == list(BASELINE_NAMES)
    with pytest.raises(ConfigError, match="baselines"):
        EvalConfig(baselines=["spline", "spline"]).validate()


def test_spectral_noise_matches_the_target_spectrum_on_average():
    lo = _lo()
    n_hi = 64
    k = np.arange(n_shells(n_hi))
    target = np.where(k > 0, 2e-3 * np.exp(-k / 15.0), 0.0)
    target = np.stack([target, 3 * target])  # (C, S), one per channel
    members = 48
    inputs = BaselineInputs(factor=2, n_members=members, noise_spectrum=target)
    x = make_baseline("spectral-noise", lo, inputs, snapshot=7)
    assert x.shape == (members, 2, n_hi, n_hi) and x.dtype == np.float32
    spline = upsample_np(np.asarray(lo, np.float32), 2, "spline")
    np.testing.assert_allclose(x.mean(axis=0), spline, atol=0.2)  # noise averages out
    e_noise = power_spectrum(x.astype(np.float64) - spline)  # (M, C, S): the added field alone
    e_total = power_spectrum(x.astype(np.float64))
    e_spline = power_spectrum(spline)
    for name, band in band_edges(32, n_hi).items():
        m = band.mask(k)
        for c in range(2):
            # the added field's band energy, member by member: mean within 5 standard errors
            per = e_noise[:, c, m].sum(-1)
            assert abs(per.mean() - target[c, m].sum()) < 5 * per.std(ddof=1) / np.sqrt(members)
            # spline + noise: the cross term averages out, E_total ~ E_spline + target
            tot = e_total[:, c, m].sum(-1)
            want = e_spline[c, m].sum() + target[c, m].sum()
            assert abs(tot.mean() - want) < 5 * tot.std(ddof=1) / np.sqrt(members), (name, c)


def test_stochastic_baselines_are_keyed_per_member():
    lo = _lo()
    spec = np.ones((2, n_shells(64))) * 1e-4
    small = BaselineInputs(factor=2, n_members=2, noise_spectrum=spec, sigma=np.ones(2), sim_seed=5)
    big = BaselineInputs(factor=2, n_members=4, noise_spectrum=spec, sigma=np.ones(2), sim_seed=5)
    for name in ("spectral-noise", "noise"):
        a = make_baseline(name, lo, small, snapshot=3)
        b = make_baseline(name, lo, big, snapshot=3)
        np.testing.assert_array_equal(a, b[:2])  # member m is the same whatever the ensemble size
        assert not np.allclose(b[0], b[1])  # fresh noise per member
        c = make_baseline(name, lo, big, snapshot=4)
        assert not np.allclose(b[0], c[0])  # and per snapshot
        other_seed = BaselineInputs(**{**big.__dict__, "seed": 1})
        assert not np.allclose(b[0], make_baseline(name, lo, other_seed, snapshot=3)[0])


def test_noise_baseline_is_the_flows_start_in_physical_units():
    """x0 = u + sigma eps in normalized units; in physical units (x - Up(lo)) / (sigma std_c) is
    N(0, 1) per channel (mean 0 and std 1 within sampling error of 2 x 64^2 values)."""
    lo = _lo(64, 3) * np.array([1.0, 0.01, 5.0], np.float32)[:, None, None]
    std = np.array([0.5, 0.01, 5.0])
    sigma = 0.1
    inputs = BaselineInputs(factor=2, n_members=2, sigma=sigma * std, upsample="bicubic")
    x = make_baseline("noise", lo, inputs, snapshot=0)
    eps = (x - up(lo[None], "bicubic")[0][None]) / (sigma * std)[:, None, None]
    n = eps[:, 0].size
    for c in range(3):
        assert abs(eps[:, c].mean()) < 5 / np.sqrt(n)
        assert eps[:, c].std() == pytest.approx(1.0, abs=5 * np.sqrt(0.5 / n))
    # normalized units: (x - mean)/std - Up((lo - mean)/std) = sigma eps (Up is linear and
    # keeps constants, so normalizing before or after upsampling is the same)
    mean = np.array([1.0, 0.0, -2.0])[:, None, None]
    xn = (x - mean) / std[:, None, None]
    un = up(((lo - mean) / std[:, None, None]).astype(np.float32)[None], "bicubic")[0]
    np.testing.assert_allclose((xn - un) / sigma, eps, atol=2e-3)


def test_noise_baseline_of_an_instance_scaled_residual_model():
    """For a residual, instance-scaled model the start x0 = sigma eps decodes to
    u + sigma std_c s_r,c a_c eps: the noise of each channel scales with the input's own level."""
    lo = _lo(64, 2) * np.array([1.0, 0.01], np.float32)[:, None, None]
    mean, std, r = np.array([0.0, 0.0]), np.array([0.5, 0.02]), np.array([0.05, 0.2])
    sigma = 1.0
    inputs = BaselineInputs(
        factor=2, n_members=2, sigma=sigma * std * r, upsample="spline", level=(mean, std, 0, 1e-4)
    )
    x = make_baseline("noise", lo, inputs, snapshot=3)
    a = ((lo - mean[:, None, None]) / std[:, None, None]).std(axis=(-2, -1))
    eps = (x - up(lo[None], "spline")[0][None]) / (sigma * std * r * a)[:, None, None]
    n = eps[:, 0].size
    for c in range(2):
        assert eps[:, c].std() == pytest.approx(1.0, abs=5 * np.sqrt(0.5 / n))


def test_train_spectra_are_the_mean_over_the_train_split(shards):
    truth = ShardTruth(shards, read_manifest(shards))
    chans = ["density", "jz"]
    ts = train_spectra(truth, "train", chans, 2, max_snapshots=512)
    hi = np.stack([a for a, _ in read_split(shards, "train").values()])
    hi = hi[:, [CHANNELS.index(c) for c in chans]].astype(np.float64)
    assert ts.n == hi.shape[0] == 10
    e_hi = power_spectrum(hi).mean(axis=0)
    e_sp = power_spectrum(upsample_np(avgpool2_np(np.asarray(hi, np.float32)), 2, "spline")).mean(
        axis=0
    )
    np.testing.assert_allclose(ts.hi, e_hi, rtol=1e-10)
    np.testing.assert_allclose(ts.spline, e_sp, rtol=1e-10)
    assert (ts.noise_spectrum >= 0).all()
    # the spline misses power in the generated band: that is what spectral-noise adds back
    k = np.arange(ts.hi.shape[-1])
    gen = (k >= 64) & (k <= 128)
    assert (ts.noise_spectrum[:, gen].sum(-1) > 0.5 * ts.hi[:, gen].sum(-1)).all()
    # a strided subset when asked for fewer snapshots
    assert train_spectra(truth, "train", chans, 2, max_snapshots=3).n == 3  # keys 0, 4, 8 of 10


def test_baselines_that_cannot_be_made_are_refused_before_any_work(shards, tmp_path):
    manifest = read_manifest(shards)
    truth = ShardTruth(shards, manifest)
    keys, hi, snaps, times, seed = truth_of_sim(shards, "test", "mri256_nu3e-5/seed_0001", 1)
    p = write_samples(
        tmp_path / "a.h5", hi[:, None], pool(hi), snapshots=snaps, times=times,
        sim="mri256_nu3e-5/seed_0001", sim_seed=seed, keys=keys,
    )  # fmt: skip
    files = discover(tmp_path)
    check_baselines(list(BASELINE_NAMES), files, truth, "train")  # fine
    with pytest.raises(EvalInputError, match="spectral-noise needs the train statistics"):
        check_baselines(["spectral-noise"], files, truth, "nope")
    with h5py.File(p, "a") as f:
        del f.attrs["sigma"]
    with pytest.raises(EvalInputError, match="baseline noise needs attributes sigma"):
        check_baselines(["noise"], discover(tmp_path), truth, "train")
    check_baselines(["spline", "spectral-noise"], discover(tmp_path), truth, "train")
