"""The periodic cubic B-spline interpolation (``mhdsr.method.grid.upsample(mode="spline")``):
the ``spline`` baseline and a choice of ``u = Up(lo)`` (docs/design.md, "Baselines").

Exactness on band-limited trigonometric fields (with its 4th-order convergence), the
interpolation property, periodic-roll equivariance, constants, and a real bundled snapshot on
which it must beat bicubic in pixel error on every channel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import HI
from mhdsr.channels import CHANNELS
from mhdsr.method.grid import avgpool2, upsample


def spline_upsample(lo: np.ndarray, factor: int) -> np.ndarray:
    """float64 numpy view of the torch spline (any leading dims)."""
    x = torch.from_numpy(np.asarray(lo, np.float64))
    shape = x.shape
    x = x.reshape(-1, 1, *shape[-2:])
    if factor == 1:
        return x.reshape(shape).numpy()
    out = upsample(x, factor, "spline")
    return out.reshape(*shape[:-2], *out.shape[-2:]).numpy()


def _trig(n: int, k: tuple[int, int], phase: float = 0.3) -> np.ndarray:
    """cos(2 pi (kx x + ky y) + phase) at the cell centres x = (i + 1/2) / n of an n x n grid."""
    x = (np.arange(n) + 0.5) / n
    return np.cos(2 * np.pi * (k[0] * x[None, :] + k[1] * x[:, None]) + phase)


@pytest.mark.parametrize("k", [(1, 0), (0, 2), (2, 3), (3, 1)])
def test_exact_on_band_limited_trigonometric_fields(k):
    """A smooth field sampled at the lo centres is reproduced at the hi centres to ~1e-6 (the
    interpolant's O(h^4) error at |k| <= 4 on a 128 grid); the error falls 16x per halving of
    k (4th order), so this is the interpolation error, not a bug of placement or wrap."""
    n = 128
    up = spline_upsample(_trig(n, k), 2)
    err = np.abs(up - _trig(2 * n, k)).max()
    assert err < 3e-6, err
    # cell-centred placement: shifting the fine grid by one fine cell would cost ~ 2 pi k / 256
    assert np.abs(np.roll(up, 1, axis=-1) - _trig(2 * n, k)).max() > 1e-2 or k[0] == 0
    # 4th-order convergence: same mode on a twice finer lo grid
    err_fine = np.abs(spline_upsample(_trig(2 * n, k), 2) - _trig(4 * n, k)).max()
    assert 12 < err / err_fine < 20, (err, err_fine)


def test_interpolation_property_and_odd_factor_nodes():
    rng = np.random.default_rng(0)
    lo = rng.normal(size=(3, 16, 16))
    np.testing.assert_allclose(spline_upsample(lo, 1), lo, atol=1e-13)
    # factor 3: every third fine centre (offset 1) coincides with a lo centre
    np.testing.assert_allclose(spline_upsample(lo, 3)[..., 1::3, 1::3], lo, atol=1e-12)


def test_commutes_with_periodic_rolls_and_keeps_constants():
    rng = np.random.default_rng(1)
    lo = rng.normal(size=(2, 24, 20))  # non-square is fine too
    up = spline_upsample(lo, 2)
    rolled = spline_upsample(np.roll(lo, (3, -5), axis=(-2, -1)), 2)
    np.testing.assert_allclose(rolled, np.roll(up, (6, -10), axis=(-2, -1)), atol=1e-12)
    np.testing.assert_allclose(spline_upsample(np.full((8, 8), 3.7), 2), 3.7, atol=1e-13)
    # the mean is kept (the DC response is 1)
    assert up.mean() == pytest.approx(lo.mean(), abs=1e-13)


def test_better_pixel_interpolant_than_bicubic_on_a_real_snapshot():
    """Bundled 256^2 snapshot: spline(avgpool2(hi)) is closer to hi than bicubic on every channel."""
    from mhdsr.athenak import open_run

    hi = open_run(HI / "seed_0001").read_snapshot(16).data.astype(np.float32)
    lo = avgpool2(torch.from_numpy(hi)).numpy()
    spline = spline_upsample(lo, 2)
    bicubic = upsample(torch.from_numpy(lo), 2, "bicubic").numpy().astype(np.float64)

    def rmse(a):
        return np.sqrt(((a - hi) ** 2).mean(axis=(-2, -1)))

    r_s, r_b = rmse(spline), rmse(bicubic)
    assert (r_s < r_b).all(), dict(zip(CHANNELS, (r_s / r_b).round(3)))
    assert (r_s / r_b).max() < 0.97  # by a margin, not by round-off
