"""Evenly spaced snapshots of a run: the time grid of forecast windows, rollouts and their truth
(docs/design.md "Forecast stage").

AthenaK writes a snapshot at the first step at or after each nominal output time, so the
header times of an evenly written run sit up to one timestep past ``n * dt_out``: two snapshots
are ``dt`` apart when ``|t_j - t_i - dt| <= tol``, with ``tol`` a small multiple of the run's
mean timestep ``time / cycle``. Spacings always come from the header times, never from file
numbers (runs are numbered at their own output cadence, some were thinned, and the last file of
a run stopped by its wall clock is off the cadence).

A *chain* is a maximal sequence of snapshots each ``dt`` after the previous one. A run written
at a finer cadence (``dt_out = dt / n``) has ``n`` interleaved chains; a missing file, an
off-cadence file or a change of cadence ends a chain. Forecast windows are runs of ``K``
consecutive chain members, so they never span a gap.

Also here: :func:`lo_of_hi`, the lo field of a hi run as every forecast path computes it
(``avgpool2`` in float64, rounded once to float32).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def orbit_time(orbits: float, omega0: float = 1.0) -> float:
    """``orbits * 2 pi / omega0``: a span in orbits as simulation time."""
    return float(orbits) * 2.0 * math.pi / float(omega0)


def lo_of_hi(hi: np.ndarray) -> np.ndarray:
    """``avgpool2`` of ``hi`` ``(..., H, W)``: the mean of each 2x2 block, summed in float64 and
    rounded once to float32 (docs/design.md: ``lo = avgpool2(hi)``).

    Returns:
        ``(..., H/2, W/2)`` float32, C-contiguous.

    Raises:
        ValueError: H or W odd.
    """
    h, w = hi.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(f"avgpool2 needs even H and W, got {h}x{w}")
    a = hi[..., 0::2, :].astype(np.float64)
    a += hi[..., 1::2, :]
    out = a[..., 0::2] + a[..., 1::2]
    out *= 0.25
    return np.ascontiguousarray(out, dtype=np.float32)


@dataclass
class Cadence:
    """The chains of one run at spacing ``dt``.

    Attributes:
        snapshots: the run's snapshot numbers, sorted by time.
        times: their header times (code units).
        dt: the spacing (code units); ``tol`` the accepted deviation of each spacing.
        chains: index lists into ``snapshots``; every consecutive pair is ``dt`` apart and no
            chain extends another (maximal), sorted by first time.
    """

    snapshots: list[int]
    times: list[float]
    dt: float
    tol: float
    chains: list[list[int]]

    def chain_snapshots(self) -> list[list[int]]:
        """The chains as snapshot numbers."""
        return [[self.snapshots[i] for i in c] for c in self.chains]

    def windows(self, length: int, start_stride: int = 1) -> list[list[int]]:
        """Windows of ``length`` consecutive chain members (snapshot numbers), starting at every
        ``start_stride``-th member of each chain, sorted by first time."""
        out = []
        for c in self.chains:
            for s in range(0, len(c) - length + 1, start_stride):
                out.append([self.snapshots[i] for i in c[s : s + length]])
        return sorted(out, key=lambda w: self.times[self.snapshots.index(w[0])])

    def after(self, snapshot: int, steps: int) -> list[int | None]:
        """The snapshots ``k dt`` after ``snapshot`` for ``k = 1 .. steps`` along its chain (each
        ``None`` past the chain's end: no truth there)."""
        i = self.snapshots.index(snapshot)
        for c in self.chains:
            if i in c:
                pos = c.index(i)
                nxt = [self.snapshots[j] for j in c[pos + 1 : pos + 1 + steps]]
                return [*nxt, *([None] * (steps - len(nxt)))]
        raise ValueError(f"snapshot {snapshot} is in no chain")  # pragma: no cover

    def at_time(self, t: float) -> int | None:
        """The snapshot whose time is within ``tol`` of ``t``, or ``None`` (AthenaK writes at
        the first step past each nominal time, so this holds however far ``t`` is from the
        others: a truth lookup that is not stopped by a gap in between)."""
        i = int(np.argmin(np.abs(np.asarray(self.times) - t)))
        return self.snapshots[i] if abs(self.times[i] - t) <= self.tol else None

    def before(self, snapshot: int) -> int | None:
        """The snapshot ``dt`` before ``snapshot`` on its chain, or ``None``."""
        i = self.snapshots.index(snapshot)
        for c in self.chains:
            if i in c:
                pos = c.index(i)
                return self.snapshots[c[pos - 1]] if pos > 0 else None
        return None  # pragma: no cover

    def spacings(self) -> list[tuple[int, int, float]]:
        """``(snapshot a, snapshot b, t_b - t_a)`` of consecutive snapshots in time order."""
        return [
            (self.snapshots[i], self.snapshots[i + 1], self.times[i + 1] - self.times[i])
            for i in range(len(self.snapshots) - 1)
        ]

    def describe_gaps(self, omega0: float = 1.0, limit: int = 6) -> str:
        """Consecutive snapshots (in time) that are not ``dt`` apart, in orbits, e.g.
        ``"00013 -> 00016: 0.75 orbits"``; ``""`` when there is none."""
        per_orbit = orbit_time(1.0, omega0)
        bad = [(a, b, d) for a, b, d in self.spacings() if abs(d - self.dt) > self.tol]
        shown = [f"{a:05d} -> {b:05d}: {d / per_orbit:.3g} orbits" for a, b, d in bad[:limit]]
        more = f" (+{len(bad) - limit} more)" if len(bad) > limit else ""
        return ", ".join(shown) + more


def cadence(snapshots: Sequence[int], times: Sequence[float], dt: float, tol: float) -> Cadence:
    """The chains of a run whose snapshots ``snapshots`` have header times ``times``.

    Successors: snapshot ``j`` follows ``i`` when ``|t_j - t_i - dt| <= tol`` (the closest such
    ``j`` when several qualify); each snapshot has at most one predecessor.

    Args:
        snapshots: snapshot numbers (any order; distinct).
        times: their times (code units), same length.
        dt: the spacing, > 0.
        tol: the accepted deviation, ``0 <= tol < dt / 2``.

    Returns:
        The :class:`Cadence` (snapshots sorted by time).

    Raises:
        ValueError: lengths differ, repeated snapshots or times, ``dt <= 0`` or ``tol`` out of
            range.
    """
    if len(snapshots) != len(times):
        raise ValueError(f"{len(snapshots)} snapshots but {len(times)} times")
    if len(set(snapshots)) != len(snapshots):
        raise ValueError(f"repeated snapshot numbers in {list(snapshots)}")
    if not dt > 0 or not 0 <= tol < dt / 2:
        raise ValueError(f"need dt > 0 and 0 <= tol < dt/2, got dt={dt}, tol={tol}")
    order = sorted(range(len(times)), key=lambda i: (times[i], snapshots[i]))
    snaps = [int(snapshots[i]) for i in order]
    ts = [float(times[i]) for i in order]
    if any(ts[i + 1] <= ts[i] for i in range(len(ts) - 1)):
        raise ValueError(f"snapshots with equal times in {snaps}")
    t = np.asarray(ts)
    succ: dict[int, int] = {}
    has_pred: set[int] = set()
    for i in range(len(ts)):
        dev = np.abs(t - t[i] - dt)
        j = int(np.argmin(dev))
        if dev[j] <= tol and j not in has_pred:
            succ[i] = j
            has_pred.add(j)
    chains = []
    for i in range(len(ts)):
        if i in has_pred:
            continue
        c = [i]
        while c[-1] in succ:
            c.append(succ[c[-1]])
        chains.append(c)
    return Cadence(snaps, ts, float(dt), float(tol), chains)
