"""Tests of mhdsr.analysis.spectra against exact answers (Parseval, single modes, band edges)."""

import numpy as np
import pytest

from mhdsr.analysis.spectra import (
    band_edges,
    band_errors,
    n_shells,
    power_spectrum,
    radial_spectrum,
    shells,
    spectral_error,
)


def _grid(n):
    """Grid points x = i / n along the last axis and y = j / n along the one before (L = 1)."""
    x = np.arange(n) / n
    return x[None, :], x[:, None]


def _brute_force_spectrum(f):
    """Full fft2 and an explicit loop over every coefficient (no rfft symmetry used)."""
    n = f.shape[-1]
    coef = np.fft.fft2(f) / n**2
    k = np.fft.fftfreq(n) * n
    e = np.zeros(n_shells(n))
    for iy in range(n):
        for ix in range(n):
            e[int(round(np.hypot(k[iy], k[ix])))] += abs(coef[iy, ix]) ** 2
    return e


@pytest.mark.parametrize("n", [16, 17, 32, 33])
def test_parseval_over_all_shells(n):
    rng = np.random.default_rng(n)
    f = rng.normal(size=(n, n)) + 0.7  # non-zero mean: the k = 0 shell carries energy too
    e = power_spectrum(f)
    assert e.shape == (n_shells(n),)
    assert n_shells(n) == int(round(np.sqrt(2) * (n // 2))) + 1
    assert e.sum() == pytest.approx(np.mean(f**2), rel=1e-12)


@pytest.mark.parametrize("n", [8, 9, 16])
def test_matches_brute_force_full_fft(n):
    f = np.random.default_rng(1).normal(size=(n, n))
    np.testing.assert_allclose(power_spectrum(f), _brute_force_spectrum(f), rtol=1e-12, atol=1e-18)


def test_nyquist_cosine_counted_once():
    n = 16
    i = np.arange(n)
    f_x = np.broadcast_to(np.cos(np.pi * i)[None, :], (n, n))  # (-1)**i along x, mean(f^2) = 1
    e = power_spectrum(f_x)
    assert e[n // 2] == pytest.approx(1.0, rel=1e-14)
    assert np.delete(e, n // 2).max() < 1e-28
    e_y = power_spectrum(np.ascontiguousarray(f_x.T))  # same along y
    assert e_y[n // 2] == pytest.approx(1.0, rel=1e-14)
    # the corner mode (-1)**(i + j): |k| = sqrt(2) * 8 -> shell 11, energy 1, outside 1..N/2
    corner = np.cos(np.pi * i)[:, None] * np.cos(np.pi * i)[None, :]
    e_c = power_spectrum(corner)
    assert e_c[11] == pytest.approx(1.0, rel=1e-14)
    assert e_c.sum() == pytest.approx(1.0, rel=1e-14)
    assert radial_spectrum(corner)[1].max() < 1e-28


@pytest.mark.parametrize("n", [16, 17])
def test_single_mode_lands_in_its_shell(n):
    x, y = _grid(n)
    e = power_spectrum(np.cos(2 * np.pi * 3 * x) + 0 * y)
    assert e[3] == pytest.approx(0.5, rel=1e-13)
    assert np.delete(e, 3).max() < 1e-28
    # oblique mode (3, 4): |k| = 5
    e = power_spectrum(np.sin(2 * np.pi * (3 * x + 4 * y)))
    assert e[5] == pytest.approx(0.5, rel=1e-13)
    assert np.delete(e, 5).max() < 1e-28


def test_mean_goes_to_shell_zero():
    e = power_spectrum(np.full((16, 16), 3.0))
    assert e[0] == pytest.approx(9.0, rel=1e-15)
    assert e[1:].max() == 0.0
    k, e_rep = radial_spectrum(np.full((16, 16), 3.0))
    assert k[0] == 1 and e_rep.max() == 0.0


def test_radial_spectrum_range_and_batch_dims():
    rng = np.random.default_rng(2)
    f = rng.normal(size=(2, 3, 16, 16)).astype(np.float32)
    k, e = radial_spectrum(f)
    np.testing.assert_array_equal(k, np.arange(1, 9))
    np.testing.assert_array_equal(shells(16), k)
    np.testing.assert_array_equal(shells(17), k)
    assert e.shape == (2, 3, 8) and e.dtype == np.float64
    k_all, e_all = radial_spectrum(f, include_all=True)
    np.testing.assert_array_equal(k_all, np.arange(n_shells(16)))
    for a in range(2):
        for c in range(3):
            single = power_spectrum(f[a, c])
            np.testing.assert_allclose(e_all[a, c], single, rtol=1e-13, atol=1e-20)
            np.testing.assert_allclose(e[a, c], single[1:9], rtol=1e-13, atol=1e-20)
    np.testing.assert_allclose(
        e_all.sum(-1), np.mean(f.astype(np.float64) ** 2, axis=(-2, -1)), rtol=1e-12
    )


def test_many_fields_span_several_chunks():
    # 2**21 values per chunk / (64 * 33) coefficients per field = 992 fields per chunk
    rng = np.random.default_rng(3)
    f = rng.normal(size=(1000, 64, 64)).astype(np.float32)
    e = power_spectrum(f)
    np.testing.assert_allclose(e.sum(-1), np.mean(f.astype(np.float64) ** 2, axis=(-2, -1)))
    np.testing.assert_allclose(e[-1], power_spectrum(f[-1]), rtol=1e-13)


def test_rejects_non_square_and_complex():
    with pytest.raises(ValueError, match="N, N"):
        power_spectrum(np.zeros((4, 8)))
    with pytest.raises(ValueError, match="real"):
        power_spectrum(np.zeros((4, 4), dtype=complex))


def test_band_edges_128_256():
    bands = band_edges(128, 256)
    assert list(bands) == ["resolved", "transition", "generated"]
    assert (bands["resolved"].lo, bands["resolved"].hi) == (1, 32)
    assert (bands["transition"].lo, bands["transition"].hi) == (32, 64)
    assert (bands["generated"].lo, bands["generated"].hi) == (64, 128)
    k = shells(256)
    np.testing.assert_array_equal(k[bands["resolved"].mask(k)], np.arange(1, 32))
    np.testing.assert_array_equal(k[bands["transition"].mask(k)], np.arange(32, 64))
    np.testing.assert_array_equal(k[bands["generated"].mask(k)], np.arange(64, 129))
    with pytest.raises(ValueError):
        band_edges(256, 128)


def test_spectral_error_known_values():
    n_lo, n_hi = 16, 32
    rng = np.random.default_rng(4)
    k, e_true = radial_spectrum(rng.normal(size=(32, 32)))
    bands = band_edges(n_lo, n_hi)
    for band in bands.values():
        assert spectral_error(e_true, e_true, k, band) == 0.0
    # a factor 10 in the resolved band, 1/100 in the generated band, exact elsewhere
    scale = np.ones_like(e_true)
    scale[bands["resolved"].mask(k)] = 10.0
    scale[bands["generated"].mask(k)] = 0.01
    errs = band_errors(e_true * scale, e_true, k, n_lo, n_hi)
    assert errs["resolved"] == pytest.approx(1.0, rel=1e-12)
    assert errs["transition"] == 0.0
    assert errs["generated"] == pytest.approx(2.0, rel=1e-12)
    # batched spectra give one value per leading index
    batched = spectral_error(np.stack([e_true, 10 * e_true]), e_true, k, bands["transition"])
    np.testing.assert_allclose(batched, [0.0, 1.0], atol=1e-12)


def test_spectral_error_zero_guard():
    k = np.arange(1, 9)
    band = band_edges(16, 16)["transition"]  # k = 4..7
    zero = np.zeros(8)
    assert spectral_error(zero, zero, k, band) == 0.0
    one = np.ones(8)
    assert spectral_error(zero, one, k, band) == pytest.approx(30.0)  # floor 1e-30
    assert spectral_error(zero, one, k, band, floor=1e-10) == pytest.approx(10.0)


def test_band_errors_on_lo_grid_spectrum_skips_empty_band():
    k = shells(8)  # 1..4: generated band [8, 16] of (16, 32) is empty
    errs = band_errors(np.ones(4), np.ones(4), k, 16, 32)
    assert set(errs) == {"resolved", "transition"}
