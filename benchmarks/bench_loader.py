"""Loader capacity (issue 14): how many 256^2 training samples per second one loader worker
delivers, and how close that comes to decoding the same tar bytes in memory.

Both figures run the loader's own code on full 256^2 ``hi`` samples of the bundled train shards
(all 8 channels, normalized with the manifest's train statistics, batches of ``micro_batch`` =
8 as in gpu-40m, shuffle buffer 32), page cache warm:

* ``in_memory``: the tar bytes already in memory (``bytes``); the loader's tar reader
  (:func:`mhdsr.dataset.shards.tar_samples`) over them, the per-sample checksum check,
  :func:`mhdsr.dataset.npy.decode_npy` (a view) and :meth:`~mhdsr.dataset.normalize.Normalizer.normalize_into` straight into the
  batch tensor: the decode work alone, in this process (no file reads, no shuffle, no process
  hand-off);
* ``loader_1_worker``: :func:`mhdsr.dataset.stream.make_loader` with ONE worker process, as
  training runs it: shard files read by the worker, shuffle buffer, batches in reused shared
  memory, received (and copied out of the buffer) by this process;
* ``loader_in_process``: the same stream without a worker (``workers=0``), for reference;
* ``checksum_cost``: the in-memory decode with the per-sample checksum check of
  :mod:`mhdsr.dataset.shards` (what the loader does: the digest, which makes the finite check
  redundant) over the same decode without it (the finite check instead; goal: >= 0.95, the
  check costs at most 5 % of the loader's decode rate).

Augmentation, crops, ``lo = avgpool2(hi)``, ``u = Up(lo)`` and the noise are not loader work:
they run on the training device (:meth:`mhdsr.method.flow.Formulation.loss`).

The two are measured in alternating blocks (median of block rates; load on a shared machine hits
both alike). Goal: loader_1_worker >= 0.8 x in_memory. ``workers_per_gpu_for_160`` = workers
one GPU needs at 160 samples/s (the gpu-40m estimate of 40 % MFU on an H100/H200:
2.52 TFLOP per sample), from the per-worker rate measured HERE (a CPU-derived figure: a GPU
node's cores are typically faster and unloaded).
"""

from __future__ import annotations

import io
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import REPO
from mhdsr.dataset.manifest import normalization, read_manifest
from mhdsr.dataset.normalize import Normalizer
from mhdsr.dataset.npy import decode_npy
from mhdsr.dataset.shards import JSON, check_sample, tar_samples
from mhdsr.dataset.stream import ShardStream, make_loader, shard_list

#: gpu-40m's loader settings
MICRO_BATCH, SHUFFLE = 8, 32
#: samples/s one GPU consumes in the gpu-40m estimate (README, "Capacity at full scale")
TARGET_PER_GPU = 160.0


