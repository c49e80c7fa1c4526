"""Shard-build throughput (issue 3): build MB/s vs raw read MB/s of the same .bin bytes, and the
speed-up from 1 to 2 worker processes.

For each data set (bundled sample; $MHDSR_BENCH_DATA too when set, unless quick) every snapshot of
every run is sharded (hi runs -> train/val/test by the default fractions, lo runs -> heldout).
Throughputs count the INPUT ``.bin`` bytes of the sharded snapshots:

* ``raw_read``: ``np.fromfile`` of each of those files (no parsing);
* ``build_1w`` / ``build_2w``: ``mhdsr shard build`` with 1 worker (in-process) / 2 worker
  processes (forkserver already started: the one-off pool start is reported separately), into
  a temporary folder on the same disk, ``--overwrite`` each time.

Warm = files in the page cache (memory-bound: the harshest case for the builder, whose
encode/hash/statistics passes then dominate); cold = input files evicted with posix_fadvise
before every pass (I/O-bound, closer to a shared file system). Timings interleave the variants
and take medians; the machine may be shared, so treat numbers as indicative. A per-stage
profile (ms per 256^2 sample, one process) says where the build time goes.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import datasets, evict, interleaved
from mhdsr.athenak import open_run
from mhdsr.shard_builder.build import build
from mhdsr.shard_builder.config import ShardBuildConfig
from mhdsr.shard_builder.plan import make_plan


def _config(root: Path, out: Path, workers: int) -> ShardBuildConfig:
    cfg = ShardBuildConfig(
        hi_runs=[str(root / "mri256*" / "seed_*")],
        lo_runs=[str(root / "mri128*" / "seed_000[0-4]")],  # not 5, 6 (0.1-orbit forecast runs)
        output_dir=str(out),
        workers=workers,
        progress=False,
    )
    cfg.shard.max_samples = 4  # several shards per split, so two workers share the load
    return cfg


def _input_files(cfg: ShardBuildConfig) -> list[Path]:
    runs: dict[str, object] = {}
    files = []
    for sp in make_plan(cfg).shards:
        for it in sp.items:
            for path, snap in [(it["path"], it["snapshot"])] + (
                [(it["pair"]["path"], it["pair"]["snapshot"])] if it.get("pair") else []
            ):
                r = runs.setdefault(path, open_run(path))
                files += [p for g in r.groups for p in r.paths(g, snap)]
    return files


def _profile(root: Path, n: int = 6) -> dict[str, float]:
    """ms per sample of each build stage, on the first ``n`` snapshots of one 256^2 run."""
    import hashlib
    import io

    from webdataset.writer import TarWriter

    from mhdsr.dataset.npy import encode_npy
    from mhdsr.shard_builder.stats import ChannelStats, avgpool2_f64

    run = open_run(sorted(root.glob("mri256*/seed_*"))[0])
    out = np.empty((8, *run.resolution[1::-1]), np.float32)
    t = dict.fromkeys(("read", "encode", "stats_hi", "stats_lo", "tar", "sha256"), 0.0)
    snaps = run.snapshots()[:n]
    for s in snaps:
        t0 = time.perf_counter()
        x = run.read_snapshot(s, out=out).data
        t1 = time.perf_counter()
        b = encode_npy(x)
        t2 = time.perf_counter()
        ChannelStats.of(x)
        t3 = time.perf_counter()
        ChannelStats.of(avgpool2_f64(x))
        t4 = time.perf_counter()
        with TarWriter(io.BytesIO(), encoder=False, mtime=0) as tw:
            tw.write({"__key__": "k", "hi.npy": b, "json": b"{}"})
        t5 = time.perf_counter()
        hashlib.sha256(b).digest()
        t6 = time.perf_counter()
        for k, dt in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
            t[k] += dt
    return {k: round(v / len(snaps) * 1e3, 3) for k, v in t.items()}


def _bench(root: Path, quick: bool) -> dict:
    """Measure one data set (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="bench_shards_") as tmp:
        out = Path(tmp) / "shards"
        cfg1, cfg2 = _config(root, out, 1), _config(root, out, 2)
        files = _input_files(cfg1)
        nbytes = sum(p.stat().st_size for p in files)

        def quiet(msg: str) -> None:
            pass

        t0 = time.perf_counter()
        build(cfg2, overwrite=True, log=quiet)  # starts the forkserver (imports once)
        first_2w = time.perf_counter() - t0
        res = build(cfg1, overwrite=True, log=quiet)

        def raw_read() -> None:
            for p in files:
                np.fromfile(p, dtype=np.uint8)

        fns = {
            "raw_read": raw_read,
            "build_1w": lambda: build(cfg1, overwrite=True, log=quiet),
            "build_2w": lambda: build(cfg2, overwrite=True, log=quiet),
        }
        warm = interleaved(fns, repeat=3 if quick else 5)

        def cold(fn):
            def go() -> None:
                evict(files)
                fn()

            return go

        cold_t = (
            interleaved({k: cold(f) for k, f in fns.items()}, repeat=3) if evict(files[:1]) else {}
        )
        out_bytes = sum(p.stat().st_size for p in out.glob("*.tar"))
    r = {
        "samples": sum(res["samples"].values()),
        "input_MB": round(nbytes / 1e6, 2),
        "output_MB": round(out_bytes / 1e6, 2),
        "first_build_2w_s (incl. pool start)": round(first_2w, 3),
    }
    for label, t in (("warm", warm), ("cold", cold_t)):
        if not t:
            continue
        r[f"raw_read_MBps_{label}"] = round(nbytes / t["raw_read"] / 1e6, 1)
        r[f"build_1w_MBps_{label}"] = round(nbytes / t["build_1w"] / 1e6, 1)
        r[f"build_2w_MBps_{label}"] = round(nbytes / t["build_2w"] / 1e6, 1)
        r[f"ratio_build_1w_vs_read_{label}"] = round(t["raw_read"] / t["build_1w"], 3)
        r[f"ratio_build_2w_vs_read_{label}"] = round(t["raw_read"] / t["build_2w"], 3)
        r[f"speedup_1_to_2_workers_{label}"] = round(t["build_1w"] / t["build_2w"], 3)
    r["goals"] = {"ratio_build_vs_read": ">= 0.5", "speedup_1_to_2_workers": ">= 1.8"}
    r["profile_ms_per_256sq_sample"] = _profile(root)
    return r


def run(quick: bool = False) -> dict:
    """Benchmark results (JSON-able); ``quick``: the bundled sample only, fewer repeats."""
    results: dict = {"load_avg_before": list(os.getloadavg())}
    for name, root in datasets(quick).items():
        results[name] = _bench(root, quick)
    results["load_avg_after"] = list(os.getloadavg())
    results["cpus"] = len(os.sched_getaffinity(0))
    return results


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
