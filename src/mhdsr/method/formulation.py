"""How super-resolution maps onto the stochastic interpolant (docs/design.md, "The method").

All fields are normalized per channel with the train-split statistics (``hi_n``, ``lo_n``);
``u = Up(lo_n)`` is the interpolated input on the hi grid.

**Scale.** ``global`` uses those units as they are. ``instance`` additionally measures each
input's own per-channel level, ``m = mean(lo_n)`` and ``a = max(std(lo_n), scale_floor)`` over the
full field (a reversible instance normalization, as RevIN: Kim et al. 2022, ICLR), and works in
units of ``a``: an MRI run's fields grow by orders of magnitude from the seed noise to the first
burst and decay afterwards, and with global units a model trained mostly on turbulence would add
turbulent-size small scales to a quiet snapshot. ``m`` and ``a`` are invariant under periodic rolls
and change covariantly under the symmetry group (``a`` invariant, ``m`` flips sign with the field).

**Formulation.**

* ``interpolant`` (the original): the flow runs from ``x0 = u' + sigma eps`` to ``x1 = hi'``,
  with ``u' = (u - m) / a`` and ``hi' = (hi_n - m) / a`` (``m = 0``, ``a = 1`` for global scale);
  the network sees ``(x_t, u')``; a sample decodes to ``m + a x``.
* ``residual`` (CorrDiff-style: Mardani et al. 2025, Commun. Earth Environ. 6:124): the flow runs
  from ``x0 = sigma eps`` to ``x1 = (hi_n - u) / (a s_r)``, the interpolation residual scaled by the
  input level ``a`` and by ``s_r``, the per-channel std of ``(hi_n - u) / a`` over the train split;
  the source mean is 0, the network sees ``(x_t, u')``; a sample decodes to ``u + a s_r x``. Every
  channel's target then has unit variance, so one ``sigma`` fits channels whose residuals differ by
  10x (velocities ~5% of the channel std, jz ~30%), and a network that is unsure returns ``u``,
  not noise.

Either can be followed by the hard consistency projection
(:func:`~mhdsr.method.interpolant.project_block_means`, ``method.project``): the decoded field is
projected onto ``{x : avgpool2(x) = lo_n}``; and by ``method.derive_jz``: the current is replaced
by the periodic centred-difference curl of the generated in-plane field, as AthenaK computes it
(:func:`derive_current`, in physical units).

The samplers (:mod:`mhdsr.method.samplers`) take the *source mean* as their ``u`` argument (it is
where ``x0`` is centred and what the score formula subtracts) and a model callable;
:func:`super_resolve` closes the network over the conditioning ``u'``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mhdsr.errors import ConfigError
from mhdsr.method.interpolant import avgpool2, project_block_means, upsample

#: ``(m, a)``: per-sample, per-channel level of an input, each ``(B, C, 1, 1)``
Stats = tuple[Tensor, Tensor]


@dataclass
class Formulation:
    """The method of one model: its config plus the residual scale it was trained with.

    Attributes:
        method: a :class:`~mhdsr.method.config.MethodConfig` (attribute access is all that is
            used, so a config rebuilt from an export works too).
        residual_std: ``(C,)`` train-split std of ``(hi_n - u) / a``, required for the residual
            formulation.
    """

    method: Any
    residual_std: Tensor | None = None

    def __post_init__(self) -> None:
        if self.kind == "residual":
            if self.residual_std is None:
                raise ConfigError("method.formulation=residual needs the residual std of the data")
            r = torch.as_tensor(self.residual_std, dtype=torch.float32)
            if not bool(torch.isfinite(r).all() and (r > 0).all()):
                raise ConfigError(f"residual std must be finite and > 0, got {r.tolist()}")
            self.residual_std = r

    @property
    def kind(self) -> str:
        return getattr(self.method, "formulation", "interpolant")

    @property
    def scale(self) -> str:
        return getattr(self.method, "scale", "global")

    @property
    def project(self) -> bool:
        return bool(getattr(self.method, "project", False))

    def _r(self, like: Tensor) -> Tensor:
        return self.residual_std.to(like.device, like.dtype)[:, None, None]  # type: ignore[union-attr]

    def up(self, lo_n: Tensor) -> Tensor:
        """``u = Up(lo_n)``, ``(B, C, h, w) -> (B, C, 2h, 2w)``."""
        return upsample(lo_n, 2, self.method.upsample)

    def lo_stats(self, lo_n: Tensor) -> Stats:
        """``(m, a)`` of full lo fields ``(B, C, h, w)`` (``(0, 1)`` for global scale)."""
        return level_stats(lo_n, self.method)

    def cond(self, u: Tensor, stats: Stats) -> Tensor:
        """The conditioning the network sees, ``u' = (u - m) / a``."""
        m, a = stats
        return u if self.scale == "global" else (u - m) / a

    def target(self, hi_n: Tensor, u: Tensor, stats: Stats) -> Tensor:
        """``x1`` of the flow for fields ``hi_n`` with interpolated input ``u``."""
        m, a = stats
        if self.kind == "interpolant":
            return hi_n if self.scale == "global" else (hi_n - m) / a
        r = self._r(u)
        return (hi_n - u) / r if self.scale == "global" else (hi_n - u) / (a * r)

    def source_mean(self, u: Tensor, stats: Stats) -> Tensor:
        """Mean of the source ``x0``: ``u'`` (interpolant) or 0 (residual)."""
        return self.cond(u, stats) if self.kind == "interpolant" else torch.zeros_like(u)

    def decode(self, x: Tensor, u: Tensor, stats: Stats, lo_n: Tensor | None = None) -> Tensor:
        """Normalized hi fields from flow states ``x`` (then projected onto ``lo_n`` when the
        method says so and ``lo_n`` is given)."""
        m, a = stats
        if self.kind == "interpolant":
            hi = x if self.scale == "global" else m + a * x
        else:
            r = self._r(u)
            hi = u + r * x if self.scale == "global" else u + (a * r) * x
        if self.project and lo_n is not None:
            hi = project_block_means(hi, lo_n)
        return hi


