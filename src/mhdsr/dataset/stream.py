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
2. :func:`~mhdsr.dataset.shards.tar_samples` (the one shard reader, :mod:`mhdsr.dataset.shards`)
   reads each tar with the standard library's ``tarfile`` in random-access mode and groups
   consecutive members into samples by key, as webdataset does, reading only the member
   trained on and the small ``json``, with one read call each (webdataset's streaming reader
   copies every member in 10 KB pieces: measured 5-10 ms per 2 MB sample, several times the
   decode); a corrupt or truncated shard is skipped with a warning and counted (the count
   rides with each batch). A whole pass over the shards without one readable sample (empty
   or zero-filled tars) is an error naming the split and the shards.
3. The member (``hi.npy`` for super-resolution, ``seq.npy`` for forecast windows) is checked
   against the digest the builder recorded in the sample's json (a mismatch skips the sample
   with a warning naming shard and key), then decoded (float32, shape checked, finite: implied
   by a verified digest, checked otherwise), the trained channels are selected on the channel axis
   (``-3``) and normalized per channel with the TRAIN split's statistics from the manifest.
4. A small shuffle buffer mixes samples across the shards a worker reads (shards are already
   shuffled across seeds at build time; the buffer holds decoded samples, so keep it small).
5. ``micro_batch`` samples are normalized straight into one ``(B, *member_shape)`` float32
   batch (``batch["x"]``; no per-sample temporaries). In a DataLoader worker that batch lives in
   one of a few shared-memory buffers the worker reuses (:class:`_BatchPool`): allocating fresh
   shared memory for every batch costs more than decoding it (measured: 22 ms vs 3 ms per 16 MB
   batch on the development VM). The training process copies each batch out of its buffer (or
   pins it, which is a copy) before releasing it, so a buffer is never rewritten while in use.

With ``persistent`` workers (:func:`make_loader`) one set of worker processes serves every
segment: the segment is a shared value the workers read when the trainer starts the next one,
and the stream they produce is the same as that of fresh workers (tested).

What happens next (pairs, crops, augmentation, noise) is the trainer's business, on the device.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import os
import random
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mhdsr.dataset.normalize import Normalizer
from mhdsr.dataset.shards import JSON, check_sample, read_member, tar_samples
from mhdsr.errors import MhdsrError, ShardError
from mhdsr.method.noise import seed_for

log = logging.getLogger("mhdsr.dataset")

#: consecutive shards without a single readable sample before the stream gives up
MAX_EMPTY_SHARDS = 50


class _SkipCounter:
    """Warn, count, continue (one per worker process).

    ``count`` is the number of shard reads that hit an error, counted once per visit of a
    shard (:meth:`visit` marks the start of the next one); ``samples`` is the number of
    samples decoded so far (the stream's guard against shards that yield nothing).
    """

    def __init__(self) -> None:
        self.count = 0
        self.samples = 0
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


_END = object()


def _pick(buf: list[Any], rng: random.Random) -> Any:
    k = rng.randint(0, len(buf) - 1)
    sample = buf[k]
    buf[k] = buf[-1]
    buf.pop()
    return sample


def keyed_shuffle(
    data: Iterator[Any], bufsize: int, initial: int, rng: random.Random
) -> Iterator[Any]:
    """Shuffle a stream through a buffer of ``bufsize`` items, yielding once ``initial`` are
    buffered, drawing from ``rng`` only (webdataset 1.0's ``filters._shuffle``, the same
    order for the same ``rng``; tested against it)."""
    initial = min(initial, bufsize)
    buf: list[Any] = []
    for sample in data:
        buf.append(sample)
        if len(buf) < bufsize:
            more = next(data, _END)
            if more is not _END:
                buf.append(more)
        if len(buf) >= initial:
            yield _pick(buf, rng)
    while buf:
        yield _pick(buf, rng)


