"""Domain-mean energies and the pattern correlation of forecasts (docs/design.md "Forecast stage").

Code units with ``4 pi`` absorbed (docs/design.md "Units and conventions"): kinetic energy
``<rho |v|^2 / 2>`` with the velocities relative to the shear flow (as stored), magnetic energy
``<|B|^2 / 2>`` of the cell-centred field; ``<.>`` is the mean over the grid (the box has volume
1, so these are AthenaK's history integrals; see :mod:`mhdsr.athenak.history` for how its
face-centred magnetic energy differs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _index(channels: Sequence[str], names: Sequence[str], what: str) -> list[int]:
    missing = [n for n in names if n not in channels]
    if missing:
        raise ValueError(f"{what} needs channel(s) {missing}; have {list(channels)}")
    return [list(channels).index(n) for n in names]


def kinetic_energy(fields: np.ndarray, channels: Sequence[str]) -> np.ndarray:
    """``<rho (velx^2 + vely^2 + velz^2) / 2>`` of ``fields`` ``(..., C, H, W)``, float64 ``(...)``.

    Raises:
        ValueError: ``channels`` lacks density or a velocity component.
    """
    d, vx, vy, vz = _index(channels, ("density", "velx", "vely", "velz"), "kinetic energy")
    f = np.asarray(fields, dtype=np.float64)
    v2 = f[..., vx, :, :] ** 2 + f[..., vy, :, :] ** 2 + f[..., vz, :, :] ** 2
    return np.mean(0.5 * f[..., d, :, :] * v2, axis=(-2, -1))


def magnetic_energy(fields: np.ndarray, channels: Sequence[str]) -> np.ndarray:
    """``<(Bx^2 + By^2 + Bz^2) / 2>`` of ``fields`` ``(..., C, H, W)``, float64 ``(...)``.

    Raises:
        ValueError: ``channels`` lacks a field component.
    """
    bx, by, bz = _index(channels, ("Bx", "By", "Bz"), "magnetic energy")
    f = np.asarray(fields, dtype=np.float64)
    return np.mean(0.5 * (f[..., bx, :, :] ** 2 + f[..., by, :, :] ** 2 + f[..., bz, :, :] ** 2),
                   axis=(-2, -1))  # fmt: skip


def pearson(pred: np.ndarray, truth: np.ndarray, axis: tuple[int, ...] = (-2, -1)) -> np.ndarray:
    """Pearson correlation over ``axis`` (the grid): ``<a' b'> / sqrt(<a'^2> <b'^2>)`` with
    ``'`` the deviation from the mean over ``axis``; float64, the shape without ``axis``.

    1 = the same pattern (any amplitude), 0 = unrelated, -1 = the negated pattern; a constant
    field gives NaN.
    """
    a = np.asarray(pred, dtype=np.float64)
    b = np.asarray(truth, dtype=np.float64)
    a = a - a.mean(axis=axis, keepdims=True)
    b = b - b.mean(axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (a * b).sum(axis=axis) / np.sqrt((a * a).sum(axis=axis) * (b * b).sum(axis=axis))
