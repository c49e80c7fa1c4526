"""Periodic finite differences as AthenaK computes them, and the physics-consistency residuals
of predicted and true fields (docs/design.md, "Metrics").

Arrays are ``(..., ny, nx)`` with x = x1 along the last axis and y = x2 along the one before.
Both axes are periodic for in-plane fields (docs/design.md, "Geometry"). Derivatives are centred
differences with periodic wrap, ``(f[i+1] - f[i-1]) / (2 dx)``, which is how AthenaK derives
``jz`` from the cell-centred field (so the truth satisfies ``jz = dBy/dx - dBx/dy`` to float32
rounding). Work in float64 for diagnostics. Accepts numpy arrays; returns numpy arrays.

Both residuals are made dimensionless by ``rms(jz)``:

- ``divb_residual = rms(dBx/dx + dBy/dy) / rms(jz)``
- ``jz_residual   = rms(jz - (dBy/dx - dBx/dy)) / rms(jz)``

The truth satisfies the second to float32 rounding (AthenaK derives jz this way); its first is
NOT zero: AthenaK keeps the face-centred field divergence-free (constrained transport), and the
cell-centred field it writes is the average of two faces, whose centred-difference divergence is
a discretisation-level residual. A model that generates the channels independently is scored on
how far it departs from both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mhdsr.errors import ConfigError


def ddx(f: np.ndarray, lx: float = 1.0) -> np.ndarray:
    """Centred periodic derivative along x (last axis); ``dx = lx / nx``. Same shape as ``f``."""
    nx = f.shape[-1]
    return (np.roll(f, -1, axis=-1) - np.roll(f, 1, axis=-1)) * (nx / (2.0 * lx))


def ddy(f: np.ndarray, ly: float = 1.0) -> np.ndarray:
    """Centred periodic derivative along y (second-to-last axis); ``dy = ly / ny``."""
    ny = f.shape[-2]
    return (np.roll(f, -1, axis=-2) - np.roll(f, 1, axis=-2)) * (ny / (2.0 * ly))


def div_b(bx: np.ndarray, by: np.ndarray, lx: float = 1.0, ly: float = 1.0) -> np.ndarray:
    """In-plane divergence ``dBx/dx + dBy/dy`` (centred, periodic)."""
    return ddx(bx, lx) + ddy(by, ly)


def curl_z(bx: np.ndarray, by: np.ndarray, lx: float = 1.0, ly: float = 1.0) -> np.ndarray:
    """Out-of-plane curl ``dBy/dx - dBx/dy`` (centred, periodic): AthenaK's ``jz``."""
    return ddx(by, lx) - ddy(bx, ly)


def rms(f: np.ndarray, axis: tuple[int, ...] = (-2, -1)) -> np.ndarray:
    """Root mean square over the grid axes (float64)."""
    return np.sqrt(np.mean(np.square(f, dtype=np.float64), axis=axis))


_NEEDED = ("Bx", "By", "jz")


def _components(
    fields: np.ndarray, channels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(Bx, By, jz)`` as float64 ``(..., N, N)`` slices of ``fields`` ``(..., C, N, N)``."""
    names = list(channels)
    if fields.ndim < 3 or fields.shape[-3] != len(names):
        raise ValueError(
            f"fields {fields.shape} must be (..., C, N, N) with C = {len(names)} channels {names}"
        )
    for name in _NEEDED:
        if name not in names:
            raise ConfigError(f"physics checks need channel {name!r}; got channels {names}")
    bx, by, jz = (np.asarray(fields[..., names.index(n), :, :], np.float64) for n in _NEEDED)
    return bx, by, jz


def divb_residual(
    fields: np.ndarray, channels: Sequence[str], lx: float = 1.0, ly: float = 1.0
) -> np.ndarray:
    """Relative in-plane divergence ``rms(dBx/dx + dBy/dy) / rms(jz)``.

    Args:
        fields: float ``(..., C, N, N)`` in PHYSICAL units (not normalized), x the last axis.
        channels: the ``C`` channel names of ``fields``; must include Bx, By and jz.
        lx, ly: domain lengths (1 for the shearing box).

    Returns:
        float64 ``(...)``, dimensionless; ``inf``/``nan`` where ``jz`` is identically 0.

    Raises:
        ConfigError: a needed channel is missing (the message names it).
        ValueError: ``fields`` does not have ``len(channels)`` channels at axis -3.
    """
    bx, by, jz = _components(np.asarray(fields), channels)
    with np.errstate(divide="ignore", invalid="ignore"):
        return rms(div_b(bx, by, lx, ly)) / rms(jz)


def jz_residual(
    fields: np.ndarray, channels: Sequence[str], lx: float = 1.0, ly: float = 1.0
) -> np.ndarray:
    """Relative current mismatch ``rms(jz - (dBy/dx - dBx/dy)) / rms(jz)``.

    Arguments, return value and errors as in :func:`divb_residual`.
    """
    bx, by, jz = _components(np.asarray(fields), channels)
    with np.errstate(divide="ignore", invalid="ignore"):
        return rms(jz - curl_z(bx, by, lx, ly)) / rms(jz)
