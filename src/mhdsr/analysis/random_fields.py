"""Gaussian random fields with a prescribed isotropic shell spectrum (docs/design.md, "Baselines").

The ``spectral-noise`` baseline adds to the spline interpolant a field ``g`` whose expected
shell-summed spectrum (:mod:`mhdsr.analysis.spectra`: ``F = fft2(g) / N**2``,
``E(k) = sum_{round(|k_vec|) = k} |F|**2``) equals a target ``E_target(k)`` on every shell.

Construction: white noise ``w ~ N(0, 1)`` on the ``N x N`` grid has ``E|rfft2(w)|**2 = N**2``
for every coefficient (self-conjugate ones included). Multiplying by a real amplitude that
depends on ``|k_vec|`` only keeps the Hermitian symmetry of a real field, so
``g = irfft2(A * rfft2(w))`` is real, with ``E|F(k_vec)|**2 = A**2 / N**2``. Summed over the
``n_k`` wavevectors of shell ``k`` (all of ``fft2``'s plane), ``E[E_g(k)] = n_k A(k)**2 / N**2``,
hence ``A(k) = N sqrt(E_target(k) / n_k)``. The mean (shell 0) is set to zero. Phases are
uniformly random: the field knows the spectrum and nothing else.
"""

from __future__ import annotations

import numpy as np

from mhdsr.analysis.spectra import rfft_shells


def shell_mode_counts(n: int) -> np.ndarray:
    """Number of ``fft2`` wavevectors in each shell ``k = 0 .. kmax_corner`` of an ``n x n`` grid
    (float64 ``(n_shells(n),)``; sums to ``n**2``)."""
    shell, weight, ns = rfft_shells(n)
    return np.bincount(shell, weights=weight, minlength=ns)


def gaussian_random_field(
    spectrum: np.ndarray, n: int, rng: np.random.Generator, *, dtype: type = np.float64
) -> np.ndarray:
    """One draw of a zero-mean Gaussian random field with expected shell spectrum ``spectrum``.

    Args:
        spectrum: ``(..., S)`` target ``E(k)`` for shells ``k = 0 .. S - 1`` (``S <=
            n_shells(n)``; missing shells get no power; entry 0 is ignored: zero mean), squared
            units of the field; negative entries are treated as 0.
        n: grid size ``N``.
        rng: the generator (the draw is a function of its state only).
        dtype: output dtype.

    Returns:
        ``(..., n, n)`` real field, one independent draw per leading index.
    """
    spectrum = np.asarray(spectrum, dtype=np.float64)
    shell, _, ns = rfft_shells(n)
    target = np.zeros(spectrum.shape[:-1] + (ns,))
    s = min(ns, spectrum.shape[-1])
    target[..., :s] = np.maximum(spectrum[..., :s], 0.0)
    target[..., 0] = 0.0
    counts = shell_mode_counts(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        amp = np.where(counts > 0, n * np.sqrt(target / np.maximum(counts, 1.0)), 0.0)
    amp_plane = amp[..., shell].reshape(*spectrum.shape[:-1], n, n // 2 + 1)
    w = rng.standard_normal(spectrum.shape[:-1] + (n, n))
    return np.fft.irfft2(amp_plane * np.fft.rfft2(w), s=(n, n)).astype(dtype, copy=False)
