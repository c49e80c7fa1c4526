"""ODE and SDE samplers for the stochastic interpolant (docs/design.md, "The method").

Every sampler has the same signature (k-diffusion style), so they are swapped by name::

    fn(model, u, ts, noise, *, sigma, callback=None, **options) -> x

* ``model(x, t, u) -> v``: velocity, ``x, u, v`` of shape ``(B, C, H, W)``, ``t`` of shape
  ``(B,)`` (float32, or float64 when ``u`` is float64) on ``u``'s device.
* ``u``: ``(B, C, H, W)`` upsampled conditioning field (normalized units).
* ``ts``: time grid ``(n + 1,)``, strictly increasing in ``[0, 1]`` (:func:`time_grid`).
* ``noise``: a :class:`~mhdsr.method.noise.NoiseSource`; the state starts at
  ``x0 = u + sigma * noise.draw((C, H, W))``, taken as the state at ``ts[0]`` (the interpolant
  at ``t_min = 1e-4`` differs from ``x0`` by ``O(t_min)``, which is neglected).
* ``callback(dict(i=i, t=t_next, x=x, v=v))``: called after step ``i`` with the new state ``x``
  at time ``t_next = ts[i + 1]`` and the velocity ``v`` evaluated at the start of the step.

Cost in network evaluations (NFE) for ``n`` steps: Euler ``n``, Heun ``2n`` (second order on
every step, the last included: ``t_max < 1`` is a valid network input),
Euler-Maruyama ``n`` (see :func:`expected_nfe`; :func:`count_nfe` measures it).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mhdsr.errors import ConfigError
from mhdsr.method.flow import score_from_velocity
from mhdsr.method.noise import NoiseSource
from mhdsr.method.timegrid import time_grid

__all__ = [
    "SAMPLERS",
    "NFECounter",
    "SamplerSpec",
    "count_nfe",
    "euler",
    "euler_maruyama",
    "expected_nfe",
    "get_sampler",
    "heun",
    "register_sampler",
    "sample",
    "sampler_names",
]

Model = Callable[[Tensor, Tensor, Tensor], Tensor]
Callback = Callable[[dict[str, Any]], None]

DELTA_SCHEDULES = ("annealed", "constant")


# ----------------------------------------------------------------------------------------------
# Shared plumbing


def _grid(ts: Tensor | Sequence[float]) -> list[float]:
    """Validate a time grid and return it as Python floats (float64 step arithmetic)."""
    grid = torch.as_tensor(ts, dtype=torch.float64).detach().cpu()
    if grid.ndim != 1 or grid.numel() < 2:
        raise ValueError(f"time grid must be 1-d with >= 2 points, got shape {tuple(grid.shape)}")
    if not bool((grid[1:] > grid[:-1]).all()) or grid[0] < 0 or grid[-1] > 1:
        raise ValueError(f"time grid must be strictly increasing in [0, 1], got {grid.tolist()}")
    return grid.tolist()


def _start(u: Tensor, noise: NoiseSource, sigma: float) -> Tensor:
    """``x0 = u + sigma * eps`` with ``eps`` drawn per sample."""
    eps = noise.draw(tuple(u.shape[1:])).to(device=u.device, dtype=u.dtype)
    if eps.shape != u.shape:
        raise ValueError(f"noise draw has shape {tuple(eps.shape)}, expected {tuple(u.shape)}")
    return u + sigma * eps


def _velocity(model: Model, x: Tensor, t: float, u: Tensor) -> Tensor:
    """Evaluate ``model(x, t * ones(B), u)`` and cast the result to ``x``'s dtype."""
    t_dtype = torch.promote_types(x.dtype, torch.float32)
    tt = torch.full((x.shape[0],), t, device=x.device, dtype=t_dtype)
    return model(x, tt, u).to(x.dtype)


# ----------------------------------------------------------------------------------------------
# The registry: a sampler is one function plus one ``@register_sampler`` line


@dataclass(frozen=True)
class SamplerSpec:
    """A registered sampler.

    Attributes:
        name: the name configs use (``sampler.name``).
        fn: the function, with the shared signature of the module docstring.
        nfe_per_step: network evaluations per step (Heun 2, Euler 1, ...).
        stochastic: whether it injects noise after the start (an SDE sampler).
        options: its keyword options beyond ``sigma``/``callback`` (from its signature).
    """

    name: str
    fn: Callable[..., Tensor]
    nfe_per_step: int
    stochastic: bool
    options: frozenset[str]


#: name -> spec, filled by :func:`register_sampler`; every list of sampler names derives from it.
SAMPLERS: dict[str, SamplerSpec] = {}


