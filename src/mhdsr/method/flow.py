"""The super-resolution method as one unit (docs/design.md, "The method"): the stochastic
interpolant, how super-resolution maps onto it (:class:`Formulation`), its training loss
(:meth:`Formulation.loss`) and its sampling (:meth:`Formulation.sample`). The grid operators it
uses (``avgpool2``, ``Up``, the block-mean projection, the curl) are :mod:`mhdsr.method.grid`'s.

**The interpolant.** Fields are normalized per channel with the train-split statistics
(``hi_n``, ``lo_n``), batched ``(B, C, H, W)``; ``u = Up(lo_n)`` is the interpolated input on the
hi grid. The flow runs from a source ``x0 = base + sigma eps`` (``eps ~ N(0, I)``,
:func:`make_x0`) to a target ``x1`` along ``x_t = (1 - t) x0 + t x1`` (:func:`interpolate`) with
conditional velocity ``v* = x1 - x0`` (:func:`target_velocity`); the network
``v_theta(x_t, t, u')`` regresses it (:func:`flow_matching_loss`), so at the optimum
``v_theta(x, t, u') = E[x1 - x0 | x_t = x, u]``. Times ``t`` are per sample, ``(B,)``.

**What ships** (every configs/train/*.yaml; :class:`~mhdsr.method.config.MethodConfig`'s
defaults): the residual formulation from a periodic cubic-spline ``u``, instance scale, unit
source noise (``sigma = 1``, ``loss_scale = 1``), samples projected onto the input's block means
and ``jz`` derived as the curl of the generated field.

**Scale.** ``global`` uses the normalized units as they are. ``instance`` additionally measures
each input's own per-channel level, ``m = mean(lo_n)`` and ``a = max(std(lo_n), scale_floor)``
over the full field (:func:`level_stats`; a reversible instance normalization, as RevIN: Kim et
al. 2022, ICLR), and works in units of ``a``: an MRI run's fields grow by orders of magnitude
from the seed noise to the first burst and decay afterwards, and with global units a model
trained mostly on turbulence would add turbulent-size small scales to a quiet snapshot. ``m`` and
``a`` are invariant under periodic rolls and change covariantly under the symmetry group (``a``
invariant, ``m`` flips sign with the field).

**Formulation.**

* ``residual`` (CorrDiff-style: Mardani et al. 2025, Commun. Earth Environ. 6:124): the flow runs
  from ``x0 = sigma eps`` to ``x1 = (hi_n - u) / (b s_r)``, the interpolation residual scaled by the
  input's residual level ``b`` (``= a`` unless ``method.residual_kmin`` > 0: then the rms of the
  input's own small scales) and by ``s_r``, the per-channel std of ``(hi_n - u) / b`` over the
  train split (:func:`residual_std`); the source mean is 0, the network sees ``(x_t, u')`` with
  ``u' = (u - m) / a``; a sample decodes to ``u + b s_r x``. Every channel's target then has unit
  variance, so one ``sigma`` fits channels whose residuals differ by 10x (velocities ~5% of the
  channel std, jz ~30%), and a network that is unsure returns ``u``, not noise.
* ``interpolant`` (the original): the flow runs from ``x0 = u' + sigma eps`` to ``x1 = hi'``,
  with ``hi' = (hi_n - m) / a`` (``m = 0``, ``a = 1`` for global scale); the network sees
  ``(x_t, u')``; a sample decodes to ``m + a x``.

**Degradation matching** (``method.degrade``, :mod:`mhdsr.method.degrade`): the input is
``lo_n = D(hi_n)``, avgpool2 followed by a per-channel isotropic transfer function ``T`` fitted
to native-lo / avgpool2 mean spectra (:attr:`Formulation.transfer`); ``u``, the levels and the
residual scale ``s_r`` are all computed from that ``lo_n``. Projection is then off (a sample
projected onto the damped input's block means would be damped again).

Either can be followed by the hard consistency projection
(:func:`~mhdsr.method.grid.project_block_means`, ``method.project``): the decoded field is
projected onto ``{x : avgpool2(x) = lo_n}``; and by ``method.derive_jz``: the current is replaced
by the periodic centred-difference curl of the generated in-plane field, as AthenaK computes it
(:func:`derive_current`, in physical units, by the caller).

The samplers (:mod:`mhdsr.method.samplers`) take the *source mean* as their ``u`` argument (it is
where ``x0`` is centred and what the score formula :func:`score_from_velocity` subtracts) and a
model callable; :meth:`Formulation.sample` closes the network over the conditioning ``u'``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, get_args

import torch
from torch import Tensor

from mhdsr.errors import ConfigError
from mhdsr.method.config import MethodConfig, TimeDist
from mhdsr.method.degrade import degrade, transfer_from_list
from mhdsr.method.grid import avgpool2, curl_z, project_block_means, upsample
from mhdsr.method.noise import NoiseSource
from mhdsr.method.pairs import make_pair

#: A velocity model: ``model(x_t, t, u) -> v`` with ``x_t, u, v`` of shape ``(B, C, H, W)`` and
#: ``t`` of shape ``(B,)``.
VelocityModel = Callable[[Tensor, Tensor, Tensor], Tensor]
_TIME_KINDS = get_args(TimeDist)
#: ``(m, a, b)``: per-sample, per-channel mean, level and residual level of an input, each
#: ``(B, C, 1, 1)`` (:func:`level_stats`)
Stats = tuple[Tensor, Tensor, Tensor]


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


def flow_matching_loss(
    model: VelocityModel,
    x1: Tensor,
    u: Tensor,
    eps: Tensor,
    t: Tensor,
    *,
    sigma: float,
    loss_scale: float,
    base: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Conditional flow-matching loss (docs/design.md, "The method"; Lipman et al. 2023, Albergo &
    Vanden-Eijnden 2023): ``loss = loss_scale * mean((v_theta(x_t, t, u) - (x1 - x0))^2)``.

    The squared error is computed in (at least) float32: a bf16 model output (autocast) is cast
    up before the subtraction, so the small targets do not lose precision.

    Args:
        model: ``model(x_t, t, u) -> v``, ``(B, C, H, W)`` in and out, ``t`` ``(B,)``.
        x1: ``(B, C, H, W)`` high-res target (normalized).
        u: ``(B, C, H, W)`` upsampled conditioning field.
        eps: ``(B, C, H, W)`` standard normal noise.
        t: ``(B,)`` times in ``[0, 1]`` (see :func:`sample_time`).
        sigma: noise level of the source, ``x0 = base + sigma eps``.
        loss_scale: multiplier of the mean squared error (``method.loss_scale``).
        base: ``(B, C, H, W)`` source mean (default ``u``; zeros for the residual formulation).

    Returns:
        ``(loss, per_sample)``: scalar loss (with graph) and the detached ``(B,)`` per-sample
        losses, ``loss_scale * mean over (C, H, W)``, for per-t-bin logging;
        ``loss == per_sample.mean()``.
    """
    x0 = make_x0(u if base is None else base, eps, sigma)
    xt = interpolate(x0, x1, t)
    target = target_velocity(x0, x1)
    v = model(xt, t, u)
    dtype = torch.promote_types(target.dtype, torch.float32)
    err = (v.to(dtype) - target.to(dtype)).square()
    per_sample = loss_scale * err.flatten(1).mean(dim=1)
    return per_sample.mean(), per_sample.detach()


