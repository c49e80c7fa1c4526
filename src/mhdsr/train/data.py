"""Streaming training data: webdataset shards -> normalized batches; fixed validation set.

Follow a batch from the tar file to the loss:

1. :class:`TrainStream` (one per rank, one copy per DataLoader worker) draws shards WITH
   replacement from the manifest's train list using a seeded RNG keyed by
   ``(seed, rank, worker, segment)``; ``segment`` is the optimizer step the stream (re)started
   at. The stream is infinite, so every rank takes exactly the steps the trainer asks for,
   whatever the shard sizes, and fewer shards than ranks x workers is fine. Because the stream
   is a pure function of its key, a run resumed from the checkpoint at step ``s`` sees the same
   batches as an uninterrupted run that restarted its stream at ``s`` (the trainer restarts the
   stream at every checkpoint), which makes resume exact.
2. webdataset opens each tar and groups members into samples (``tarfile_to_samples``); a corrupt
   or truncated shard is skipped with a warning and counted (the count rides with each batch).
3. ``hi.npy`` is decoded (float32, little-endian checked), the trained channels are selected and
   normalized per channel with the TRAIN split's statistics from the manifest:
   ``(x - mean) / std_floored`` (``hi`` statistics for both hi and u, so x0 and x1 share one space).
4. A small shuffle buffer mixes samples across the shards a worker reads (shards are already
   shuffled across seeds at build time; the buffer holds decoded samples, so keep it small).
5. ``micro_batch`` samples are stacked into ``(B, C, H, W)`` float32.

On the device (:func:`make_pair`): random periodic roll and crop, ``lo = avgpool2(hi)``,
``u = Up(lo)`` on the full periodic field, the same window cut from hi and u.
"""

from __future__ import annotations

import io
import logging
import random
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.filters import _shuffle

from mhdsr.errors import ShardError
from mhdsr.interpolant import avgpool2, upsample
from mhdsr.sample.noise import seed_for

log = logging.getLogger("mhdsr.train.data")

#: consecutive shards without a single readable sample before the stream gives up
MAX_EMPTY_SHARDS = 50


def decode_npy(
    raw: bytes, key: str, member: str, expected: tuple[int, ...] | None = None
) -> np.ndarray:
    """Decode an ``.npy`` member (no pickles) and check dtype and shape.

    Returns:
        The array as native float32.

    Raises:
        ShardError: not an npy, not float32, or not of the expected shape (names key and member).
    """
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception as e:
        raise ShardError(f"sample {key}: member {member} is not a valid .npy ({e})") from None
    if arr.dtype.kind != "f" or arr.dtype.itemsize != 4:
        raise ShardError(f"sample {key}: member {member} has dtype {arr.dtype}, expected float32")
    if expected is not None and tuple(arr.shape) != tuple(expected):
        raise ShardError(
            f"sample {key}: member {member} has shape {arr.shape}, expected {expected}"
        )
    return arr.astype(np.float32, copy=False)


