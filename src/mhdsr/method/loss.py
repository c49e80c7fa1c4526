"""The training loss of the super-resolution method, in one place.

:func:`training_loss` is what ``mhdsr train`` optimizes, what validation reports and what the
tests check: from normalized hi fields it builds the pair ``(x1, u)`` (:mod:`mhdsr.method.pairs`),
draws the source noise and the times from ONE generator, in a fixed order (window offsets, then
``eps``, then ``t``), and returns :func:`flow_matching_loss`. Training passes its crop and roll
settings; validation passes full fields (no crop, no roll) and its own fixed generators.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mhdsr.method.formulation import Formulation
from mhdsr.method.interpolant import (
    VelocityModel,
    interpolate,
    make_x0,
    sample_time,
    target_velocity,
)
from mhdsr.method.pairs import make_pair


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
        sigma: noise level of the source, ``x0 = base + sigma eps`` (default 0.1).
        loss_scale: multiplier (default 100; the targets are small).
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


def training_loss(
    model: VelocityModel,
    hi: Tensor,
    form: Formulation,
    gen: torch.Generator,
    *,
    crop: int = 0,
    roll: bool = False,
    augment: Sequence[str] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The flow-matching loss of one micro-batch of normalized hi fields.

    Order of the draws from ``gen`` (part of the contract: exact resume and golden values rely
    on it): window offsets (when ``roll`` or ``crop``), then one symmetry element per sample
    (when ``augment``), then ``eps ~ N(0, I)`` of the pair's shape (:func:`source_noise`: on a
    GPU one seed for the device's generator), then ``t`` from ``method.t_dist``
    (``logit_mean``/``logit_std`` for logit-normal).

    Args:
        model: ``model(x_t, t, u) -> v``.
        hi: ``(B, C, H, W)`` normalized hi fields on the compute device.
        form: the method (:class:`~mhdsr.method.formulation.Formulation`: sigma, loss_scale,
            time law, upsampling, interpolant or residual target).
        gen: CPU generator, the only source of randomness.
        crop: periodic training window in hi pixels (0 = full field).
        roll: random periodic translation by even offsets.
        augment: channel names of ``hi`` for the 8-element symmetry augmentation (None = off).

    Returns:
        ``(loss, per_sample, t)``: the scalar loss (with graph), the detached ``(B,)``
        per-sample losses and the ``(B,)`` times.
    """
    m = form.method
    hi, u, lo = make_pair(
        hi, crop=crop, roll=roll, upsample_mode=m.upsample, generator=gen, augment=augment,
        with_lo=True,
    )  # fmt: skip
    device = hi.device
    eps = source_noise(hi.shape, gen, device)
    t = sample_time(
        hi.shape[0],
        kind=m.t_dist,
        t_min=m.t_min,
        t_max=m.t_max,
        logit_mean=m.logit_mean,
        logit_std=m.logit_std,
        generator=gen,
    ).to(device)
    stats = form.lo_stats(lo)
    x1 = form.target(hi, u, stats)
    loss, per = flow_matching_loss(
        model, x1, form.cond(u, stats), eps, t, sigma=m.sigma, loss_scale=m.loss_scale,
        base=form.source_mean(u, stats),
    )  # fmt: skip
    return loss, per, t
