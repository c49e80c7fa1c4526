"""TensorBoard panels of a super-resolution run (main rank, every ``log.image_every`` steps).

For one fixed validation sample: a comparison panel per channel (u = Up(lo), Heun ODE sample from
the raw weights and from the EMA weights, an Euler-Maruyama SDE sample from the EMA, truth,
difference EMA - truth) and shell-summed power spectra (truth, samples, u), all in physical units.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from mhdsr.analysis.spectra import radial_spectrum
from mhdsr.dataset.normalize import Normalizer
from mhdsr.method.flow import Formulation, derive_current
from mhdsr.method.noise import PerSampleNoise
from mhdsr.plots import comparison_panel, spectra_figure
from mhdsr.runtime.monitor import Monitor


@torch.no_grad()
def draw_panels(
    monitor: Monitor,
    cfg: Any,
    step: int,
    raw_model: nn.Module,
    ema_model: nn.Module,
    hi: torch.Tensor,
    keys: list[str],
    channels: list[str],
    norm: Normalizer,
    form: Formulation,
) -> dict[str, float]:
    """Panels + spectra of ``hi`` ``(1, C, H, W)`` (normalized) to TensorBoard.

    Returns:
        ``val/mse_<curve>`` scalars: mean squared error of each drawn sample in normalized units.
    """
    dev = next(ema_model.parameters()).device
    x1 = hi.to(dev)
    lo = form.lo_of(x1)  # avgpool2 (degraded when method.degrade: what the model trains on)
    u = form.up(lo)
    n = cfg.log.image_steps

    def draw(model: nn.Module, sde: bool = False) -> torch.Tensor:
        noise = PerSampleNoise.from_keys(cfg.seed, [(step, 0)], device=dev, dtype=torch.float32)
        return form.sample(
            "euler_maruyama" if sde else "heun",
            model,
            lo,
            noise,
            n_steps=2 * n if sde else n,
            u=u,
        ).float()

    outs = {
        "ODE raw": draw(raw_model),
        "ODE EMA": draw(ema_model),
        "SDE EMA": draw(ema_model, True),
    }
    phys = {k: norm.denormalize(v) for k, v in {f"u ({form.method.upsample})": u, **outs}.items()}
    if form.method.derive_jz:
        phys.update({k: derive_current(phys[k], channels) for k in outs})
    phys = {k: v[0].cpu().numpy() for k, v in {**phys, "truth": norm.denormalize(x1)}.items()}
    fig = comparison_panel(
        phys,
        channels,
        reference="truth",
        diffs={"EMA - truth": ("ODE EMA", "truth")},
        title=f"step {step}  {keys[0]}",
    )
    monitor.figure("samples/panel", fig, step)
    spectra = {name: radial_spectrum(f.astype(np.float64)) for name, f in phys.items()}
    fig = spectra_figure(
        spectra, channels, k_nyquist_lo=x1.shape[-1] // 4, title=f"step {step} power spectra"
    )
    monitor.figure("samples/spectra", fig, step)
    return {
        f"val/mse_{k.replace(' ', '_')}": float(((v - x1) ** 2).mean()) for k, v in outs.items()
    }
