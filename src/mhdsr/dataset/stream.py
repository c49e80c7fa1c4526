"""Streaming training data: webdataset shards -> normalized batches, for every trainer.

Follow a batch from the tar file to the loss:

1. :class:`ShardStream` (one per rank, one copy per DataLoader worker) draws shards WITH
   replacement from the manifest's train list using a seeded RNG keyed by
   ``(seed, rank, worker, segment)``; ``segment`` is the optimizer step the stream (re)started
   at. The stream is infinite, so every rank takes exactly the steps the trainer asks for,
   whatever the shard sizes, and fewer shards than ranks x workers is fine. Because the stream
   is a pure function of its key, a run resumed from the checkpoint at step ``s`` sees the same
   batches as an uninterrupted run that restarted its stream at ``s`` (the trainer restarts the
   stream at every checkpoint), which makes resume exact.
2. webdataset opens each tar and groups members into samples (``tarfile_to_samples``); a corrupt
   or truncated shard is skipped with a warning and counted (the count rides with each batch).
3. The member (``hi.npy`` for super-resolution, ``seq.npy`` for forecast windows) is decoded
   (float32, shape checked, finite), the trained channels are selected on the channel axis
   (``-3``) and normalized per channel with the TRAIN split's statistics from the manifest.
4. A small shuffle buffer mixes samples across the shards a worker reads (shards are already
   shuffled across seeds at build time; the buffer holds decoded samples, so keep it small).
5. ``micro_batch`` samples are stacked into ``(B, *member_shape)`` float32 (``batch["x"]``).

What happens next (pairs, crops, augmentation, noise) is the trainer's business, on the device.
"""

from __future__ import annotations

import json
import logging
import random
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset.filters import _shuffle

from mhdsr.dataset.normalize import Normalizer
from mhdsr.dataset.npy import decode_npy
from mhdsr.errors import ShardError
from mhdsr.method.noise import seed_for

log = logging.getLogger("mhdsr.dataset")

#: consecutive shards without a single readable sample before the stream gives up
MAX_EMPTY_SHARDS = 50


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


def select_channels(x: np.ndarray, channel_idx: Sequence[int]) -> np.ndarray:
    """The channels ``channel_idx`` of ``x`` ``(..., C, H, W)`` (channel axis -3)."""
    return np.take(x, list(channel_idx), axis=-3)


class ShardStream(IterableDataset):
    """Infinite stream of normalized training batches for one rank (see module docstring).

    Args:
        urls: shard paths of the train split.
        member: the sample member to read (``"hi.npy"`` or ``"seq.npy"``).
        shape: stored shape of that member, e.g. ``(8, H, W)`` or ``(K, 8, h, w)``.
        channel_idx: indices of the trained channels in the stored 8 (channel axis -3).
        norm: normalizer of those channels.
        micro_batch: samples per batch.
        seed, rank, segment: stream key (with the worker id).
        shuffle_buffer: decoded samples buffered per worker.

    Yields:
        ``{"x": (B, *shape') float32 tensor, "keys": [B keys], "worker": id, "skipped": n}``
        with ``shape'`` = ``shape`` restricted to the selected channels.

    Raises:
        ShardError: no urls, or :data:`MAX_EMPTY_SHARDS` consecutive unreadable shards.
    """

    def __init__(
        self,
        urls: Sequence[str],
        member: str,
        shape: Sequence[int],
        channel_idx: Sequence[int],
        norm: Normalizer,
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
        self.member = member
        self.shape = tuple(shape)
        self.channel_idx = list(channel_idx)
        self.norm = norm
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
        for key, x in _shuffle(decoded, self.shuffle_buffer, min(self.shuffle_buffer, 4), rng):
            batch.append(x)
            keys.append(key)
            if len(batch) == self.micro_batch:
                yield {
                    "x": torch.from_numpy(np.stack(batch)),
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
                x = read_member(s, self.member, self.shape)
            except ShardError as e:
                counter(e)
                continue
            yield key, self.norm.normalize_np(select_channels(x, self.channel_idx))


def read_member(sample: dict[str, Any], member: str, shape: Sequence[int]) -> np.ndarray:
    """Decode and check one member of a webdataset sample dict.

    Raises:
        ShardError: the member is missing, malformed (see :func:`decode_npy`) or holds NaN/inf
            (the builder never writes them: the shard is corrupt).
    """
    key, url = sample.get("__key__", "?"), sample.get("__url__")
    if member not in sample:
        raise ShardError(f"sample {key} in {url}: no {member} member")
    x = decode_npy(sample[member], key, member, tuple(shape))
    if not np.isfinite(x.sum()):
        raise ShardError(f"sample {key} in {url}: {member} holds NaN/inf (corrupt shard?)")
    return x


def _worker_init(_: int) -> None:
    # SLURM/submitit deliver SIGUSR2/SIGTERM to the whole process group on timeout or
    # preemption; only the training process should react.
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    torch.set_num_threads(1)


def make_loader(stream: ShardStream, workers: int, prefetch: int) -> DataLoader:
    """DataLoader over a :class:`ShardStream` (batches are formed in the stream)."""
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
    urls: Sequence[str],
    n: int,
    member: str,
    shape: Sequence[int],
    accept: Callable[[dict[str, Any]], bool] | None = None,
) -> tuple[list[str], list[np.ndarray], list[dict]]:
    """The first ``n`` samples of ``urls`` in order (deterministic) whose json record passes
    ``accept`` (all by default): keys, arrays of ``member`` (stored shape, float32) and json
    records.

    Raises:
        ShardError: a shard cannot be read or a sample is malformed.
    """
    keys: list[str] = []
    arrays: list[np.ndarray] = []
    metas: list[dict] = []
    if n <= 0:
        return keys, arrays, metas
    for url in urls:
        try:
            for s in wds.tarfile_to_samples()([{"url": url}]):
                meta = json.loads(s["json"]) if "json" in s else {}
                if accept is not None and not accept(meta):
                    continue
                arrays.append(read_member(s, member, shape))
                keys.append(s["__key__"])
                metas.append(meta)
                if len(keys) >= n:
                    return keys, arrays, metas
        except ShardError as e:
            raise ShardError(f"{url}: {e}") from None
        except Exception as e:
            raise ShardError(f"{url}: cannot read shard: {e!r}") from None
    return keys, arrays, metas


def shard_list(shard_dir: str | Path, manifest: dict, split: str) -> list[str]:
    """Absolute shard paths of ``split``; clear error if the split is missing or empty."""
    from mhdsr.dataset.manifest import shard_paths

    paths = shard_paths(shard_dir, manifest, split)
    if not paths:
        raise ShardError(f"{shard_dir}: split {split!r} has no shards")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise ShardError(
            f"{shard_dir}: {len(missing)} shard(s) of split {split!r} are missing, e.g. {missing[0]}"
        )
    return paths
