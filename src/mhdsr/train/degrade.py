"""The fit of degradation matching at the start of ``mhdsr train`` (``method.degrade``):
avgpool2 then an isotropic transfer function fitted to native / avgpool2 mean spectra
(:mod:`mhdsr.method.degrade` holds the formula and the filter).

Both spectra are per channel, in the shards' normalized units, on the lo grid, shells
``k = 0 .. N_lo / 2`` (:func:`mhdsr.analysis.spectra.power_spectrum`):

* ``E_pool``: the mean over the first ``method.degrade_samples`` train samples (deterministic,
  as ``s_r``'s samples) of the spectrum of ``avgpool2(hi_n)``;
* ``E_native``: the native lo snapshots of ``method.degrade_runs`` whose orbit lies in the orbit
  range of those train samples (``time * omega0 / 2 pi``, a relative tolerance of 1e-6), read
  with the AthenaK reader in the trained channels (the shard builder's channel mapping:
  :meth:`mhdsr.athenak.run.AthenaKRun.read_snapshot`), normalized like the shards; the mean over
  runs of each run's mean spectrum (every run weighs the same, whatever its output cadence).

Deterministic (same files, same float64 operations), so a resumed run fits the same ``T``; the
``T`` is recorded with every checkpoint and export (``normalization.degrade_transfer``) and a
resume whose refit differs is refused like changed train statistics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mhdsr.analysis.spectra import power_spectrum
from mhdsr.athenak import open_run
from mhdsr.dataset.normalize import Normalizer
from mhdsr.dataset.sims import resolve_globs, sim_name
from mhdsr.errors import AthenaKFormatError, ConfigError
from mhdsr.method.config import MethodConfig
from mhdsr.method.degrade import default_kref, fit_transfer
from mhdsr.method.grid import avgpool2

#: relative tolerance of the orbit window (times are float64 orbits of run outputs)
WINDOW_REL_TOL = 1e-6


def _orbit(time: float, omega: float) -> float:
    return float(time) * omega / (2.0 * math.pi)


def fit_degrade(
    method: MethodConfig,
    channels: Sequence[str],
    norm: Normalizer,
    hi_n: Sequence[np.ndarray],
    metas: Sequence[dict[str, Any]],
    manifest: dict[str, Any],
) -> tuple[Tensor, list[str]]:
    """Fit the degradation-matching transfer function of a training run.

    Args:
        method: the method config (``degrade_runs``, ``degrade_kref``).
        channels: the trained channel names (canonical, training order).
        norm: the shards' normalization of those channels (physical -> normalized).
        hi_n: the train samples: normalized ``(C, H, W)`` float32 hi fields.
        metas: their json records (``sim``, ``time``).
        manifest: the shards' manifest (``omega0`` of each sim, the ``heldout`` split's sims).

    Returns:
        ``(T, notes)``: ``T`` ``(C, N_lo / 2 + 1)`` float64
        (:func:`mhdsr.method.degrade.fit_transfer`) and lines for the run log.

    Raises:
        ConfigError: a glob of ``method.degrade_runs`` matches nothing, a run is not on the lo
            grid, lacks a trained channel or has no snapshot in the orbit window, or the spectra
            cannot be fitted (all name ``method.degrade_runs`` / ``method.degrade_kref``).
        AthenaKFormatError: an unreadable snapshot (names the run folder).
    """
    key = "method.degrade_runs"
    if not hi_n:
        raise ConfigError(f"config key {key!r}: no train sample to fit the transfer function on")
    h, w = (int(n) // 2 for n in hi_n[0].shape[-2:])
    if h != w:
        raise ConfigError(f"config key 'method.degrade': needs square fields, got lo {h}x{w}")
    k_count = h // 2 + 1

    # the avgpool2 side and its orbit window
    sims = dict((manifest.get("provenance") or {}).get("sims") or {})

    def omega_of(sim: Any) -> float:
        om = ((sims.get(sim) or {}).get("params") or {}).get("omega0") or 1.0
        return float(om) if float(om) > 0 else 1.0

    e_pool = np.zeros((len(channels), k_count))
    orbs = []
    for x, meta in zip(hi_n, metas, strict=True):
        lo = avgpool2(torch.from_numpy(np.asarray(x, np.float32)).double()).numpy()
        e_pool += power_spectrum(lo)[:, :k_count]
        if meta.get("time") is not None:
            orbs.append(_orbit(meta["time"], omega_of(meta.get("sim"))))
    e_pool /= len(hi_n)
    if not orbs:
        raise ConfigError(
            f"config key {key!r}: the train samples carry no time, so no orbit window selects "
            "the native snapshots"
        )
    o_lo, o_hi = min(orbs), max(orbs)
    tol = WINDOW_REL_TOL * max(1.0, abs(o_lo), abs(o_hi))

    # the native side: every run's snapshots in the window, each run weighing the same
    heldout = set((manifest.get("splits") or {}).get("heldout", {}).get("sims") or [])
    notes = []
    per_run = []
    used = 0
    for path in resolve_globs(list(method.degrade_runs), key):
        try:
            run = open_run(path)
            nx1, nx2, _ = run.resolution
        except AthenaKFormatError as e:
            raise ConfigError(f"config key {key!r}: {path}: {e}") from None
        if (nx2, nx1) != (h, w):
            raise ConfigError(
                f"config key {key!r}: {path} is a {nx1}x{nx2} run; the transfer function is fitted "
                f"on native runs of the lo grid {w}x{h}"
            )
        name = sim_name(path)
        if name in heldout:
            notes.append(
                f"method.degrade: {name} is in the shards' heldout split: its evaluation is no "
                "longer held out (fit on other native runs)"
            )
        omega = float(run.params.get("omega0", 1.0) or 1.0)
        try:
            snaps = run.snapshots(list(channels))
        except AthenaKFormatError as e:
            raise ConfigError(f"config key {key!r}: {path}: {e}") from None
        acc, n = np.zeros_like(e_pool), 0
        for s in snaps:
            if not o_lo - tol <= _orbit(run.snapshot_time(s)[0], omega) <= o_hi + tol:
                continue
            data = run.read_snapshot(s, list(channels)).data
            x = norm.normalize_np(data).astype(np.float64)
            acc += power_spectrum(x)[:, :k_count]
            n += 1
        if n:
            per_run.append(acc / n)
            used += n
    if not per_run:
        raise ConfigError(
            f"config key {key!r}: no snapshot of {list(method.degrade_runs)} lies in the train "
            f"samples' orbit window [{o_lo:.4g}, {o_hi:.4g}]"
        )
    e_native = np.mean(per_run, axis=0)
    kref = int(method.degrade_kref) or default_kref(h)
    try:
        t = fit_transfer(torch.from_numpy(e_native), torch.from_numpy(e_pool), kref)
    except ValueError as e:
        raise ConfigError(f"config key 'method.degrade_kref' / {key!r}: {e}") from None
    top = t[:, -1].tolist()
    notes.append(
        f"method.degrade: T fitted on {used} native snapshot(s) of {len(per_run)} run(s) and "
        f"{len(hi_n)} train sample(s), orbits [{o_lo:.3g}, {o_hi:.3g}], kref {kref}; "
        "T(N_lo/2): " + ", ".join(f"{c} {v:.3g}" for c, v in zip(channels, top, strict=True))
    )
    return t, notes
