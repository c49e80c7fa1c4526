"""Baselines of ``mhdsr eval``: what every method is compared with, on the same inputs
(docs/design.md, "Baselines"). The valid names live here only (:data:`BaselineName`).

- ``bilinear``, ``bicubic``: periodic upsampling of the lo input
  (:func:`mhdsr.method.grid.upsample`, cell-centred).
- ``spline``: periodic cubic B-spline interpolation, prefiltered (``mhdsr.method.grid.upsample(mode="spline")``):
  the strongest of the three in pixel error; no learning.
- ``spectral-noise``: ``spline`` plus, per channel, a Gaussian random field whose isotropic
  spectrum is ``max(E_train(k) - E_spline(k), 0)``, both means over the train split (hi vs the
  spline of avgpool2(hi), :func:`mhdsr.eval.reference.train_spectra`). It has the truth's mean
  spectrum by construction and random phases.
- ``noise``: the flow's own starting point decoded to physical units (docs/design.md, "The
  method"): ``u + sigma * std_c * eps`` for the interpolant formulation, ``u + sigma * std_c *
  s_r,c * a_c * eps`` for the residual one (``a_c`` the input level of instance-scaled models, 1
  otherwise), ``u = Up(lo)`` with the sample file's ``upsample`` attribute, ``sigma``, ``s_r``,
  the model's ``std_c`` and its scale settings from the file's attributes (files without them:
  the manifest's train normalization, :func:`mhdsr.dataset.manifest.normalization`).

Stochastic baselines get the ensemble size of the methods (the largest among the sim's files).
Member ``m`` of snapshot ``n`` of the sim with seed ``s`` draws its noise from its own generator
keyed ``(baseline_seed, baseline, s, n, m)`` (:func:`member_rng`), so the baselines do not depend
on the order of work.

Adding a baseline: write ``make(lo, inputs, snapshot) -> (M, C, H, W)``, add its name to
:data:`BaselineName` and one :class:`Baseline` entry to :data:`BASELINES`.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from mhdsr.analysis.random_fields import gaussian_random_field
from mhdsr.method.grid import upsample_np

#: The baselines ``mhdsr eval`` knows (config key ``baselines``).
BaselineName = Literal["bilinear", "bicubic", "spline", "spectral-noise", "noise"]
BASELINE_NAMES: tuple[str, ...] = get_args(BaselineName)


@dataclass(frozen=True)
class BaselineInputs:
    """What the baselines of one sim need besides its lo input.

    Attributes:
        factor: hi / lo grid ratio.
        n_members: ensemble size of the stochastic baselines.
        seed: ``baseline_seed`` of the config; ``sim_seed``: the sim's seed (noise keys).
        noise_spectrum: ``(C, S)`` all-shell target spectrum of ``spectral-noise`` (physical
            units squared), or ``None`` when it is not selected.
        sigma: ``(C,)`` noise std of the ``noise`` baseline in physical units before the input
            level: ``sigma * std_c`` (interpolant formulation) or ``sigma * std_c * s_r,c``
            (residual formulation), or ``None``.
        upsample: the sample files' ``upsample`` mode (``u`` of ``noise``).
        level: for instance-scaled models, ``(mean_c, std_c, kmin, scale_floor)`` of the
            model's normalization (``kmin``: ``residual_kmin`` of a residual model when it is
            > 0, else ``scale_kmin``): the noise is then multiplied per snapshot by the input's
            level (:func:`mhdsr.method.flow.level_stats` of the normalized lo), so the
            baseline is the model's own starting point ``x0`` decoded to physical units.
    """

    factor: int
    n_members: int = 1
    seed: int = 0
    sim_seed: int = 0
    noise_spectrum: np.ndarray | None = None
    sigma: np.ndarray | None = None
    upsample: str = "bilinear"
    level: tuple[np.ndarray, np.ndarray, int, float] | None = None


#: ``make(lo (C, h, w) float32 physical, inputs, snapshot number) -> (M, C, H, W) float32``.
MakeFn = Callable[[np.ndarray, BaselineInputs, int], np.ndarray]


@dataclass(frozen=True)
class Baseline:
    """A registered baseline: its name, whether it is an ensemble, one line for the report,
    the function that makes it and what :class:`BaselineInputs` field it needs (if any)."""

    name: str
    stochastic: bool
    description: str
    make: MakeFn
    needs: str | None = None  # "noise_spectrum" (train split spectra) or "sigma" (file attrs)


def member_rng(
    seed: int, baseline: str, sim_seed: int, snapshot: int, member: int
) -> np.random.Generator:
    """The generator of one member of one snapshot: ``SeedSequence((seed, crc32(baseline),
    sim_seed, snapshot, member))`` (each entry taken modulo 2**32)."""
    key = [seed, zlib.crc32(baseline.encode()), sim_seed, snapshot, member]
    return np.random.default_rng([int(v) & 0xFFFFFFFF for v in key])


def _interp(mode: str) -> MakeFn:
    def make(lo: np.ndarray, inputs: BaselineInputs, snapshot: int) -> np.ndarray:
        return upsample_np(lo, inputs.factor, mode)[None]

    return make


def _spline(lo: np.ndarray, inputs: BaselineInputs, snapshot: int) -> np.ndarray:
    return upsample_np(lo, inputs.factor, "spline")[None]


def _spectral_noise(lo: np.ndarray, inputs: BaselineInputs, snapshot: int) -> np.ndarray:
    assert inputs.noise_spectrum is not None
    u = upsample_np(lo, inputs.factor, "spline").astype(np.float64)
    n = u.shape[-1]
    out = np.empty((inputs.n_members, *u.shape), np.float32)
    for m in range(inputs.n_members):
        rng = member_rng(inputs.seed, "spectral-noise", inputs.sim_seed, snapshot, m)
        out[m] = u + gaussian_random_field(inputs.noise_spectrum, n, rng)
    return out


def _noise(lo: np.ndarray, inputs: BaselineInputs, snapshot: int) -> np.ndarray:
    assert inputs.sigma is not None
    u = upsample_np(lo, inputs.factor, inputs.upsample).astype(np.float64)
    sigma = np.asarray(inputs.sigma, np.float64)[:, None, None]
    if inputs.level is not None:
        sigma = sigma * _input_level(lo, *inputs.level)[:, None, None]
    out = np.empty((inputs.n_members, *u.shape), np.float32)
    for m in range(inputs.n_members):
        rng = member_rng(inputs.seed, "noise", inputs.sim_seed, snapshot, m)
        out[m] = u + sigma * rng.standard_normal(u.shape)
    return out


def _input_level(
    lo: np.ndarray, mean: np.ndarray, std: np.ndarray, kmin: int, floor: float
) -> np.ndarray:
    """``(C,)`` level ``a`` of an instance-scaled model's normalized input (``level_stats``)."""
    import torch

    from mhdsr.method.config import MethodConfig
    from mhdsr.method.flow import level_stats

    lo_n = (np.asarray(lo, np.float64) - mean[:, None, None]) / std[:, None, None]
    method = MethodConfig(scale="instance", scale_kmin=int(kmin), scale_floor=float(floor))
    _, a, _ = level_stats(torch.from_numpy(lo_n)[None], method)
    return a[0, :, 0, 0].numpy()


