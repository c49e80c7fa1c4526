"""Reader throughput: read + assemble snapshots vs ``np.fromfile`` of the same bytes.

Goal (issue 2): read + assemble >= 0.7 x the throughput of np.fromfile on the same files.
Measured warm (page cache: memory bound, the harshest case for the extra assembly copy) and
cold (files evicted from the page cache with posix_fadvise before each pass: I/O bound, the
case on a shared file system), with the output written into a reused buffer (as to-npy and the
shard builder do) and into a fresh allocation.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from common import datasets, evict, interleaved
from mhdsr.athenak import open_run


def _runs(root):
    return sorted(p for p in root.glob("mri*/seed_*") if p.is_dir())


def _measure(root, quick: bool) -> dict:
    items = []  # (run, snapshot)
    for sim in _runs(root):
        r = open_run(sim)
        snaps = r.snapshots()
        items += [(r, s) for s in (snaps[:4] if quick else snaps)]
    paths = [p for r, s in items for g in r.groups for p in r.paths(g, s)]
    nbytes = sum(p.stat().st_size for p in paths)
    bufs: dict = {}

    def read_reuse():
        for r, s in items:
            shape = (8, *r.resolution[1::-1])
            out = bufs.setdefault(shape, np.empty(shape, np.float32))
            r.read_snapshot(s, out=out)

    def read_fresh():
        for r, s in items:
            r.read_snapshot(s)

    def fromfile():
        for p in paths:
            np.fromfile(p, dtype=np.uint8)

    def cold(fn):
        def go():
            evict(paths)
            fn()

        return go

    warm = interleaved(
        {"fromfile": fromfile, "reuse": read_reuse, "fresh": read_fresh}, repeat=3 if quick else 7
    )
    res = {
        "snapshots": len(items),
        "bytes": nbytes,
        "fromfile_MBps_warm": nbytes / warm["fromfile"] / 1e6,
        "reader_MBps_warm": nbytes / warm["reuse"] / 1e6,
        "ratio_warm_reused_buffer": warm["fromfile"] / warm["reuse"],
        "ratio_warm_fresh_alloc": warm["fromfile"] / warm["fresh"],
        "goal": ">= 0.7 (I/O bound: the cold ratio)",
    }
    if evict(paths[:1]):
        cold_t = interleaved({"fromfile": cold(fromfile), "reuse": cold(read_reuse)}, repeat=3)
        res["ratio_cold_reused_buffer"] = cold_t["fromfile"] / cold_t["reuse"]
        res["fromfile_MBps_cold"] = nbytes / cold_t["fromfile"] / 1e6
        res["reader_MBps_cold"] = nbytes / cold_t["reuse"] / 1e6
    return res


def run(quick: bool = False) -> dict:
    """Reader vs np.fromfile on the bundled sample (and $MHDSR_BENCH_DATA when set, not quick)."""
    return {name: _measure(root, quick) for name, root in datasets(quick).items()}


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
