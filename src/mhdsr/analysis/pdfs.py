"""One-point statistics: value PDFs, velocity increments, flatness and the 1-Wasserstein
distance (docs/design.md, "Sample-quality metrics beyond spectra").

- Increments ``delta_l v(x) = v(x + l) - v(x)`` along one grid axis, periodic (in-plane fields
  are periodic along both axes, docs/design.md "Geometry"), ``l`` in cells: :func:`increments`.
- Flatness ``S4 / S2**2`` with ``S_p = mean(delta**p)`` (raw moments; a periodic increment has
  exactly zero mean): 3 for a Gaussian, larger for intermittent (heavy-tailed) statistics
  (Frisch 1995, "Turbulence", ch. 8): :func:`flatness`.
- ``W1(a, b) = integral |F_a(x) - F_b(x)| dx = integral_0^1 |Q_a(u) - Q_b(u)| du`` between
  empirical distributions (Villani 2009, "Optimal Transport", remark 6.6 for 1-d):
  :func:`wasserstein1`, exact; reported in units of the reference sample's std
  (:func:`w1_normalized`).

Arrays are ``(..., ny, nx)``: x is the last axis, y the one before. Pure numpy.
"""

from __future__ import annotations

import numpy as np

#: Increment lags in cells (docs/design.md).
LAGS: tuple[int, ...] = (1, 2, 4)
#: Axis name -> array axis (x = x1 = last axis, y = x2 = the one before).
AXES: dict[str, int] = {"x": -1, "y": -2}


def increments(f: np.ndarray, lag: int, axis: int) -> np.ndarray:
    """``f(x + lag) - f(x)`` along ``axis`` with periodic wrap; same shape as ``f``, float64."""
    f = np.asarray(f, dtype=np.float64)
    return np.roll(f, -lag, axis=axis) - f


def normalized_by_rms(f: np.ndarray, axis: tuple[int, ...] = (-2, -1)) -> np.ndarray:
    """``f / rms(f)`` with the rms over ``axis`` (per field): the variable of the jz PDF.

    A field that is identically 0 gives ``nan``. float64, same shape as ``f``.
    """
    f = np.asarray(f, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return f / np.sqrt(np.mean(f * f, axis=axis, keepdims=True))


def flatness(x: np.ndarray, axis: int | tuple[int, ...] | None = None) -> np.ndarray:
    """Flatness ``mean(x**4) / mean(x**2)**2`` over ``axis`` (all values by default).

    Raw moments, so pass zero-mean variables (increments, jz). 3 for Gaussian samples;
    ``nan`` for an all-zero sample. float64.
    """
    x = np.asarray(x, dtype=np.float64)
    x2 = x * x
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.mean(x2 * x2, axis=axis) / np.mean(x2, axis=axis) ** 2


def wasserstein1(a: np.ndarray, b: np.ndarray, *, presorted: bool = False) -> float:
    """Exact 1-Wasserstein distance between the empirical distributions of ``a`` and ``b``.

    When one size is a multiple ``m`` of the other, ``W1 = mean_i |a_(i) - b_(ceil(i / m))|``
    over the sorted values (the quantile functions are constant on intervals of ``1 / n_a``
    and ``1 / n_b``, each of the finer ones inside one of the coarser), O(n) after sorting.
    Otherwise the CDF form ``integral |F_a - F_b| dx`` over the pooled sorted values.

    Args:
        a, b: 1-d (or any shape, flattened) finite samples, sizes may differ.
        presorted: both are already sorted ascending (skips the sorts).

    Returns:
        ``W1`` in the units of the values.

    Raises:
        ValueError: an empty sample.
    """
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("wasserstein1 needs two non-empty samples")
    if not presorted:
        a, b = np.sort(a), np.sort(b)
    if a.size < b.size:
        a, b = b, a
    if a.size % b.size == 0:
        m = a.size // b.size
        d = a.reshape(b.size, m).astype(np.float64) - b.astype(np.float64)[:, None]
        return float(np.mean(np.abs(d)))
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    x = np.concatenate([a64, b64])
    x.sort(kind="mergesort")  # two sorted runs
    fa = np.searchsorted(a64, x, side="right") / a64.size
    fb = np.searchsorted(b64, x, side="right") / b64.size
    return float(np.sum(np.abs(fa - fb)[:-1] * np.diff(x)))


def w1_normalized(a: np.ndarray, b: np.ndarray, *, presorted: bool = False) -> float:
    """``wasserstein1(a, b) / std(b)`` (ddof=0): dimensionless, ``b`` the reference (the truth).

    ``inf`` (or ``nan`` for identical constants) if ``b`` is constant.
    """
    w = wasserstein1(a, b, presorted=presorted)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(w) / np.std(np.asarray(b, dtype=np.float64)))


def histogram_counts(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of ``x`` (flattened) in the bins ``edges`` (values outside are dropped), int64."""
    return np.histogram(np.asarray(x).ravel(), bins=edges)[0].astype(np.int64)