def source_noise(
    shape: Sequence[int],
    gen: torch.Generator,
    device: torch.device,
    *,
    on_device: bool | None = None,
) -> Tensor:
    """Standard normal noise ``eps`` of ``shape`` (float32) on ``device``, keyed by ``gen``.

    On the CPU it is drawn from ``gen`` itself (the draws the golden values and exact resume
    rely on). On any other device (``on_device``: None = whenever ``device`` is not the CPU)
    one 63-bit seed is drawn from ``gen`` and the noise comes from a generator of that device
    seeded with it: still a pure function of the key, without drawing millions of normals on
    the host and copying them (measured: 100-160 ms of one CPU thread per 256^2 micro-batch of
    8 on the loaded development VM, longer than the whole GPU step it would feed).
    """
    if on_device is None:
        on_device = device.type != "cpu"
    if not on_device:
        return torch.randn(tuple(shape), generator=gen).to(device)
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=gen))
    dev_gen = torch.Generator(device).manual_seed(seed)
    return torch.randn(tuple(shape), generator=dev_gen, device=device)


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


# ----------------------------------------------------------------------------------------------
# Super-resolution on the interpolant: the method of one model


@dataclass
class Formulation:
    """The method of one model: its config plus the residual scale it was trained with, and
    everything that turns fields into flow states and back: the training pair and loss
    (:meth:`loss`), the source and target (:meth:`source_mean`, :meth:`target`), the sampling
    (:meth:`sample`) and the decoding of a flow state into a field (:meth:`decode`).

    Attributes:
        method: the method config (from a train config, or an export's, upgraded on load by
            :func:`mhdsr.model.inference.load_model`).
        residual_std: ``(C,)`` train-split std of ``(hi_n - u) / a``, required for the residual
            formulation (:func:`residual_std`).
        transfer: ``(C, K)`` float64 degradation-matching transfer function
            (:func:`mhdsr.method.degrade.fit_transfer`), required when ``method.degrade``;
            training pairs use ``lo = degrade(avgpool2(hi), transfer)`` (:meth:`lo_of`).
            Ignored (set to ``None``) when ``method.degrade`` is off.
    """

    method: MethodConfig
    residual_std: Tensor | None = None
    transfer: Tensor | None = None

    def __post_init__(self) -> None:
        if not self.method.degrade:
            self.transfer = None
        else:
            if self.transfer is None:
                raise ConfigError(
                    "method.degrade=true needs the fitted transfer function (normalization "
                    "degrade_transfer of the export, or fitted by mhdsr train)"
                )
            try:
                t = torch.as_tensor(self.transfer, dtype=torch.float64)
                n = len(self.residual_std) if self.residual_std is not None else t.shape[0]
                self.transfer = transfer_from_list(t, int(n), "degrade transfer function")
            except (ValueError, IndexError) as e:
                raise ConfigError(f"method.degrade: {e}") from None
        if self.kind == "residual":
            if self.residual_std is None:
                raise ConfigError("method.formulation=residual needs the residual std of the data")
            r = torch.as_tensor(self.residual_std, dtype=torch.float32)
            if not bool(torch.isfinite(r).all() and (r > 0).all()):
                raise ConfigError(f"residual std must be finite and > 0, got {r.tolist()}")
            self.residual_std = r

    @property
    def kind(self) -> str:
        return self.method.formulation

    @property
    def scale(self) -> str:
        return self.method.scale

    @property
    def project(self) -> bool:
        return bool(self.method.project)

    def _r(self, like: Tensor) -> Tensor:
        return self.residual_std.to(like.device, like.dtype)[:, None, None]  # type: ignore[union-attr]

    # -- fields <-> flow states

    def lo_of(self, hi_n: Tensor) -> Tensor:
        """The model's input of hi fields ``(B, C, H, W)``: ``avgpool2(hi_n)``, degraded with
        :attr:`transfer` when the method has degradation matching; ``(B, C, H/2, W/2)``."""
        lo = avgpool2(hi_n)
        return lo if self.transfer is None else degrade(lo, self.transfer)

    def up(self, lo_n: Tensor) -> Tensor:
        """``u = Up(lo_n)``, ``(B, C, h, w) -> (B, C, 2h, 2w)``."""
        return upsample(lo_n, 2, self.method.upsample)

    def lo_stats(self, lo_n: Tensor) -> Stats:
        """``(m, a, b)`` of full lo fields ``(B, C, h, w)`` (``(0, 1, 1)`` for global scale)."""
        return level_stats(lo_n, self.method)

    def cond(self, u: Tensor, stats: Stats, extra: Tensor | None = None) -> Tensor:
        """The conditioning the network sees, ``u' = (u - m) / a``, with ``extra`` (further
        conditioning in the network's units, ``(B, C', H, W)``) appended on the channel axis."""
        m, a, _ = stats
        c = u if self.scale == "global" else (u - m) / a
        return c if extra is None else torch.cat([c, extra.to(c.dtype)], dim=1)

    def target(self, hi_n: Tensor, u: Tensor, stats: Stats) -> Tensor:
        """``x1`` of the flow for fields ``hi_n`` with interpolated input ``u``."""
        m, a, b = stats
        if self.kind == "interpolant":
            return hi_n if self.scale == "global" else (hi_n - m) / a
        r = self._r(u)
        return (hi_n - u) / r if self.scale == "global" else (hi_n - u) / (b * r)

    def source_mean(self, u: Tensor, stats: Stats) -> Tensor:
        """Mean of the source ``x0``: ``u'`` (interpolant) or 0 (residual)."""
        return self.cond(u, stats) if self.kind == "interpolant" else torch.zeros_like(u)

    def decode(self, x: Tensor, u: Tensor, stats: Stats, lo_n: Tensor | None = None) -> Tensor:
        """Normalized hi fields from flow states ``x`` (then projected onto ``lo_n`` when the
        method says so and ``lo_n`` is given)."""
        m, a, b = stats
        if self.kind == "interpolant":
            hi = x if self.scale == "global" else m + a * x
        else:
            r = self._r(u)
            hi = u + r * x if self.scale == "global" else u + (b * r) * x
        if self.project and lo_n is not None:
            hi = project_block_means(hi, lo_n)
        return hi

    # -- training and sampling

    def loss(
        self,
        model: VelocityModel,
        hi: Tensor,
        gen: torch.Generator,
        *,
        crop: int = 0,
        roll: bool = False,
        augment: Sequence[str] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The flow-matching loss of one micro-batch of normalized hi fields: what ``mhdsr
        train`` optimizes, what validation reports and what the tests check. Training passes
        its crop and roll settings; validation passes full fields (no crop, no roll) and its own
        fixed generators.

        Order of the draws from ``gen`` (part of the contract: exact resume and golden values
        rely on it): window offsets (when ``roll`` or ``crop``), then one symmetry element per
        sample (when ``augment``; both :func:`~mhdsr.method.pairs.make_pair`), then
        ``eps ~ N(0, I)`` of the pair's shape (:func:`source_noise`: on a GPU one seed for the
        device's generator), then ``t`` from ``method.t_dist`` (``logit_mean``/``logit_std``
        for logit-normal).

        Args:
            model: ``model(x_t, t, u') -> v``.
            hi: ``(B, C, H, W)`` normalized hi fields on the compute device.
            gen: CPU generator, the only source of randomness.
            crop: periodic training window in hi pixels (0 = full field).
            roll: random periodic translation by even offsets.
            augment: channel names of ``hi`` for the 8-element symmetry augmentation
                (None = off).

        Returns:
            ``(loss, per_sample, t)``: the scalar loss (with graph), the detached ``(B,)``
            per-sample losses and the ``(B,)`` times.
        """
        m = self.method
        hi, u, lo = make_pair(
            hi, crop=crop, roll=roll, upsample_mode=m.upsample, generator=gen, augment=augment,
            with_lo=True, transfer=self.transfer,
        )  # fmt: skip
        return self.pair_loss(model, hi, u, self.lo_stats(lo), gen)

    def pair_loss(
        self,
        model: VelocityModel,
        field: Tensor,
        u: Tensor,
        stats: Stats,
        gen: torch.Generator,
        extra: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The flow-matching loss of one task-made pair: what every task's training shares.

        The task decides what the pair is (super-resolution: ``u = Up(lo)``, ``field = hi``;
        forecasting: ``u`` = the source mean of ``x(t + dt)``, ``field = x(t + dt)``, both on
        the lo grid, ``stats`` the level of ``x(t)``); this draws ``eps ~ N(0, I)`` of
        ``field``'s shape (:func:`source_noise`) and then ``t`` (``method.t_dist``) from
        ``gen``, in that order, and regresses the conditional velocity from the source to
        :meth:`target`.

        Args:
            model: ``model(x_t, t, cond) -> v``.
            field: ``(B, C, H, W)`` normalized target fields.
            u: ``(B, C, H, W)`` source mean of the task (normalized units).
            stats: ``(m, a, b)`` levels (:func:`level_stats`).
            gen: CPU generator.
            extra: ``(B, C', H, W)`` further conditioning in the network's units, appended to
                ``u'`` on the channel axis (None = ``u'`` alone).

        Returns:
            ``(loss, per_sample, t)`` as :meth:`loss`.
        """
        m = self.method
        device = field.device
        eps = source_noise(field.shape, gen, device)
        t = sample_time(
            field.shape[0],
            kind=m.t_dist,
            t_min=m.t_min,
            t_max=m.t_max,
            logit_mean=m.logit_mean,
            logit_std=m.logit_std,
            generator=gen,
        ).to(device)
        x1 = self.target(field, u, stats)
        cond = self.cond(u, stats, extra)
        loss, per = flow_matching_loss(
            model, x1, cond, eps, t, sigma=m.sigma, loss_scale=m.loss_scale,
            base=self.source_mean(u, stats),
        )  # fmt: skip
        return loss, per, t

    def sample(
        self,
        sampler: str,
        net: VelocityModel,
        lo_n: Tensor,
        noise: NoiseSource,
        *,
        n_steps: int,
        grid: str = "linear",
        rho: float = 7.0,
        options: dict[str, Any] | None = None,
        u: Tensor | None = None,
    ) -> Tensor:
        """Samples of normalized hi fields given normalized lo fields.

        Args:
            sampler: a registered sampler name.
            net: the velocity network ``net(x_t, t, u')``.
            lo_n: ``(B, C, h, w)`` normalized lo fields (one per sample; repeat for members).
            noise: a :class:`~mhdsr.method.noise.NoiseSource` (one stream per sample).
            n_steps, grid, rho, options: sampler settings.
            u: ``Up(lo_n)`` when already computed (``(B, C, 2h, 2w)``).

        Returns:
            ``(B, C, 2h, 2w)`` normalized hi samples (decoded and, if configured, projected;
            the ``derive_jz`` step needs physical units and is :func:`derive_current`'s, by
            the caller).
        """
        u = self.up(lo_n) if u is None else u
        return self.sample_pair(
            sampler, net, u, self.lo_stats(lo_n), noise, n_steps=n_steps, grid=grid, rho=rho,
            options=options, lo_n=lo_n,
        )  # fmt: skip

    def sample_pair(
        self,
        sampler: str,
        net: VelocityModel,
        u: Tensor,
        stats: Stats,
        noise: NoiseSource,
        *,
        n_steps: int,
        grid: str = "linear",
        rho: float = 7.0,
        options: dict[str, Any] | None = None,
        extra: Tensor | None = None,
        lo_n: Tensor | None = None,
    ) -> Tensor:
        """Samples of normalized fields given a task-made source mean ``u`` and level
        ``stats`` (the sampling twin of :meth:`pair_loss`; :meth:`sample` is super-resolution's
        use of it).

        Args:
            sampler, net, noise, n_steps, grid, rho, options: as :meth:`sample`.
            u: ``(B, C, H, W)`` source mean (normalized units).
            stats: ``(m, a, b)`` levels (:func:`level_stats`).
            extra: further conditioning appended to ``u'`` (as in :meth:`pair_loss`).
            lo_n: lo fields to project the samples onto (``method.project``; None = no
                projection).

        Returns:
            ``(B, C, H, W)`` decoded normalized samples.
        """
        from mhdsr.method.samplers import sample

        m = self.method
        cond = self.cond(u, stats, extra)
        base = self.source_mean(u, stats)

        def model(x: Tensor, t: Tensor, _base: Tensor) -> Tensor:
            return net(x, t, cond)

        x = sample(
            sampler,
            model,
            base,
            n_steps=n_steps,
            grid=grid,
            noise=noise,
            sigma=m.sigma,
            t_min=m.t_min,
            t_max=m.t_max,
            rho=rho,
            **(options or {}),
        )
        return self.decode(x, u, stats, lo_n)


def level_stats(lo_n: Tensor, method: MethodConfig) -> Stats:
    """``(m, a, b)`` of full lo fields ``(B, C, h, w)``, each ``(B, C, 1, 1)``; ``(0, 1, 1)``
    (scalars) for ``scale = global``.

    ``m`` is the spatial mean; ``a`` (the conditioning level) the rms of the fluctuation in the
    wavenumber shells ``round(|k|) >= method.scale_kmin`` of the lo grid (all of it for
    ``scale_kmin = 0``: the population std); ``b`` (the residual level) the same with
    ``method.residual_kmin`` (``b = a`` for ``residual_kmin = 0``). Both are floored at
    ``method.scale_floor``. A band above the largest scales (``residual_kmin`` ~ N_lo/8) measures
    the small-scale activity that sets the size of the interpolation residual and is not
    dominated by the channel flows of the MRI: over 2.5–6 orbits of the 256² runs the ratio
    rms(residual) / b (``residual_kmin = 16``) stays within a factor ~4 on every channel, while
    rms(residual) / a spans a factor ~10 (velocities) to ~1000 (density) between the onset and
    the turbulence (docs/design.md, "Regimes").

    Raises:
        nothing; a field with no power in the band gets the floor.
    """
    if method.scale == "global":
        one = torch.ones((), dtype=lo_n.dtype, device=lo_n.device)
        return one * 0, one, one
    m = lo_n.mean(dim=(-2, -1), keepdim=True)
    floor = float(method.scale_floor)
    a = _band_rms(lo_n, int(method.scale_kmin)).clamp_min(floor)
    rk = int(method.residual_kmin)
    b = a if rk == 0 else _band_rms(lo_n, rk).clamp_min(floor)
    return m, a, b


def _band_rms(lo_n: Tensor, kmin: int) -> Tensor:
    """``(B, C, 1, 1)`` rms of the fluctuation of ``lo_n`` in the shells ``round(|k|) >= kmin``
    (Parseval: the sum of ``|fft2(x)/(h w)|^2`` over the band); ``kmin = 0``: the std."""
    if kmin <= 0:
        return lo_n.std(dim=(-2, -1), keepdim=True, unbiased=False)
    h, w = lo_n.shape[-2:]
    ky = torch.fft.fftfreq(h, 1.0 / h, device=lo_n.device)
    kx = torch.fft.fftfreq(w, 1.0 / w, device=lo_n.device)
    band = (torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2).round() >= kmin).to(lo_n.dtype)
    coef = torch.fft.fft2(lo_n) / (h * w)
    return torch.sqrt((coef.abs() ** 2 * band).sum(dim=(-2, -1), keepdim=True))


