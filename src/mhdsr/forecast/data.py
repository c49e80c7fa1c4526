"""The window data every forecaster trains on (the operator of :mod:`mhdsr.forecast.task` and
the generative forecaster of :mod:`mhdsr.forecast.flow`): the window shards' manifest, the
normalization, the train stream, the fixed validation windows, and the window augmentation.

A batch from the tar file to the loss: :class:`~mhdsr.dataset.stream.ShardStream` reads member
``seq.npy`` of the window shards (``(K, 8, h, w)``), selects the forecast channels on axis -3 and
normalizes them with the train windows' statistics (kind ``lo``); :meth:`WindowData.augment`
applies a keyed random periodic roll and symmetry element to each whole window.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mhdsr.dataset.manifest import manifest_sha256, normalization, read_manifest
from mhdsr.dataset.normalize import Normalizer
from mhdsr.dataset.stream import ShardStream, make_loader, read_samples, shard_list
from mhdsr.errors import ShardError
from mhdsr.method import symmetry
from mhdsr.runtime.distributed import DistEnv


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


class WindowData:
    """The window shards of a forecast train config (``cfg.shards``, ``cfg.data``).

    Attributes:
        channels: the forecast channels; ``ch_idx`` their indices in the stored order.
        norm: their normalization (train windows, kind ``lo``, physical units).
        seq_shape: ``(K, 8, h, w)`` of a stored window; ``grid`` ``(h, w)``.
        dt_orbits: the window cadence.
        val_keys, val_seq: the fixed validation windows ``(V, K, C, h, w)`` normalized (or None).
        overfit_batch: ``(B, K, C, h, w)`` one window repeated (``data.overfit``) or None.

    Raises:
        ShardError: not a window folder, missing shards or validation windows.
    """

    def __init__(self, cfg: Any, env: DistEnv) -> None:
        self.cfg, self.env = cfg, env
        manifest = forecast_manifest(cfg.shards)
        self.manifest = manifest
        self.manifest_sha256 = manifest_sha256(cfg.shards)
        self.channels = cfg.channel_names
        self.ch_idx = [manifest["channels"].index(c) for c in self.channels]
        mean, std = normalization(manifest, "lo", self.channels)
        self.norm = Normalizer(np.asarray(mean, np.float32), np.asarray(std, np.float32))
        self.normalization = {"mean": [float(x) for x in mean], "std": [float(x) for x in std]}
        self.seq_shape = tuple(int(n) for n in manifest["shapes"]["seq"])
        self.dt_orbits = float(manifest["provenance"]["forecast"]["dt_orbits"])
        self.grid = (int(self.seq_shape[-2]), int(self.seq_shape[-1]))
        self.train_urls = shard_list(cfg.shards, manifest, "train")
        self.notes: list[str] = []
        d = cfg.data
        self.val_keys: list[str] = []
        self.val_seq: Tensor | None = None
        if d.val_samples > 0 and manifest["splits"].get(d.val_split, {}).get("samples", 0) > 0:
            urls = shard_list(cfg.shards, manifest, d.val_split)
            keys, arrays, _ = read_samples(urls, d.val_samples, "seq.npy", self.seq_shape)
            self.val_keys = keys
            self.val_seq = torch.from_numpy(np.stack([self.norm_seq(a) for a in arrays]))
        self.overfit_batch: Tensor | None = None
        if d.overfit:
            keys, arrays, metas = read_samples(self.train_urls, 1, "seq.npy", self.seq_shape)
            if not keys:
                raise ShardError(f"{cfg.shards}: the train split has no window (data.overfit)")
            one = torch.from_numpy(self.norm_seq(arrays[0]))
            self.overfit_batch = one[None].repeat(d.micro_batch, 1, 1, 1, 1)
            self.notes.append(f"overfit mode: one window {keys[0]} ({metas[0].get('sim')})")

    def norm_seq(self, a: np.ndarray) -> np.ndarray:
        """Stored ``(K, 8, h, w)`` -> normalized forecast channels ``(K, C, h, w)``."""
        return self.norm.normalize_np(a[:, self.ch_idx])

    def train_windows(self, n: int) -> list[np.ndarray]:
        """The first ``n`` train windows, normalized ``(K, C, h, w)`` (deterministic; corrupt
        shards skipped as by the training stream)."""
        _, arrays, _ = read_samples(
            self.train_urls, n, "seq.npy", self.seq_shape, skip_unreadable=True
        )
        return [self.norm_seq(a) for a in arrays]

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
