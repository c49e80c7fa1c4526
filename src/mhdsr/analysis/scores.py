"""Point and ensemble scores (docs/design.md, "Metrics"). Pure numpy, float64 accumulation.

Conventions: ``truth`` is ``(..., C, H, W)`` (any shape works); an ensemble has one extra
member axis (``member_axis``, e.g. 1 for the ``(T, E, C, H, W)`` inference output). Scores are
averaged over ``axis`` of the truth-shaped array, by default the grid axes ``(-2, -1)``, which
gives per-channel values; ``axis=()`` keeps them per pixel.
"""

from __future__ import annotations

import numpy as np

Axis = int | tuple[int, ...] | None


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def rmse(pred: np.ndarray, truth: np.ndarray, axis: Axis = (-2, -1)) -> np.ndarray:
    """Root mean square error ``sqrt(mean((pred - truth)**2))`` over ``axis``.

    Args:
        pred, truth: float arrays of the same (broadcastable) shape, e.g. ``(..., C, H, W)``.
        axis: axes averaged over (default the grid, giving per-channel values).

    Returns:
        float64, the broadcast shape without ``axis``; units of the fields.
    """
    d = _f64(pred) - _f64(truth)
    return np.sqrt(np.mean(d * d, axis=axis))


def nrmse(pred: np.ndarray, truth: np.ndarray, axis: Axis = (-2, -1)) -> np.ndarray:
    """RMSE divided by the standard deviation (ddof=0) of ``truth`` over the same ``axis``.

    Dimensionless; 1 means as large an error as predicting the truth's mean. A constant truth
    gives ``inf`` (or ``nan`` when the error is also 0).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return rmse(pred, truth, axis) / np.std(_f64(truth), axis=axis)


def _members_first(ensemble: np.ndarray, truth: np.ndarray, member_axis: int) -> np.ndarray:
    """``ensemble`` as float64 with the member axis moved to 0; checks the shapes agree."""
    ens = np.moveaxis(_f64(ensemble), member_axis, 0)
    if ens.shape[1:] != np.shape(truth):
        raise ValueError(
            f"ensemble {np.shape(ensemble)} without member axis {member_axis} must have the "
            f"truth's shape {np.shape(truth)}"
        )
    if ens.shape[0] < 2:
        raise ValueError(f"an ensemble score needs at least 2 members, got {ens.shape[0]}")
    return ens


def crps_fair(
    ensemble: np.ndarray, truth: np.ndarray, member_axis: int = 0, axis: Axis = (-2, -1)
) -> np.ndarray:
    """Fair (unbiased) ensemble CRPS, averaged over ``axis``.

    Per pixel, with members ``x_1..x_n`` and truth ``y`` (Ferro 2014, QJRMS 140:1917; Zamo &
    Naveau 2018, Math. Geosci. 50:209)::

        CRPS_fair = mean_i |x_i - y| - 1 / (2 n (n - 1)) * sum_{i,j} |x_i - x_j|

    Its expectation over members drawn from F equals the CRPS of F itself, whatever ``n``. The
    pair sum is computed in O(n log n) from the sorted members ``x_(1) <= .. <= x_(n)``:
    ``sum_{i,j} |x_i - x_j| = 2 sum_i (2 i - n - 1) x_(i)``. A perfect ensemble (all members
    equal to the truth) scores 0; the score can be slightly negative for a single pixel.

    Args:
        ensemble: float, the truth's shape plus a member axis at ``member_axis``.
        truth: float array, e.g. ``(..., C, H, W)``.
        member_axis: position of the member axis in ``ensemble``.
        axis: axes of the truth-shaped score averaged over; ``()`` returns it per pixel.

    Returns:
        float64, the truth's shape without ``axis``; units of the fields.

    Raises:
        ValueError: fewer than 2 members (the fair CRPS is undefined for n = 1), or shapes
            that do not match.
    """
    ens = _members_first(ensemble, truth, member_axis)
    n = ens.shape[0]
    skill = np.mean(np.abs(ens - _f64(truth)), axis=0)
    ranked = np.sort(ens, axis=0)  # a copy: ``ens`` may be a view of the caller's array
    coef = (2.0 * np.arange(1, n + 1) - n - 1).reshape((n,) + (1,) * (ens.ndim - 1))
    spread = np.sum(coef * ranked, axis=0) / (n * (n - 1.0))
    return np.mean(skill - spread, axis=axis)


def spread_skill(
    ensemble: np.ndarray, truth: np.ndarray, member_axis: int = 0, axis: Axis = (-2, -1)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ensemble spread, skill and their calibrated ratio (Fortin et al. 2014, J. Hydromet. 15:1708).

    - skill  = RMSE of the ensemble mean: ``sqrt(mean_axis((mean_i x_i - y)**2))``;
    - spread = ``sqrt(mean_axis(var_i(x_i, ddof=1)))``;
    - ratio  = ``sqrt(1 + 1/n) * spread / skill``.

    For a calibrated ensemble (truth exchangeable with the members) the expected squared error
    of the ensemble mean is ``(1 + 1/n)`` times the expected member variance, so the ratio is 1;
    below 1 is under-dispersed, above 1 over-dispersed.

    Args:
        ensemble, truth, member_axis, axis: as in :func:`crps_fair`.

    Returns:
        ``(spread, skill, ratio)``, float64, each the truth's shape without ``axis``. The ratio
        is ``inf``/``nan`` where the skill is 0.

    Raises:
        ValueError: fewer than 2 members, or shapes that do not match.
    """
    ens = _members_first(ensemble, truth, member_axis)
    n = ens.shape[0]
    err = np.mean(ens, axis=0) - _f64(truth)
    skill = np.sqrt(np.mean(err * err, axis=axis))
    spread = np.sqrt(np.mean(np.var(ens, axis=0, ddof=1), axis=axis))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.sqrt(1.0 + 1.0 / n) * spread / skill
    return spread, skill, ratio