def residual_std(
    hi_n: Sequence[Tensor] | Tensor, method: MethodConfig, transfer: Tensor | None = None
) -> Tensor:
    """Per-channel population std of ``(hi_n - Up(lo)) / b`` over fields ``hi_n``, with
    ``lo = avgpool2(hi_n)`` (degraded with ``transfer`` when given: ``method.degrade``) and
    ``b`` the residual level of :func:`level_stats` of ``lo`` (1 for global scale); with
    ``method.residual_estimator = "median"`` the median over the fields of each field's own
    (mean-removed) rms instead.

    Args:
        hi_n: ``(N, C, H, W)`` normalized hi fields (or a sequence of ``(C, H, W)``).
        method: the method config (its ``upsample``, ``scale`` and ``scale_floor``).
        transfer: ``(C, K)`` degradation-matching transfer function, or ``None``.

    Returns:
        ``(C,)`` float64 tensor.
    """
    x = torch.stack(list(hi_n)) if not isinstance(hi_n, Tensor) else hi_n
    x = x.to(torch.float64)
    lo = avgpool2(x)
    if transfer is not None:
        lo = degrade(lo, transfer)
    _, _, b = level_stats(lo, method)
    return residual_scale((x - upsample(lo, 2, method.upsample)) / b, method.residual_estimator)