def register_sampler(
    name: str, *, nfe_per_step: int, stochastic: bool = False
) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Decorator: register ``fn`` under ``name`` (the one place a sampler is declared).

    Raises:
        ValueError: ``name`` is taken, or ``nfe_per_step < 1``.
    """
    if nfe_per_step < 1:
        raise ValueError(f"nfe_per_step must be >= 1, got {nfe_per_step}")

    def deco(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        if name in SAMPLERS:
            raise ValueError(f"sampler {name!r} is already registered")
        params = inspect.signature(fn).parameters.values()
        opts = frozenset(p.name for p in params if p.kind is p.KEYWORD_ONLY) - {"sigma", "callback"}
        SAMPLERS[name] = SamplerSpec(name, fn, int(nfe_per_step), bool(stochastic), opts)
        return fn

    return deco


def get_sampler(name: str) -> SamplerSpec:
    """The registered sampler ``name``.

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}") from None


def sampler_names() -> tuple[str, ...]:
    """Every registered sampler name, in registration order."""
    return tuple(SAMPLERS)


# ----------------------------------------------------------------------------------------------
# Samplers


@register_sampler("euler", nfe_per_step=1)
@torch.no_grad()
def euler(
    model: Model,
    u: Tensor,
    ts: Tensor | Sequence[float],
    noise: NoiseSource,
    *,
    sigma: float,
    callback: Callback | None = None,
) -> Tensor:
    """Explicit Euler for ``dx/dt = v(x, t, u)`` (first order; ``n`` NFE for ``n`` steps).

    ``x_{i+1} = x_i + h_i v(x_i, t_i)``, ``h_i = t_{i+1} - t_i``.

    Args:
        model, u, ts, noise, sigma, callback: see the module docstring.

    Returns:
        ``(B, C, H, W)`` sample at ``ts[-1]``, dtype and device of ``u``.
    """
    grid = _grid(ts)
    x = _start(u, noise, sigma)
    for i, (t, t_next) in enumerate(zip(grid[:-1], grid[1:])):
        v = _velocity(model, x, t, u)
        x = x + (t_next - t) * v
        if callback is not None:
            callback({"i": i, "t": t_next, "x": x, "v": v})
    return x


@register_sampler("heun", nfe_per_step=2)
@torch.no_grad()
def heun(
    model: Model,
    u: Tensor,
    ts: Tensor | Sequence[float],
    noise: NoiseSource,
    *,
    sigma: float,
    callback: Callback | None = None,
) -> Tensor:
    """Heun's method (explicit trapezoidal rule, second order; ``2n`` NFE for ``n`` steps).

    ``x' = x_i + h_i v(x_i, t_i)``, ``x_{i+1} = x_i + h_i/2 [v(x_i, t_i) + v(x', t_{i+1})]``
    on every step including the last (the network is evaluated at ``t_max <= 1``; unlike the
    EDM sampler there is no singular end point, so no step drops to first order).

    Args:
        model, u, ts, noise, sigma, callback: see the module docstring.

    Returns:
        ``(B, C, H, W)`` sample at ``ts[-1]``, dtype and device of ``u``.
    """
    grid = _grid(ts)
    x = _start(u, noise, sigma)
    for i, (t, t_next) in enumerate(zip(grid[:-1], grid[1:])):
        h = t_next - t
        v = _velocity(model, x, t, u)
        v_next = _velocity(model, x + h * v, t_next, u)
        x = x + (0.5 * h) * (v + v_next)
        if callback is not None:
            callback({"i": i, "t": t_next, "x": x, "v": v})
    return x


