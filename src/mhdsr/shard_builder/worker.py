"""Write one shard: read its samples one at a time, encode, tar, hash, accumulate statistics.

Runs in a worker process (or in the main process when ``workers=1``). Memory is bounded by
one snapshot buffer per resolution plus one encoded sample. The tar is written to
``.{name}.tmp`` in the output folder, renamed to ``{name}`` when complete, and a sidecar
``.build/{name}.json`` (plan hash, samples, bytes, sha256, statistics, skips) is written last,
so a killed build leaves either a complete, recorded shard or nothing usable.

Sample layout (docs/design.md "Formats"): key ``s{seed:04d}_n{snapshot:05d}``; members ``hi.npy``
(C, H, W) float32 little-endian C-contiguous, ``lo.npy`` (C, h, w) for native lo samples,
``json`` metadata (with ``sum64``: a digest of each array member, checked by every reader,
:mod:`mhdsr.dataset.shards`). Forecast windows (items of kind ``window``,
:mod:`mhdsr.shard_builder.windows`): ``seq.npy`` (K, C, h, w), the window's snapshots on the lo
grid (``avgpool2`` of a hi run, :func:`mhdsr.dataset.cadence.lo_of_hi`), and ``json``. webdataset's TarWriter writes one sample's members consecutively (sorted by
extension: ``hi.npy``, ``json``, ``lo.npy``), with a fixed mtime/owner so shards are
byte-identical across builds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from mhdsr.athenak import AthenaKRun
from mhdsr.channels import CHANNELS
from mhdsr.dataset.npy import encode_npy, sample_key
from mhdsr.dataset.shards import CHECKSUM_FIELD, checksums
from mhdsr.errors import AthenaKFormatError, ShardError
from mhdsr.io_utils import write_failed, write_text_atomic
from mhdsr.shard_builder.stats import ChannelStats, avgpool2_f64

#: fixed member mtime (2000-01-01T00:00:00Z) and owner: reproducible, byte-identical tars
TAR_MTIME = 946684800
TAR_OWNER = "mhdsr"
BUILD_DIR = ".build"


def tmp_shard_path(out_dir: Path, name: str) -> Path:
    """Temporary name of a shard being written (hidden, removed on resume)."""
    return out_dir / f".{name}.tmp"


def sidecar_path(out_dir: Path, name: str) -> Path:
    """Per-shard completion record."""
    return out_dir / BUILD_DIR / f"{name}.json"


class _HashingWriter:
    """File wrapper that hashes and counts every byte written (single pass, no re-read)."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.h = hashlib.sha256()
        self.n = 0

    def write(self, b: bytes) -> int:
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)


# one open run and one output buffer per (process, run / shape): reused across samples
_RUNS: dict[str, AthenaKRun] = {}
_BUFS: dict[tuple[int, ...], np.ndarray] = {}


def _read(path: str, snapshot: int):
    run = _RUNS.get(path)
    if run is None:
        if len(_RUNS) > 64:
            _RUNS.clear()
        run = _RUNS[path] = AthenaKRun(path)
    nx1, nx2, _ = run.resolution
    shape = (len(CHANNELS), nx2, nx1)
    buf = _BUFS.get(shape)
    if buf is None:
        buf = _BUFS[shape] = np.empty(shape, dtype=np.float32)
    return run.read_snapshot(snapshot, CHANNELS, out=buf)


def _sample(
    item: dict[str, Any],
) -> tuple[dict[str, Any], np.ndarray | None, dict[str, Any]]:
    """Read and encode one sample: (tar members by extension, hi array of a train/val/test
    sample or None, json metadata)."""
    snap = _read(item["path"], item["snapshot"])
    ny, nx = snap.data.shape[-2:]
    meta: dict[str, Any] = {
        "seed": item["seed"],
        "snapshot": item["snapshot"],
        "time": snap.time,
        "cycle": snap.cycle,
        "sim": item["sim"],
        "resolution": [nx, ny],
        "source": item["source"],
    }
    key = sample_key(item["seed"], item["snapshot"])
    if item["source"] == "hi":
        return {"__key__": key, "hi.npy": encode_npy(snap.data)}, snap.data, meta
    sample = {"__key__": key, "lo.npy": encode_npy(snap.data)}
    pair = item.get("pair")
    if pair:
        hs = _read(pair["path"], pair["snapshot"])
        sample["hi.npy"] = encode_npy(hs.data)
        meta.update(
            pixel_aligned=False,
            hi_sim=pair["sim"],
            hi_snapshot=pair["snapshot"],
            hi_time=hs.time,
            hi_cycle=hs.cycle,
            hi_resolution=[hs.data.shape[-1], hs.data.shape[-2]],
        )
    return sample, None, meta


