"""The forecast training task that :func:`mhdsr.runtime.loop.fit` trains (``mhdsr forecast
train``): DeepSpeed, EMA, checkpoints, exact resume, logging and fault injection come from the
shared loop, exactly as for ``mhdsr train``.

A batch from the tar file to the loss: :class:`~mhdsr.dataset.stream.ShardStream` reads member
``seq.npy`` of the window shards (``(K, 8, h, w)``), selects the forecast channels on axis -3 and
normalizes them with the train windows' statistics (kind ``lo``); :meth:`ForecastTask.loss`
applies a keyed random periodic roll and symmetry element to each whole window, then
:func:`~mhdsr.forecast.loss.forecast_loss` (one-step + rolled-out). Validation runs the same
loss on fixed windows of the validation split, for the raw and EMA weights and for persistence.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mhdsr.config import to_dict
from mhdsr.errors import ConfigError
from mhdsr.forecast.config import ForecastTrainConfig
from mhdsr.forecast.data import WindowData, forecast_manifest
from mhdsr.forecast.loss import forecast_loss, min_window, rollout
from mhdsr.runtime.distributed import DistEnv, all_reduce_sum
from mhdsr.runtime.monitor import Monitor

__all__ = ["EXPORT_KIND", "FROZEN_KEYS", "ForecastTask", "forecast_manifest", "train"]

#: config keys that define the model: a run folder refuses to resume when one changes (the loss
#: may change between runs: e.g. fine-tuning with a longer rollout)
FROZEN_KEYS = ("model", "channels", "seed")
#: export payload ``kind`` of a forecast model
EXPORT_KIND = "forecast"


class ForecastTask:
    """Neural-operator forecasting on the window shards ``cfg.shards``.

    Args:
        cfg: the forecast train config.
        env: this process's place in the job.

    Raises:
        ShardError: not a window folder, missing shards or validation windows.
        ConfigError: windows too short for ``model.history`` + ``loss.rollout_steps``, or a grid
            smaller than ``model.modes``.
    """

    frozen_keys = FROZEN_KEYS

    def __init__(self, cfg: ForecastTrainConfig, env: DistEnv) -> None:
        self.cfg, self.env = cfg, env
        self.data = data = WindowData(cfg, env)
        self.manifest_sha256 = data.manifest_sha256
        self.channels = data.channels
        self.norm = data.norm
        self.normalization = data.normalization
        self.seq_shape = data.seq_shape
        self.dt_orbits = data.dt_orbits
        k, _, h, w = self.seq_shape
        m, lo = cfg.model, cfg.loss
        need = min_window(m.history, lo.rollout_steps)
        if k < need:
            raise ConfigError(
                f"config keys 'model.history'={m.history} / 'loss.rollout_steps'={lo.rollout_steps}: "
                f"need windows of {need} snapshots, {cfg.shards} has {k} (rebuild with "
                f"forecast.length={need} or lower them)"
            )
        if min(h, w) < m.modes:
            raise ConfigError(
                f"config key 'model.modes': {m.modes} Fourier modes do not fit the {h}x{w} grid"
            )
        self.grid = (h, w)
        self.overfit = bool(cfg.data.overfit)
        self.notes = [
            f"windows of {k} snapshots {self.dt_orbits} orbits apart on {h}x{w}; history "
            f"{m.history}, {k - m.history} one-step target(s) per window, rollout loss over "
            f"{lo.rollout_steps} step(s)",
            *data.notes,
        ]
        self.val_keys = data.val_keys
        self.val_seq = data.val_seq

    def _dt(self, b: int, device: torch.device) -> Tensor:
        return torch.full((b,), self.dt_orbits, dtype=torch.float32, device=device)

    def _loss(self, model: Any, seq: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        lo = self.cfg.loss
        return forecast_loss(
            model, seq, self._dt(seq.shape[0], seq.device),
            history=self.cfg.model.history, rollout_steps=lo.rollout_steps,
            one_step_weight=lo.one_step_weight, rollout_weight=lo.rollout_weight,
            loss_scale=lo.loss_scale,
        )  # fmt: skip

    # ------------------------------------------------------------------ what fit() calls

    def build_model(self) -> nn.Module:
        """The FNO of ``cfg.model``."""
        from mhdsr.model.fno import ForecastFNO

        return ForecastFNO(self.cfg.model)

    def batches(self, segment: int) -> Iterator[dict[str, Any]]:
        """The rank's window stream (:meth:`~mhdsr.forecast.data.WindowData.batches`)."""
        return self.data.batches(segment)

    def loss(
        self, model: Any, x: Tensor, gen: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """:func:`~mhdsr.forecast.loss.forecast_loss` of the augmented windows ``x``; no flow
        time (the third entry is ``None``)."""
        loss, per, _ = self._loss(model, self.data.augment(x, gen))
        return loss, per, None

    @torch.no_grad()
    def validate(self, model: nn.Module, ema_model: nn.Module) -> dict[str, float]:
        """One-step and rollout losses of the raw and EMA weights and of persistence
        (``x(t + dt) = x(t)``) on the fixed validation windows, unaugmented (rank r takes
        windows r, r + world, ...). Collective: every rank calls it."""
        if self.val_seq is None:
            return {}
        env = self.env
        persist = _Persistence()
        names = ("raw", "ema", "persistence")
        sums = torch.zeros(2 * len(names) + 1, dtype=torch.float64)
        for i in range(env.rank, len(self.val_keys), env.world_size):
            seq = self.val_seq[i : i + 1].to(env.device)
            row = []
            for m in (model, ema_model, persist):
                _, _, parts = forecast_loss(
                    m, seq, self._dt(1, seq.device), history=self.cfg.model.history,
                    rollout_steps=max(1, self.cfg.loss.rollout_steps),
                )  # fmt: skip
                row += [float(parts["one_step"][0]), float(parts["rollout"][0])]
            sums += torch.tensor([*row, 1.0], dtype=torch.float64)
        all_reduce_sum(sums)
        n = max(sums[-1].item(), 1.0)
        out = {}
        for j, name in enumerate(names):
            suffix = "" if name == "raw" else f"_{name}"
            out[f"val/one_step{suffix}"] = sums[2 * j].item() / n
            out[f"val/rollout{suffix}"] = sums[2 * j + 1].item() / n
        return out

    def images(
        self, step: int, model: nn.Module, ema_model: nn.Module, monitor: Monitor
    ) -> dict[str, float]:
        """Panels of the first validation window (main rank): the last input state, the truth
        and the raw / EMA rollouts and persistence at the last lead of the window, and the
        lo-grid spectra of each, in physical units."""
        if self.val_seq is None or not monitor.enabled:
            return {}
        from mhdsr.analysis.spectra import radial_spectrum
        from mhdsr.plots import comparison_panel, spectra_figure

        hist = self.cfg.model.history
        seq = self.val_seq[:1].to(self.env.device)
        steps = seq.shape[1] - hist
        dt = self._dt(1, seq.device)
        fields = {"x(t0)": seq[0, hist - 1]}
        fields[f"raw +{steps}dt"] = rollout(model, seq[:, :hist], dt, steps)[0, -1]
        fields[f"EMA +{steps}dt"] = rollout(ema_model, seq[:, :hist], dt, steps)[0, -1]
        fields["truth"] = seq[0, -1]
        phys = {k: self.norm.denormalize(v.float()).cpu().numpy() for k, v in fields.items()}
        key = self.val_keys[0]
        fig = comparison_panel(
            phys, self.channels, reference="truth",
            diffs={"EMA - truth": (f"EMA +{steps}dt", "truth"), "x(t0) - truth": ("x(t0)", "truth")},
            title=f"{key}: lead {steps} x {self.dt_orbits} orbits, step {step}",
            shared_diff_scale=True,
        )  # fmt: skip
        monitor.figure("panels/val0", fig, step)
        spectra = {}
        for name, f in phys.items():
            k, e = radial_spectrum(f.astype(np.float64))
            spectra[name] = (k, e)
        monitor.figure("spectra/val0", spectra_figure(spectra, self.channels), step)
        return {}

    def export_fields(self) -> dict[str, Any]:
        """What a rollout needs: the model config, channels, normalization, the cadence."""
        k, _, h, w = self.seq_shape
        return {
            "kind": EXPORT_KIND,
            "model": to_dict(self.cfg.model),
            "channels": list(self.channels),
            "normalization": {
                "mean": [float(x) for x in self.norm.mean],
                "std": [float(x) for x in self.norm.std],
            },
            "method": {
                "kind": EXPORT_KIND,
                "dt_orbits": self.dt_orbits,
                "history": int(self.cfg.model.history),
                "window": int(k),
                "grid": [int(h), int(w)],
                "loss": to_dict(self.cfg.loss),
            },
        }

    def describe(self) -> str:
        return f"forecast channels {','.join(self.channels)}, dt {self.dt_orbits} orbits"


class _Persistence(nn.Module):
    """The persistence baseline as a model: ``x(t + dt) = x(t)``."""

    def forward(self, states: Tensor, dt: Tensor) -> Tensor:
        return states[:, -1]


def task_class(cfg: Any) -> type:
    """The task that trains ``cfg``: :class:`ForecastTask` (the operator) or
    :class:`~mhdsr.forecast.flow.FlowForecastTask` (``forecaster: flow``)."""
    if getattr(cfg, "forecaster", "operator") == "flow":
        from mhdsr.forecast.flow import FlowForecastTask

        return FlowForecastTask
    return ForecastTask


def train(cfg: Any) -> dict[str, Any]:
    """Train (or resume) the forecaster of ``cfg`` (either kind); returns the run summary
    (the entry point of ``mhdsr forecast train`` and ``mhdsr launch forecast``)."""
    from mhdsr.runtime.loop import fit

    return fit(cfg, task_class(cfg))
