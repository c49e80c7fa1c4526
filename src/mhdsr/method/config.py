"""Typed configuration of the super-resolution method (the ``method`` section of a train config)
and the fixed choices of the method's functions (torch-free, so configs load fast).

It is recorded in every export, so sampling uses exactly the sigma, time range and upsampling the
network was trained with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mhdsr.config import require

#: Interpolations of ``u = Up(lo)`` (periodic, cell-centred; mhdsr.method.interpolant.upsample).
UpsampleMode = Literal["bilinear", "bicubic", "spline"]
#: Laws of the training time ``t`` (mhdsr.method.interpolant.sample_time).
TimeDist = Literal["uniform", "logit_normal"]
#: Sampler time grids (mhdsr.method.timegrid.time_grid).
GridKind = Literal["linear", "quadratic", "edm"]


@dataclass
class MethodConfig:
    """The stochastic interpolant ``x_t = (1 - t)(u + sigma eps) + t hi`` (docs/design.md,
    "The method") and how its training times are drawn."""

    #: std of the noise added to u at t = 0 (normalized units)
    sigma: float = 0.1
    #: loss = loss_scale * mean((v - v*)^2)
    loss_scale: float = 100.0
    #: law of the training time t: uniform on [t_min, t_max] or logit-normal mapped into it
    t_dist: TimeDist = "uniform"
    #: training/sampling time range [t_min, t_max]
    t_min: float = 1e-4
    t_max: float = 1.0 - 1e-4
    #: logit-normal location (t_dist = logit_normal)
    logit_mean: float = 0.0
    #: logit-normal scale (t_dist = logit_normal)
    logit_std: float = 1.0
    #: u = Up(lo): periodic bilinear, bicubic or cubic-B-spline interpolation on cell centres
    upsample: UpsampleMode = "bilinear"
    #: interpolant: x1 = hi, source mean u; residual: x1 = (hi - u) / s_r, source mean 0
    #: (s_r = per-channel std of hi - u over the train split; mhdsr.method.formulation)
    formulation: Literal["interpolant", "residual"] = "interpolant"
    #: train samples (first N of the train split, deterministic) that estimate s_r
    residual_samples: int = 64
    #: global: the train-split channel units; instance: also divide by each input's own level
    #: a = std(lo) over the field (floored at scale_floor, normalized units), so quiet and
    #: turbulent snapshots look alike to the network (mhdsr.method.formulation)
    scale: Literal["global", "instance"] = "global"
    #: smallest level a (normalized units) for scale = instance (a uniform field at t = 0)
    scale_floor: float = 1e-4
    #: scale = instance: a is the rms of the lo field in the shells |k| >= scale_kmin of the lo
    #: grid (0 = its whole std); the small-scale activity sets the size of the residual
    scale_kmin: int = 0
    #: project every sample onto {x : avgpool2(x) = lo} (hard consistency with the input)
    project: bool = False
    #: replace the generated jz by the periodic centred-difference curl of the generated Bx, By
    #: (AthenaK's own definition), so jz - curl B vanishes by construction
    derive_jz: bool = False

    def validate(self) -> None:
        """Raises ConfigError naming ``method.<key>``."""
        require(self.sigma > 0, "method.sigma", "> 0", self.sigma)
        require(self.loss_scale > 0, "method.loss_scale", "> 0", self.loss_scale)
        require(
            0.0 <= self.t_min < self.t_max <= 1.0,
            "method.t_min/t_max",
            "0 <= t_min < t_max <= 1",
            (self.t_min, self.t_max),
        )
        require(self.logit_std > 0, "method.logit_std", "> 0", self.logit_std)
        require(
            self.residual_samples >= 1, "method.residual_samples", ">= 1", self.residual_samples
        )
        require(self.scale_floor > 0, "method.scale_floor", "> 0", self.scale_floor)
        require(self.scale_kmin >= 0, "method.scale_kmin", ">= 0", self.scale_kmin)
