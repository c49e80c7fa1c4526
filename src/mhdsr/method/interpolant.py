"""Stochastic interpolant from the upsampled low-res field to the high-res field (docs/design.md,
"The method").

Notation (all fields normalized per channel, batched ``(B, C, H, W)``, float32 by default):

* ``u = Up(lo)``: the low-res field upsampled to the hi grid (:func:`upsample`);
* ``x0 = u + sigma * eps`` with ``eps ~ N(0, I)`` (:func:`make_x0`), ``x1 = hi``;
* ``x_t = (1 - t) x0 + t x1 = (1 - t) u + t x1 + (1 - t) sigma eps`` (:func:`interpolate`);
* conditional velocity ``v* = d x_t / dt = x1 - x0`` (:func:`target_velocity`); the network
  ``v_theta(x_t, t, u)`` regresses it (:func:`mhdsr.method.loss.flow_matching_loss`), so at the optimum
  ``v_theta(x, t, u) = E[x1 - x0 | x_t = x, u]``.

Times ``t`` are given per sample, shape ``(B,)``, and broadcast over the remaining axes. All
functions are device-agnostic (they follow the device of their tensor inputs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from mhdsr.errors import ConfigError
from mhdsr.method.config import TimeDist, UpsampleMode

__all__ = [
    "avgpool2",
    "project_block_means",
    "spline_upsample",
    "gaussian_flow_map",
    "gaussian_velocity",
    "interpolate",
    "make_x0",
    "sample_time",
    "score_from_velocity",
    "target_velocity",
    "upsample",
]

#: A velocity model: ``model(x_t, t, u) -> v`` with ``x_t, u, v`` of shape ``(B, C, H, W)`` and
#: ``t`` of shape ``(B,)``.
VelocityModel = Callable[[Tensor, Tensor, Tensor], Tensor]

_UPSAMPLE_MODES = get_args(UpsampleMode)
_TIME_KINDS = get_args(TimeDist)


def _bcast_t(t: Tensor | float, like: Tensor) -> Tensor | float:
    """Reshape per-sample times ``(B,)`` to ``(B, 1, ..., 1)`` so they broadcast against
    ``like`` ``(B, ...)``; Python floats and 0-d tensors pass through unchanged."""
    if isinstance(t, Tensor) and t.ndim > 0:
        if t.ndim != 1 or t.shape[0] != like.shape[0]:
            raise ValueError(
                f"t must have shape (B,) = ({like.shape[0]},) to match x, got {tuple(t.shape)}"
            )
        return t.to(like.device).view(-1, *([1] * (like.ndim - 1)))
    return t


# ----------------------------------------------------------------------------------------------
# Grids: coarse-graining and periodic upsampling


def avgpool2(hi: Tensor) -> Tensor:
    """Coarse-grain by 2 in both grid axes: the exact mean of each 2x2 block (docs/design.md: the
    training input is ``lo = avgpool2(hi)``, a finite-volume restriction).

    Args:
        hi: ``(..., H, W)`` floating tensor, H and W even.

    Returns:
        ``(..., H/2, W/2)`` tensor, same dtype and device.

    Raises:
        ValueError: fewer than 2 dimensions, or H or W odd.
    """
    if hi.ndim < 2:
        raise ValueError(f"avgpool2 needs a (..., H, W) tensor, got shape {tuple(hi.shape)}")
    h, w = hi.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(f"avgpool2 needs even H and W, got H={h}, W={w}")
    blocks = hi.reshape(*hi.shape[:-2], h // 2, 2, w // 2, 2)
    return blocks.mean(dim=(-3, -1))


def upsample(lo: Tensor, factor: int = 2, mode: str = "bilinear") -> Tensor:
    """Upsample a PERIODIC field by an integer factor: ``u = Up(lo)`` (docs/design.md, "The method").

    The field is padded circularly by 2 coarse cells on every side (enough for the 4-tap bicubic
    stencil), interpolated with ``F.interpolate(align_corners=False)`` (cell-centred grids: fine
    cell ``j`` sits at coarse coordinate ``(j + 0.5) / factor - 0.5``), and cropped back. The
    result is therefore exactly translation-equivariant (rolling ``lo`` by one cell rolls the
    output by ``factor`` cells) and a constant field stays constant; no boundary artefacts.

    Args:
        lo: ``(B, C, h, w)`` or ``(C, h, w)`` floating tensor.
        factor: integer upsampling factor >= 1 (2 for 128^2 -> 256^2).
        mode: ``"bilinear"`` (default), ``"bicubic"`` (Keys cubic, a = -0.75, PyTorch's) or
            ``"spline"`` (interpolating periodic cubic B-spline, :func:`spline_upsample`).

    Returns:
        ``(B, C, h*factor, w*factor)`` (or ``(C, ...)`` for 3-d input), same dtype and device.

    Raises:
        ConfigError: unknown ``mode`` or ``factor`` < 1.
        ValueError: ``lo`` is not 3-d or 4-d.
    """
    if mode not in _UPSAMPLE_MODES:
        raise ConfigError(f"upsample mode must be one of {_UPSAMPLE_MODES}, got {mode!r}")
    if int(factor) != factor or factor < 1:
        raise ConfigError(f"upsample factor must be an integer >= 1, got {factor!r}")
    factor = int(factor)
    if lo.ndim == 3:
        return upsample(lo.unsqueeze(0), factor, mode).squeeze(0)
    if lo.ndim != 4:
        raise ValueError(f"upsample needs (B, C, h, w) or (C, h, w), got shape {tuple(lo.shape)}")
    if factor == 1:
        return lo.clone()
    if mode == "spline":
        return spline_upsample(lo, factor)
    pad = 2  # coarse cells; the bicubic stencil reaches 2 cells left and right of a fine cell
    h, w = lo.shape[-2:]
    padded = F.pad(lo, (pad, pad, pad, pad), mode="circular")
    fine = F.interpolate(
        padded,
        size=((h + 2 * pad) * factor, (w + 2 * pad) * factor),
        mode=mode,
        align_corners=False,
    )
    crop = pad * factor
    return fine[..., crop : crop + h * factor, crop : crop + w * factor]


def _bspline3(x: float) -> float:
    """The centred cubic B-spline ``beta3(x)`` (support ``|x| < 2``, integral 1)."""
    ax = abs(x)
    if ax < 1:
        return 2.0 / 3.0 - ax * ax + ax**3 / 2.0
    if ax < 2:
        return (2.0 - ax) ** 3 / 6.0
    return 0.0


def spline_upsample(lo: Tensor, factor: int = 2) -> Tensor:
    """Interpolating periodic cubic B-spline upsampling on cell-centred grids.

    The field is represented as ``f(x) = sum_k c_k beta3(x - k)`` on coarse cell indices ``x``,
    with coefficients ``c`` chosen so that ``f`` passes through every coarse value (the
    "prefilter", exact for a periodic field in Fourier space: divide each axis' DFT by
    ``(4 + 2 cos w) / 6``; Unser, Aldroubi & Eden 1993, IEEE Trans. Signal Process. 41:821), then
    evaluated at the fine cell centres, ``x = (j + 0.5) / factor - 0.5``. Separable along both
    axes, exactly periodic and translation-equivariant, keeps constants, and reproduces the coarse
    values where a fine centre coincides with a coarse one (odd factors). It agrees with
    ``scipy.ndimage.zoom(order=3, mode="grid-wrap", grid_mode=True)`` to float rounding.

    Args:
        lo: ``(B, C, h, w)`` floating tensor (float32 or float64).
        factor: integer upsampling factor >= 2.

    Returns:
        ``(B, C, h * factor, w * factor)``, same dtype and device.
    """
    h, w = lo.shape[-2:]
    wy = 2 * math.pi * torch.fft.fftfreq(h, device=lo.device, dtype=lo.dtype)
    wx = 2 * math.pi * torch.fft.rfftfreq(w, device=lo.device, dtype=lo.dtype)
    gain = ((2 + torch.cos(wy)) / 3)[:, None] * ((2 + torch.cos(wx)) / 3)[None, :]
    coef = torch.fft.irfft2(torch.fft.rfft2(lo) / gain, s=(h, w))

    def along(c: Tensor, dim: int) -> Tensor:
        phases = []
        for q in range(factor):
            d = (q + 0.5) / factor - 0.5  # offset of fine cell q from its coarse centre
            phases.append(
                sum(_bspline3(d - m) * torch.roll(c, shifts=-m, dims=dim) for m in range(-2, 3))
            )
        stacked = torch.stack(phases, dim=dim + 1 if dim >= 0 else dim)  # (.., n, factor) order
        shape = list(c.shape)
        shape[dim] *= factor
        return stacked.reshape(shape)

    return along(along(coef, -1), -2)


def project_block_means(hi: Tensor, lo: Tensor) -> Tensor:
    """Orthogonal projection of ``hi`` onto the fields whose 2x2 block means equal ``lo``:
    ``hi - NN(avgpool2(hi) - lo)`` with ``NN`` the nearest-neighbour (block-constant) upsampling.

    Because ``avgpool2 NN = identity`` and ``NN`` is ``4 avgpool2^T``, this is the L2-orthogonal
    projection onto the affine set ``{x : avgpool2(x) = lo}`` (a hard consistency constraint in
    the sense of Harder et al. 2023, "Hard-constrained deep learning for climate downscaling",
    JMLR 24:365). So for any truth with ``avgpool2(truth) = lo`` the projected field is never
    farther from it: ``|P(x) - truth| <= |x - truth|``. Linear per channel, so it can be applied
    in normalized or physical units alike.

    Args:
        hi: ``(..., H, W)`` field on the fine grid.
        lo: ``(..., H/2, W/2)`` block means it must reproduce.

    Returns:
        ``(..., H, W)`` tensor with ``avgpool2(result) == lo`` to rounding.
    """
    d = avgpool2(hi) - lo
    return hi - d.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


# ----------------------------------------------------------------------------------------------
# The interpolant


def sample_time(
    n: int,
    *,
    kind: str = "uniform",
    t_min: float = 1e-4,
    t_max: float = 1.0 - 1e-4,
    logit_mean: float = 0.0,
    logit_std: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Draw training times ``t`` in ``[t_min, t_max]`` (docs/design.md, "The method").

    * ``"uniform"``: ``t = t_min + (t_max - t_min) U``, ``U ~ U[0, 1)``.
    * ``"logit_normal"``: ``t = t_min + (t_max - t_min) sigmoid(logit_mean + logit_std Z)``,
      ``Z ~ N(0, 1)`` (Esser et al. 2024, SD3), i.e. the logit-normal law mapped affinely into
      ``[t_min, t_max]`` (no clamping, so no probability mass piles up at the ends).

    Args:
        n: number of times (the batch size).
        kind: ``"uniform"`` or ``"logit_normal"``.
        t_min, t_max: bounds, ``0 <= t_min < t_max <= 1``.
        logit_mean, logit_std: location and scale of the logit-normal (``logit_std > 0``).
        generator: optional RNG; numbers are drawn on its device and moved to ``device``.
        device: output device (default: the generator's device, else CPU).

    Returns:
        ``(n,)`` float32 tensor.

    Raises:
        ConfigError: unknown ``kind``, bad bounds or ``logit_std <= 0``.
    """
    if kind not in _TIME_KINDS:
        raise ConfigError(f"time sampling kind must be one of {_TIME_KINDS}, got {kind!r}")
    if not 0.0 <= t_min < t_max <= 1.0:
        raise ConfigError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    if kind == "logit_normal" and not logit_std > 0:
        raise ConfigError(f"logit_std must be > 0, got {logit_std}")
    draw_device = generator.device if generator is not None else device
    if kind == "uniform":
        unit = torch.rand(n, generator=generator, device=draw_device)
    else:
        z = torch.randn(n, generator=generator, device=draw_device)
        unit = torch.sigmoid(logit_mean + logit_std * z)
    t = t_min + (t_max - t_min) * unit
    # float32 rounding of t_min + (t_max - t_min) * unit can step just outside the bounds
    t = t.clamp(t_min, t_max)
    return t if device is None else t.to(device)


def make_x0(u: Tensor, eps: Tensor, sigma: float) -> Tensor:
    """Source sample ``x0 = u + sigma * eps`` (docs/design.md). Shapes ``(B, C, H, W)``."""
    return u + sigma * eps


def interpolate(x0: Tensor, x1: Tensor, t: Tensor | float) -> Tensor:
    """Linear interpolant ``x_t = (1 - t) x0 + t x1`` (docs/design.md).

    Args:
        x0, x1: ``(B, ...)`` tensors.
        t: ``(B,)`` per-sample times (broadcast over the other axes) or a scalar.

    Returns:
        ``(B, ...)`` tensor.
    """
    tb = _bcast_t(t, x0)
    return (1 - tb) * x0 + tb * x1


def target_velocity(x0: Tensor, x1: Tensor) -> Tensor:
    """Conditional velocity ``v* = d x_t / dt = x1 - x0`` (docs/design.md)."""
    return x1 - x0


# ----------------------------------------------------------------------------------------------
# Score and the exact Gaussian test case


def score_from_velocity(x: Tensor, t: Tensor | float, v: Tensor, u: Tensor, sigma: float) -> Tensor:
    """Score ``grad_x log p_t(x | u)`` from the velocity: ``s = -(x - t v - u) / ((1-t) sigma^2)``
    (docs/design.md, SDE sampling).

    Derivation. Given ``(u, x1)``, ``x_t = (1-t) u + t x1 + (1-t) sigma eps`` is Gaussian with
    mean ``(1-t) u + t x1`` and covariance ``(1-t)^2 sigma^2 I``, so its conditional score is
    ``-(x_t - (1-t) u - t x1) / ((1-t)^2 sigma^2) = -eps / ((1-t) sigma)``. The marginal score
    is the posterior mean of the conditional one (Vincent 2011):
    ``s(x) = -E[eps | x_t = x] / ((1-t) sigma)``. For the conditional velocity
    ``v* = x1 - x0``, ``x_t - t v* = x0 = u + sigma eps`` exactly, hence
    ``eps = (x_t - t v* - u) / sigma``; taking ``E[. | x_t = x]`` (linear in ``v*``, and
    ``v = E[v* | x_t = x]``) gives ``E[eps | x] = (x - t v - u) / sigma`` and so
    ``s = -(x - t v - u) / ((1-t) sigma^2)``. With the conditional velocity plugged in this
    returns ``-eps / ((1-t) sigma)``.

    The score diverges as ``t -> 1`` (no clamping here: the samplers bound ``delta(t) s``).

    Args:
        x: ``(B, C, H, W)`` state at time ``t``.
        t: ``(B,)`` or scalar times, ``t < 1``.
        v: ``(B, C, H, W)`` velocity at ``(x, t)``.
        u: ``(B, C, H, W)`` upsampled conditioning field.
        sigma: source noise level (> 0).

    Returns:
        ``(B, C, H, W)`` score.
    """
    tb = _bcast_t(t, x)
    return -(x - tb * v - u) / ((1 - tb) * sigma**2)


def gaussian_velocity(
    x: Tensor,
    t: Tensor | float,
    u: Tensor,
    m: Tensor | float,
    s: Tensor | float,
    sigma: float,
) -> Tensor:
    """Exact velocity when ``x1 | u ~ N(m, s^2 I)`` (docs/design.md, exact test case):

    ``v(x, t) = (m - u) + [t s^2 - (1-t) sigma^2] / [(1-t)^2 sigma^2 + t^2 s^2]
    * (x - (1-t) u - t m)``.

    It is ``E[x1 - u - sigma eps | x_t = x]`` for the jointly Gaussian ``(x1 - sigma eps, x_t)``:
    ``x_t`` has mean ``(1-t) u + t m`` and variance ``S(t)^2 = (1-t)^2 sigma^2 + t^2 s^2``, and
    ``Cov(x1 - sigma eps, x_t) = t s^2 - (1-t) sigma^2``. The ODE ``dx/dt = v`` then moves a
    point along ``x(t) = (1-t) u + t m + S(t) z`` with ``z`` fixed, so ``u + sigma z`` at
    ``t = 0`` is sent to ``m + s z`` at ``t = 1``.

    Args:
        x: ``(B, C, H, W)`` state.
        t: ``(B,)`` or scalar times in ``[0, 1]``.
        u: ``(B, C, H, W)`` conditioning field.
        m: mean of ``x1 | u`` (tensor broadcastable to ``x`` or scalar).
        s: std of ``x1 | u`` (> 0; tensor broadcastable to ``x`` or scalar).
        sigma: source noise level (> 0).

    Returns:
        ``(B, C, H, W)`` velocity.
    """
    tb = _bcast_t(t, x)
    var = (1 - tb) ** 2 * sigma**2 + tb**2 * s**2
    gain = (tb * s**2 - (1 - tb) * sigma**2) / var
    return (m - u) + gain * (x - (1 - tb) * u - tb * m)


def gaussian_flow_map(
    x0: Tensor, t0: float, t1: float, u: Tensor, m: Tensor | float, s: float, sigma: float
) -> Tensor:
    """Exact solution of ``dx/dt = gaussian_velocity(x, t, ...)`` from ``x(t0) = x0`` to ``t1``.

    ``x(t) = (1-t) u + t m + S(t) z`` with ``S(t) = sqrt((1-t)^2 sigma^2 + t^2 s^2)`` and
    ``z = (x0 - (1-t0) u - t0 m) / S(t0)`` (see :func:`gaussian_velocity`). Used to measure
    sampler errors exactly, including the truncation of the time interval to
    ``[t_min, t_max]``.

    Args:
        x0: ``(B, C, H, W)`` state at ``t0``.
        t0, t1: start and end times in ``[0, 1]``.
        u, m, s, sigma: as in :func:`gaussian_velocity` (``s`` a scalar here).

    Returns:
        ``(B, C, H, W)`` state at ``t1``.
    """

    def spread(t: float) -> float:
        return math.sqrt((1 - t) ** 2 * sigma**2 + t**2 * s**2)

    z = (x0 - (1 - t0) * u - t0 * m) / spread(t0)
    return (1 - t1) * u + t1 * m + spread(t1) * z