def build_demo_shards(out: Path) -> Path:
    """``mhdsr shard build`` of the bundled sample (configs/shard/demo.yaml) into ``out``."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "DS_ACCELERATOR": "cpu"}
    cmd = [sys.executable, "-m", "mhdsr", "shard", "build", "--config",
           str(REPO / "configs/shard/demo.yaml"), f"output_dir={out}"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, env=env, cwd=REPO)
    return out


def _setup(shards: Path) -> tuple[list[str], Normalizer, tuple[int, ...]]:
    m = read_manifest(shards)
    mean, std = normalization(m, "hi", m["channels"])
    norm = Normalizer(np.asarray(mean, np.float32), np.asarray(std, np.float32))
    return shard_list(shards, m, "train"), norm, tuple(m["shapes"]["hi"])


def in_memory_decoder(
    urls: list[str], norm: Normalizer, shape: tuple[int, ...], verify: bool = True
):
    """``n -> seconds`` to decode ``n`` samples (rounded up to whole batches) from the tar bytes
    held in memory, cycling over the shards: the loader's tar reader
    (:func:`~mhdsr.dataset.shards.tar_samples`) over ``io.BytesIO``, the loader's checksum
    check (``verify``; without it the json member is read all the same), decode and finite
    check, normalization straight into the batch."""
    blobs = [Path(u).read_bytes() for u in urls]

    def decode(n: int) -> float:
        t0 = time.perf_counter()
        done = 0
        out, i = torch.empty((MICRO_BATCH, *shape)), 0
        while done < n:
            for blob in blobs:
                for s in tar_samples(io.BytesIO(blob), "memory", ("hi.npy", JSON), verify=False):
                    ok = verify and check_sample(s)
                    x = decode_npy(s["hi.npy"], s["__key__"], "hi.npy", shape, copy=False)
                    if not ok and not np.isfinite(x.sum()):  # implied by a verified digest
                        raise ValueError("non-finite sample")
                    norm.normalize_into(x, out.numpy()[i])
                    i += 1
                    if i == MICRO_BATCH:
                        out, i, done = torch.empty((MICRO_BATCH, *shape)), 0, done + MICRO_BATCH
        return time.perf_counter() - t0

    return decode


def measure(shards: Path, quick: bool) -> dict:
    """The figures of the module docstring on the shard folder ``shards``."""
    urls, norm, shape = _setup(shards)
    torch.set_num_threads(1)
    decode = in_memory_decoder(urls, norm, shape)
    unchecked = in_memory_decoder(urls, norm, shape, verify=False)
    n = 4 * MICRO_BATCH if quick else 8 * MICRO_BATCH
    blocks = 3 if quick else 6

    def stream() -> ShardStream:
        return ShardStream(urls, "hi.npy", shape, list(range(shape[0])), norm, MICRO_BATCH,
                           seed=0, rank=0, segment=0, shuffle_buffer=SHUFFLE)  # fmt: skip

    def timed(it) -> float:
        t0 = time.perf_counter()
        got = 0
        while got < n:
            got += len(next(it)["x"])
        return time.perf_counter() - t0

    # the checksum cost first, with no loader worker alive (a worker refilling its prefetch
    # queue would slow whichever decode runs next); the order alternates per block
    decode(MICRO_BATCH), unchecked(MICRO_BATCH)
    r_chk, r_u = [], []
    for b in range(2 * blocks):
        first, second = (decode, unchecked) if b % 2 else (unchecked, decode)
        t1, t2 = first(n), second(n)
        r_chk.append(n / (t1 if first is decode else t2))
        r_u.append(n / (t2 if first is decode else t1))
    cost = [c / u for c, u in zip(r_chk, r_u)]

    worker = make_loader(stream(), 1, 2, pin_memory=False).segment(0)
    inproc = make_loader(stream(), 0, 2, pin_memory=False).segment(0)
    try:
        decode(MICRO_BATCH), timed(worker), timed(inproc)  # warm-up: page cache, workers, buffers
        r_mem, r_w, r_p = [], [], []
        for _ in range(blocks):
            r_mem.append(n / decode(n))
            r_w.append(n / timed(worker))
            r_p.append(n / timed(inproc))
    finally:
        worker.shutdown()
        inproc.shutdown()
    mem, w1, p0 = statistics.median(r_mem), statistics.median(r_w), statistics.median(r_p)
    ratios = [w / m for w, m in zip(r_w, r_mem)]
    return {
        "sample_MB": round(4 * math.prod(shape) / 1e6, 3),
        "micro_batch": MICRO_BATCH,
        "shuffle_buffer": SHUFFLE,
        "in_memory_samples_per_s": round(mem, 1),
        "loader_1_worker_samples_per_s": round(w1, 1),
        "loader_in_process_samples_per_s": round(p0, 1),
        "ratio_loader_1_worker_vs_in_memory": round(statistics.median(ratios), 3),
        "ratio_range_over_blocks": [round(min(ratios), 3), round(max(ratios), 3)],
        "goal": ">= 0.8",
        "in_memory_unchecked_samples_per_s": round(statistics.median(r_u), 1),
        "checksum_cost": {
            "ratio_checked_vs_unchecked": round(statistics.median(cost), 3),
            "range_over_blocks": [round(min(cost), 3), round(max(cost), 3)],
            "goal": ">= 0.95",
        },
        "loader_1_worker_MBps": round(w1 * 4 * math.prod(shape) / 1e6, 1),
        "workers_per_gpu_for_160": math.ceil(TARGET_PER_GPU / w1),
        "note": "CPU-derived on this machine (shared, loaded: absolute rates are indicative; "
        "the ratio is measured in alternating blocks)",
    }


def run(quick: bool = False) -> dict:
    """Benchmark results (JSON-able); builds the demo shards in a temporary folder."""
    out: dict = {"load_avg_before": list(os.getloadavg())}
    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp:
        out |= measure(build_demo_shards(Path(tmp) / "shards"), quick)
    out["load_avg_after"] = list(os.getloadavg())
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
