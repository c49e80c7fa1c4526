"""Build plan of forecast window shards (``task: forecast``; docs/design.md "Forecast stage").

Reuses the super-resolution planner's run discovery and checks (:func:`~mhdsr.shard_builder.plan.
open_runs`: seed ids, 2D, even grids, the snapshot window, incomplete snapshots), its seed split
(:func:`~mhdsr.shard_builder.plan._assign`), shuffling, shard cutting and plan hashes, so a
window build has the same manifest, sha256 records, parallel workers and resume as an SR build.
What differs:

* a sample is a *window*: ``forecast.length`` snapshots of one run, each ``dt =
  forecast.dt_orbits`` after the previous one within ``forecast.time_tol`` mean timesteps
  (:mod:`mhdsr.dataset.cadence`: spacings from header times; a window never spans a missing
  snapshot, an off-cadence file or a change of cadence; a finer-cadence run gives the windows
  of its snapshots on the ``dt`` grid). A run without any window is bad input, reported with
  its spacings (``on_bad=error`` refuses it, ``skip`` records it);
* every window is on the lo grid: native lo runs as they are (``source: native_lo``), hi runs as
  ``avgpool2`` (``source: avgpool2_hi``, computed in float64, rounded once to float32);
* hi runs are split by ``split`` (as for SR), native lo runs by ``forecast.lo_seeds``; runs in
  no split go to ``heldout`` (with explicit hi seed lists, hi runs in none of them too);
* key ``s{seed:04d}_n{first:05d}``, member ``seq.npy`` ``(K, C, h, w)``; two windows of one split
  with the same key (a hi and a lo run with one seed id and first snapshot number) are refused;
* statistics are those of every frame of every train window (the frames the trainer sees),
  kind ``lo``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mhdsr.athenak import AthenaKRun
from mhdsr.channels import CHANNELS
from mhdsr.dataset.cadence import Cadence, cadence, orbit_time
from mhdsr.dataset.npy import sample_key
from mhdsr.dataset.sims import resolve_globs
from mhdsr.errors import AthenaKFormatError, ConfigError, ShardError
from mhdsr.shard_builder.common import (
    FORMAT_VERSION,
    JSON_BYTES_BOUND,
    TAR_BLOCK,
    TAR_RECORD,
    BadInput,
    BuildPlan,
    RunInfo,
    ShardPlan,
    assign_splits,
    common_resolution,
    cut_shards,
    mean_dt,
    npy_bytes,
    open_runs,
    plan_hash,
    tar_member_bytes,
    unique_seeds,
)
from mhdsr.shard_builder.config import HI_SPLITS, SPLITS, ShardBuildConfig

#: sample sources of a window
NATIVE = "native_lo"
POOLED = "avgpool2_hi"
#: the longest window (its json record must stay below JSON_BYTES_BOUND)
MAX_LENGTH = 16


def run_cadence(run: AthenaKRun, snaps: list[int], dt_orbits: float, time_tol: float) -> Cadence:
    """The chains of ``snaps`` of ``run`` at ``dt_orbits`` (``omega0`` from its deck; tolerance
    ``time_tol`` mean timesteps, at most a third of ``dt``).

    Raises:
        AthenaKFormatError: a header time cannot be read.
    """
    omega0 = float(run.params.get("omega0", 1.0) or 1.0)
    dt = orbit_time(dt_orbits, omega0)
    tol = min(time_tol * mean_dt(run, snaps), dt / 3)
    times = [run.snapshot_time(s)[0] for s in snaps]
    return cadence(snaps, times, dt, tol)


def _windows_of(
    r: RunInfo, run: AthenaKRun, cfg: ShardBuildConfig, bad: BadInput, source: str
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Window items of one run and its record for the manifest (chains, gaps)."""
    f = cfg.forecast
    try:
        cad = run_cadence(run, r.snapshots, f.dt_orbits, f.time_tol)
    except AthenaKFormatError as e:
        bad(r.sim, None, f"cannot read snapshot times: {e}", r.seed)
        return [], {}
    omega0 = float(r.params.get("omega0", 1.0) or 1.0)
    wins = cad.windows(f.length, f.start_stride)
    gaps = cad.describe_gaps(omega0)
    record = {
        "chains": cad.chain_snapshots(),
        "windows": len(wins),
        "gaps": gaps,
        "dt": cad.dt,
        "time_tol": cad.tol,
    }
    if not wins:
        longest = max((len(c) for c in cad.chains), default=0)
        bad(
            r.sim,
            None,
            f"no window of {f.length} snapshots {f.dt_orbits} orbits apart (the longest evenly "
            f"spaced chain has {longest}; spacings that are not {f.dt_orbits} orbits: "
            f"{gaps or 'none'}; snapshots {r.snapshots})",
            r.seed,
        )
        return [], record
    items = [
        {
            "kind": "window",
            "path": r.path,
            "sim": r.sim,
            "seed": r.seed,
            "snapshot": w[0],
            "snapshots": w,
            "source": source,
            "dt_orbits": f.dt_orbits,
        }
        for w in wins
    ]
    return items, record