def residual_scale(res: Tensor, estimator: str = "pooled") -> Tensor:
    """``(C,)`` scale ``s_r`` of level-scaled residuals ``res`` ``(N, C, H, W)``: ``pooled`` =
    the population std of all their values per channel; ``median`` = the (lower) median over
    the N samples of each sample's mean-removed rms (a typical sample's scale).

    Raises:
        ConfigError: an unknown estimator.
    """
    if estimator == "median":
        per = (res - res.mean(dim=(-2, -1), keepdim=True)).square().mean(dim=(-2, -1)).sqrt()
        return per.median(dim=0).values
    if estimator != "pooled":
        raise ConfigError(f"method.residual_estimator: expected pooled | median, got {estimator!r}")
    return res.transpose(0, 1).reshape(res.shape[1], -1).std(dim=1, unbiased=False)


def derive_current(x: Tensor, channels: Sequence[str], lx: float = 1.0, ly: float = 1.0) -> Tensor:
    """Replace ``jz`` of physical fields ``x`` ``(B, C, H, W)`` by ``dBy/dx - dBx/dy`` with
    periodic centred differences (AthenaK's definition, docs/design.md "Geometry").

    Raises:
        ConfigError: ``channels`` lack Bx, By or jz.
    """
    names = list(channels)
    missing = [c for c in ("Bx", "By", "jz") if c not in names]
    if missing:
        raise ConfigError(f"method.derive_jz needs channels Bx, By, jz; missing {missing}")
    bx, by = x[:, names.index("Bx")], x[:, names.index("By")]
    out = x.clone()
    out[:, names.index("jz")] = curl_z(bx, by, lx, ly)
    return out
