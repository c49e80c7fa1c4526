"""Tests of mhdsr.analysis.physics on analytic and discretely constructed fields."""

import math

import numpy as np
import pytest

from mhdsr.analysis.physics import curl_z, ddx, ddy, divb_residual, jz_residual
from mhdsr.channels import CHANNELS
from mhdsr.errors import ConfigError

TWO_PI = 2 * math.pi


def _grid(n):
    x = np.arange(n) / n
    return x[None, :], x[:, None]  # x along the last axis, y along the one before


def _stack(bx, by, jz, seed=0):
    """8-channel field in CHANNELS order; the channels the checks ignore are random."""
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(len(CHANNELS),) + np.shape(bx))
    f[CHANNELS.index("Bx")] = bx
    f[CHANNELS.index("By")] = by
    f[CHANNELS.index("jz")] = jz
    return f


def test_discrete_stream_function_field_is_divergence_free():
    # B = (dA/dy, -dA/dx) with the SAME centred differences: they commute, so div B = 0
    # to round-off; jz from mhdsr.analysis.physics.curl_z matches the check exactly.
    n = 32
    x, y = _grid(n)
    a = np.sin(TWO_PI * x) * np.cos(2 * TWO_PI * y) + 0.3 * np.cos(TWO_PI * (3 * x - y))
    bx, by = ddy(a), -ddx(a)
    f = _stack(bx, by, curl_z(bx, by))
    assert divb_residual(f, CHANNELS) < 1e-14
    assert jz_residual(f, CHANNELS) == 0.0
    # float32 storage, as in the shards: residuals at float32 rounding
    f32 = f.astype(np.float32)
    assert divb_residual(f32, CHANNELS) < 1e-6
    assert jz_residual(f32, CHANNELS) < 1e-6


@pytest.mark.parametrize(("p", "q"), [(1, 1), (1, 2), (3, 1)])
def test_analytic_stream_function_field_exact_discrete_divergence(p, q):
    # A = sin(a x) sin(b y), B = (dA/dy, -dA/dx) analytic, jz = -(a^2 + b^2) A.
    # Centred differences give div B = ab cos(ax) cos(by) [sin(ah)/(ah) - sin(bh)/(bh)], so
    # divb_residual = |b sin(ah) - a sin(bh)| / (h (a^2 + b^2)): 0 for a = b, O(h^2) otherwise.
    a, b = TWO_PI * p, TWO_PI * q
    errs = []
    for n in (32, 64, 128):
        x, y = _grid(n)
        h = 1.0 / n
        bx = b * np.sin(a * x) * np.cos(b * y)
        by = -a * np.cos(a * x) * np.sin(b * y)
        jz = -(a * a + b * b) * np.sin(a * x) * np.sin(b * y)
        got = divb_residual(_stack(bx, by, jz), CHANNELS)
        want = abs(b * math.sin(a * h) - a * math.sin(b * h)) / (h * (a * a + b * b))
        assert got == pytest.approx(want, rel=1e-9, abs=1e-14)
        errs.append(got)
    if p == q:
        assert max(errs) < 1e-14
    else:
        assert 3.9 < errs[0] / errs[1] < 4.1 and 3.9 < errs[1] / errs[2] < 4.1


def test_known_divergence_converges_at_second_order():
    # Bx = sin(2 pi x) cos(2 pi y), By = sin(4 pi y): div B = 2pi cos cos + 4pi cos(4 pi y),
    # jz = dBy/dx - dBx/dy = 2pi sin(2 pi x) sin(2 pi y).
    div_err, jz_err = [], []
    for n in (32, 64, 128):
        x, y = _grid(n)
        bx = np.sin(TWO_PI * x) * np.cos(TWO_PI * y)
        by = np.sin(2 * TWO_PI * y) + 0 * x
        div = TWO_PI * np.cos(TWO_PI * x) * np.cos(TWO_PI * y) + 2 * TWO_PI * np.cos(2 * TWO_PI * y)
        jz = TWO_PI * np.sin(TWO_PI * x) * np.sin(TWO_PI * y)
        exact = math.sqrt(np.mean(div**2)) / math.sqrt(np.mean(jz**2))
        f = _stack(bx, by, jz)
        div_err.append(abs(divb_residual(f, CHANNELS) - exact) / exact)
        jz_err.append(jz_residual(f, CHANNELS))
    assert div_err[-1] < 2e-3 and jz_err[-1] < 2e-3
    for errs in (div_err, jz_err):
        assert 3.9 < errs[0] / errs[1] < 4.1 and 3.95 < errs[1] / errs[2] < 4.05
    # jz mismatch is exactly 1 - sin(2 pi h) / (2 pi h) (only the dBx/dy term is discretised)
    assert jz_err[-1] == pytest.approx(1 - math.sin(TWO_PI / 128) / (TWO_PI / 128), rel=1e-9)


def test_batch_dims_channel_subset_and_domain_length():
    n = 16
    x, y = _grid(n)
    a = np.sin(TWO_PI * x) * np.cos(TWO_PI * y)
    bx, by = ddy(a), -ddx(a)
    good = np.stack([bx, by, curl_z(bx, by)])  # channels Bx, By, jz only
    bad = np.stack([bx, by + 0.1 * np.cos(TWO_PI * y), curl_z(bx, by)])
    batch = np.stack([[good, bad]] * 3)  # (3, 2, C=3, N, N)
    names = ["Bx", "By", "jz"]
    res = divb_residual(batch, names)
    assert res.shape == (3, 2)
    assert np.all(res[:, 0] < 1e-14)
    # bad: div = 0.1 * ddy(cos(2 pi y)) -> rms = 0.1 * sin(2 pi h)/h / sqrt(2)
    want = 0.1 * math.sin(TWO_PI / n) * n / math.sqrt(2) / math.sqrt(np.mean(good[2] ** 2))
    np.testing.assert_allclose(res[:, 1], want, rtol=1e-12)
    # domain lengths scale the derivatives: the stored jz is wrong by a factor 2 for L = 2
    assert jz_residual(good, names, lx=2.0, ly=2.0) == pytest.approx(0.5, rel=1e-12)


def test_missing_channel_and_bad_shape():
    f = np.zeros((3, 8, 8))
    with pytest.raises(ConfigError, match="'jz'"):
        divb_residual(f, ["Bx", "By", "Bz"])
    with pytest.raises(ConfigError, match="'By'"):
        jz_residual(f, ["Bx", "density", "jz"])
    with pytest.raises(ValueError, match="channels"):
        jz_residual(f, CHANNELS)
