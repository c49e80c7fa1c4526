"""Shell-summed power spectra and per-band spectral errors (docs/design.md, "Metrics").

Definitions, for a real field ``f`` on an ``N x N`` periodic grid of side ``L = 1``:

- ``F = fft2(f) / N**2`` and ``E(k) = sum of |F(k_vec)|**2 over k_vec with round(|k_vec|) = k``,
  with ``k_vec`` in integer wavenumbers (units of ``2 pi / L``, i.e. ``fftfreq(N) * N``).
- Shells run from ``k = 0`` (the mean) to the corner shell ``round(sqrt(2) * N / 2)``. Over all
  of them Parseval holds exactly: ``sum_k E(k) == mean(f**2)``. The reported range is
  ``k = 1 .. N // 2``.
- For even ``N`` the Nyquist column/row ``k = -N/2`` is a single Fourier mode (numpy's
  ``fftfreq`` lists it once, as ``-N/2``), so ``cos(pi * i)`` puts its whole energy (1) in
  shell ``N/2``, once.

Everything spectral is derived from the normalized half-plane coefficients of
:func:`rfft_coefficients` (one FFT per field): power (:func:`shell_power`), cross power
(:func:`shell_cross`) and per-band coherence (:func:`band_coherence`).

The sum is computed from ``rfft2`` (half the work): a column ``kx > 0`` stands for itself and its
mirror ``(-ky, -kx)``, which lies in the same shell, so it is counted twice; ``kx = 0`` and, for
even ``N``, ``kx = N/2`` are their own mirrors and are counted once.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

#: Spectra below this value are raised to it before taking log ratios (see :func:`spectral_error`).
DEFAULT_FLOOR: float = 1e-30

# Fields per rfft2 chunk are chosen so that one chunk holds about this many complex values
# (~32 MiB of complex128): bounded memory for (T, E, C, 256, 256) stacks.
_CHUNK_VALUES = 1 << 21


@functools.lru_cache(maxsize=16)
def _rfft_shells(n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Shell index and multiplicity of every ``rfft2`` coefficient of an ``n x n`` grid.

    Returns:
        ``(shell, weight, n_shells)``: ``shell`` int64 ``(n * (n // 2 + 1),)`` with
        ``round(|k_vec|)`` of each coefficient (row-major over ``(ky, kx)``), ``weight`` float64
        of the same shape (1 or 2, see the module docstring), and the number of shells.
    """
    ky = np.fft.fftfreq(n) * n  # integers 0, 1, .., -1 (exact in float64)
    kx = np.fft.rfftfreq(n) * n  # integers 0 .. n // 2
    kmag = np.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    # |k|**2 is an integer, so |k| is never exactly m + 1/2: rounding has no ties.
    shell = np.rint(kmag).astype(np.int64).ravel()
    weight = np.full((n, kx.size), 2.0)
    weight[:, 0] = 1.0
    if n % 2 == 0:
        weight[:, -1] = 1.0  # kx = n/2 is its own mirror
    shell.setflags(write=False)
    weight = weight.ravel()
    weight.setflags(write=False)
    return shell, weight, int(shell.max()) + 1