def histogram_distance(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Distances between the value distributions of two samples of one channel (domain gap).

    Both samples are flattened and compared through their empirical CDFs ``F_a``, ``F_b``
    (docs/design.md, "Metrics", domain gap: native lo vs avgpool2(hi); ``b`` is the reference):

    - ``w1``: 1-Wasserstein distance ``integral |F_a(x) - F_b(x)| dx``, exact (piecewise-constant
      CDFs integrated between consecutive pooled sorted values); units of the field.
    - ``w1_norm``: ``w1 / std(b)`` (ddof=0), dimensionless; ``inf`` if ``b`` is constant.
    - ``ks``: Kolmogorov-Smirnov statistic ``max_x |F_a(x) - F_b(x)|`` in [0, 1].

    Sizes may differ. Cost O((n_a + n_b) log(n_a + n_b)).

    Raises:
        ValueError: an empty sample or a non-finite value.
    """
    a = np.sort(_f64(a).ravel())
    b = np.sort(_f64(b).ravel())
    if a.size == 0 or b.size == 0:
        raise ValueError("histogram_distance needs two non-empty samples")
    if not (np.isfinite(a[[0, -1]]).all() and np.isfinite(b[[0, -1]]).all()):
        raise ValueError("histogram_distance needs finite values (found nan or inf)")
    x = np.concatenate([a, b])
    x.sort()
    fa = np.searchsorted(a, x, side="right") / a.size
    fb = np.searchsorted(b, x, side="right") / b.size
    gap = np.abs(fa - fb)
    w1 = float(np.sum(gap[:-1] * np.diff(x)))
    with np.errstate(divide="ignore", invalid="ignore"):
        w1_norm = float(w1 / np.std(b))
    return {"w1": w1, "w1_norm": w1_norm, "ks": float(gap.max())}
