"""Per-channel running statistics in float64, mergeable across samples, shards and workers.

A :class:`ChannelStats` holds, per channel, ``count``, ``mean``, ``M2 = sum((x - mean)^2)``,
``min`` and ``max``. Samples are added with an exact two-pass float64 computation and combined
with the parallel update of Chan, Golub & LeVeque (1979), "Updating formulae and a pairwise
algorithm for computing sample variances":

    n = n_a + n_b,  d = mean_b - mean_a,
    mean = mean_a + d * n_b / n,
    M2 = M2_a + M2_b + d^2 * n_a * n_b / n.

The population std is ``sqrt(M2 / count)`` (may be 0 for a constant channel; the loader's floor
is :func:`mhdsr.dataset.manifest.normalization`). Merging in a fixed order (shard order)
makes the result independent of which worker built which shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class ChannelStats:
    """Running statistics of C channels. Arrays are float64 ``(C,)``; ``count`` is an int
    (every channel of a sample has the same number of values)."""

    count: int
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray

    @classmethod
    def empty(cls, channels: int) -> ChannelStats:
        """Statistics of no data (mean/M2 0, min +inf, max -inf)."""
        return cls(
            0,
            np.zeros(channels),
            np.zeros(channels),
            np.full(channels, np.inf),
            np.full(channels, -np.inf),
        )

    @classmethod
    def of(cls, x: np.ndarray) -> ChannelStats:
        """Exact statistics of one field.

        Args:
            x: (C, ...) array of any float dtype; accumulated in float64 (two passes: the mean,
                then the sum of squared deviations from it).
        """
        flat = np.asarray(x).reshape(x.shape[0], -1)
        x64 = flat.astype(np.float64)
        n = x64.shape[1]
        mean = x64.sum(axis=1) / n
        x64 -= mean[:, None]
        m2 = np.einsum("ij,ij->i", x64, x64)
        return cls(
            n, mean, m2, flat.min(axis=1).astype(np.float64), flat.max(axis=1).astype(np.float64)
        )

    @property
    def channels(self) -> int:
        return int(self.mean.shape[0])

    def merge(self, other: ChannelStats) -> ChannelStats:
        """Chan et al. parallel combination of two disjoint data sets (returns a new object)."""
        if other.count == 0:
            return ChannelStats(
                self.count, self.mean.copy(), self.m2.copy(), self.min.copy(), self.max.copy()
            )
        if self.count == 0:
            return ChannelStats(
                other.count, other.mean.copy(), other.m2.copy(), other.min.copy(), other.max.copy()
            )
        na, nb = float(self.count), float(other.count)
        n = na + nb
        d = other.mean - self.mean
        mean = self.mean + d * (nb / n)
        m2 = self.m2 + other.m2 + d * d * (na * nb / n)
        return ChannelStats(
            self.count + other.count,
            mean,
            m2,
            np.minimum(self.min, other.min),
            np.maximum(self.max, other.max),
        )

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation ``sqrt(M2 / count)`` (float64, (C,))."""
        if self.count == 0:
            return np.full(self.channels, np.nan)
        return np.sqrt(np.maximum(self.m2, 0.0) / self.count)

    def to_state(self) -> dict[str, Any]:
        """JSON-able exact state (Python floats round-trip float64 exactly)."""
        return {
            "count": int(self.count),
            "mean": self.mean.tolist(),
            "m2": self.m2.tolist(),
            "min": self.min.tolist(),
            "max": self.max.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ChannelStats:
        """Inverse of :meth:`to_state`."""
        return cls(
            int(state["count"]),
            np.asarray(state["mean"], dtype=np.float64),
            np.asarray(state["m2"], dtype=np.float64),
            np.asarray(state["min"], dtype=np.float64),
            np.asarray(state["max"], dtype=np.float64),
        )

    def table(self, names: Sequence[str]) -> dict[str, dict[str, float | int]]:
        """Manifest form: ``{channel: {count, mean, std, min, max}}``."""
        std = self.std
        return {
            name: {
                "count": int(self.count),
                "mean": float(self.mean[c]),
                "std": float(std[c]),
                "min": float(self.min[c]),
                "max": float(self.max[c]),
            }
            for c, name in enumerate(names)
        }


def merge_all(parts: Sequence[ChannelStats], channels: int) -> ChannelStats:
    """Merge ``parts`` left to right (a fixed order gives bit-reproducible results)."""
    acc = ChannelStats.empty(channels)
    for p in parts:
        acc = acc.merge(p)
    return acc


def avgpool2_f64(x: np.ndarray) -> np.ndarray:
    """Mean of each 2x2 block of the last two axes, in float64 (docs/design.md: lo = avgpool2(hi)).

    Args:
        x: (..., H, W) array, H and W even.

    Returns:
        (..., H/2, W/2) float64. The training code computes the same restriction in float32
        (``mhdsr.method.grid.avgpool2``); the statistics use the exact float64 value.

    Raises:
        ValueError: H or W odd.
    """
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(f"avgpool2 needs even H and W, got {h}x{w}")
    a = x[..., 0::2, :].astype(np.float64)
    a += x[..., 1::2, :]
    out = a[..., 0::2] + a[..., 1::2]
    out *= 0.25
    return out
