"""Tests of mhdsr.analysis.scores against brute-force formulas and exact expectations."""

import math

import numpy as np
import pytest
from scipy import stats

from mhdsr.analysis.scores import crps_fair, histogram_distance, nrmse, rmse, spread_skill


def _crps_fair_brute(ens, y):
    """Double-sum definition, members on axis 0."""
    n = ens.shape[0]
    skill = np.mean(np.abs(ens - y), axis=0)
    pairs = np.abs(ens[:, None] - ens[None, :]).sum(axis=(0, 1))
    return skill - pairs / (2 * n * (n - 1))


def test_rmse_and_nrmse_known_values():
    truth = np.zeros((2, 4, 4))
    truth[0] = np.arange(16).reshape(4, 4)  # std over the grid = sqrt((16**2 - 1) / 12)
    truth[1] = 5.0
    pred = truth + np.array([3.0, -2.0])[:, None, None]
    np.testing.assert_allclose(rmse(pred, truth), [3.0, 2.0], rtol=1e-15)
    nr = nrmse(pred.astype(np.float32), truth)
    assert nr[0] == pytest.approx(3.0 / math.sqrt(255 / 12), rel=1e-12)
    assert nr[1] == np.inf  # constant truth
    assert rmse(pred, truth, axis=None) == pytest.approx(math.sqrt((9 + 4) / 2))
    assert nrmse(truth, truth)[0] == 0.0


@pytest.mark.parametrize("n", [2, 3, 7])
def test_crps_fair_matches_double_sum(n):
    rng = np.random.default_rng(n)
    truth = rng.normal(size=(3, 5, 6))
    ens = rng.normal(size=(n, 3, 5, 6)) * 1.3 + 0.2
    before = ens.copy()
    per_pixel = crps_fair(ens, truth, axis=())
    np.testing.assert_array_equal(ens, before)  # the input is not sorted in place
    np.testing.assert_allclose(per_pixel, _crps_fair_brute(ens, truth), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(crps_fair(ens, truth), per_pixel.mean(axis=(-2, -1)), rtol=1e-13)
    # member axis elsewhere, e.g. (T, E, C, H, W) inference output
    ens_t = np.moveaxis(ens.reshape(n, 3, 1, 5, 6), 0, 1)
    np.testing.assert_allclose(
        crps_fair(ens_t, truth[:, None], member_axis=1, axis=()), per_pixel[:, None], rtol=1e-13
    )


def test_crps_fair_small_cases():
    truth = np.array([1.5, -2.0])
    perfect = np.repeat(truth[None], 5, axis=0)
    assert np.all(crps_fair(perfect, truth, axis=()) == 0.0)
    # members {0, 2}, truth 0: mean|x - y| = 1, pair term (2 + 2) / (2 * 2 * 1) = 1 -> 0
    assert crps_fair(np.array([[0.0], [2.0]]), np.array([0.0]), axis=()) == pytest.approx([0.0])
    # members {0, 1, 5}, truth 2: (2 + 1 + 3) / 3 - 2 * (1 + 5 + 4) / (2 * 3 * 2) = 2 - 5/3
    got = crps_fair(np.array([[0.0], [1.0], [5.0]]), np.array([2.0]), axis=())
    assert got == pytest.approx([1.0 / 3.0], rel=1e-14)
    with pytest.raises(ValueError, match="at least 2 members"):
        crps_fair(np.zeros((1, 4)), np.zeros(4))
    with pytest.raises(ValueError, match="shape"):
        crps_fair(np.zeros((3, 4)), np.zeros(5))


def test_crps_fair_is_unbiased_for_small_ensembles():
    # E[CRPS_fair] over 3-member ensembles from N(0, 1) = CRPS(N(0, 1), y) (Gneiting & Raftery 2007)
    y = 0.5
    phi = math.exp(-0.5 * y * y) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + math.erf(y / math.sqrt(2)))
    exact = y * (2 * cdf - 1) + 2 * phi - 1 / math.sqrt(math.pi)
    rng = np.random.default_rng(0)
    ens = rng.normal(size=(3, 400_000))
    got = crps_fair(ens, np.full(400_000, y), axis=-1)
    assert got == pytest.approx(exact, abs=3e-3)  # Monte-Carlo std ~ 1e-3


def test_spread_skill_calibrated_gaussian_ratio_is_one():
    rng = np.random.default_rng(0)
    n = 4
    loc = rng.normal(size=(2, 1, 1)) * 3  # a per-channel offset shared by members and truth
    ens = loc + rng.normal(size=(n, 2, 128, 128))
    truth = loc + rng.normal(size=(2, 128, 128))
    spread, skill, ratio = spread_skill(ens, truth)
    assert spread.shape == skill.shape == ratio.shape == (2,)
    np.testing.assert_allclose(spread, 1.0, atol=0.02)
    np.testing.assert_allclose(skill, math.sqrt(1 + 1 / n), atol=0.02)
    np.testing.assert_allclose(ratio, 1.0, atol=0.02)
    # an ensemble that is twice too narrow is flagged
    _, _, r_narrow = spread_skill(loc + 0.5 * (ens - loc), truth)
    assert np.all(r_narrow < 0.6)


def test_spread_skill_known_values():
    ens = np.array([[1.0, 2.0], [3.0, 6.0]])  # 2 members, 2 pixels
    truth = np.array([1.0, 4.0])
    spread, skill, ratio = spread_skill(ens, truth, axis=-1)
    # mean (2, 4) -> errors (1, 0); var ddof=1 = (2, 8)
    assert skill == pytest.approx(math.sqrt(0.5))
    assert spread == pytest.approx(math.sqrt(5.0))
    assert ratio == pytest.approx(math.sqrt(1.5) * math.sqrt(5.0) / math.sqrt(0.5))


def test_histogram_distance_known_answers():
    rng = np.random.default_rng(0)
    b = rng.normal(size=5000) * 2.0
    d = histogram_distance(b + 0.3, b)
    assert d["w1"] == pytest.approx(0.3, rel=1e-10)
    assert d["w1_norm"] == pytest.approx(0.3 / b.std(), rel=1e-10)
    same = histogram_distance(b.reshape(50, 100), b[::-1])
    assert same == {"w1": 0.0, "w1_norm": 0.0, "ks": 0.0}
    # disjoint supports: KS = 1, W1 = distance between the means of {0, 1} and {10, 12}
    d = histogram_distance(np.array([0.0, 1.0]), np.array([10.0, 12.0]))
    assert d["ks"] == 1.0
    assert d["w1"] == pytest.approx(10.5)
    with pytest.raises(ValueError, match="finite"):
        histogram_distance(np.array([0.0, np.nan]), b)


def test_histogram_distance_matches_scipy_for_unequal_sizes():
    rng = np.random.default_rng(1)
    a = rng.gamma(2.0, size=3001)
    b = np.round(rng.gamma(2.2, size=1999), 1)  # ties inside and across the samples
    d = histogram_distance(a, b)
    assert d["w1"] == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-10)
    assert d["ks"] == pytest.approx(stats.ks_2samp(a, b).statistic, rel=1e-12)
