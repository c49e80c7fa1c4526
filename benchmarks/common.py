"""Shared helpers for benchmarks: timing, data locations, cache eviction."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "data" / "athenak"
#: a larger AthenaK folder (same layout as data/athenak) to benchmark too: $MHDSR_BENCH_DATA
EXTRA = Path(os.environ["MHDSR_BENCH_DATA"]) if os.environ.get("MHDSR_BENCH_DATA") else None


def datasets(quick: bool) -> dict[str, Path]:
    """Bundled sample always; the folder in ``$MHDSR_BENCH_DATA`` too when set and not quick."""
    out = {"bundled": BUNDLED}
    if not quick and EXTRA is not None and EXTRA.is_dir():
        out["extra"] = EXTRA
    return out


def timeit(fn: Callable[[], object], repeat: int = 5) -> float:
    """Median wall time of ``fn`` over ``repeat`` calls (after one warm-up call)."""
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def interleaved(fns: dict[str, Callable[[], object]], repeat: int = 5) -> dict[str, float]:
    """Median times of several functions measured in alternation (so that machine noise hits
    all of them alike; ratios are then meaningful within one run)."""
    for f in fns.values():
        f()
    ts: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in ts.items()}


def evict(paths: list[Path]) -> bool:
    """Drop ``paths`` from the page cache (posix_fadvise DONTNEED); False if unsupported."""
    ok = True
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        except (OSError, AttributeError):
            ok = False
    return ok
