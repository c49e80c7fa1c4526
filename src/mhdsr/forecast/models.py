"""Exported forecasters, loaded to step a state forward (docs/forecast.md).

* :class:`ForecastModel`: the deterministic neural operator (the FNO of ``mhdsr forecast train``
  with ``forecaster: operator``): ``x(t + dt) = F(x(t)[, x(t - dt)])``.
* :class:`FlowForecaster`: the generative forecaster (``forecaster: flow``): one step draws
  ``x(t + dt) ~ p(. | x(t))`` by flow matching on the lo grid with the super-resolution
  engine's method (:class:`~mhdsr.method.flow.Formulation`): source mean ``u = x(t)``
  (persistence) or ``u = F(x(t))`` (the operator's mean, DINO / CorrDiff-style), level
  ``(m, a, b)`` of ``x(t)`` (instance scale), residual ``x1 = (x(t + dt) - u) / (b s_r)``; the
  network sees ``(x_t, u')`` (persistence) or ``(x_t, [u', x(t)'])`` (operator), primes
  meaning ``(. - m) / a``. A sample decodes to ``u + b s_r x``; with ``method.derive_jz`` its
  ``jz`` is the periodic centred-difference curl of its ``(Bx, By)``, as AthenaK computes it.

Both load from one export file (``torch.load(weights_only=True)``, no DeepSpeed); a flow
export that uses the operator carries the operator's weights inside it (``operator``), so a
rollout never depends on a second file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mhdsr.config import from_dict
from mhdsr.dataset import h5layout as H
from mhdsr.dataset.normalize import Normalizer
from mhdsr.errors import CheckpointError, ConfigError
from mhdsr.method.config import SamplerConfig
from mhdsr.method.noise import NoiseSource


@dataclass
class ForecastModel:
    """An exported deterministic operator ready to roll out.

    Attributes:
        model: the :class:`~mhdsr.model.fno.ForecastFNO` in eval mode on its device.
        channels: the forecast channels; ``norm`` their normalization (physical units).
        dt_orbits: the trained step; ``history`` the states it takes; ``grid`` ``(h, w)``.
        path, sha256, step, weights: the export file, its hash, its step, ``ema`` | ``raw``.
    """

    model: torch.nn.Module
    channels: list[str]
    norm: Normalizer
    dt_orbits: float
    history: int
    grid: tuple[int, int]
    path: str
    sha256: str
    step: int
    weights: str
    kind: str = H.FORECASTER_OPERATOR

    @torch.no_grad()
    def mean_of(self, x: Tensor, norm: Normalizer) -> Tensor:
        """The operator's one-step mean of states ``x`` ``(B, C, h, w)`` given in the units of
        ``norm`` (history 1), returned in those units (physical units in between)."""
        phys = norm.denormalize(x.float())
        own = self.norm.normalize(phys)[:, None]
        dt = torch.full((x.shape[0],), self.dt_orbits, device=x.device)
        y = self.model(own, dt).float()
        return norm.normalize(self.norm.denormalize(y)).to(x.dtype)


def _operator(payload: dict[str, Any], weights: str, device: torch.device | str) -> ForecastModel:
    """A :class:`ForecastModel` from an operator export payload (a file's or an embedded one)."""
    from mhdsr.model.export import export_normalization, load_weights
    from mhdsr.model.fno import FNOConfig, ForecastFNO

    where = payload["path"]
    try:
        mcfg = from_dict(FNOConfig, payload["model"])
        meth = payload["method"]
        dt, hist = float(meth["dt_orbits"]), int(meth["history"])
        grid = (int(meth["grid"][0]), int(meth["grid"][1]))
    except (ConfigError, KeyError, TypeError, ValueError, IndexError) as e:
        raise CheckpointError(f"{where}: operator model config: {e}") from None
    channels, mean, std = export_normalization(payload, mcfg.channels)
    model = load_weights(ForecastFNO(mcfg), payload, weights, device)
    return ForecastModel(
        model=model, channels=channels, norm=Normalizer(mean, std), dt_orbits=dt, history=hist,
        grid=grid, path=where, sha256=str(payload["sha256"]), step=int(payload["step"]),
        weights=weights,
    )  # fmt: skip


def load_operator(checkpoint: str, weights: str = "ema", device: torch.device | str = "cpu",
                  key: str = "checkpoint") -> tuple[ForecastModel, dict[str, Any]]:  # fmt: skip
    """The operator export ``checkpoint`` names and its payload (to embed in a flow export).

    Raises:
        CheckpointError: nothing there, not a forecast export, or a generative forecaster
            (names ``key``).
    """
    from mhdsr.model.export import open_export

    try:
        payload = open_export(checkpoint, forecast=True)
    except CheckpointError as e:  # name the key the operator came from
        raise CheckpointError(
            str(e).replace("config key 'checkpoint'", f"config key '{key}'")
        ) from None
    if payload.get(H.FORECASTER, H.FORECASTER_OPERATOR) != H.FORECASTER_OPERATOR:
        raise CheckpointError(
            f"config key '{key}': {payload['path']} is a generative forecaster, not the "
            "deterministic operator (an export of `mhdsr forecast train` with forecaster: operator)"
        )
    return _operator(payload, weights, device), payload


def embedded_operator(fm: ForecastModel, payload: dict[str, Any]) -> dict[str, Any]:
    """What a flow export stores of its operator: config, channels, normalization, method,
    the chosen weights (as ``ema`` and ``raw``, so either name loads them), provenance."""
    w = payload[fm.weights]
    return {
        "model": payload["model"], "channels": list(payload["channels"]),
        "normalization": payload["normalization"], "method": payload["method"],
        "raw": w, "ema": w, "path": fm.path, "sha256": fm.sha256, "step": fm.step,
        "weights": fm.weights,
    }  # fmt: skip


@dataclass
class FlowForecaster:
    """An exported generative forecaster ready to roll out (see the module docstring).

    Attributes:
        net: the UNet velocity network in eval mode; ``form`` the method it was trained with.
        channels, norm, dt_orbits, grid: as :class:`ForecastModel` (``history`` is 1).
        source: ``persistence`` | ``operator``; ``operator`` the embedded operator or None.
        path, sha256, step, weights: the export file, its hash, its step, ``ema`` | ``raw``.
    """

    net: torch.nn.Module
    form: Any
    channels: list[str]
    norm: Normalizer
    dt_orbits: float
    grid: tuple[int, int]
    source: str
    path: str
    sha256: str
    step: int
    weights: str
    operator: ForecastModel | None = None
    history: int = 1
    kind: str = field(default=H.FORECASTER_FLOW)

    def source_of(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(u, extra)`` of normalized states ``x`` ``(B, C, h, w)``: the source mean and the
        further conditioning (``x(t)'`` for the operator source, else None)."""
        return source_mean(x, self.source, self.operator, self.norm, self.form)

    @torch.no_grad()
    def step_once(self, x: Tensor, noise: NoiseSource, sampler: SamplerConfig) -> Tensor:
        """One forecast step: ``(B, C, h, w)`` normalized states -> one draw of the states
        ``dt_orbits`` later, normalized; row ``b`` uses ``noise``'s stream ``b``. Costs the
        sampler's NFE network evaluations."""
        u, extra = self.source_of(x)
        y = self.form.sample_pair(
            sampler.name, self.net, u, self.form.lo_stats(x), sampler.noise(noise), n_steps=sampler.steps,
            grid=sampler.grid, rho=sampler.rho, options=dict(sampler.options), extra=extra,
        )  # fmt: skip
        if self.form.method.derive_jz and {"Bx", "By", "jz"} <= set(self.channels):
            from mhdsr.method.flow import derive_current

            y = self.norm.normalize(derive_current(self.norm.denormalize(y), self.channels))
        return y


def source_mean(
    x: Tensor, source: str, operator: ForecastModel | None, norm: Normalizer, form: Any
) -> tuple[Tensor, Tensor | None]:
    """``(u, extra)`` for normalized states ``x`` ``(B, C, h, w)`` (training and rollouts share
    it): persistence ``u = x``, no extra; operator ``u = F(x)`` and ``extra = (x - m) / a``,
    the state in the network's units (level ``(m, a, b)`` of ``x``)."""
    if source == "persistence":
        return x, None
    if operator is None:
        raise ConfigError("forecast.source=operator needs the operator")
    return operator.mean_of(x, norm), form.cond(x, form.lo_stats(x))


def load_forecaster(
    checkpoint: str, weights: str = "ema", device: torch.device | str = "cpu"
) -> ForecastModel | FlowForecaster:
    """Load a forecast export of either kind (``torch.load(weights_only=True)``).

    Raises:
        CheckpointError: nothing exported there, not a forecast export (e.g. a
            super-resolution model), or weights that do not fit the model config (names the
            key ``checkpoint``).
    """
    from mhdsr.model.export import export_normalization, load_weights, open_export

    payload = open_export(checkpoint, forecast=True)
    kind = payload.get(H.FORECASTER, H.FORECASTER_OPERATOR)
    if kind == H.FORECASTER_OPERATOR:
        return _operator(payload, weights, device)
    if kind != H.FORECASTER_FLOW:
        raise CheckpointError(
            f"config key 'checkpoint': {payload['path']}: unknown forecaster {kind!r}"
        )
    from mhdsr.method.config import MethodConfig
    from mhdsr.method.flow import Formulation
    from mhdsr.model import UNet
    from mhdsr.model.config import ModelConfig

    where = payload["path"]
    try:
        mcfg = from_dict(ModelConfig, payload["model"])
        method = from_dict(MethodConfig, payload["method"])
        fc = payload["forecast"]
        dt, grid, source = (
            float(fc["dt_orbits"]),
            (int(fc["grid"][0]), int(fc["grid"][1])),
            str(fc["source"]),
        )
        r = payload["normalization"].get("residual_std")
        form = Formulation(method, None if r is None else torch.tensor(r, dtype=torch.float32))
    except (ConfigError, KeyError, TypeError, ValueError, IndexError) as e:
        raise CheckpointError(
            f"config key 'checkpoint': {where}: flow forecaster config: {e}"
        ) from None
    channels, mean, std = export_normalization(payload, mcfg.channels)
    net = load_weights(UNet(mcfg), payload, weights, device)
    op = None
    if source == "operator":
        emb = payload.get("operator") or {}
        if not emb:
            raise CheckpointError(
                f"config key 'checkpoint': {where}: source operator but no embedded operator"
            )
        op = _operator({**emb, "path": f"{where} (embedded operator)"}, "ema", device)
    return FlowForecaster(
        net=net, form=form, channels=channels, norm=Normalizer(mean, std), dt_orbits=dt, grid=grid,
        source=source, path=where, sha256=str(payload["sha256"]), step=int(payload["step"]),
        weights=weights, operator=op,
    )  # fmt: skip


def load_forecast_model(
    checkpoint: str, weights: str = "ema", device: torch.device | str = "cpu"
) -> ForecastModel | FlowForecaster:
    """:func:`load_forecaster` (the name the rollout has always used)."""
    return load_forecaster(checkpoint, weights, device)
