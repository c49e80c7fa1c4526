"""Physics consistency of predicted and true fields (DESIGN.md, "Metrics").

Both residuals use the same periodic centred differences as AthenaK (:mod:`mhdsr.physics`) and
are made dimensionless by ``rms(jz)``:

- ``divb_residual = rms(dBx/dx + dBy/dy) / rms(jz)``
- ``jz_residual   = rms(jz - (dBy/dx - dBx/dy)) / rms(jz)``

The truth satisfies the second to float32 rounding (AthenaK derives jz this way); its first is
the discretisation-level divergence of the cell-centred field. A model that generates the
channels independently is scored on how far it departs from both.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mhdsr.errors import ConfigError
from mhdsr.physics import curl_z, div_b, rms

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