def level_stats(lo_n: Tensor, method: Any) -> Stats:
    """``(m, a)`` of full lo fields ``(B, C, h, w)``, each ``(B, C, 1, 1)``; ``(0, 1)`` (scalars)
    for ``scale = global``.

    ``m`` is the spatial mean; ``a`` the rms of the fluctuation in the wavenumber shells
    ``round(|k|) >= method.scale_kmin`` of the lo grid (all of it for ``scale_kmin = 0``: the
    population std), floored at ``method.scale_floor``. A band above the largest scales
    (``scale_kmin`` ~ N_lo/8) measures the small-scale activity that sets the size of the
    residual, and is not dominated by the channel flows of the MRI.
    """
    if getattr(method, "scale", "global") == "global":
        one = torch.ones((), dtype=lo_n.dtype, device=lo_n.device)
        return one * 0, one
    m = lo_n.mean(dim=(-2, -1), keepdim=True)
    kmin = int(getattr(method, "scale_kmin", 0))
    if kmin <= 0:
        a = lo_n.std(dim=(-2, -1), keepdim=True, unbiased=False)
    else:
        h, w = lo_n.shape[-2:]
        ky = torch.fft.fftfreq(h, 1.0 / h, device=lo_n.device)
        kx = torch.fft.fftfreq(w, 1.0 / w, device=lo_n.device)
        band = (torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2).round() >= kmin).to(lo_n.dtype)
        coef = torch.fft.fft2(lo_n) / (h * w)  # Parseval: sum |coef|^2 = mean(lo^2)
        a = torch.sqrt((coef.abs() ** 2 * band).sum(dim=(-2, -1), keepdim=True))
    return m, a.clamp_min(float(method.scale_floor))


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
    ny, nx = x.shape[-2:]
    dby_dx = (torch.roll(by, -1, -1) - torch.roll(by, 1, -1)) * (nx / (2.0 * lx))
    dbx_dy = (torch.roll(bx, -1, -2) - torch.roll(bx, 1, -2)) * (ny / (2.0 * ly))
    out = x.clone()
    out[:, names.index("jz")] = dby_dx - dbx_dy
    return out


def super_resolve(
    sampler: str,
    net: Callable[[Tensor, Tensor, Tensor], Tensor],
    lo_n: Tensor,
    form: Formulation,
    noise: Any,
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
        form: the model's formulation.
        noise: a :class:`~mhdsr.method.noise.NoiseSource` (one stream per sample).
        n_steps, grid, rho, options: sampler settings.
        u: ``Up(lo_n)`` when already computed (``(B, C, 2h, 2w)``).

    Returns:
        ``(B, C, 2h, 2w)`` normalized hi samples (decoded and, if configured, projected; the
        ``derive_jz`` step needs physical units and is :func:`derive_current`'s, by the caller).
    """
    from mhdsr.method.samplers import sample

    m = form.method
    u = form.up(lo_n) if u is None else u
    stats = form.lo_stats(lo_n)
    cond = form.cond(u, stats)
    base = form.source_mean(u, stats)

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
    return form.decode(x, u, stats, lo_n)


def residual_std(hi_n: Sequence[Tensor] | Tensor, method: Any) -> Tensor:
    """Per-channel population std of ``(hi_n - Up(avgpool2(hi_n))) / a`` over fields ``hi_n``
    (``a`` = 1 for global scale).

    Args:
        hi_n: ``(N, C, H, W)`` normalized hi fields (or a sequence of ``(C, H, W)``).
        method: the method config (its ``upsample``, ``scale`` and ``scale_floor``).

    Returns:
        ``(C,)`` float64 tensor.
    """
    x = torch.stack(list(hi_n)) if not isinstance(hi_n, Tensor) else hi_n
    x = x.to(torch.float64)
    lo = avgpool2(x)
    _, a = level_stats(lo, method)
    res = (x - upsample(lo, 2, method.upsample)) / a
    return res.transpose(0, 1).reshape(x.shape[1], -1).std(dim=1, unbiased=False)