def _window_sample(
    item: dict[str, Any],
) -> tuple[dict[str, Any], np.ndarray, dict[str, Any]]:
    """Read one forecast window: (tar members, ``seq`` (K, C, h, w) float32, json metadata)."""
    from mhdsr.dataset.cadence import lo_of_hi
    from mhdsr.shard_builder.windows import POOLED, window_json

    frames, times, cycles = [], [], []
    source_grid: list[int] = []
    for n in item["snapshots"]:
        snap = _read(item["path"], n)
        source_grid = [snap.data.shape[-1], snap.data.shape[-2]]
        frames.append(lo_of_hi(snap.data) if item["source"] == POOLED else snap.data.copy())
        times.append(float(snap.time))
        cycles.append(int(snap.cycle))
    seq = np.stack(frames)
    meta = window_json(item, times, cycles, [seq.shape[-1], seq.shape[-2]], source_grid)
    key = sample_key(item["seed"], item["snapshot"])
    return {"__key__": key, "seq.npy": encode_npy(seq)}, seq, meta


def build_shard(job: dict[str, Any]) -> dict[str, Any]:
    """Write one shard and its sidecar.

    Args:
        job: ``{"out_dir", "name", "split", "items", "stats", "plan_hash", "on_bad"}`` (see
            :class:`mhdsr.shard_builder.plan.ShardPlan`).

    Returns:
        ``{"name", "split", "samples", "paired", "bytes", "sha256", "plan_hash", "stats",
        "skipped", "seconds"}`` (``paired``: heldout samples with a hi field);
        ``stats`` is ``{"hi": state, "lo": state}`` (float64 Chan/Welford states) for train
        shards, else None. A shard whose every sample was skipped is not written
        (``samples == 0``).

    Raises:
        ShardError: an unreadable or non-finite snapshot with ``on_bad="error"`` (the message
            names the shard, the run and the reader's finding).
    """
    from webdataset.writer import TarWriter  # heavy import (torch): only in the worker

    t0 = time.perf_counter()
    out_dir = Path(job["out_dir"])
    name = job["name"]
    final, tmp = out_dir / name, tmp_shard_path(out_dir, name)
    c = len(CHANNELS)
    hi_stats, lo_stats = ChannelStats.empty(c), ChannelStats.empty(c)
    skipped: list[dict[str, Any]] = []
    samples = paired = 0
    try:
        with open(tmp, "wb") as f:
            hw = _HashingWriter(f)
            with TarWriter(
                hw, encoder=False, mtime=TAR_MTIME, user=TAR_OWNER, group=TAR_OWNER
            ) as tw:
                for item in job["items"]:
                    window = item.get("kind") == "window"
                    try:
                        sample, hi, meta = (_window_sample if window else _sample)(item)
                    except AthenaKFormatError as e:
                        where = f"{item['sim']} snapshot {item['snapshot']:05d}"
                        if job["on_bad"] == "error":
                            raise ShardError(
                                f"shard {name}: {where}: {e} (on_bad=skip skips and records it)"
                            ) from e
                        skipped.append(
                            {"sim": item["sim"], "snapshot": item["snapshot"], "reason": str(e)}
                        )
                        continue
                    meta[CHECKSUM_FIELD] = checksums(sample)  # checked by every reader
                    text = json.dumps(meta, separators=(",", ":")).encode()
                    if len(text) > 1024:  # plan.JSON_BYTES_BOUND, used to size shards
                        raise ShardError(f"shard {name}: sample json of {len(text)} bytes > 1024")
                    sample["json"] = text
                    tw.write(sample)
                    samples += 1
                    if item["source"] == "native_lo" and "hi.npy" in sample:
                        paired += 1
                    if job["stats"] and window:  # every frame of the window, kind "lo"
                        lo_stats = lo_stats.merge(ChannelStats.of(np.moveaxis(hi, 1, 0)))
                    elif job["stats"] and hi is not None:
                        hi_stats = hi_stats.merge(ChannelStats.of(hi))
                        lo_stats = lo_stats.merge(ChannelStats.of(avgpool2_f64(hi)))
        if samples:
            os.replace(tmp, final)
    except OSError as e:  # disk full, file size limit, ...: name the shard, keep nothing
        raise write_failed(final, e, "shard") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    result = {
        "name": name,
        "split": job["split"],
        "samples": samples,
        "paired": paired,
        "bytes": hw.n if samples else 0,
        "sha256": hw.h.hexdigest() if samples else None,
        "plan_hash": job["plan_hash"],
        "stats": {"hi": hi_stats.to_state(), "lo": lo_stats.to_state()} if job["stats"] else None,
        "skipped": skipped,
        "seconds": round(time.perf_counter() - t0, 4),
    }
    # atomic but not fsynced (an fsync here would flush the whole shard, ~20% of the build time
    # at full scale): after a crash, resume re-hashes the tar against this record anyway
    try:
        write_text_atomic(sidecar_path(out_dir, name), json.dumps(result))
    except OSError as e:
        raise write_failed(sidecar_path(out_dir, name), e, "shard record") from None
    return result
