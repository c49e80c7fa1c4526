"""How super-resolution maps onto the stochastic interpolant (docs/design.md, "The method").

All fields are normalized per channel with the train-split statistics (``hi_n``, ``lo_n``);
``u = Up(lo_n)`` is the interpolated input on the hi grid. Two formulations:

* ``interpolant`` (the original): the flow runs from ``x0 = u + sigma eps`` to ``x1 = hi_n``;
  the source mean is ``u``, the network sees ``(x_t, u)``; a sample IS the field.
* ``residual`` (CorrDiff-style: Mardani et al. 2025, Commun. Earth Environ. 6:124): the flow
  runs from ``x0 = sigma eps`` to ``x1 = (hi_n - u) / s_r``, the interpolation residual scaled by
  its per-channel train-split std ``s_r``; the source mean is 0 and the network still sees
  ``(x_t, u)``; a sample decodes to ``u + s_r x``. Every channel's target then has unit
  variance, so one ``sigma`` fits channels whose residuals differ by 10x (velocities ~5% of the
  channel std, jz ~30%), and a network that is unsure returns ``u``, not noise.

Either can be followed by the hard consistency projection
(:func:`~mhdsr.method.interpolant.project_block_means`): the decoded field is projected onto
``{x : avgpool2(x) = lo_n}``, the scales the input resolves are then those of the input.

The samplers (:mod:`mhdsr.method.samplers`) take the *source mean* as their ``u`` argument
(it is where ``x0`` is centred and what the score formula subtracts) and a model callable;
:func:`super_resolve` closes the network over the real conditioning ``u``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mhdsr.errors import ConfigError
from mhdsr.method.interpolant import project_block_means, upsample


@dataclass
class Formulation:
    """The method of one model: its config plus the residual scale it was trained with.

    Attributes:
        method: a :class:`~mhdsr.method.config.MethodConfig` (or the dict of one, as stored in
            an export: attribute access is all that is used).
        residual_std: ``(C,)`` per-channel std of ``hi_n - u`` over the train split
            (normalized units), required for the residual formulation.
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
    def project(self) -> bool:
        return bool(getattr(self.method, "project", False))

    def _r(self, like: Tensor) -> Tensor:
        return self.residual_std.to(like.device, like.dtype)[:, None, None]  # type: ignore[union-attr]

    def up(self, lo_n: Tensor) -> Tensor:
        """``u = Up(lo_n)``, ``(B, C, h, w) -> (B, C, 2h, 2w)``."""
        return upsample(lo_n, 2, self.method.upsample)

    def target(self, hi_n: Tensor, u: Tensor) -> Tensor:
        """``x1`` of the flow for fields ``hi_n`` with interpolated input ``u``."""
        return hi_n if self.kind == "interpolant" else (hi_n - u) / self._r(u)

    def source_mean(self, u: Tensor) -> Tensor:
        """Mean of the source ``x0`` (``u``, or 0 for the residual formulation)."""
        return u if self.kind == "interpolant" else torch.zeros_like(u)

    def decode(self, x: Tensor, u: Tensor, lo_n: Tensor | None = None) -> Tensor:
        """Normalized hi fields from flow states ``x`` (then projected onto ``lo_n`` when the
        method says so and ``lo_n`` is given)."""
        hi = x if self.kind == "interpolant" else u + self._r(u) * x
        if self.project and lo_n is not None:
            hi = project_block_means(hi, lo_n)
        return hi


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
        net: the velocity network ``net(x_t, t, u)``.
        lo_n: ``(B, C, h, w)`` normalized lo fields (one per sample; repeat for members).
        form: the model's formulation.
        noise: a :class:`~mhdsr.method.noise.NoiseSource` (one stream per sample).
        n_steps, grid, rho, options: sampler settings.
        u: ``Up(lo_n)`` when already computed (``(B, C, 2h, 2w)``).

    Returns:
        ``(B, C, 2h, 2w)`` normalized hi samples (decoded and, if configured, projected).
    """
    from mhdsr.method.samplers import sample

    m = form.method
    u = form.up(lo_n) if u is None else u
    base = form.source_mean(u)

    def model(x: Tensor, t: Tensor, _base: Tensor) -> Tensor:
        return net(x, t, u)

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
    return form.decode(x, u, lo_n)


def residual_std(hi_n: Sequence[Tensor] | Tensor, upsample_mode: str) -> Tensor:
    """Per-channel population std of ``hi_n - Up(avgpool2(hi_n))`` over fields ``hi_n``.

    Args:
        hi_n: ``(N, C, H, W)`` normalized hi fields (or a sequence of ``(C, H, W)``).
        upsample_mode: the method's ``upsample``.

    Returns:
        ``(C,)`` float64 tensor.
    """
    from mhdsr.method.interpolant import avgpool2

    x = torch.stack(list(hi_n)) if not isinstance(hi_n, Tensor) else hi_n
    x = x.to(torch.float64)
    res = x - upsample(avgpool2(x), 2, upsample_mode)
    return res.transpose(0, 1).reshape(x.shape[1], -1).std(dim=1, unbiased=False)
