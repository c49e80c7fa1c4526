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
from mhdsr.dataset.manifest import manifest_sha256, normalization, read_manifest
from mhdsr.dataset.normalize import Normalizer
from mhdsr.dataset.stream import ShardStream, make_loader, read_samples, shard_list
from mhdsr.errors import ConfigError, ShardError
from mhdsr.forecast.config import ForecastTrainConfig
from mhdsr.forecast.loss import forecast_loss, min_window, rollout
from mhdsr.method import symmetry
from mhdsr.runtime.distributed import DistEnv, all_reduce_sum
from mhdsr.runtime.monitor import Monitor

#: config keys that define the model: a run folder refuses to resume when one changes (the loss
#: may change between runs: e.g. fine-tuning with a longer rollout)
FROZEN_KEYS = ("model", "channels", "seed")
#: export payload ``kind`` of a forecast model
EXPORT_KIND = "forecast"


def forecast_manifest(path: str) -> dict[str, Any]:
    """The manifest of a window shard folder.

    Raises:
        ShardError: unreadable, or not a forecast window folder (names the key ``shards``).
    """
    m = read_manifest(path)
    if m.get("task") != "forecast" or "seq" not in m["shapes"]:
        raise ShardError(
            f"config key 'shards': {path} holds super-resolution shards, not forecast windows "
            "(build them with `mhdsr shard build` and task: forecast)"
        )
    return m


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
        manifest = forecast_manifest(cfg.shards)
        self.manifest_sha256 = manifest_sha256(cfg.shards)
        self.channels = cfg.channel_names
        self.ch_idx = [manifest["channels"].index(c) for c in self.channels]
        mean, std = normalization(manifest, "lo", self.channels)
        self.norm = Normalizer(np.asarray(mean, np.float32), np.asarray(std, np.float32))
        self.normalization = {"mean": [float(x) for x in mean], "std": [float(x) for x in std]}
        self.seq_shape = tuple(int(n) for n in manifest["shapes"]["seq"])
        fc = manifest["provenance"]["forecast"]
        self.dt_orbits = float(fc["dt_orbits"])
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
        self.train_urls = shard_list(cfg.shards, manifest, "train")
        self.overfit = bool(cfg.data.overfit)
        self.notes = [
            f"windows of {k} snapshots {self.dt_orbits} orbits apart on {h}x{w}; history "
            f"{m.history}, {k - m.history} one-step target(s) per window, rollout loss over "
            f"{lo.rollout_steps} step(s)"
        ]
        d = cfg.data
        self.val_keys: list[str] = []
        self.val_seq: Tensor | None = None
        if d.val_samples > 0 and manifest["splits"].get(d.val_split, {}).get("samples", 0) > 0:
            urls = shard_list(cfg.shards, manifest, d.val_split)
            keys, arrays, _ = read_samples(urls, d.val_samples, "seq.npy", self.seq_shape)
            self.val_keys = keys
            self.val_seq = torch.from_numpy(np.stack([self._norm(a) for a in arrays]))
        self.overfit_batch: Tensor | None = None
        if self.overfit:
            keys, arrays, metas = read_samples(self.train_urls, 1, "seq.npy", self.seq_shape)
            if not keys:
                raise ShardError(f"{cfg.shards}: the train split has no window (data.overfit)")
            one = torch.from_numpy(self._norm(arrays[0]))
            self.overfit_batch = one[None].repeat(d.micro_batch, 1, 1, 1, 1)
            self.notes.append(f"overfit mode: one window {keys[0]} ({metas[0].get('sim')})")

    def _norm(self, a: np.ndarray) -> np.ndarray:
        """Stored ``(K, 8, h, w)`` -> normalized forecast channels ``(K, C, h, w)``."""
        return self.norm.normalize_np(a[:, self.ch_idx])

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
        """The rank's window stream restarted at step ``segment`` (or the fixed overfit batch)."""
        if self.overfit_batch is not None:
            batch = {"x": self.overfit_batch}
            while True:
                yield batch
        d = self.cfg.data
        stream = ShardStream(
            self.train_urls,
            "seq.npy",
            self.seq_shape,
            self.ch_idx,
            self.norm,
            d.micro_batch,
            seed=self.cfg.seed,
            rank=self.env.rank,
            segment=segment,
            shuffle_buffer=d.shuffle_buffer,
        )
        yield from make_loader(stream, d.workers, d.prefetch)

    def augment(self, seq: Tensor, gen: torch.Generator) -> Tensor:
        """Keyed augmentation of windows ``(B, K, C, h, w)``: a periodic roll by whole cells and
        one symmetry element per window, the same for every frame (both map solutions of the
        equations to solutions). Draws from ``gen`` in a fixed order: rolls, then elements."""
        d = self.cfg.data
        b, _, _, h, w = seq.shape
        if d.roll:
            shifts = torch.stack(
                [
                    torch.randint(0, h, (b,), generator=gen),
                    torch.randint(0, w, (b,), generator=gen),
                ],
                dim=1,
            )
            seq = torch.stack(
                [
                    torch.roll(seq[i], (int(sy), int(sx)), (-2, -1))
                    for i, (sy, sx) in enumerate(shifts)
                ]
            )
        if d.augment == "symmetry":
            elems = symmetry.draw(b, gen)
            seq = torch.stack(
                [symmetry.apply(seq[i], int(e), self.channels) for i, e in enumerate(elems)]
            )
        return seq

    def loss(
        self, model: Any, x: Tensor, gen: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """:func:`~mhdsr.forecast.loss.forecast_loss` of the augmented windows ``x``; no flow
        time (the third entry is ``None``)."""
        loss, per, _ = self._loss(model, self.augment(x, gen))
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


def train(cfg: ForecastTrainConfig) -> dict[str, Any]:
    """Train (or resume) the forecast model of ``cfg``; returns the run summary
    (the entry point of ``mhdsr forecast train`` and ``mhdsr launch forecast``)."""
    from mhdsr.runtime.loop import fit

    return fit(cfg, ForecastTask)
