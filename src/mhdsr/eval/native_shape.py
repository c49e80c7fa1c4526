"""The level-free shape error of held-out (native lo) sims against every hi seed, and the
realization floor (config key ``native_reference: all``; docs/design.md, "Metrics").

Held-out sims have no pixel truth; the ``reference_split`` mean spectrum is a few snapshots of
one seed, so a model error cannot be told from a less energetic run. Here:

- :func:`seed_spectra` -- one streaming pass over EVERY hi split (manifest ``source: "hi"``),
  one snapshot in memory, keeping the snapshots whose orbit lies in the held-out sims' scored
  orbit window ``[min - tol, max + tol]``, ``tol = WINDOW_REL_TOL * max(1, |min|, |max|)``
  orbits (the json record's ``time`` is converted with the sim's ``omega0``); the mean
  spectrum per sim (seed). The reference is the mean over seeds of those, each seed weighted
  equally.
- :func:`shape_block` -- per curve (methods, baselines, and the input when it has a hi-grid
  spectrum) and channel: the level-free shape error
  (:func:`mhdsr.analysis.shape.shape_error`: each spectrum divided by its own transition-band
  power) and the plain generated-band error against that reference; the leave-one-out
  realization floor (:func:`mhdsr.analysis.shape.leave_one_out`), and the verdict
  ``met = shape <= SHAPE_BAR or shape <= FLOOR_FACTOR x floor``. With fewer than 2 seeds in the
  window the floor is unavailable (a reason string, never a failure).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mhdsr.analysis.shape import generated_error, leave_one_out, shape_error
from mhdsr.analysis.spectra import power_spectrum
from mhdsr.eval.curve import Curve
from mhdsr.eval.inputs import EvalInputError, ShardTruth
from mhdsr.eval.planning import orbits, sim_omega

#: Relative tolerance of the orbit window (times are float64 orbits of the same run outputs).
WINDOW_REL_TOL = 1e-6
#: Verdict: a shape error at most this (dex) is met outright.
SHAPE_BAR = 0.15
#: Verdict: a shape error at most this many times the realization floor is met too.
FLOOR_FACTOR = 1.5
RULE = f"met = shape error <= {SHAPE_BAR} dex or <= {FLOOR_FACTOR} x the realization floor"
DEFINITION = (
    "level-free shape error: each spectrum divided by its own transition-band power, then the "
    "generated-band error mean_k |log10((E_m/P_m)/(E_r/P_r))| (dex); a run that is only less "
    "energetic scores 0. plain = the level-dependent generated-band error mean_k |log10 E_m/E_r|."
)
FLOOR_MEANING = (
    "the floor is the error a real hi-grid run itself scores: each seed's mean spectrum against "
    "the mean of the other seeds (leave-one-out), averaged over seeds"
)


@dataclass
class SeedSpectra:
    """Mean hi spectra per seed over an orbit window (see :func:`seed_spectra`).

    Attributes:
        splits: the hi splits read; ``window``: ``[lo, hi]`` orbits (tolerance included in
            ``tol``, not in ``window``); ``tol``: the tolerance in orbits.
        sims: the seeds (sim ids) with at least one snapshot in the window, sorted.
        counts: snapshots per seed (aligned with ``sims``).
        spectra: float64 ``(S, C, K)`` mean spectrum per seed, ``k = 1 .. N_hi/2``.
        outside: hi snapshots read whose orbit lies outside the window.
        unplaced: hi snapshots without a ``time`` or ``sim`` in their json record (left out).
    """

    splits: list[str]
    window: tuple[float, float]
    tol: float
    sims: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    spectra: np.ndarray | None = None
    outside: int = 0
    unplaced: int = 0

    @property
    def reference(self) -> np.ndarray | None:
        """``(C, K)`` mean over seeds of the per-seed mean spectra (``None`` without seeds)."""
        return None if self.spectra is None else self.spectra.mean(axis=0)


def orbit_window(values: Sequence[float]) -> tuple[float, float, float] | None:
    """``(min, max, tol)`` of the finite orbits in ``values`` (``None`` if there are none);
    ``tol = WINDOW_REL_TOL * max(1, |min|, |max|)``."""
    v = [float(x) for x in values if math.isfinite(float(x))]
    if not v:
        return None
    lo, hi = min(v), max(v)
    return lo, hi, WINDOW_REL_TOL * max(1.0, abs(lo), abs(hi))


def seed_spectra(
    truth: ShardTruth, channels: Sequence[str], window: tuple[float, float], tol: float
) -> SeedSpectra:
    """Mean hi spectrum per seed over every hi split, snapshots in ``window`` (orbits) only.

    One pass, one snapshot in memory: each sample's json record is read first and its hi field
    only when its orbit ``time * omega0 / (2 pi)`` lies in ``[window[0] - tol, window[1] + tol]``.

    Args:
        truth: the shard folder.
        channels: the channels to keep (in this order).
        window: ``(min, max)`` orbits of the held-out sims' scored snapshots.
        tol: tolerance in orbits (:func:`orbit_window`).

    Returns:
        The :class:`SeedSpectra` (``spectra`` ``None`` if no snapshot is in the window).

    Raises:
        EvalInputError: a channel is not in the shards, or a shard cannot be read.
    """
    missing = [c for c in channels if c not in truth.channels]
    if missing:
        raise EvalInputError(
            f"shards {truth.root}: channels {missing} are not in manifest.json {truth.channels}"
        )
    idx = [truth.channels.index(c) for c in channels]
    n_hi = truth.hi_shape[-1]
    splits = [s for s, r in truth.manifest["splits"].items() if r.get("source") == "hi"]
    out = SeedSpectra(splits=splits, window=(float(window[0]), float(window[1])), tol=float(tol))
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for split in splits:
        if not truth.has_split(split):
            continue
        for key, members in sorted(truth.index(split).items()):
            if "hi.npy" not in members:
                continue
            rec = truth.record(split, key)
            sim, t = rec.get("sim"), rec.get("time")
            if sim is None or t is None:
                out.unplaced += 1
                continue
            orb = orbits([float(t)], sim_omega(truth.manifest, str(sim)))[0]
            if not window[0] - tol <= orb <= window[1] + tol:
                out.outside += 1
                continue
            e = power_spectrum(truth.hi(split, key)[idx])[:, 1 : n_hi // 2 + 1]
            sim = str(sim)
            sums[sim] = e if sim not in sums else sums[sim] + e
            counts[sim] = counts.get(sim, 0) + 1
    out.sims = sorted(sums)
    out.counts = [counts[s] for s in out.sims]
    if out.sims:
        out.spectra = np.stack([sums[s] / counts[s] for s in out.sims])
    return out


def _per_channel(values: np.ndarray, channels: Sequence[str]) -> dict[str, float]:
    return {ch: float(values[c]) for c, ch in enumerate(channels)}


def _reference_record(seeds: SeedSpectra) -> dict[str, Any]:
    lo, hi = seeds.window
    n = sum(seeds.counts)
    return {
        "description": (
            f"mean over {len(seeds.sims)} hi seed(s) (each weighted equally) of each seed's mean "
            f"spectrum over its {n} snapshot(s) at orbits {lo:.4g}–{hi:.4g} (± {seeds.tol:.2g}), "
            f"from the splits {seeds.splits}"
        ),
        "splits": seeds.splits,
        "seeds": dict(zip(seeds.sims, seeds.counts, strict=True)),
        "snapshots": n,
        "orbit_window": [lo, hi],
        "orbit_tolerance": seeds.tol,
        "outside_window": seeds.outside,
        "without_time_or_sim": seeds.unplaced,
    }


def unavailable(reason: str) -> dict[str, Any]:
    """The block of a held-out group whose shape error is not computed, with the reason."""
    return {"available": False, "reason": reason, "rule": RULE}


def shape_block(
    curves: dict[str, Curve],
    names: Sequence[str],
    seeds: SeedSpectra,
    channels: Sequence[str],
    n_lo: int,
    n_hi: int,
) -> dict[str, Any]:
    """The ``native_shape`` entry of the held-out group (module docstring).

    Args:
        curves: the group's pooled curves (name -> :class:`Curve`, spectra ``(C, K)``).
        names: the curves to score, in report order (methods, then baselines); ``"input"``
            is added when its spectrum is on the hi grid.
        seeds: :func:`seed_spectra` over the group's orbit window.
        channels: channel names (the ``C`` axis).
        n_lo, n_hi: grid sizes that set the bands.

    Returns:
        ``{"available", "rule", "shape_bar", "floor_factor", "definition", "floor_meaning",
        "reference", "floor", "curves"}``; ``floor.channels[ch] = {"shape", "plain"}`` (mean over seeds),
        ``floor.per_seed[sim][ch] = {"shape", "plain"}``; ``curves[name][ch] = {"shape_error",
        "generated_error", "bar", "met"}`` with ``bar = max(SHAPE_BAR, FLOOR_FACTOR x floor)``
        (``SHAPE_BAR`` alone when the floor is unavailable). Without any seed in the window:
        ``{"available": False, "reason", ...}``.
    """
    ref = seeds.reference
    lo, hi = seeds.window
    if ref is None:
        return {
            **unavailable(
                f"no hi snapshot of any split {seeds.splits} lies in the held-out orbit window "
                f"{lo:.4g}–{hi:.4g} (± {seeds.tol:.2g}); floor unavailable"
            ),
            "reference": _reference_record(seeds),
        }
    k = np.arange(1, n_hi // 2 + 1)
    floor: dict[str, Any]
    bar = np.full(len(channels), SHAPE_BAR)
    assert seeds.spectra is not None
    if len(seeds.sims) >= 2:
        loo = leave_one_out(seeds.spectra, k, n_lo, n_hi)
        fs, fp = loo["shape"].mean(axis=0), loo["plain"].mean(axis=0)
        bar = np.maximum(bar, FLOOR_FACTOR * fs)
        floor = {
            "available": True,
            "channels": {
                ch: {"shape": float(fs[c]), "plain": float(fp[c])} for c, ch in enumerate(channels)
            },
            "per_seed": {
                sim: {
                    ch: {"shape": float(loo["shape"][i, c]), "plain": float(loo["plain"][i, c])}
                    for c, ch in enumerate(channels)
                }
                for i, sim in enumerate(seeds.sims)
            },
        }
    else:
        floor = {
            "available": False,
            "reason": f"only {len(seeds.sims)} hi seed(s) ({', '.join(seeds.sims)}) in the "
            f"orbit window {lo:.4g}–{hi:.4g}: the leave-one-out floor needs >= 2; the verdict "
            f"uses the {SHAPE_BAR} dex bar alone",
        }
    out_curves: dict[str, Any] = {}
    for name in [*names, "input"]:
        cur = curves.get(name)
        spec = None if cur is None else cur.spectrum
        if spec is None or spec.shape[-1] != k.size:
            continue  # e.g. the input on the lo grid: no generated band
        se = shape_error(spec, ref, k, n_lo, n_hi)
        ge = generated_error(spec, ref, k, n_lo, n_hi)
        out_curves[name] = {
            ch: {
                "shape_error": float(se[c]),
                "generated_error": float(ge[c]),
                "bar": float(bar[c]),
                "met": bool(se[c] <= bar[c]),
            }
            for c, ch in enumerate(channels)
        }
    return {
        "available": True,
        "rule": RULE,
        "shape_bar": SHAPE_BAR,
        "floor_factor": FLOOR_FACTOR,
        "definition": DEFINITION,
        "floor_meaning": FLOOR_MEANING,
        "reference": _reference_record(seeds),
        "floor": floor,
        "curves": out_curves,
    }
