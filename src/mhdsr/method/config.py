"""Typed configuration of the super-resolution method (the ``method`` section of a train config)
and the fixed choices of the method's functions (torch-free, so configs load fast).

It is recorded in every export, so sampling uses exactly the sigma, time range and upsampling the
network was trained with; an export written before a field existed is read with that field's
:data:`ORIGINAL_RECIPE` value (:func:`mhdsr.model.inference.method_of_export`), so it means what
it meant when it was written.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mhdsr.config import require
from mhdsr.errors import ConfigError

if TYPE_CHECKING:
    from mhdsr.method.noise import NoiseSource

#: Interpolations of ``u = Up(lo)`` (periodic, cell-centred; mhdsr.method.grid.upsample).
UpsampleMode = Literal["bilinear", "bicubic", "spline"]
#: Laws of the training time ``t`` (mhdsr.method.flow.sample_time).
TimeDist = Literal["uniform", "logit_normal"]
#: Sampler time grids (mhdsr.method.timegrid.time_grid).
GridKind = Literal["linear", "quadratic", "edm"]


@dataclass
class MethodConfig:
    """The method that ships (docs/design.md, "The method"; :mod:`mhdsr.method.flow`): the
    **residual** formulation, a flow from unit noise ``x0 = sigma eps`` (``sigma = 1``) to the
    interpolation residual ``x1 = (hi - u) / (a s_r)`` of a periodic cubic **spline**
    ``u = Up(lo)``, in units of each input's own level ``a = std(lo)`` (**instance** scale,
    ``scale_kmin = 0``) and of its train-split std ``s_r`` (estimated on the first
    ``residual_samples`` = 64 train samples), loss ``loss_scale = 1`` times the mean squared
    velocity error, training times uniform on ``[1e-4, 1 - 1e-4]``; every sample is **projected**
    onto the input's 2x2 block means and its ``jz`` is **derived** as the curl of the generated
    ``(Bx, By)``. Degradation matching (``degrade``: inputs filtered like native lo runs,
    :mod:`mhdsr.method.degrade`) is off.

    These defaults are the ``method`` section of every shipped train config
    (configs/train/*.yaml, checked by tests/test_architecture.py). The configs share every field
    but ``residual_samples``, a cost choice of each config's budget (gpu-40m: 256); the default
    is the one cpu-base and cpu-small use, 64. The measurements that chose this recipe are in
    benchmarks/science.md. The original recipe (interpolant from bilinear ``u``, global scale,
    ``sigma = 0.1``, ``loss_scale = 100``) is :data:`ORIGINAL_RECIPE`.
    """

    #: std of the source noise at t = 0 (normalized units; residual: in units of the target)
    sigma: float = 1.0
    #: loss = loss_scale * mean((v - v*)^2)
    loss_scale: float = 1.0
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
    upsample: UpsampleMode = "spline"
    #: residual: x1 = (hi - u) / s_r, source mean 0; interpolant: x1 = hi, source mean u
    #: (s_r = per-channel std of hi - u over the train split; mhdsr.method.flow)
    formulation: Literal["interpolant", "residual"] = "residual"
    #: train samples (first N of the train split, deterministic) that estimate s_r
    residual_samples: int = 64
    #: instance: also divide by each input's own level a = std(lo) over the field (floored at
    #: scale_floor, normalized units), so quiet and turbulent snapshots look alike to the
    #: network; global: the train-split channel units only (mhdsr.method.flow)
    scale: Literal["global", "instance"] = "instance"
    #: smallest level a (normalized units) for scale = instance (a uniform field at t = 0)
    scale_floor: float = 1e-4
    #: scale = instance: a is the rms of the lo field in the shells |k| >= scale_kmin of the lo
    #: grid (0 = its whole std); the small-scale activity sets the size of the residual
    scale_kmin: int = 0
    #: scale = instance, residual formulation (unused otherwise): the residual's own level b is the rms of the lo
    #: field in the shells |k| >= residual_kmin of the lo grid (0 = b = a). The interpolation
    #: residual continues the input's smallest resolved scales, so b follows the input's own
    #: small-scale activity: a quiet (onset) snapshot gets a small residual whatever its
    #: large-scale flow (docs/design.md, "Regimes"); the network's conditioning stays in units of a
    residual_kmin: int = 24
    #: how s_r is estimated from the residual samples: "pooled" (the std of all their pixels) or
    #: "median" (the median over samples of each sample's rms: a typical snapshot's scale, not
    #: dominated by a few snapshots of another regime whose residual/level ratio is larger)
    residual_estimator: Literal["pooled", "median"] = "median"
    #: project every sample onto {x : avgpool2(x) = lo} (hard consistency with the input)
    project: bool = True
    #: replace the generated jz by the periodic centred-difference curl of the generated Bx, By
    #: (AthenaK's own definition), so jz - curl B vanishes by construction
    derive_jz: bool = True
    #: degradation matching (:mod:`mhdsr.method.degrade`; docs/design.md, "The method"): train
    #: on ``lo = D(hi)`` = avgpool2 followed by a per-channel isotropic transfer function
    #: ``T_c(|k|)`` on the lo grid, fitted at the start of training to the ratio of the mean
    #: spectra of the native-lo runs ``degrade_runs`` to avgpool2 of the train split, so the
    #: model learns to super-resolve inputs that look like native lo runs (whose numerical
    #: dissipation damps their top octave). Needs ``project = false`` (projecting a sample onto
    #: its input's block means would put the damping back).
    degrade: bool = False
    #: globs of native-lo AthenaK run folders used ONLY to fit T (method.degrade). They must
    #: not be the held-out runs the model is evaluated on (they would no longer be held out:
    #: training prints a note when one is in the shards' heldout split)
    degrade_runs: list[str] = field(default_factory=list)
    #: method.degrade: T is pinned to a mean log of 0 over the lo-grid shells 1 <= k < kref
    #: (D changes the spectral shape, not the level); 0 = N_lo / 16 (at least 2)
    degrade_kref: int = 0
    #: method.degrade: train samples (first N of the train split, deterministic) whose
    #: avgpool2 spectra make the denominator of T; their orbit range selects the native
    #: snapshots of the numerator
    degrade_samples: int = 64

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
        require(
            self.residual_estimator in ("pooled", "median"),
            "method.residual_estimator",
            "pooled | median",
            self.residual_estimator,
        )
        require(self.residual_kmin >= 0, "method.residual_kmin", ">= 0", self.residual_kmin)
        require(
            self.degrade_kref >= 0, "method.degrade_kref", ">= 0 (0 = N_lo / 16)", self.degrade_kref
        )
        require(self.degrade_samples >= 1, "method.degrade_samples", ">= 1", self.degrade_samples)
        if self.degrade:
            require(
                bool(self.degrade_runs) and all(str(g).strip() for g in self.degrade_runs),
                "method.degrade_runs",
                "a non-empty list of globs of native-lo run folders (method.degrade=true fits "
                "its transfer function on them)",
                self.degrade_runs,
            )
            if self.project:
                raise ConfigError(
                    "config key 'method.degrade': degradation matching needs method.project=false: "
                    "projecting a sample onto its input's 2x2 block means would copy the input's "
                    "damped top octave back into the sample and undo the de-filtering the model "
                    "learned; set method.project=false"
                )


#: The original recipe, which the defaults were before issue 18: the interpolant from a
#: periodic bilinear ``u`` in global units, ``sigma = 0.1``, ``loss_scale = 100``, samples neither
#: projected nor given a derived ``jz``. An export lacking one of these fields was written
#: before the field existed, when this was its meaning; loading fills it from here
#: (:func:`mhdsr.model.inference.method_of_export`).
ORIGINAL_RECIPE: dict[str, object] = {
    "sigma": 0.1,
    "loss_scale": 100.0,
    "t_dist": "uniform",
    "t_min": 1e-4,
    "t_max": 1.0 - 1e-4,
    "logit_mean": 0.0,
    "logit_std": 1.0,
    "upsample": "bilinear",
    "formulation": "interpolant",
    "residual_samples": 64,
    "scale": "global",
    "scale_floor": 1e-4,
    "scale_kmin": 0,
    "residual_kmin": 0,
    "residual_estimator": "pooled",
    "project": False,
    "derive_jz": False,
    "degrade": False,
    "degrade_runs": [],
    "degrade_kref": 0,
    "degrade_samples": 64,
}


def original_recipe(**changes: object) -> MethodConfig:
    """A :class:`MethodConfig` of :data:`ORIGINAL_RECIPE` with ``changes`` applied."""
    return MethodConfig(**{**ORIGINAL_RECIPE, **changes})  # type: ignore[arg-type]


@dataclass
class SamplerConfig:
    """ODE/SDE sampler (:mod:`mhdsr.method.samplers`) as every sampling command configures it
    (``mhdsr sample``, ``mhdsr forecast rollout``); t range and sigma come from the export."""

    #: a registered sampler: heun | euler (ODE) | euler_maruyama (SDE) | ...
    name: str = "heun"
    #: steps; network evaluations per sample = the sampler's NFE per step x steps
    steps: int = 10
    #: time grid
    grid: GridKind = "linear"
    #: EDM grid exponent (grid=edm only)
    rho: float = 7.0
    #: sampler keywords (euler_maruyama: delta, delta_schedule, max_churn)
    options: dict[str, Any] = field(default_factory=dict)
    #: source temperature: x0 = T sigma eps, [T] for every channel or one value per channel
    #: (noise inflation; shipped values are tuned on the validation split, never on test:
    #: docs/design.md, "Calibration"); [1.0] = the trained source
    temperature: list[float] = field(default_factory=lambda: [1.0])

    def check_channels(self, channels: Sequence[str]) -> None:
        """Raise ConfigError unless ``temperature`` has one value or one per model channel."""
        if len(self.temperature) not in (1, len(channels)):
            raise ConfigError(
                f"config key 'sampler.temperature': {len(self.temperature)} values for the "
                f"model's {len(channels)} channels {list(channels)}; give one value or one per "
                "channel"
            )

    def noise(self, source: NoiseSource) -> NoiseSource:
        """``source`` with this sampler's temperature on its first draw (itself when T = 1)."""
        from mhdsr.method.noise import SourceTemperature

        t = [float(v) for v in self.temperature]
        return source if all(v == 1.0 for v in t) else SourceTemperature(source, t)

    def validate(self) -> None:
        """Raises ConfigError naming ``sampler.<key>`` (unknown name or option)."""
        from mhdsr.method.samplers import SAMPLERS

        spec = SAMPLERS.get(self.name)
        require(spec is not None, "sampler.name", " | ".join(SAMPLERS), self.name)
        require(self.steps >= 1, "sampler.steps", "an integer >= 1", self.steps)
        require(self.rho > 0, "sampler.rho", "> 0", self.rho)
        temps = list(self.temperature)
        require(
            len(temps) >= 1 and all(math.isfinite(float(v)) and float(v) > 0 for v in temps),
            "sampler.temperature",
            "a list of numbers > 0: [T] for every channel or one per channel",
            self.temperature,
        )
        unknown = sorted(set(self.options) - spec.options)
        if unknown:
            raise ConfigError(
                f"config key 'sampler.options': sampler {self.name!r} takes no option(s) {unknown}; "
                f"it takes {sorted(spec.options) or 'none'}"
            )