@register_sampler("euler_maruyama", nfe_per_step=1, stochastic=True)
@torch.no_grad()
def euler_maruyama(
    model: Model,
    u: Tensor,
    ts: Tensor | Sequence[float],
    noise: NoiseSource,
    *,
    sigma: float,
    callback: Callback | None = None,
    delta: float = 1.0,
    delta_schedule: str = "annealed",
    max_churn: float = 0.5,
) -> Tensor:
    """Euler-Maruyama for the marginal-preserving SDE (docs/design.md, SDE sampling; Albergo,
    Boffi & Vanden-Eijnden 2023, "Stochastic interpolants", sec. 2.3), ``n`` NFE::

        dx = [v + delta(t) s] dt + sqrt(2 delta(t)) dW,   s = -(x - t v - u) / ((1-t) sigma^2)

    Adding the Langevin pair ``delta s dt + sqrt(2 delta) dW`` leaves every marginal ``p_t``
    of the ODE unchanged for any ``delta(t) >= 0``, so no extra training is needed, while it
    damps errors accumulated along the path.

    Diffusion schedule (``delta`` is dimensionless, in units of ``sigma^2``):

    * ``"annealed"`` (default): ``delta(t) = delta sigma^2 (1 - t)``, so ``delta(t) -> 0`` as
      ``t -> 1`` and ``delta(t) s = -delta (x - t v - u)`` has no singularity;
    * ``"constant"``: ``delta(t) = delta sigma^2`` (bounded only by the cap below).

    Bounding the score term. ``p_t`` is the law of ``(1-t) u + t x1`` smoothed by
    ``N(0, tau^2 I)``, ``tau = (1-t) sigma``, so the curvature of ``-log p_t`` is at most
    ``1 / tau^2`` and one explicit step contracts a noise component by at most the factor
    ``kappa = delta(t) h / tau^2``. Each step uses ``delta_eff = min(delta(t),
    max_churn tau^2 / h)``, i.e. ``kappa <= max_churn``: the step never overshoots
    (``max_churn <= 1``), the drift term obeys ``|h delta_eff s| <= max_churn (1-t)
    |x - t v - u|``, and the injected noise ``sqrt(2 delta_eff h) <= sqrt(2 max_churn) tau``;
    all vanish as ``t -> 1``. The cap only binds for coarse steps (``h`` large) and is inactive
    in the limit ``h -> 0``, so the scheme stays consistent. The LAST step is a deterministic
    Euler step (no noise, no score), so ``n = 1`` reduces to one Euler step and the output is
    finite for every step count.

    Noise is drawn as ``noise.draw((C, H, W))`` once for ``x0`` and once per stochastic step
    (``n - 1`` times), so each sample's stream depends on its own key only.

    Args:
        model, u, ts, noise, sigma, callback: see the module docstring.
        delta: diffusion scale (>= 0, in units of ``sigma^2``; 0 gives the Euler ODE solver).
        delta_schedule: ``"annealed"`` or ``"constant"``.
        max_churn: cap ``kappa`` on the per-step Langevin contraction, ``0 < max_churn <= 1``.

    Returns:
        ``(B, C, H, W)`` sample at ``ts[-1]``, dtype and device of ``u``.

    Raises:
        ConfigError: unknown ``delta_schedule``, ``delta < 0`` or ``max_churn`` outside (0, 1].
    """
    if delta_schedule not in DELTA_SCHEDULES:
        raise ConfigError(
            f"delta_schedule must be one of {DELTA_SCHEDULES}, got {delta_schedule!r}"
        )
    if not delta >= 0:
        raise ConfigError(f"delta must be >= 0, got {delta}")
    if not 0 < max_churn <= 1:
        raise ConfigError(f"max_churn must be in (0, 1], got {max_churn}")
    grid = _grid(ts)
    n = len(grid) - 1
    x = _start(u, noise, sigma)
    for i, (t, t_next) in enumerate(zip(grid[:-1], grid[1:])):
        h = t_next - t
        v = _velocity(model, x, t, u)
        if i == n - 1 or delta == 0:
            x = x + h * v
        else:
            tau2 = ((1 - t) * sigma) ** 2  # t <= t_{n-1} < t_n <= 1, so tau2 > 0
            d_t = delta * sigma**2 * ((1 - t) if delta_schedule == "annealed" else 1.0)
            d_eff = min(d_t, max_churn * tau2 / h)
            s = score_from_velocity(x, t, v, u, sigma)
            dw = noise.draw(tuple(u.shape[1:])).to(device=u.device, dtype=u.dtype)
            x = x + h * (v + d_eff * s) + math.sqrt(2 * d_eff * h) * dw
        if callback is not None:
            callback({"i": i, "t": t_next, "x": x, "v": v})
    return x


# ----------------------------------------------------------------------------------------------
# NFE counting and the convenience entry point


def expected_nfe(name: str, n_steps: int) -> int:
    """Network evaluations of sampler ``name`` for ``n_steps`` steps (its ``nfe_per_step`` x n)."""
    return get_sampler(name).nfe_per_step * n_steps


class NFECounter:
    """Wraps a model and counts its calls (one call = one batched network evaluation).

    Args:
        model: ``model(x, t, u) -> v``.
    """

    def __init__(self, model: Model) -> None:
        self.model = model
        self.nfe = 0

    def __call__(self, x: Tensor, t: Tensor, u: Tensor) -> Tensor:
        self.nfe += 1
        return self.model(x, t, u)


def count_nfe(model: Model) -> NFECounter:
    """Return an :class:`NFECounter` around ``model``; read ``.nfe`` after sampling."""
    return NFECounter(model)


def sample(
    name: str,
    model: Model,
    u: Tensor,
    *,
    n_steps: int,
    grid: str = "linear",
    noise: NoiseSource,
    sigma: float,
    t_min: float = 1e-4,
    t_max: float = 1.0 - 1e-4,
    rho: float = 7.0,
    callback: Callback | None = None,
    **options: Any,
) -> Tensor:
    """Build the time grid and run the registered sampler ``name``.

    Args:
        name: a registered sampler (:func:`sampler_names`).
        model, u, noise, sigma, callback: see the module docstring.
        n_steps: number of steps.
        grid, t_min, t_max, rho: passed to :func:`~mhdsr.method.timegrid.time_grid`.
        **options: sampler-specific options (:attr:`SamplerSpec.options`).

    Returns:
        ``(B, C, H, W)`` samples.

    Raises:
        ConfigError: unknown sampler, grid, or an option the sampler does not take.
    """
    spec = get_sampler(name)
    unknown = set(options) - spec.options
    if unknown:
        raise ConfigError(
            f"sampler {name!r} does not take option(s) {sorted(unknown)}; "
            f"it takes {sorted(spec.options) or 'none'}"
        )
    ts = time_grid(n_steps, grid, t_min=t_min, t_max=t_max, rho=rho)
    return spec.fn(model, u, ts, noise, sigma=sigma, callback=callback, **options)