def make_window_plan(cfg: ShardBuildConfig) -> BuildPlan:
    """Check the inputs and compute the plan of a forecast window build (reads only headers).

    Raises:
        ConfigError: a glob matches nothing, a run is in both hi_runs and lo_runs, an explicit
            seed (``split.seeds`` or ``forecast.lo_seeds``) matches no run (``split.seeds``
            non-empty with no ``hi_runs`` at all), the lo resolution is not half the hi
            resolution, ``forecast.length`` is too long.
        ShardError: bad input with ``on_bad=error`` (as for SR builds, plus a run without any
            evenly spaced window, naming its spacings), duplicate seed ids or window keys.
    """
    f = cfg.forecast
    if f.length > MAX_LENGTH:
        raise ConfigError(
            f"config key 'forecast.length': {f.length} > {MAX_LENGTH} (the window's json record "
            "must stay under 1 KiB); use shorter windows"
        )
    if not cfg.hi_runs:
        named = {k: list(getattr(cfg.split.seeds, k)) for k in HI_SPLITS}
        if any(named.values()):
            raise ConfigError(
                f"config key 'split.seeds': {named} names hi (avgpool2) seeds but 'hi_runs' is "
                "empty; native lo runs are split by 'forecast.lo_seeds' (set split.seeds to [])"
            )
    bad = BadInput(cfg.on_bad)
    hi_paths = resolve_globs(list(cfg.hi_runs), "hi_runs") if cfg.hi_runs else []
    lo_paths = resolve_globs(list(cfg.lo_runs), "lo_runs") if cfg.lo_runs else []
    both = sorted(set(map(str, hi_paths)) & set(map(str, lo_paths)))
    if both:
        raise ConfigError(f"config keys 'hi_runs' and 'lo_runs' both match {both}")
    hi, hi_res = common_resolution(open_runs(hi_paths, cfg, bad, "hi"), bad, "hi")
    lo, lo_res = common_resolution(open_runs(lo_paths, cfg, bad, "lo"), bad, "lo")
    if not hi and not lo:
        raise ShardError(
            f"no usable run among {len(hi_paths) + len(lo_paths)} folder(s): {bad.skipped}"
        )
    if lo_res is not None and hi_res is not None and (2 * lo_res[0], 2 * lo_res[1]) != hi_res:
        raise ConfigError(
            f"config key 'lo_runs': lo resolution {lo_res[0]}x{lo_res[1]} is not half the hi "
            f"resolution {hi_res[0]}x{hi_res[1]} (hi runs are avgpool2-ed to the lo grid)"
        )
    grid = lo_res if lo_res is not None else (hi_res[0] // 2, hi_res[1] // 2)
    unique_seeds(hi, "hi")
    unique_seeds(lo, "lo")

    # ---- splits: hi runs by `split`, native lo runs by `forecast.lo_seeds`, the rest heldout
    splits: dict[str, list[RunInfo]] = {k: [] for k in SPLITS}
    hi_by_seed = {r.seed: (r, run) for r, run in hi}
    assign = assign_splits(sorted(hi_by_seed), cfg, bad.seeds) if hi else {k: [] for k in HI_SPLITS}
    lo_by_seed = {r.seed: (r, run) for r, run in lo}
    have_lo = set(lo_by_seed)
    for k in HI_SPLITS:
        listed = list(getattr(f.lo_seeds, k))
        missing = [s for s in listed if s not in have_lo and s not in bad.seeds]
        if missing:
            raise ConfigError(
                f"config key 'forecast.lo_seeds.{k}': seed(s) {missing} match no lo run "
                f"(lo seeds found: {sorted(have_lo)})"
            )
    placed: list[tuple[str, RunInfo, AthenaKRun, str]] = []
    for k in HI_SPLITS:
        placed += [(k, *hi_by_seed[s], POOLED) for s in assign[k]]
        placed += [
            (k, *lo_by_seed[s], NATIVE) for s in sorted(getattr(f.lo_seeds, k)) if s in lo_by_seed
        ]
    assigned_hi = {s for k in HI_SPLITS for s in assign[k]}
    assigned_lo = {s for k in HI_SPLITS for s in getattr(f.lo_seeds, k)}
    placed += [("heldout", r, run, POOLED) for r, run in hi if r.seed not in assigned_hi]
    placed += [("heldout", r, run, NATIVE) for r, run in lo if r.seed not in assigned_lo]

    items: dict[str, list[dict[str, Any]]] = {k: [] for k in SPLITS}
    records: dict[str, dict[str, Any]] = {}
    for k, r, run, source in placed:
        its, rec = _windows_of(r, run, cfg, bad, source)
        records[r.sim] = {**rec, "split": k, "source": source}
        if its:
            splits[k].append(r)
            items[k] += its
    for k in SPLITS:
        seen: dict[str, str] = {}
        for it in items[k]:
            key = sample_key(it["seed"], it["snapshot"])
            if key in seen and seen[key] != it["sim"]:
                raise ShardError(
                    f"split {k}: windows of {seen[key]} and {it['sim']} share the key {key} "
                    "(a hi and a lo run with one seed id start a window at the same file number); "
                    "put the two runs in different splits"
                )
            seen[key] = it["sim"]

    c = len(CHANNELS)
    seq_shape = (f.length, c, grid[1], grid[0])
    sample = tar_member_bytes(JSON_BYTES_BOUND) + tar_member_bytes(npy_bytes(seq_shape))
    n = max(1, (cfg.shard.max_bytes - 2 * TAR_BLOCK - TAR_RECORD) // sample)
    if cfg.shard.max_samples:
        n = min(n, cfg.shard.max_samples)
    shards: list[ShardPlan] = []
    for idx, k in enumerate(SPLITS):
        its = sorted(items[k], key=lambda it: (it["sim"], it["snapshot"]))
        perm = np.random.default_rng([cfg.shuffle_seed, idx]).permutation(len(its))
        its = [its[i] for i in perm]
        for i, chunk in enumerate(cut_shards(its, n)):
            sp = ShardPlan(f"{k}-{i:06d}.tar", k, chunk, stats=(k == "train"))
            sp.plan_hash = plan_hash(
                {
                    "format": FORMAT_VERSION,
                    "task": "forecast",
                    "name": sp.name,
                    "items": chunk,
                    "stats": sp.stats,
                    "on_bad": cfg.on_bad,
                }
            )
            shards.append(sp)
    plan = BuildPlan(
        splits=splits,
        shards=shards,
        hi_resolution=(2 * grid[0], 2 * grid[1]),
        lo_resolution=grid,
        skipped=bad.skipped,
        unassigned=[],
        paired=0,
        samples_per_shard={k: n for k in SPLITS},
        task="forecast",
        windows=records,
        seq_shape=seq_shape,
    )
    plan.fingerprint = plan_hash([s.plan_hash for s in shards] + [bad.skipped])
    return plan


def window_json(
    item: dict[str, Any],
    times: list[float],
    cycles: list[int],
    grid: list[int],
    source_grid: list[int],
) -> dict[str, Any]:
    """The ``json`` record of a window sample (docs/design.md "Formats").

    Keys: ``seed``, ``snapshot`` (the first), ``time`` (the first), ``snapshots``, ``times``,
    ``cycles``, ``dt`` (mean spacing, code units), ``dt_orbits`` (the build's cadence), ``sim``,
    ``resolution`` ``[nx, ny]`` of the window grid, ``source_resolution`` of the run, ``source``
    (``native_lo`` | ``avgpool2_hi``).
    """
    dt = (times[-1] - times[0]) / (len(times) - 1)
    return {
        "seed": item["seed"],
        "snapshot": item["snapshot"],
        "time": times[0],
        "snapshots": list(item["snapshots"]),
        "times": times,
        "cycles": cycles,
        "dt": dt,
        "dt_orbits": item["dt_orbits"],
        "sim": item["sim"],
        "resolution": grid,
        "source_resolution": source_grid,
        "source": item["source"],
    }


def forecast_manifest(
    manifest: dict[str, Any], plan: BuildPlan, lo_stats: dict[str, Any]
) -> dict[str, Any]:
    """The manifest of a window build: the super-resolution manifest's layout with ``task:
    forecast``, ``shapes.seq`` ``[K, C, h, w]`` (``shapes.lo`` the window grid, ``shapes.hi`` the
    grid whose avgpool2 it is), statistics of kind ``lo`` only (every frame of every train
    window), splits of ``source: windows`` and the cadence of every sim in ``provenance``."""
    assert plan.seq_shape is not None
    cfg = manifest["config"]["forecast"]
    out = dict(manifest)
    out["task"] = "forecast"
    out["shapes"] = {**manifest["shapes"], "seq": list(plan.seq_shape)}
    out["stats"] = {"lo": lo_stats}
    out["splits"] = {k: {**s, "source": "windows"} for k, s in manifest["splits"].items()}
    out["splits"]["heldout"].pop("paired_hi", None)
    prov = dict(manifest["provenance"])
    for k in ("pairing", "unassigned_hi"):
        prov.pop(k, None)
    prov["lo_stats"] = (
        "every frame of every train window on the lo grid (native lo, or avgpool2 of hi in "
        "float64 rounded to float32), accumulated in float64"
    )
    prov["forecast"] = {
        "length": cfg["length"],
        "dt_orbits": cfg["dt_orbits"],
        "start_stride": cfg["start_stride"],
        "time_tol_steps": cfg["time_tol"],
        "splits": "hi runs by split, native lo runs by forecast.lo_seeds, the others heldout",
    }
    prov["windows"] = plan.windows
    out["provenance"] = prov
    return out