def rfft_shells(n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``(shell, weight, n_shells)`` of the ``rfft2`` half plane of an ``n x n`` grid: each
    coefficient's ``round(|k_vec|)`` and its multiplicity in the full plane (1 or 2), both
    flattened row-major over ``(ky, kx)`` and read-only (cached)."""
    return _rfft_shells(n)


def n_shells(n: int) -> int:
    """Number of integer shells ``0 .. round(sqrt(2) * n / 2)`` of an ``n x n`` grid."""
    return _rfft_shells(n)[2]


def shells(n: int) -> np.ndarray:
    """Reported wavenumbers ``k = 1 .. n // 2`` (int64), in units of ``2 pi / L``."""
    return np.arange(1, n // 2 + 1, dtype=np.int64)


def rfft_coefficients(f: np.ndarray) -> np.ndarray:
    """Normalized half-plane Fourier coefficients ``F = rfft2(f) / N**2`` (docs/design.md, "Metrics").

    Computing them once per field and deriving every spectral quantity from them (power,
    cross spectra, coherence: :func:`shell_power`, :func:`shell_cross`) avoids repeated FFTs.

    Args:
        f: real array ``(..., N, N)``, any float dtype, ``N`` even or odd.

    Returns:
        complex128 ``(..., N, N // 2 + 1)``, in the units of ``f``.

    Raises:
        ValueError: ``f`` has fewer than 2 dims, is not square in its last two, or is complex.
    """
    f = np.asarray(f)
    if f.ndim < 2 or f.shape[-1] != f.shape[-2]:
        raise ValueError(f"spectra need (..., N, N) input, got shape {f.shape}")
    if np.iscomplexobj(f):
        raise ValueError("spectra need a real field")
    n = f.shape[-1]
    return np.fft.rfft2(f.astype(np.float64, copy=False)) / float(n * n)


def shell_sum(values: np.ndarray, n: int) -> np.ndarray:
    """Sum real per-coefficient values of the ``rfft2`` half plane over integer shells.

    Each coefficient is weighted by its multiplicity in the full plane (2 for ``0 < kx < N/2``,
    else 1; module docstring), so the result is the sum over ALL wavevectors with
    ``round(|k_vec|) = k`` of a quantity symmetric under ``k_vec -> -k_vec`` (such as
    ``|F|**2`` or ``Re(F_a conj(F_b))`` of real fields).

    Args:
        values: real ``(..., N, N // 2 + 1)`` (e.g. ``|F|**2``).
        n: the grid size ``N``.

    Returns:
        float64 ``(..., n_shells(N))``, entry ``k`` the sum over shell ``k = 0 .. kmax_corner``.
    """
    shell, weight, ns = _rfft_shells(n)
    lead = values.shape[:-2]
    flat = np.asarray(values, np.float64).reshape(-1, shell.size)
    b = flat.shape[0]
    out = np.empty((b, ns), dtype=np.float64)
    chunk = max(1, _CHUNK_VALUES // shell.size)
    for start in range(0, b, chunk):
        part = flat[start : start + chunk] * weight
        c = part.shape[0]
        # One bincount for the whole chunk: field j's shells are offset by j * ns.
        idx = (np.arange(c, dtype=np.int64)[:, None] * ns + shell[None, :]).ravel()
        out[start : start + c] = np.bincount(idx, weights=part.ravel(), minlength=c * ns).reshape(
            c, ns
        )
    return out.reshape(*lead, ns)


def shell_power(coef: np.ndarray) -> np.ndarray:
    """Shell-summed power ``E(k) = sum |F|**2`` from :func:`rfft_coefficients` ``(..., N, N//2+1)``.

    Returns float64 ``(..., n_shells(N))`` (all shells, Parseval: the sum is ``mean(f**2)``).
    """
    n = coef.shape[-2]
    return shell_sum(coef.real**2 + coef.imag**2, n)


def shell_cross(coef_a: np.ndarray, coef_b: np.ndarray) -> np.ndarray:
    """Shell-summed cross power ``X(k) = sum Re(F_a conj(F_b))`` of two real fields' coefficients.

    ``coef_a`` and ``coef_b`` broadcast (e.g. an ensemble ``(M, C, N, N//2+1)`` against one truth
    ``(C, N, N//2+1)``). Returns float64 ``(..., n_shells(N))``; ``X == E`` for a field against itself.
    """
    n = coef_a.shape[-2]
    return shell_sum(coef_a.real * coef_b.real + coef_a.imag * coef_b.imag, n)


def power_spectrum(f: np.ndarray) -> np.ndarray:
    """Shell-summed power spectrum over ALL shells, ``k = 0 .. kmax_corner``.

    Args:
        f: real array ``(..., N, N)``, any float dtype, ``N`` even or odd. Leading dims are kept.

    Returns:
        float64 ``(..., n_shells(N))``; entry ``k`` is ``E(k)`` (docs/design.md, "Metrics"), in the
        squared units of ``f``. ``E.sum(-1) == mean(f**2)`` over the grid (Parseval);
        ``E[..., 0]`` is the squared mean.

    Raises:
        ValueError: ``f`` has fewer than 2 dims, is not square in its last two, or is complex.
    """
    f = np.asarray(f)
    if f.ndim < 2 or f.shape[-1] != f.shape[-2]:
        raise ValueError(f"power_spectrum needs (..., N, N) input, got shape {f.shape}")
    if np.iscomplexobj(f):
        raise ValueError("power_spectrum needs a real field")
    n = f.shape[-1]
    lead = f.shape[:-2]
    flat = f.reshape(-1, n, n)
    ns = n_shells(n)
    out = np.empty((flat.shape[0], ns), dtype=np.float64)
    chunk = max(1, _CHUNK_VALUES // (n * (n // 2 + 1)))  # bounded memory for big stacks
    for start in range(0, flat.shape[0], chunk):
        out[start : start + chunk] = shell_power(rfft_coefficients(flat[start : start + chunk]))
    return out.reshape(*lead, ns)


def radial_spectrum(f: np.ndarray, *, include_all: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Shell-summed spectrum with its wavenumbers.

    Args:
        f: real array ``(..., N, N)``.
        include_all: ``False`` (default) returns the reported range ``k = 1 .. N // 2``;
            ``True`` returns every shell ``k = 0 .. kmax_corner`` (the one Parseval holds over).

    Returns:
        ``(k, E)``: ``k`` int64 ``(K,)`` and ``E`` float64 ``(..., K)``, see :func:`power_spectrum`.
    """
    e = power_spectrum(f)
    n = np.shape(f)[-1]
    if include_all:
        return np.arange(e.shape[-1], dtype=np.int64), e
    k = shells(n)
    return k, e[..., k]


@dataclass(frozen=True)
class Band:
    """A wavenumber band ``[lo, hi)`` (or ``[lo, hi]`` when ``closed``), in units of ``2 pi / L``."""

    name: str
    lo: float
    hi: float
    closed: bool = False

    def mask(self, k: np.ndarray) -> np.ndarray:
        """Boolean mask of the wavenumbers ``k`` inside the band."""
        k = np.asarray(k)
        upper = k <= self.hi if self.closed else k < self.hi
        return (k >= self.lo) & upper


def band_edges(n_lo: int, n_hi: int) -> dict[str, Band]:
    """Spectral bands relative to the lo grid's Nyquist ``k_n = n_lo / 2`` (docs/design.md, "Metrics").

    resolved ``[1, k_n/2)``, transition ``[k_n/2, k_n)``, generated ``[k_n, n_hi/2]``.
    For ``(128, 256)``: ``[1, 32)``, ``[32, 64)``, ``[64, 128]``.

    Raises:
        ValueError: ``n_lo < 2`` or ``n_hi < n_lo``.
    """
    if n_lo < 2 or n_hi < n_lo:
        raise ValueError(f"band_edges needs 2 <= n_lo <= n_hi, got n_lo={n_lo}, n_hi={n_hi}")
    kn = n_lo / 2.0
    return {
        "resolved": Band("resolved", 1.0, kn / 2.0),
        "transition": Band("transition", kn / 2.0, kn),
        "generated": Band("generated", kn, n_hi / 2.0, closed=True),
    }


def spectral_error(
    e_pred: np.ndarray,
    e_true: np.ndarray,
    k: np.ndarray,
    band: Band,
    *,
    floor: float = DEFAULT_FLOOR,
) -> np.ndarray:
    """Mean over ``k`` in ``band`` of ``|log10(E_pred(k) / E_true(k))|`` (docs/design.md, "Metrics").

    Zero guard: both spectra are raised to ``floor`` (default ``1e-30``, about the float64
    round-off level of the spectrum of an O(1) field) before the ratio, so two vanishing
    spectra compare as equal and a vanishing vs a non-vanishing one gives a large but finite
    error. A spectrum against itself gives exactly 0.

    Args:
        e_pred: float ``(..., K)`` predicted spectrum at wavenumbers ``k``.
        e_true: float ``(..., K)`` true spectrum (broadcastable with ``e_pred``).
        k: ``(K,)`` wavenumbers of the last axis (e.g. from :func:`radial_spectrum`).
        band: the band (from :func:`band_edges`).
        floor: lower bound applied to both spectra.

    Returns:
        float64, shape ``(...)`` (a numpy scalar, i.e. a ``float``, for 1-D spectra).

    Raises:
        ValueError: no ``k`` falls inside the band, or ``k`` does not match the last axis.
    """
    k = np.asarray(k)
    e_pred = np.asarray(e_pred, dtype=np.float64)
    e_true = np.asarray(e_true, dtype=np.float64)
    if k.ndim != 1 or k.size != e_pred.shape[-1] or k.size != e_true.shape[-1]:
        raise ValueError(
            f"k {k.shape} must be 1-D and match the last axis of the spectra "
            f"{e_pred.shape}, {e_true.shape}"
        )
    m = band.mask(k)
    if not m.any():
        raise ValueError(f"band {band.name} [{band.lo}, {band.hi}] contains none of k")
    ratio = np.maximum(e_pred[..., m], floor) / np.maximum(e_true[..., m], floor)
    return np.mean(np.abs(np.log10(ratio)), axis=-1)


def band_errors(
    e_pred: np.ndarray,
    e_true: np.ndarray,
    k: np.ndarray,
    n_lo: int,
    n_hi: int,
    *,
    floor: float = DEFAULT_FLOOR,
) -> dict[str, np.ndarray]:
    """:func:`spectral_error` for each band of :func:`band_edges` ``(n_lo, n_hi)``.

    Bands with no wavenumber in ``k`` (e.g. "generated" for a spectrum taken on the lo grid) are
    left out of the result.

    Returns:
        ``{"resolved": ..., "transition": ..., "generated": ...}``, each float64 ``(...)``.
    """
    k = np.asarray(k)
    return {
        name: spectral_error(e_pred, e_true, k, band, floor=floor)
        for name, band in band_edges(n_lo, n_hi).items()
        if band.mask(k).any()
    }


def band_sums(e: np.ndarray, n_lo: int, n_hi: int) -> dict[str, np.ndarray]:
    """Sum an all-shell quantity ``(..., S)`` (from :func:`shell_power` / :func:`shell_cross`,
    entry ``k`` = shell ``k``) over each band of :func:`band_edges` ``(n_lo, n_hi)``.

    Shells beyond the array (a lo-grid spectrum has none in most of the generated band) are
    simply absent; a band with no shell in the array is left out.

    Returns:
        ``{band name: float64 (...)}``.
    """
    k = np.arange(e.shape[-1])
    out = {}
    for name, band in band_edges(n_lo, n_hi).items():
        m = band.mask(k)
        if m.any():
            out[name] = e[..., m].sum(axis=-1)
    return out


def band_coherence(
    cross: np.ndarray, e_pred: np.ndarray, e_true: np.ndarray, n_lo: int, n_hi: int
) -> dict[str, np.ndarray]:
    """Spectral coherence per band (docs/design.md, "Sample-quality metrics beyond spectra").

    ``coh_B = sum_{k_vec in B} Re(F_pred conj(F_true)) / sqrt(sum_B |F_pred|**2 * sum_B |F_true|**2)``
    over every wavevector whose shell ``round(|k_vec|)`` lies in band ``B``: 1 = phases and
    amplitude ratios right, ~0 = random phases, < 0 anti-correlated, -1 = ``-truth``. By
    Cauchy-Schwarz ``|coh| <= 1``. 0 / 0 (a band without power) gives ``nan``.

    Args:
        cross: ``(..., S)`` :func:`shell_cross` of prediction and truth.
        e_pred, e_true: ``(..., S)`` :func:`shell_power` of each (broadcastable with ``cross``).
        n_lo, n_hi: grid sizes that set the bands (:func:`band_edges`).

    Returns:
        ``{band name: float64 (...)}``, dimensionless.
    """
    x, ep, et = (band_sums(np.asarray(a), n_lo, n_hi) for a in (cross, e_pred, e_true))
    with np.errstate(divide="ignore", invalid="ignore"):
        return {b: x[b] / np.sqrt(ep[b] * et[b]) for b in x}


def coherence(pred: np.ndarray, truth: np.ndarray, n_lo: int, n_hi: int) -> dict[str, np.ndarray]:
    """:func:`band_coherence` of fields ``pred`` and ``truth`` ``(..., N, N)`` (broadcastable)."""
    a, b = rfft_coefficients(pred), rfft_coefficients(truth)
    return band_coherence(shell_cross(a, b), shell_power(a), shell_power(b), n_lo, n_hi)


def band_gram(coef: np.ndarray, n_lo: int, n_hi: int) -> dict[str, np.ndarray]:
    """Per-band Gram matrix of an ensemble's :func:`rfft_coefficients`.

    ``G_B[..., i, j] = sum_{k_vec in B} Re(F_i conj(F_j))`` over every wavevector whose shell
    ``round(|k_vec|)`` lies in band ``B`` (:func:`band_edges`), each half-plane coefficient
    weighted by its multiplicity (module docstring). So ``G_B[i, j]`` is the band sum of
    :func:`shell_cross` of members ``i`` and ``j``, and ``G_B[i, i]`` that of
    :func:`shell_power` of member ``i``; one matrix product per band instead of one cross
    spectrum per pair.

    Args:
        coef: ``(M, ..., N, N // 2 + 1)`` coefficients of ``M`` members.
        n_lo, n_hi: grid sizes that set the bands.

    Returns:
        ``{band name: float64 (..., M, M)}`` (symmetric); a band with no shell on the grid is
        left out (as in :func:`band_sums`).
    """
    n = coef.shape[-2]
    shell, weight, ns = _rfft_shells(n)
    m = coef.shape[0]
    lead = coef.shape[1:-2]
    flat = np.moveaxis(np.asarray(coef).reshape(m, -1, shell.size), 0, 1)  # (L, M, P)
    k = np.arange(ns)
    out = {}
    for name, band in band_edges(n_lo, n_hi).items():
        if not band.mask(k).any():
            continue
        sel = band.mask(shell)
        a, w = flat[..., sel], weight[sel]
        g = (a.real * w) @ np.swapaxes(a.real, -1, -2) + (a.imag * w) @ np.swapaxes(a.imag, -1, -2)
        out[name] = g.reshape(*lead, m, m)
    return out


def member_pair_coherence(coef: np.ndarray, n_lo: int, n_hi: int) -> dict[str, np.ndarray]:
    """Mean band coherence between the members of an ensemble, over all pairs ``i < j``.

    ``coh_mm,B = 2 / (M (M - 1)) * sum_{i < j} G_B[i, j] / sqrt(G_B[i, i] * G_B[j, j])`` with
    :func:`band_gram` ``G_B``: the :func:`band_coherence` of member ``i`` against member ``j``
    (member ``j`` in the truth's role), averaged over the ``M (M - 1) / 2`` pairs. For a
    calibrated ensemble (the truth exchangeable with a member) its expectation equals the mean
    member-truth coherence; members that agree with each other more than with the truth
    (under-dispersed phases) give more. Identical members give 1, independent random phases
    ~ 0. A member without power in a band (0 / 0) makes that band ``nan``.

    Args:
        coef: ``(M, ..., N, N // 2 + 1)`` coefficients of ``M >= 2`` members.
        n_lo, n_hi: grid sizes that set the bands.

    Returns:
        ``{band name: float64 (...)}``, dimensionless.

    Raises:
        ValueError: fewer than 2 members.
    """
    m = coef.shape[0]
    if m < 2:
        raise ValueError(f"member-member coherence needs >= 2 members, got {m}")
    iu, ju = np.triu_indices(m, k=1)
    out = {}
    for name, g in band_gram(coef, n_lo, n_hi).items():
        d = np.diagonal(g, axis1=-2, axis2=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            coh = g[..., iu, ju] / np.sqrt(d[..., iu] * d[..., ju])
        out[name] = coh.mean(axis=-1)
    return out
