"""Tests of the spectral coherence and the shared-FFT spectral helpers (mhdsr.analysis.spectra).

Known answers: a field against itself has coherence 1, against its negative -1; a random-phase
copy (same |F| on every wavevector, random phases) has the identical shell spectrum and a
coherence ~ 0 within the sampling error of a sum of random cosines.
"""

from __future__ import annotations

import numpy as np
import pytest

from mhdsr.analysis.random_fields import gaussian_random_field
from mhdsr.analysis.spectra import (
    band_coherence,
    band_edges,
    band_gram,
    band_sums,
    coherence,
    member_pair_coherence,
    n_shells,
    power_spectrum,
    rfft_coefficients,
    rfft_shells,
    shell_cross,
    shell_power,
)


def _field(n: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth-ish random field with power in every band (spectrum ~ k^-2)."""
    k = np.arange(n_shells(n))
    spec = np.where(k > 0, 1.0 / np.maximum(k, 1) ** 2, 0.0)
    return gaussian_random_field(spec, n, np.random.default_rng(seed))


def _random_phase_copy(f: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Same |fft2| on every wavevector, phases uniformly random (Hermitian, so real)."""
    n = f.shape[-1]
    noise = np.fft.fft2(rng.standard_normal((n, n)))
    phase = noise / np.maximum(np.abs(noise), 1e-300)  # unit modulus, Hermitian symmetric
    out = np.fft.ifft2(np.abs(np.fft.fft2(f)) * phase).real
    return out


def test_self_coherence_is_one_and_negative_is_minus_one():
    f = _field()
    for band, v in coherence(f, f, 32, 64).items():
        assert v == pytest.approx(1.0, abs=1e-12), band
    for band, v in coherence(-f, f, 32, 64).items():
        assert v == pytest.approx(-1.0, abs=1e-12), band
    # a positive rescaling keeps the phases: still 1
    assert coherence(3.0 * f, f, 32, 64)["transition"] == pytest.approx(1.0, abs=1e-12)


def test_random_phase_copy_has_the_same_spectrum_and_zero_coherence():
    n = 128
    rng = np.random.default_rng(3)
    f = _field(n, 1)
    cohs = {b: [] for b in ("resolved", "transition", "generated")}
    for _ in range(20):
        g = _random_phase_copy(f, rng)
        np.testing.assert_allclose(power_spectrum(g), power_spectrum(f), rtol=1e-9, atol=1e-20)
        for b, v in coherence(g, f, n // 2, n).items():
            cohs[b].append(float(v))
    # per draw, coherence = sum_k a_k cos(phi_k) / sum_k a_k with a_k = |F_k|^2 over the band's
    # independent mode pairs, so its std is sqrt(sum a_k^2 / 2) / sum a_k; averaged over 20 draws
    coef = np.abs(rfft_coefficients(f)) ** 2
    shell, weight, _ = rfft_shells(n)
    a = (coef.ravel() * weight)[weight == 2]  # one entry per independent conjugate pair
    sh = shell[weight == 2]
    for b, band in band_edges(n // 2, n).items():
        ab = a[band.mask(sh)]
        sigma = np.sqrt(np.sum(ab**2) / 2) / np.sum(ab)
        mean = np.mean(cohs[b])
        assert abs(mean) < 5 * sigma / np.sqrt(20) + 1e-3, (b, mean, sigma)
        assert np.std(cohs[b]) < 3 * sigma, (b, np.std(cohs[b]), sigma)


def test_shell_power_and_cross_match_the_full_fft():
    """Band sums from the rfft half plane equal explicit sums over the full fft2 plane."""
    n = 33  # odd: no self-mirrored Nyquist column
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(2, n, n))
    fa, fb = np.fft.fft2(a) / n**2, np.fft.fft2(b) / n**2
    k = np.fft.fftfreq(n) * n
    shell = np.rint(np.hypot(k[:, None], k[None, :])).astype(int)
    ca, cb = rfft_coefficients(a), rfft_coefficients(b)
    x = shell_cross(ca, cb)
    for s in (0, 1, 5, 16, 22):
        m = shell == s
        assert x[s] == pytest.approx(np.sum((fa * np.conj(fb)).real[m]), rel=1e-10, abs=1e-18)
    np.testing.assert_allclose(shell_power(ca), power_spectrum(a), rtol=1e-12)
    np.testing.assert_allclose(shell_cross(ca, ca), shell_power(ca), rtol=1e-12)
    sums = band_sums(shell_power(ca), 16, 32)  # k_n = 8: transition [4, 8), generated [8, 16]
    kk = np.arange(n_shells(n))
    e = power_spectrum(a)
    assert sums["transition"] == pytest.approx(e[(kk >= 4) & (kk < 8)].sum(), rel=1e-12)
    assert sums["generated"] == pytest.approx(e[(kk >= 8) & (kk <= 16)].sum(), rel=1e-12)


def test_band_coherence_bounds_and_broadcasting():
    rng = np.random.default_rng(6)
    truth = _field(64, 7)
    ens = truth[None] + 0.3 * rng.normal(size=(4, 64, 64))  # 4 members around the truth
    ct = rfft_coefficients(truth)
    ce = rfft_coefficients(ens)
    coh = band_coherence(shell_cross(ce, ct[None]), shell_power(ce), shell_power(ct)[None], 32, 64)
    for v in coh.values():
        assert v.shape == (4,) and np.all(v <= 1.0) and np.all(v > -1.0)
    # white noise of the same size hurts the small scales most: coherence falls with k
    assert coh["resolved"].mean() > coh["transition"].mean() > coh["generated"].mean()
    # a band without power is 0 / 0 -> nan (cleaned to null with a reason by the report)
    zero = np.zeros((64, 64))
    assert np.isnan(coherence(zero, truth, 32, 64)["transition"])


def test_band_gram_matches_the_full_fft_and_band_sums():
    """G_B[i, j] = explicit full-plane sum of Re(F_i conj F_j) over the band; diagonal = band
    power of each member."""
    n = 33
    rng = np.random.default_rng(8)
    x = rng.normal(size=(3, 2, n, n))  # (M, C, N, N)
    coef = rfft_coefficients(x)
    g = band_gram(coef, 16, 32)
    full = np.fft.fft2(x) / n**2
    k = np.fft.fftfreq(n) * n
    shell = np.rint(np.hypot(k[:, None], k[None, :])).astype(int)
    for b, band in band_edges(16, 32).items():
        assert g[b].shape == (2, 3, 3)
        m = band.mask(shell)
        for c in range(2):
            for i in range(3):
                for j in range(3):
                    want = np.sum((full[i, c] * np.conj(full[j, c])).real[m])
                    assert g[b][c, i, j] == pytest.approx(want, rel=1e-10, abs=1e-18), (b, c, i, j)
        e = band_sums(shell_power(coef), 16, 32)[b]  # (M, C)
        np.testing.assert_allclose(np.diagonal(g[b], axis1=-2, axis2=-1), e.T, rtol=1e-12)


def test_member_pair_coherence_matches_pairwise_band_coherence():
    rng = np.random.default_rng(9)
    base = _field(64, 2)
    x = base[None, None] + 0.5 * rng.normal(size=(5, 2, 64, 64))  # (M, C, N, N)
    got = member_pair_coherence(rfft_coefficients(x), 32, 64)
    pairs = [(i, j) for i in range(5) for j in range(i + 1, 5)]
    for b in ("resolved", "transition", "generated"):
        direct = np.mean([coherence(x[i], x[j], 32, 64)[b] for i, j in pairs], axis=0)  # (C,)
        assert got[b].shape == (2,)
        np.testing.assert_allclose(got[b], direct, rtol=1e-10)


def test_member_pair_coherence_known_answers():
    f = _field(64, 4)
    same = np.stack([f, f, f])
    for b, v in member_pair_coherence(rfft_coefficients(same), 32, 64).items():
        assert v == pytest.approx(1.0, abs=1e-12), b
    with pytest.raises(ValueError, match=">= 2 members"):
        member_pair_coherence(rfft_coefficients(f[None]), 32, 64)
    # one member without power in a band: 0 / 0 -> nan
    assert np.isnan(member_pair_coherence(rfft_coefficients(np.stack([f, 0 * f])), 32, 64)[
        "transition"])  # fmt: skip


def test_member_pair_coherence_of_random_phase_members_is_zero():
    """M independent random-phase copies of one field (same spectrum): each pair's coherence
    has mean 0 and std sigma (test above); pairs are uncorrelated (E[cos(a - b) cos(a - c)] = 0),
    so the mean over the M (M - 1) / 2 pairs has std sigma / sqrt(pairs): |mean| < 5 of those."""
    n, m = 128, 6
    rng = np.random.default_rng(11)
    f = _field(n, 1)
    x = np.stack([_random_phase_copy(f, rng) for _ in range(m)])
    got = member_pair_coherence(rfft_coefficients(x), n // 2, n)
    a = (np.abs(rfft_coefficients(f)) ** 2).ravel()
    shell, weight, _ = rfft_shells(n)
    a, sh = (a * weight)[weight == 2], shell[weight == 2]
    pairs = m * (m - 1) // 2
    for b, band in band_edges(n // 2, n).items():
        ab = a[band.mask(sh)]
        sigma = np.sqrt(np.sum(ab**2) / 2) / np.sum(ab)
        assert abs(got[b]) < 5 * sigma / np.sqrt(pairs) + 1e-3, (b, got[b], sigma)


def test_calibrated_ensemble_member_member_equals_member_truth():
    """Truth and members exchangeable (signal + iid noise of the same spectrum): member-member
    coherence ~ member-truth coherence (the premise of the fair goal), to 0.03 in the bands
    with many modes (the resolved band of a 64^2 grid has too few for one truth draw)."""
    n, m = 64, 16
    s = _field(n, 5)
    noise = np.stack([_field(n, 100 + i) for i in range(m + 1)])
    truth, members = s + noise[0], s[None] + noise[1:]
    mm = member_pair_coherence(rfft_coefficients(members), n // 2, n)
    mt = coherence(members, truth[None], n // 2, n)
    for b in ("transition", "generated"):
        assert 0.2 < mm[b] < 0.8, (b, mm[b])  # neither trivial 1 nor 0
        assert abs(mm[b] - mt[b].mean()) < 0.03, (b, mm[b], mt[b].mean())
