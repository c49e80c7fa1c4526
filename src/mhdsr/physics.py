"""Periodic finite differences on the shearing-box grid, as AthenaK computes them.

Arrays are ``(..., ny, nx)`` with x = x1 along the last axis and y = x2 along the one before.
Both axes are periodic for in-plane fields (DESIGN.md, Geometry). Derivatives are centred
differences with periodic wrap, ``(f[i+1] - f[i-1]) / (2 dx)``, which is how AthenaK derives
``jz`` from the cell-centred field (so the truth satisfies ``jz = dBy/dx - dBx/dy`` to float32
rounding). Work in float64 for diagnostics. Accepts numpy arrays; returns numpy arrays.
"""

from __future__ import annotations

import numpy as np


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