def _no_sample_error(split: str, urls: Sequence[str]) -> ShardError:
    names = sorted({os.path.basename(u) for u in urls})
    shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
    folder = os.path.dirname(os.path.abspath(urls[0])) if urls else "?"
    return ShardError(
        f"split {split!r}: a whole pass over its {len(names)} shard(s) in {folder} gave no "
        f"readable sample ({shown}): every shard is empty or unreadable; rebuild them with "
        "`mhdsr shard build` or check them with `mhdsr shard inspect --verify`"
    )


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
        split: the split the urls belong to (named in errors).

    Yields:
        ``{"x": (B, *shape') float32 tensor, "keys": [B keys], "worker": id, "skipped": n}``
        with ``shape'`` = ``shape`` restricted to the selected channels.

    Raises:
        ShardError: no urls, :data:`MAX_EMPTY_SHARDS` consecutive unreadable shards, or a whole
            pass over the shards (every url drawn at least once since the last sample) without
            a single readable sample: empty tars, zero-filled files (names the split).
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
        split: str = "train",
    ) -> None:
        super().__init__()
        if not urls:
            raise ShardError(f"the {split} split has no shards")
        self.urls = list(urls)
        self.member = member
        self.shape = tuple(shape)
        self.channel_idx = list(channel_idx)
        self.norm = norm
        self.micro_batch = micro_batch
        self.seed, self.rank = seed, rank
        # a tensor, so persistent workers see a new segment (make_loader shares its memory)
        self._segment = torch.tensor([segment], dtype=torch.int64)
        self.shuffle_buffer = shuffle_buffer
        self.split = split
        self.pool: _BatchPool | None = None  # set by make_loader when there are workers

    @property
    def segment(self) -> int:
        """The optimizer step the stream (re)starts at (part of the stream's key)."""
        return int(self._segment[0])

    @segment.setter
    def segment(self, value: int) -> None:
        self._segment[0] = int(value)

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Shape of one batch: ``(micro_batch, *shape)`` with the selected channels."""
        shape = list(self.shape)
        shape[-3] = len(self.channel_idx)
        return (self.micro_batch, *shape)

    def _shard_urls(self, rng: random.Random, counter: _SkipCounter) -> Iterator[dict[str, str]]:
        empty = 0
        every = set(self.urls)
        dry: set[str] = set()  # shards drawn since the last sample
        while True:
            before, got = counter.count, counter.samples
            url = rng.choice(self.urls)
            counter.visit(url)
            yield {"url": url}
            # the consumer has read the whole shard when control returns here
            empty = empty + 1 if counter.count > before else 0
            if empty >= MAX_EMPTY_SHARDS:
                raise ShardError(
                    f"{MAX_EMPTY_SHARDS} consecutive {self.split} shards were unreadable; giving up"
                )
            if counter.samples > got:
                dry.clear()
            else:
                dry.add(url)
                if len(dry) == len(every):
                    raise _no_sample_error(self.split, self.urls)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        pooled = info is not None and self.pool is not None
        rng = random.Random(seed_for(self.seed, self.rank, worker, self.segment))
        counter = _SkipCounter()
        decoded = self._decode(self._samples(rng, counter), counter)
        out: Tensor | None = None
        seq = -1
        keys: list[str] = []
        for key, x in keyed_shuffle(decoded, self.shuffle_buffer, min(self.shuffle_buffer, 4), rng):
            if out is None:
                if pooled:
                    out, seq = self.pool.take(worker, self.out_shape)
                else:
                    out = torch.empty(self.out_shape, dtype=torch.float32)
                dst = out.numpy()
            self.norm.normalize_into(x, dst[len(keys)])
            keys.append(key)
            if len(keys) == self.micro_batch:
                batch = {"x": out, "keys": keys, "worker": worker, "skipped": counter.count}
                if pooled:
                    batch["seq"] = seq
                yield batch
                out, keys = None, []

    def _samples(self, rng: random.Random, counter: _SkipCounter) -> Iterator[dict[str, Any]]:
        """Samples of the drawn shards; an unreadable shard is counted and skipped."""
        for src in self._shard_urls(rng, counter):
            url = src["url"]
            try:
                with open(url, "rb", buffering=0) as f:
                    # checksums are checked per sample in _decode: a bad one skips one sample
                    yield from tar_samples(f, url, (self.member, JSON), verify=False)
            except Exception as e:  # noqa: BLE001 - any broken shard: warn, count, next shard
                counter(e)

    def _decode(
        self, samples: Iterator[dict[str, Any]], counter: _SkipCounter
    ) -> Iterator[tuple[str, np.ndarray]]:
        every = self.channel_idx == list(range(self.shape[-3]))
        for s in samples:
            key = s.get("__key__", "?")
            try:
                ok = check_sample(s)
                x = read_member(s, self.member, self.shape, copy=False, verified=ok)
            except ShardError as e:
                counter(e)
                continue
            counter.samples += 1
            yield key, (x if every else select_channels(x, self.channel_idx))


#: seconds a loader worker gets to exit after the shutdown request before it is killed
WORKER_EXIT_S = 5.0


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel sends this process SIGKILL when its parent dies (``PR_SET_PDEATHSIG``),
    so a training process killed with SIGKILL leaves no loader worker behind."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _sigterm_from_parent_only(parent: int) -> None:
    """SIGTERM ends this worker only when the parent sent it (DataLoader's shutdown of a worker
    that does not stop in time, multiprocessing's exit handler); SIGTERM from anyone else is
    ignored. SLURM signals every process of a job step at its end or on preemption, and under
    submitit the training process deliberately survives that SIGTERM (it waits for USR2 to
    checkpoint and requeue): its workers must survive it too, and stop when it stops them.

    SIGTERM is blocked in this (still single-threaded) worker, so every thread started later
    blocks it too, and one thread takes it with ``sigwaitinfo``, which tells the sender.
    """
    if not hasattr(signal, "sigwaitinfo"):  # pragma: no cover - not Linux: default action
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def wait() -> None:
        while True:
            info = signal.sigwaitinfo({signal.SIGTERM})
            if info.si_pid == parent or os.getppid() != parent:
                os._exit(128 + signal.SIGTERM)

    threading.Thread(target=wait, name="mhdsr-sigterm", daemon=True).start()


def _worker_init(parent: int, _worker_id: int) -> None:
    """Set up a DataLoader worker process of the training process ``parent``.

    SLURM and submitit deliver SIGUSR1/SIGUSR2 (time limit, preemption) to every process of the
    job step; only the training process reacts, so the worker ignores them. SIGTERM ends the
    worker only when its parent sends it (:func:`_sigterm_from_parent_only`), and the worker
    dies with its parent (:func:`_die_with_parent`). With :class:`Loader` stopping the workers
    when iteration ends, an error in the training process never leaves it waiting on a worker.
    """
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)
    _die_with_parent(parent)
    _sigterm_from_parent_only(parent)
    torch.set_num_threads(1)


def stop_workers(it: Iterator[Any]) -> None:
    """Stop the worker processes of a DataLoader iterator now and wait for them (a no-op for an
    iterator without workers).

    DataLoader's own shutdown asks each worker to exit, waits up to :data:`WORKER_EXIT_S`, then
    sends SIGTERM; a worker still alive after that is killed (SIGKILL). This does not depend on
    garbage collection: an exception's traceback keeps the iterator alive until the process
    exits, where multiprocessing's exit handler would wait on the workers forever.
    """
    shutdown = getattr(it, "_shutdown_workers", None)
    if shutdown is None:
        return
    shutdown()  # a no-op once the interpreter is exiting: the loop below still applies
    for w in getattr(it, "_workers", ()):
        if w.is_alive():
            w.kill()
            w.join(timeout=WORKER_EXIT_S)


class _BatchPool:
    """Shared-memory batch buffers of the DataLoader workers of one stream, each reused only
    after the training process released it.

    Worker ``w`` numbers its batches ``seq = 0, 1, ...`` and writes batch ``seq`` into its
    buffer ``seq % slots``; the training process, after copying (or pinning) a received batch,
    records ``released[w] = seq + 1`` ("no batch up to ``seq`` of worker ``w`` is used any
    more", in shared memory). A buffer whose previous batch is not released yet is never
    rewritten: the worker takes fresh shared memory instead. With ``slots`` = prefetch + 2 the
    DataLoader's own flow control (at most ``prefetch`` batches in flight per worker) keeps
    that fallback from happening in steady state.

    Args:
        workers: number of DataLoader workers.
        slots: buffers per worker.
    """

    def __init__(self, workers: int, slots: int) -> None:
        self.slots = slots
        self.released = torch.zeros(workers, dtype=torch.int64).share_memory_()
        self._buffers: list[Tensor | None] = []  # this worker's (filled in the worker process)
        self._seq = 0
        self._pid = -1

    def take(self, worker: int, shape: tuple[int, ...]) -> tuple[Tensor, int]:
        """(Worker side) the buffer for this worker's next batch and the batch's number."""
        if self._pid != os.getpid():  # first use in this worker process
            self._pid, self._seq, self._buffers = os.getpid(), 0, [None] * self.slots
        seq, slot = self._seq, self._seq % self.slots
        self._seq += 1
        buf = self._buffers[slot]
        free = seq - self.slots < int(self.released[worker])  # the slot's last batch released
        if buf is None or tuple(buf.shape) != tuple(shape) or not free:
            buf = _shared_empty(shape)
            if self._buffers[slot] is None or free:
                self._buffers[slot] = buf
        return buf, seq

    def reset(self) -> None:
        """(Training process) forget all releases: before workers (re)start numbering."""
        self.released.zero_()

    def release(self, worker: int, seq: int) -> None:
        """(Training process) every batch up to ``seq`` of ``worker`` is no longer used."""
        if seq + 1 > int(self.released[worker]):
            self.released[worker] = seq + 1


def _shared_empty(shape: tuple[int, ...]) -> Tensor:
    """An uninitialized float32 tensor in shared memory (as DataLoader's collate makes them)."""
    n = int(np.prod(shape))
    try:
        storage = torch.empty(0)._typed_storage()._new_shared(n)
    except RuntimeError as e:  # /dev/shm full or too small, or a file size limit
        why = str(e).strip().splitlines()[0][:200]
        raise ShardError(
            f"cannot allocate a {4 * n / 2**20:.1f} MiB batch buffer in shared memory (/dev/shm) "
            f"for the data-loader workers: {why}; free or enlarge /dev/shm (containers: "
            "--shm-size), lower data.micro_batch, or set data.workers=0"
        ) from None
    return torch.empty(0).new(storage).resize_(*shape)


class Loader:
    """A DataLoader's batch stream whose worker processes are stopped (:func:`stop_workers`) as
    soon as an iteration ends, however it ends: exhausted, ``close()``-d, or left by an
    exception. It is also the one iterator the training loop holds from loader to step:
    :meth:`segment` starts the stream at a segment and returns the loader itself, read with
    ``next()``; :meth:`close` ends the segment, :meth:`shutdown` stops the workers.

    With ``persistent=True`` the workers outlive an iteration that ends by ``close()`` (the end
    of a segment): the next :meth:`segment` reuses them; they stop on an error and on
    :meth:`shutdown`. Each ``iter()`` (e.g. ``yield from loader``) is an iteration of its own
    with fresh workers.

    Batches from a :class:`_BatchPool` buffer are copied out of it (or were pinned: a copy) and
    the buffer released before the batch is handed on.

    Args:
        loader: the DataLoader.
        stream: its dataset (for :meth:`segment`), or None.
        persistent: keep the workers between iterations.
    """

    def __init__(
        self, loader: DataLoader, stream: ShardStream | None = None, persistent: bool = False
    ) -> None:
        self.loader = loader
        self.stream = stream
        self.persistent = persistent
        self._it: Any = None
        self._segment: Iterator[Any] | None = None

    def __iter__(self) -> Iterator[Any]:
        pool = getattr(self.stream, "pool", None)
        if pool is not None:
            pool.reset()
        it = self._it = iter(self.loader)
        keep = False
        try:
            for batch in it:
                if pool is not None and "seq" in batch:
                    if not batch["x"].is_pinned():  # pinned = already a copy
                        batch["x"] = batch["x"].clone()
                    pool.release(batch["worker"], batch["seq"])
                yield batch
            keep = self.persistent
        except GeneratorExit:
            keep = self.persistent
            raise
        except MhdsrError as e:
            raise _from_worker(e) from None
        finally:
            if not keep:
                self._stop_workers()

    def segment(self, segment: int) -> Loader:
        """End the open segment, then restart the stream at ``segment`` (same workers when
        persistent); returns this loader, whose ``next()`` reads the segment."""
        self.close()
        if self.stream is not None:
            self.stream.segment = segment
        self._segment = iter(self)
        return self

    def __next__(self) -> Any:
        if self._segment is None:
            raise StopIteration
        return next(self._segment)

    def close(self) -> None:
        """End the open segment (persistent workers stay; idempotent)."""
        it, self._segment = self._segment, None
        if it is not None:
            it.close()

    def shutdown(self) -> None:
        """End the open segment and stop the worker processes now (idempotent)."""
        self.close()
        self._stop_workers()

    def _stop_workers(self) -> None:
        it, self._it = self._it, None
        if it is not None:
            stop_workers(it)
            if getattr(self.loader, "_iterator", None) is it:  # a persistent DataLoader's
                self.loader._iterator = None


def _from_worker(e: MhdsrError) -> MhdsrError:
    """A user error re-raised by DataLoader from a worker carries the worker's whole traceback
    in its message ("Caught ShardError in DataLoader worker process 0. Original Traceback
    ..."); the same error with the original message and the worker named instead."""
    text = str(e)
    if not text.startswith("Caught "):
        return e
    lines = text.rstrip().splitlines()
    name = f"{type(e).__module__}.{type(e).__name__}: "
    where = lines[0].removeprefix(f"Caught {type(e).__name__} ").rstrip(".")
    for i in range(len(lines) - 1, 0, -1):  # the original message may span lines
        if lines[i].startswith(name):
            msg = "\n".join([lines[i][len(name) :], *lines[i + 1 :]])
            return type(e)(f"{msg} ({where})")
    return e


def make_loader(
    stream: ShardStream,
    workers: int,
    prefetch: int,
    *,
    pin_memory: bool | None = None,
    persistent: bool = False,
) -> Loader:
    """A :class:`Loader` (DataLoader with ``workers`` worker processes, ``prefetch`` batches
    each) over a :class:`ShardStream` (batches are formed in the stream). Workers ignore
    SLURM's signals, stop when the iteration ends (unless ``persistent``) and die with the
    training process (:func:`_worker_init`); they write batches into reused shared buffers
    (:class:`_BatchPool`).

    Args:
        stream: the batch stream.
        workers: worker processes (0 = in the training process).
        prefetch: batches in flight per worker.
        pin_memory: page-locked batches for asynchronous host-to-GPU copies (None = when CUDA
            is available; it has no effect without CUDA).
        persistent: one set of workers for every segment (:meth:`Loader.segment`).
    """
    kw: dict[str, Any] = {}
    persistent = persistent and workers > 0
    if workers > 0:
        kw = {
            "prefetch_factor": prefetch,
            "worker_init_fn": functools.partial(_worker_init, os.getpid()),
            "persistent_workers": persistent,
        }
        stream.pool = _BatchPool(workers, prefetch + 2)
        stream._segment.share_memory_()
    return Loader(
        DataLoader(
            stream,
            batch_size=None,
            num_workers=workers,
            pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
            **kw,
        ),
        stream,
        persistent,
    )


def read_samples(
    urls: Sequence[str],
    n: int,
    member: str,
    shape: Sequence[int],
    accept: Callable[[dict[str, Any]], bool] | None = None,
    skip_unreadable: bool = False,
) -> tuple[list[str], list[np.ndarray], list[dict]]:
    """The first ``n`` samples of ``urls`` in order (deterministic) whose json record passes
    ``accept`` (all by default): keys, arrays of ``member`` (stored shape, float32) and json
    records.

    With ``skip_unreadable`` a shard that cannot be read (truncated, corrupt) is handled as the
    training stream handles it: a warning naming it, then the next shard (the samples read from
    it before the damage are kept; the order stays deterministic, so every rank reads the same);
    a sample that fails its checksum is skipped alone, with a warning naming shard and key.

    Raises:
        ShardError: a shard cannot be read or a sample is malformed (without
            ``skip_unreadable``), or with it, no sample at all could be read.
    """
    keys: list[str] = []
    arrays: list[np.ndarray] = []
    metas: list[dict] = []
    if n <= 0:
        return keys, arrays, metas
    for url in urls:
        try:
            with open(url, "rb") as f:
                for s in tar_samples(f, url, verify=False):
                    try:
                        check_sample(s)
                    except ShardError as e:  # a corrupt sample in a readable tar: skip it only
                        if not skip_unreadable:
                            raise
                        log.warning("skipping corrupt sample: %s", str(e)[:300])
                        continue
                    meta = json.loads(s["json"]) if "json" in s else {}
                    if accept is not None and not accept(meta):
                        continue
                    arrays.append(read_member(s, member, shape))
                    keys.append(s["__key__"])
                    metas.append(meta)
                    if len(keys) >= n:
                        return keys, arrays, metas
        except ShardError as e:
            if not skip_unreadable:
                raise ShardError(f"{url}: {e}") from None
            log.warning("skipping unreadable shard data %s: %s", url, str(e)[:300])
        except Exception as e:  # noqa: BLE001 - any broken shard: the caller's policy
            if not skip_unreadable:
                raise ShardError(f"{url}: cannot read shard: {e!r}") from None
            log.warning("skipping unreadable shard data %s: %s", url, repr(e)[:300])
    if skip_unreadable and not keys:
        raise ShardError(
            f"no readable sample in {len(urls)} shard(s) starting {urls[0] if urls else None!r}"
        )
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