BASELINES: dict[str, Baseline] = {
    "bilinear": Baseline(
        "bilinear", False, "periodic bilinear upsampling of the input", _interp("bilinear")
    ),
    "bicubic": Baseline(
        "bicubic", False, "periodic bicubic (Keys, a = -0.75) upsampling", _interp("bicubic")
    ),
    "spline": Baseline(
        "spline",
        False,
        "periodic cubic B-spline interpolation (prefiltered, exact at the lo nodes)",
        _spline,
    ),  # fmt: skip
    "spectral-noise": Baseline(
        "spectral-noise",
        True,
        "spline + a Gaussian random field with the missing mean train "
        "spectrum max(E_train - E_spline, 0), random phases",
        _spectral_noise,
        "noise_spectrum",
    ),  # fmt: skip
    "noise": Baseline(
        "noise",
        True,
        "the model's own starting point x0 = base + sigma eps decoded to physical units "
        "(u + sigma std_c eps, or u + sigma std_c s_r a eps for residual models; settings from "
        "the sample files' attrs)",
        _noise,
        "sigma",
    ),  # fmt: skip
}
assert tuple(BASELINES) == BASELINE_NAMES


def make_baseline(name: str, lo: np.ndarray, inputs: BaselineInputs, snapshot: int) -> np.ndarray:
    """Baseline ``name`` of one snapshot's lo input ``(C, h, w)``: ``(M, C, H, W)`` float32,
    ``M = 1`` for deterministic baselines, ``inputs.n_members`` for stochastic ones."""
    return BASELINES[name].make(lo, inputs, snapshot)
