"""Tests of mhdsr.analysis.pdfs and mhdsr.analysis.random_fields with known answers.

- W1 of identical samples is 0, of a shifted sample the shift (exactly), in units of the
  reference std the shift / std; unequal sizes agree with scipy.
- A Gaussian random field has Gaussian increments: flatness 3 within the sampling error
  measured over independent draws.
- A Gaussian random field has, on average, the target shell spectrum (within the chi-square
  sampling error of each band).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mhdsr.analysis.pdfs import (
    flatness,
    increments,
    normalized_by_rms,
    w1_normalized,
    wasserstein1,
)
from mhdsr.analysis.random_fields import gaussian_random_field, shell_mode_counts
from mhdsr.analysis.spectra import band_edges, n_shells, power_spectrum


def test_w1_identical_is_zero_and_shift_is_the_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=5000)
    assert wasserstein1(a, a) == 0.0
    assert wasserstein1(a + 0.25, a) == pytest.approx(0.25, rel=1e-12)
    assert w1_normalized(a + 0.25, a) == pytest.approx(0.25 / a.std(), rel=1e-12)
    # the fast path (sizes multiples: an ensemble of 3 against one truth) is exact too
    assert wasserstein1(np.tile(a, 3) - 0.5, a) == pytest.approx(0.5, rel=1e-12)
    # scale: W1(2a, a) = E|2a - a| over matched quantiles = mean |a|
    assert wasserstein1(2 * a, a) == pytest.approx(np.mean(np.abs(a)), rel=1e-12)


def test_w1_matches_scipy_for_unequal_sizes():
    rng = np.random.default_rng(1)
    a, b = rng.standard_t(4, size=3001), rng.normal(size=2000) * 1.3
    assert wasserstein1(a, b) == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-10)
    sa, sb = np.sort(a), np.sort(b)
    assert wasserstein1(sa, sb, presorted=True) == pytest.approx(wasserstein1(a, b), rel=1e-12)
    with pytest.raises(ValueError, match="non-empty"):
        wasserstein1(a, np.array([]))


def test_increments_are_periodic_differences():
    f = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(increments(f, 1, -1)[0], [1, 1, 1, -3])
    np.testing.assert_array_equal(increments(f, 2, -2)[:, 0], [8, -4, -4])
    assert increments(f, 1, -1).sum() == 0.0  # periodic: zero mean exactly
    g = normalized_by_rms(f)
    assert np.sqrt(np.mean(g**2)) == pytest.approx(1.0)


def _pooled_flatness_and_jackknife_se(d: np.ndarray) -> tuple[float, float]:
    """Flatness pooled over draws (axis 0) and its delete-one-draw jackknife standard error
    (the grid values of one draw are correlated, so a naive 1/sqrt(N) error would be wrong)."""
    m2 = np.mean(d**2, axis=(-2, -1))
    m4 = np.mean(d**4, axis=(-2, -1))
    r = len(d)
    full = m4.mean() / m2.mean() ** 2
    loo = np.array([np.delete(m4, i).mean() / np.delete(m2, i).mean() ** 2 for i in range(r)])
    return float(full), float(np.sqrt((r - 1) / r * np.sum((loo - loo.mean()) ** 2)))


def test_gaussian_random_field_increments_have_flatness_three():
    """Increments of a Gaussian field are Gaussian: flatness 3 within 4 jackknife standard
    errors over independent draws. (A per-field ratio of moments is biased low when a field
    holds few independent modes; the pooled estimator is consistent.)"""
    n, draws = 64, 40
    k = np.arange(n_shells(n))
    spec = np.where(k > 0, np.maximum(k, 1) ** -2.0, 0.0)
    rng = np.random.default_rng(2)
    g = gaussian_random_field(np.broadcast_to(spec, (draws, spec.size)), n, rng)
    for lag, axis in ((1, -1), (2, -1), (4, -2)):
        fl, se = _pooled_flatness_and_jackknife_se(increments(g, lag, axis))
        assert abs(fl - 3.0) < 4 * se, (lag, fl, se)
        assert se < 0.1  # the test has teeth: a flatness of 3.5 would fail it
    # and a heavy-tailed sample is not Gaussian: the test can fail
    lap = rng.laplace(size=100_000)
    assert flatness(lap) == pytest.approx(6.0, rel=0.1)


def test_gaussian_random_field_matches_the_target_spectrum_on_average():
    n, draws = 64, 64
    k = np.arange(n_shells(n))
    target = np.where(k > 0, 1e-3 * np.exp(-k / 20.0), 0.0)
    g = gaussian_random_field(
        np.broadcast_to(target, (draws, target.size)), n, np.random.default_rng(4)
    )
    assert g.dtype == np.float64 and np.isrealobj(g)
    np.testing.assert_allclose(g.mean(axis=(-2, -1)), 0.0, atol=1e-15)  # zero mean
    e = power_spectrum(g).mean(axis=0)
    counts = shell_mode_counts(n)
    assert counts.sum() == n * n
    # per shell: E is a sum of ~counts/2 independent exponentials -> relative std sqrt(2/counts)
    for name, band in band_edges(n // 2, n).items():
        m = band.mask(k)
        rel_err = abs(e[m].sum() / target[m].sum() - 1)
        sigma = np.sqrt(np.sum(target[m] ** 2 * 2 / counts[m])) / target[m].sum() / np.sqrt(draws)
        assert rel_err < 5 * sigma, (name, rel_err, sigma)
    ok = (k >= 1) & (k <= n // 2)
    assert np.abs(e[ok] / target[ok] - 1).max() < 5 * np.sqrt(2 / counts[ok].min() / draws)


def test_gaussian_random_field_is_a_function_of_the_generator_state():
    spec = np.ones(n_shells(32))
    a = gaussian_random_field(spec, 32, np.random.default_rng(9))
    b = gaussian_random_field(spec, 32, np.random.default_rng(9))
    c = gaussian_random_field(spec, 32, np.random.default_rng(10))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
