"""The generative forecaster's training task (``mhdsr forecast train`` with ``forecaster:
flow``), trained by :func:`mhdsr.runtime.loop.fit` exactly as super-resolution and the operator
are: DeepSpeed, EMA, checkpoints, exact resume, logging and fault injection are the loop's.

One engine, another pair (docs/forecast.md "The generative forecaster"): the method, loss and
samplers are :class:`~mhdsr.method.flow.Formulation`'s (:meth:`~mhdsr.method.flow.Formulation.pair_loss`),
the network is the super-resolution UNet, the windows and their augmentation are
:class:`~mhdsr.forecast.data.WindowData`'s. A batch: windows ``(B, K, C, h, w)`` (normalized,
kind ``lo``) -> keyed roll + symmetry element per window -> one pair position ``s`` per window,
uniform in ``0 .. K-2`` -> ``x = x_s``, ``y = x_{s+1}`` -> source mean ``u`` (``x`` or the
operator's ``F(x)``), level ``(m, a, b)`` of ``x`` -> flow-matching loss of the residual
``(y - u) / (b s_r)``. ``s_r`` is the per-channel std of ``(y - u) / b`` over every pair of the
first ``method.residual_samples`` train windows.

Draw order from the step's generator (exact resume relies on it): rolls, symmetry elements
(:meth:`WindowData.augment`), pair positions, then ``eps`` and ``t``
(:meth:`~mhdsr.method.flow.Formulation.pair_loss`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mhdsr.config import to_dict
from mhdsr.dataset import h5layout as H
from mhdsr.errors import ConfigError
from mhdsr.forecast.config import FlowForecastTrainConfig
from mhdsr.forecast.data import WindowData
from mhdsr.forecast.models import embedded_operator, load_operator, source_mean
from mhdsr.method.flow import Formulation, residual_scale
from mhdsr.method.noise import seed_for
from mhdsr.runtime.distributed import DistEnv, all_reduce_sum
from mhdsr.runtime.monitor import Monitor

#: config keys that define the model: a run folder refuses to resume when one changes
FROZEN_KEYS = ("model", "method", "forecast", "channels", "seed")
#: key of the validation noise generators: validation pair i uses (seed, 998, i)
VAL_KEY = 998


class FlowForecastTask:
    """Conditional flow matching of ``x(t + dt) | x(t)`` on the window shards ``cfg.shards``.

    Args:
        cfg: the generative forecaster's train config.
        env: this process's place in the job.

    Raises:
        ShardError: not a window folder, missing shards or validation windows.
        ConfigError: windows shorter than 2, a grid the UNet cannot take, an operator of
            another cadence, grid or channel set, or of history > 1 (names the key).
        CheckpointError: the operator export is missing or not an operator.
    """

    frozen_keys = FROZEN_KEYS

    def __init__(self, cfg: FlowForecastTrainConfig, env: DistEnv) -> None:
        self.cfg, self.env = cfg, env
        self.data = data = WindowData(cfg, env)
        self.manifest_sha256 = data.manifest_sha256
        self.channels = data.channels
        self.norm = data.norm
        self.normalization = dict(data.normalization)
        k, _, h, w = data.seq_shape
        if k < 2:
            raise ConfigError(
                f"config key 'shards': {cfg.shards} has windows of {k} snapshot(s); the pairs need 2"
            )
        mult = cfg.model.size_multiple
        if h % mult or w % mult:
            raise ConfigError(
                f"config key 'model.mults': the {h}x{w} grid is not divisible by {mult}"
            )
        self.dt_orbits, self.grid = data.dt_orbits, (h, w)
        self.overfit = bool(cfg.data.overfit)
        fc = cfg.forecast
        self.operator = None
        self._operator_payload: dict[str, Any] = {}
        if fc.source == "operator":
            op, payload = load_operator(
                fc.operator, fc.operator_weights, env.device, "forecast.operator"
            )
            problems = []
            if abs(op.dt_orbits - self.dt_orbits) > 1e-9:
                problems.append(f"its step is {op.dt_orbits} orbits, the windows' {self.dt_orbits}")
            if op.history != 1:
                problems.append(
                    f"its history is {op.history} (the generative forecaster conditions on x(t) alone: 1)"
                )
            if list(op.channels) != list(self.channels):
                problems.append(f"its channels are {op.channels}, this config's {self.channels}")
            if tuple(op.grid) != self.grid:
                problems.append(f"its grid is {op.grid}, the windows' {self.grid}")
            if problems:
                raise ConfigError(
                    f"config key 'forecast.operator': {op.path}: " + "; ".join(problems)
                )
            self.operator, self._operator_payload = op, embedded_operator(op, payload)
        m = cfg.method
        self.form = Formulation(
            m, torch.ones(len(self.channels)) if m.formulation == "residual" else None
        )
        self.notes = [
            f"generative forecaster: pairs of windows of {k} snapshots {self.dt_orbits} orbits "
            f"apart on {h}x{w}; source {fc.source}", *data.notes,
        ]  # fmt: skip
        if m.formulation == "residual":
            r = self._residual_std(data.train_windows(m.residual_samples))
            self.form = Formulation(m, r.float())
            self.normalization["residual_std"] = [float(x) for x in r]
            self.notes.append(
                f"residual scale s_r over the pairs of {m.residual_samples} train windows: "
                + ", ".join(f"{c} {x:.3g}" for c, x in zip(self.channels, r))
            )
        self.val_keys = data.val_keys
        self.val_seq = data.val_seq

    def _residual_std(self, windows: list[Any]) -> Tensor:
        """Per-channel scale of ``(x_{s+1} - u(x_s)) / b(x_s)`` over every pair
        (:func:`~mhdsr.method.flow.residual_scale` with ``method.residual_estimator``)."""
        if not windows:
            raise ConfigError(
                f"config key 'shards': {self.cfg.shards}: no train window to measure the residual scale"
            )
        seq = torch.from_numpy(np.stack(windows))  # (N, K, C, h, w)
        x = seq[:, :-1].flatten(0, 1).to(self.env.device)
        y = seq[:, 1:].flatten(0, 1).to(self.env.device)
        u, _ = self._source(x)
        _, _, b = self.form.lo_stats(x)
        res = ((y - u) / b).double()
        return residual_scale(res, self.form.method.residual_estimator).cpu()

    def _source(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        return source_mean(x, self.cfg.forecast.source, self.operator, self.norm, self.form)

    def _pair_loss(
        self, model: Any, seq: Tensor, gen: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Loss of windows ``(B, K, C, h, w)`` (already augmented): a pair position per window
        drawn from ``gen``, then :meth:`Formulation.pair_loss`."""
        b, k = seq.shape[:2]
        pos = (
            torch.randint(0, k - 1, (b,), generator=gen)
            if k > 2
            else torch.zeros(b, dtype=torch.long)
        )
        rows = torch.arange(b)
        x, y = seq[rows, pos.to(seq.device)], seq[rows, pos.to(seq.device) + 1]
        u, extra = self._source(x)
        return self.form.pair_loss(model, y, u, self.form.lo_stats(x), gen, extra)

    # ------------------------------------------------------------------ what fit() calls

    def build_model(self) -> nn.Module:
        """The UNet of ``cfg.model`` (conditioning width set by the source)."""
        from mhdsr.model import UNet

        return UNet(self.cfg.model)

    def batches(self, segment: int) -> Iterator[dict[str, Any]]:
        """The rank's window stream (:meth:`~mhdsr.forecast.data.WindowData.batches`)."""
        return self.data.batches(segment)

    def loss(
        self, model: Any, x: Tensor, gen: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Flow-matching loss of the augmented windows ``x`` (see the module docstring)."""
        return self._pair_loss(model, self.data.augment(x, gen), gen)

    @torch.no_grad()
    def validate(self, model: nn.Module, ema_model: nn.Module) -> dict[str, float]:
        """Mean flow-matching loss of raw and EMA weights on the fixed validation windows
        (unaugmented; fixed per-window noise, t and pair; rank r takes windows r, r + world,
        ...). Collective: every rank calls it."""
        if self.val_seq is None:
            return {}
        env = self.env
        sums = torch.zeros(3, dtype=torch.float64)
        for i in range(env.rank, len(self.val_keys), env.world_size):
            seq = self.val_seq[i : i + 1].to(env.device)
            losses = []
            for m in (model, ema_model):
                gen = torch.Generator().manual_seed(seed_for(self.cfg.seed, VAL_KEY, i))
                losses.append(float(self._pair_loss(m, seq, gen)[0]))
            sums += torch.tensor([*losses, 1.0], dtype=torch.float64)
        all_reduce_sum(sums)
        n = max(sums[2].item(), 1.0)
        return {"val/loss": sums[0].item() / n, "val/loss_ema": sums[1].item() / n}

    def images(
        self, step: int, model: nn.Module, ema_model: nn.Module, monitor: Monitor
    ) -> dict[str, float]:
        """No panels: the rollout and ``mhdsr eval`` judge the forecast (per lead time)."""
        return {}

    def export_fields(self) -> dict[str, Any]:
        """What a rollout needs: the network and method, channels, normalization (with
        ``residual_std``), the cadence and grid, the source and the embedded operator."""
        k = self.data.seq_shape[0]
        return {
            "kind": "forecast",
            H.FORECASTER: H.FORECASTER_FLOW,
            "model": to_dict(self.cfg.model),
            "channels": list(self.channels),
            "normalization": {k2: list(v) for k2, v in self.normalization.items()},
            "method": to_dict(self.cfg.method),
            "forecast": {
                "dt_orbits": self.dt_orbits,
                "history": 1,
                "window": int(k),
                "grid": [int(self.grid[0]), int(self.grid[1])],
                "source": self.cfg.forecast.source,
            },  # fmt: skip
            "operator": self._operator_payload,
        }

    def describe(self) -> str:
        return (
            f"generative forecast channels {','.join(self.channels)}, dt {self.dt_orbits} orbits, "
            f"source {self.cfg.forecast.source}"
        )


def train(cfg: FlowForecastTrainConfig) -> dict[str, Any]:
    """Train (or resume) the generative forecaster of ``cfg``; returns the run summary."""
    from mhdsr.runtime.loop import fit

    return fit(cfg, FlowForecastTask)
