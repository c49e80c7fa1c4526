"""The super-resolution training task that :func:`mhdsr.runtime.loop.fit` trains.

A batch from the tar file to the loss: :class:`~mhdsr.dataset.stream.ShardStream` yields
normalized ``hi`` fields ``(B, C, H, W)`` of the trained channels; :meth:`SRTask.loss` hands them
to :meth:`mhdsr.method.flow.Formulation.loss` (periodic roll/crop, ``lo = avgpool2(hi)``, with
``method.degrade`` then filtered by the transfer function fitted at start
(:mod:`mhdsr.train.degrade`), ``u = Up(lo)``, keyed noise and time, flow-matching loss). Validation uses the same function on
full fields with fixed per-sample generators; panels and spectra go to TensorBoard
(:mod:`mhdsr.train.panels`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mhdsr.config import to_dict
from mhdsr.dataset.manifest import manifest_sha256, normalization, read_manifest
from mhdsr.dataset.normalize import Normalizer
from mhdsr.dataset.stream import Loader, ShardStream, make_loader, read_samples, shard_list
from mhdsr.errors import ShardError
from mhdsr.method.flow import Formulation, residual_std
from mhdsr.method.noise import seed_for
from mhdsr.runtime.distributed import DistEnv, all_reduce_sum
from mhdsr.runtime.monitor import Monitor
from mhdsr.train.config import TrainConfig
from mhdsr.units import orbits

#: config keys that define the model: a run folder refuses to resume when one changes
FROZEN_KEYS = ("model", "method", "channels", "seed")
#: key of the validation noise generators: sample i of the validation set uses (seed, 999, i)
VAL_KEY = 999


class SRTask:
    """Flow-matching super-resolution on the shards ``cfg.shards`` (see the module docstring).

    Args:
        cfg: the train config.
        env: this process's place in the job.

    Raises:
        ShardError: unreadable manifest, missing shards or validation samples.
    """

    frozen_keys = FROZEN_KEYS

    def __init__(self, cfg: TrainConfig, env: DistEnv) -> None:
        self.cfg, self.env = cfg, env
        manifest = read_manifest(cfg.shards)
        if manifest.get("task", "sr") != "sr" or "hi" not in manifest["shapes"]:
            raise ShardError(
                f"config key 'shards': {cfg.shards} holds {manifest.get('task')} shards (windows of "
                "lo snapshots), not super-resolution pairs; train them with `mhdsr forecast train`, "
                "or build SR shards (configs/shard/demo.yaml)"
            )
        self.manifest_sha256 = manifest_sha256(cfg.shards)
        self.channels = cfg.channel_names
        self.ch_idx = [manifest["channels"].index(c) for c in self.channels]
        mean, std = normalization(manifest, "hi", self.channels)
        self.norm = Normalizer(np.asarray(mean, np.float32), np.asarray(std, np.float32))
        self.normalization = {"mean": [float(x) for x in mean], "std": [float(x) for x in std]}
        self.hi_shape = tuple(manifest["shapes"]["hi"])
        self.train_urls = shard_list(cfg.shards, manifest, "train")
        self.overfit = bool(cfg.data.overfit)
        self.notes: list[str] = []
        self.augment = self.channels if cfg.data.augment == "symmetry" else None
        d, m = cfg.data, cfg.method

        # degradation matching: the transfer function T from native-lo runs and the first N
        # train samples (deterministic; refitted identically on resume, recorded with every
        # checkpoint and export, mhdsr.train.degrade)
        transfer = None
        if m.degrade:
            from mhdsr.train.degrade import fit_degrade

            _, arrays, metas = read_samples(
                self.train_urls, m.degrade_samples, "hi.npy", self.hi_shape, skip_unreadable=True
            )
            transfer, notes = fit_degrade(
                m, self.channels, self.norm, [self._norm(a) for a in arrays], metas, manifest
            )
            self.normalization["degrade_transfer"] = transfer.tolist()
            self.notes += notes

        # the residual scale s_r (residual formulation): first N train samples, deterministic
        r = None
        if m.formulation == "residual":
            _, arrays, _ = read_samples(
                self.train_urls, m.residual_samples, "hi.npy", self.hi_shape, skip_unreadable=True
            )  # a corrupt train shard is skipped here as by the training stream
            r = residual_std([torch.from_numpy(self._norm(a)) for a in arrays], m, transfer)
            self.normalization["residual_std"] = [float(x) for x in r]
            self.notes.append(
                f"residual formulation: s_r over {len(arrays)} train samples (upsample "
                f"{m.upsample}, scale {m.scale}{', degraded lo' if m.degrade else ''}): "
                + ", ".join(f"{c} {x:.3g}" for c, x in zip(self.channels, r))
            )
        self.form = Formulation(m, None if r is None else r.float(), transfer)

        # fixed validation set (full fields, normalized, trained channels, turbulent window)
        self.val_keys: list[str] = []
        self.val_hi: Tensor | None = None
        if d.val_samples > 0 and manifest["splits"].get(d.val_split, {}).get("samples", 0) > 0:
            urls = shard_list(cfg.shards, manifest, d.val_split)
            omega = {
                k: float((v.get("params") or {}).get("omega0") or 1.0)
                for k, v in _sims(manifest).items()
            }

            def in_window(meta: dict[str, Any]) -> bool:
                om = omega.get(meta.get("sim"), 1.0)
                return orbits(meta.get("time", 0.0), om) >= d.val_orbit_start

            keys, arrays, _ = read_samples(urls, d.val_samples, "hi.npy", self.hi_shape, in_window)
            if not keys:
                raise ShardError(
                    f"config key 'data.val_orbit_start': split {d.val_split!r} of {cfg.shards} has no "
                    f"snapshot at or after {d.val_orbit_start} orbits (set data.val_orbit_start=0, "
                    "another data.val_split, or data.val_samples=0)"
                )
            self.val_keys = keys
            self.val_hi = torch.from_numpy(np.stack([self._norm(a) for a in arrays]))

        self.overfit_batch: Tensor | None = None
        self._loader: Loader | None = None
        if self.overfit:
            keys, arrays, metas = read_samples(self.train_urls, 1, "hi.npy", self.hi_shape)
            one = torch.from_numpy(self._norm(arrays[0]))
            self.overfit_batch = one[None].repeat(d.micro_batch, 1, 1, 1)
            self.notes.append(
                f"overfit mode: one sample {keys[0]} (seed {metas[0].get('seed')}, snapshot "
                f"{metas[0].get('snapshot')}), channels {self.channels}"
            )

    def _norm(self, a: np.ndarray) -> np.ndarray:
        """Stored ``(8, H, W)`` -> normalized trained channels."""
        return self.norm.normalize_np(a[self.ch_idx])

    # ------------------------------------------------------------------ what fit() calls

    def build_model(self) -> nn.Module:
        """The UNet of ``cfg.model``."""
        from mhdsr.model import UNet

        return UNet(self.cfg.model)

    def flops_per_sample(self, model: nn.Module) -> float:
        """Model FLOPs of one training sample: forward + backward of ``model`` at the training
        input size (``data.crop`` or the full field), counted with FlopCounterMode on a meta
        copy (:func:`mhdsr.runtime.flops.training_flops`)."""
        from mhdsr.runtime.flops import training_flops

        c = len(self.channels)
        h, w = (self.cfg.data.crop,) * 2 if self.cfg.data.crop else self.hi_shape[-2:]

        def inputs(dev: torch.device) -> tuple[Tensor, Tensor, Tensor]:
            x = torch.empty(1, c, h, w, device=dev)
            return x, torch.empty(1, device=dev), torch.empty(1, c, h, w, device=dev)

        return training_flops(model, inputs)[1]

    def batches(self, segment: int) -> Iterator[dict[str, Any]]:
        """The rank's stream restarted at step ``segment`` (or the fixed overfit batch); with
        ``data.persistent_workers`` the same loader workers serve every segment."""
        if self.overfit_batch is not None:
            return itertools.repeat({"x": self.overfit_batch})
        d = self.cfg.data
        if self._loader is None or not d.persistent_workers:
            stream = ShardStream(
                self.train_urls,
                "hi.npy",
                self.hi_shape,
                self.ch_idx,
                self.norm,
                d.micro_batch,
                seed=self.cfg.seed,
                rank=self.env.rank,
                segment=segment,
                shuffle_buffer=d.shuffle_buffer,
            )
            self._loader = make_loader(
                stream,
                d.workers,
                d.prefetch,
                pin_memory=d.pin_memory and self.env.device.type == "cuda",
                persistent=d.persistent_workers,
            )
        return self._loader.segment(segment)

    def loss(
        self, model: Any, x: Tensor, gen: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """:meth:`~mhdsr.method.flow.Formulation.loss` with the configured crop and roll."""
        d = self.cfg.data
        return self.form.loss(model, x, gen, crop=d.crop, roll=d.roll, augment=self.augment)

    @torch.no_grad()
    def validate(self, model: nn.Module, ema_model: nn.Module) -> dict[str, float]:
        """Mean flow-matching loss of raw and EMA weights over the fixed validation samples
        (rank r takes samples r, r + world, ...; fixed per-sample noise and t; full fields).
        Collective: every rank calls it."""
        if self.val_hi is None:
            return {}
        env, cfg = self.env, self.cfg
        sums = torch.zeros(3, dtype=torch.float64)
        for i in range(env.rank, len(self.val_keys), env.world_size):
            x1 = self.val_hi[i : i + 1].to(env.device)
            losses = []
            for m in (model, ema_model):  # the same noise and t for both weights
                gen = torch.Generator().manual_seed(seed_for(cfg.seed, VAL_KEY, i))
                losses.append(float(self.form.loss(m, x1, gen)[0]))
            sums += torch.tensor([*losses, 1.0], dtype=torch.float64)
        all_reduce_sum(sums)
        n = max(sums[2].item(), 1.0)
        return {"val/loss": sums[0].item() / n, "val/loss_ema": sums[1].item() / n}

    def images(
        self, step: int, model: nn.Module, ema_model: nn.Module, monitor: Monitor
    ) -> dict[str, float]:
        """Comparison panels and spectra of the first validation sample (main rank)."""
        if self.val_hi is None or not monitor.enabled:
            return {}
        from mhdsr.train.panels import draw_panels

        return draw_panels(
            monitor, self.cfg, step, model, ema_model, self.val_hi[:1], self.val_keys[:1],
            self.channels, self.norm, self.form,
        )  # fmt: skip

    def export_fields(self) -> dict[str, Any]:
        """What sampling needs: model config, channels, normalization, method."""
        return {
            "model": to_dict(self.cfg.model),
            "channels": list(self.channels),
            "normalization": {
                "mean": [float(x) for x in self.norm.mean],
                "std": [float(x) for x in self.norm.std],
                **{
                    k: self.normalization[k]
                    for k in ("residual_std", "degrade_transfer")
                    if k in self.normalization
                },
            },
            "method": to_dict(self.cfg.method),
        }

    def describe(self) -> str:
        return "channels " + ",".join(self.channels)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or resume) the super-resolution model of ``cfg``; returns the run summary."""
    from mhdsr.runtime.loop import fit

    return fit(cfg, SRTask)


def _sims(manifest: dict[str, Any]) -> dict[str, Any]:
    """``sim -> {params, ...}`` from the manifest's provenance (empty if absent)."""
    return dict((manifest.get("provenance") or {}).get("sims") or {})
