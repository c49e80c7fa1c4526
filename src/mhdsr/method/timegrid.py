"""Time grids for the ODE/SDE samplers (docs/design.md: "linear/quadratic/EDM-like time grids").

A grid is ``t_0 = t_min < t_1 < ... < t_n = t_max`` (float64, ``n + 1`` points for ``n``
steps). The interpolant ``x_t = (1-t) u + t x1 + (1-t) sigma eps`` carries noise of level
``(1-t) sigma``; a data scale of amplitude ``a`` emerges from that noise near
``t ~ sigma / (sigma + a)``, so the small-amplitude fine scales form close to ``t = 1``. The
non-uniform grids therefore put their steps there. With ``i`` the step index and ``n`` the
number of steps:

* ``linear``:    ``t_i = t_min + (t_max - t_min) i/n``.
* ``quadratic``: ``t_i = t_max - (t_max - t_min) (1 - i/n)^2``: step sizes shrink linearly to
  ``t_max`` (the first is ``(2n - 1)/n^2``, the last ``1/n^2`` of the interval).
* ``edm``: Karras et al. 2022 (EDM, eq. 5) rho-spacing of the noise level ``r = 1 - t``
  (proportional to the noise level ``(1-t) sigma``):
  ``r_i = (r_max^(1/rho) + i/n (r_min^(1/rho) - r_max^(1/rho)))^rho``, ``t_i = 1 - r_i``, with
  ``r_max = 1 - t_min``, ``r_min = 1 - t_max``, ``rho = 7`` by default. For ``t_max = 1 - 1e-4``
  this concentrates the steps strongly near ``t = 1``.
"""

from __future__ import annotations

from typing import get_args

import torch
from torch import Tensor

from mhdsr.errors import ConfigError
from mhdsr.method.config import GridKind

__all__ = ["GRID_KINDS", "GridKind", "time_grid"]

GRID_KINDS = get_args(GridKind)


def time_grid(
    n_steps: int,
    kind: str = "linear",
    *,
    t_min: float = 1e-4,
    t_max: float = 1.0 - 1e-4,
    rho: float = 7.0,
) -> Tensor:
    """Sampler time grid (formulas in the module docstring).

    Args:
        n_steps: number of steps ``n >= 1``.
        kind: ``"linear"``, ``"quadratic"`` or ``"edm"``.
        t_min, t_max: end points, ``0 <= t_min < t_max <= 1`` (docs/design.md: 1e-4, 1 - 1e-4).
        rho: EDM exponent (> 0), used by ``"edm"`` only.

    Returns:
        ``(n_steps + 1,)`` float64 CPU tensor, strictly increasing, first ``t_min``, last
        ``t_max`` exactly.

    Raises:
        ConfigError: ``n_steps < 1``, unknown ``kind``, bad bounds or ``rho <= 0``.
    """
    if isinstance(n_steps, bool) or int(n_steps) != n_steps or n_steps < 1:
        raise ConfigError(f"n_steps must be an integer >= 1, got {n_steps!r}")
    if kind not in GRID_KINDS:
        raise ConfigError(f"time grid kind must be one of {GRID_KINDS}, got {kind!r}")
    if not 0.0 <= t_min < t_max <= 1.0:
        raise ConfigError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    n = int(n_steps)
    frac = torch.arange(n + 1, dtype=torch.float64) / n
    if kind == "linear":
        ts = t_min + (t_max - t_min) * frac
    elif kind == "quadratic":
        ts = t_max - (t_max - t_min) * (1 - frac) ** 2
    else:
        if not rho > 0:
            raise ConfigError(f"rho must be > 0, got {rho}")
        r_max, r_min = 1.0 - t_min, 1.0 - t_max
        a, b = r_max ** (1 / rho), r_min ** (1 / rho)
        ts = 1.0 - (a + frac * (b - a)) ** rho
    ts[0], ts[-1] = t_min, t_max
    if not bool((ts[1:] > ts[:-1]).all()):  # only reachable when t_max - t_min ~ float64 eps
        raise ConfigError(
            f"time grid {kind!r} with {n} steps on [{t_min}, {t_max}] is not strictly increasing"
        )
    return ts