@dataclass
class Normalizer:
    """Per-channel affine normalization ``(x - mean) / std`` (std already floored).

    Attributes:
        mean, std: float32 arrays (C,) in physical units of the selected channels.
    """

    mean: np.ndarray
    std: np.ndarray

    def normalize_np(self, x: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` physical -> normalized, float32."""
        return ((x - self.mean[:, None, None]) / self.std[:, None, None]).astype(np.float32)

    def normalize(self, x: Tensor) -> Tensor:
        """``(..., C, H, W)`` physical -> normalized."""
        m = torch.as_tensor(self.mean, device=x.device, dtype=x.dtype)[:, None, None]
        s = torch.as_tensor(self.std, device=x.device, dtype=x.dtype)[:, None, None]
        return (x - m) / s

    def denormalize(self, x: Tensor) -> Tensor:
        """``(..., C, H, W)`` normalized -> physical."""
        m = torch.as_tensor(self.mean, device=x.device, dtype=x.dtype)[:, None, None]
        s = torch.as_tensor(self.std, device=x.device, dtype=x.dtype)[:, None, None]
        return x * s + m


class _SkipCounter:
    """webdataset handler: warn, count, continue (one per worker process).

    ``count`` is the number of shard reads that hit an error: webdataset reports one truncated
    tar twice (from the tar iterator, then re-raised with its url), so errors are counted once
    per visit of a shard; :meth:`visit` marks the start of the next one.
    """

    def __init__(self) -> None:
        self.count = 0
        self._visit = 0
        self._counted_visit = -1
        self._url = ""

    def visit(self, url: str) -> None:
        self._visit += 1
        self._url = url

    def __call__(self, exn: BaseException) -> bool:
        if self._counted_visit == self._visit:
            return True  # the same shard's error, reported again
        self._counted_visit = self._visit
        self.count += 1
        log.warning("skipping unreadable shard data %s: %s", self._url, repr(exn)[:300])
        return True


class TrainStream(IterableDataset):
    """Infinite stream of normalized training batches for one rank (see module docstring).

    Args:
        urls: shard paths of the train split.
        channel_idx: indices of the trained channels in the stored 8.
        norm: normalizer of those channels.
        hi_shape: stored (8, H, W) of ``hi.npy``.
        micro_batch: samples per batch.
        seed, rank, segment: stream key (with the worker id).
        shuffle_buffer: decoded samples buffered per worker.
    """

    def __init__(
        self,
        urls: Sequence[str],
        channel_idx: Sequence[int],
        norm: Normalizer,
        hi_shape: Sequence[int],
        micro_batch: int,
        *,
        seed: int,
        rank: int,
        segment: int,
        shuffle_buffer: int,
    ) -> None:
        super().__init__()
        if not urls:
            raise ShardError("the train split has no shards")
        self.urls = list(urls)
        self.channel_idx = list(channel_idx)
        self.norm = norm
        self.hi_shape = tuple(hi_shape)
        self.micro_batch = micro_batch
        self.seed, self.rank, self.segment = seed, rank, segment
        self.shuffle_buffer = shuffle_buffer

    def _shard_urls(self, rng: random.Random, counter: _SkipCounter) -> Iterator[dict[str, str]]:
        empty = 0
        while True:
            before = counter.count
            url = rng.choice(self.urls)
            counter.visit(url)
            yield {"url": url}
            # the consumer has read the whole shard when control returns here
            empty = empty + 1 if counter.count > before else 0
            if empty >= MAX_EMPTY_SHARDS:
                raise ShardError(
                    f"{MAX_EMPTY_SHARDS} consecutive train shards were unreadable; giving up"
                )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        rng = random.Random(seed_for(self.seed, self.rank, worker, self.segment))
        counter = _SkipCounter()
        samples = wds.tarfile_to_samples(handler=counter)(self._shard_urls(rng, counter))
        decoded = self._decode(samples, counter)
        batch: list[np.ndarray] = []
        keys: list[str] = []
        for key, hi in _shuffle(decoded, self.shuffle_buffer, min(self.shuffle_buffer, 4), rng):
            batch.append(hi)
            keys.append(key)
            if len(batch) == self.micro_batch:
                yield {
                    "hi": torch.from_numpy(np.stack(batch)),
                    "keys": keys,
                    "worker": worker,
                    "skipped": counter.count,
                }
                batch, keys = [], []

    def _decode(
        self, samples: Iterator[dict[str, Any]], counter: _SkipCounter
    ) -> Iterator[tuple[str, np.ndarray]]:
        for s in samples:
            key = s.get("__key__", "?")
            try:
                if "hi.npy" not in s:
                    raise ShardError(f"sample {key} in {s.get('__url__')}: no hi.npy member")
                hi = decode_npy(s["hi.npy"], key, "hi.npy", self.hi_shape)
                if not np.isfinite(hi.sum()):  # corrupt bytes; the builder never writes NaN/inf
                    raise ShardError(f"sample {key} in {s.get('__url__')}: hi.npy holds NaN/inf")
            except ShardError as e:
                counter(e)
                continue
            yield key, self.norm.normalize_np(hi[self.channel_idx])


def _worker_init(_: int) -> None:
    # SLURM/submitit deliver SIGUSR2/SIGTERM to the whole process group on timeout or
    # preemption; only the training process should react (distributed-facts.md).
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    torch.set_num_threads(1)


def make_loader(stream: TrainStream, workers: int, prefetch: int) -> DataLoader:
    """DataLoader over a :class:`TrainStream` (batches are formed in the stream)."""
    kw: dict[str, Any] = {}
    if workers > 0:
        kw = {
            "prefetch_factor": prefetch,
            "worker_init_fn": _worker_init,
            "persistent_workers": False,
        }
    return DataLoader(
        stream, batch_size=None, num_workers=workers, pin_memory=torch.cuda.is_available(), **kw
    )


def read_samples(
    urls: Sequence[str], n: int, hi_shape: Sequence[int]
) -> tuple[list[str], list[np.ndarray], list[dict]]:
    """The first ``n`` samples of ``urls`` in order (deterministic): keys, hi arrays (8, H, W)
    float32 and json records.

    Raises:
        ShardError: a shard cannot be read or a sample is malformed.
    """
    keys, arrays, metas = [], [], []
    if n <= 0:
        return keys, arrays, metas
    import json

    for url in urls:
        try:
            for s in wds.tarfile_to_samples()([{"url": url}]):
                if "hi.npy" not in s:
                    raise ShardError(f"{url}: sample {s.get('__key__')} has no hi.npy")
                keys.append(s["__key__"])
                arr = decode_npy(s["hi.npy"], s["__key__"], "hi.npy", tuple(hi_shape))
                if not np.isfinite(arr.sum()):
                    raise ShardError(
                        f"{url}: sample {s['__key__']}: hi.npy holds NaN/inf (corrupt shard?)"
                    )
                arrays.append(arr)
                metas.append(json.loads(s["json"]) if "json" in s else {})
                if len(keys) >= n:
                    return keys, arrays, metas
        except ShardError:
            raise
        except Exception as e:
            raise ShardError(f"{url}: cannot read shard: {e!r}") from None
    return keys, arrays, metas


def make_pair(
    hi: Tensor,
    *,
    crop: int,
    roll: bool,
    upsample_mode: str,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor]:
    """Training pair on the device: ``(x1, u)`` from normalized hi fields.

    ``lo = avgpool2(hi)`` and ``u = Up(lo)`` are computed on the FULL periodic field, then the
    same window is cut from hi and u: a random periodic translation by even offsets (``roll``;
    even keeps the 2x2 coarse cells aligned, so avgpool2 and Up commute with it) and, if
    ``crop`` > 0, a ``crop x crop`` window (with periodic wrap).

    Args:
        hi: (B, C, H, W) normalized float32.
        crop: window size in hi pixels (0 = full field).
        roll: random periodic translation.
        upsample_mode: ``bilinear`` | ``bicubic``.
        generator: RNG for the offsets (device-independent: a CPU generator).

    Returns:
        ``(x1, u)``, each (B, C, crop or H, crop or W).
    """
    u = upsample(avgpool2(hi), 2, upsample_mode)
    b, _, h, w = hi.shape
    ch, cw = (crop, crop) if crop else (h, w)
    if crop and (crop > h or crop > w):
        raise ShardError(f"data.crop={crop} is larger than the stored field {h}x{w}")
    if not roll and not crop:
        return hi, u
    if roll:  # any even offset, windows wrap around the periodic domain
        oy = torch.randint(0, h // 2, (b,), generator=generator) * 2
        ox = torch.randint(0, w // 2, (b,), generator=generator) * 2
    else:  # plain crop: even offsets with the window inside the field
        oy = torch.randint(0, (h - ch) // 2 + 1, (b,), generator=generator) * 2
        ox = torch.randint(0, (w - cw) // 2 + 1, (b,), generator=generator) * 2
    iy = (oy[:, None] + torch.arange(ch)[None, :]) % h  # (B, ch)
    ix = (ox[:, None] + torch.arange(cw)[None, :]) % w  # (B, cw)
    iy, ix = iy.to(hi.device), ix.to(hi.device)
    bidx = torch.arange(b, device=hi.device)[:, None, None]

    def cut(x: Tensor) -> Tensor:
        # (B, C, H, W) -> (B, ch, cw, C) by advanced indexing, then channels first
        return (
            x.permute(0, 2, 3, 1)[bidx, iy[:, :, None], ix[:, None, :]]
            .permute(0, 3, 1, 2)
            .contiguous()
        )

    return cut(hi), cut(u)


def shard_list(shard_dir: str | Path, manifest: dict, split: str) -> list[str]:
    """Absolute shard paths of ``split``; clear error if the split is missing or empty."""
    from mhdsr.shard_builder.manifest import shard_paths

    paths = shard_paths(shard_dir, manifest, split)
    if not paths:
        raise ShardError(f"{shard_dir}: split {split!r} has no shards")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise ShardError(
            f"{shard_dir}: {len(missing)} shard(s) of split {split!r} are missing, e.g. {missing[0]}"
        )
    return paths
