"""Build plan: find and check the runs, split them by seed, list samples, cut shards.

Everything here reads only run folders and ``.bin`` headers (never field data), and it runs
before any output is written, so a bad config or a bad run folder fails fast. The plan is
deterministic given the config and the input files: the same plan always yields the same shard
names, members and bytes, whatever the number of workers.

Rules (docs/design.md "Formats" and the data README):

* seed id = the deck's ``problem/rseed`` (``params['seed']``), else the folder name
  ``seed_XXXX``; ids are per resolution (AthenaK's noise depends on the grid), so hi seed k and
  lo seed k are independent runs;
* train/val/test hold hi runs, disjoint by seed; two hi runs (or two lo runs) with one seed id
  are an error naming both;
* ``heldout`` holds every lo run (source ``native_lo``); a lo snapshot gets ``hi.npy`` only from
  a hi run of the same seed id that is in none of train/val/test (a hi run left out of the
  explicit seed lists), at the snapshot nearest in time if within ``pair_time_tol`` mean
  timesteps; such pairs are marked ``pixel_aligned: false`` (different trajectories);
* a snapshot that some needed group or rank folder has and another lacks
  (:meth:`AthenaKRun.incomplete_snapshots`) is bad input when the window selects it (refused
  with ``on_bad=error``, recorded in ``skipped`` with ``on_bad=skip``); the window's stride
  counts it, so a lost file never shifts which snapshots are used;
* samples of a split are sorted by (seed, snapshot), shuffled with ``shuffle_seed``, then cut
  into the fewest shards of at most ``n`` samples, sizes differing by at most one, where
  ``n = min(max_samples, (max_bytes - tar trailer) // bytes of the largest sample)``, ``n >= 1``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mhdsr.athenak import AthenaKRun
from mhdsr.channels import CHANNELS
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
from mhdsr.shard_builder.windows import make_window_plan


def _pairs(
    lo: RunInfo, lo_run: AthenaKRun, hi: RunInfo, hi_run: AthenaKRun, tol_steps: float
) -> dict[int, tuple[int, float]]:
    """lo snapshot -> (hi snapshot, |dt|) for lo snapshots with a hi snapshot close in time."""
    hi_snaps = hi_run.snapshots(CHANNELS)
    hi_t = np.array([hi_run.snapshot_time(s)[0] for s in hi_snaps])
    tol = tol_steps * max(mean_dt(lo_run, lo.snapshots), mean_dt(hi_run, hi_snaps))
    out = {}
    for s in lo.snapshots:
        t = lo_run.snapshot_time(s)[0]
        j = int(np.argmin(np.abs(hi_t - t)))
        if abs(hi_t[j] - t) <= tol:
            out[s] = (hi_snaps[j], float(abs(hi_t[j] - t)))
    return out


def _item(r: RunInfo, snap: int, source: str) -> dict[str, Any]:
    return {"path": r.path, "sim": r.sim, "seed": r.seed, "snapshot": snap, "source": source}


def make_plan(cfg: ShardBuildConfig) -> BuildPlan:
    """Check the inputs and compute the full build plan (reads only headers). ``task:
    forecast`` plans window shards (:func:`mhdsr.shard_builder.windows.make_window_plan`).

    Raises:
        ConfigError: a glob matches nothing, a run is in both hi_runs and lo_runs, an explicit
            seed matches no hi run, lo resolution is not half the hi resolution.
        ShardError: bad input with ``on_bad=error`` (unusable run, resolution differing from
            the others, no snapshots in the window, an incomplete snapshot in the window, no
            seed id), or duplicate seed ids.
    """
    if cfg.task == "forecast":
        return make_window_plan(cfg)
    bad = BadInput(cfg.on_bad)
    hi_paths = resolve_globs(list(cfg.hi_runs), "hi_runs")
    lo_paths = resolve_globs(list(cfg.lo_runs), "lo_runs") if cfg.lo_runs else []
    both = sorted(set(map(str, hi_paths)) & set(map(str, lo_paths)))
    if both:
        raise ConfigError(f"config keys 'hi_runs' and 'lo_runs' both match {both}")

    hi, hi_res = common_resolution(open_runs(hi_paths, cfg, bad, "hi"), bad, "hi")
    lo, lo_res = common_resolution(open_runs(lo_paths, cfg, bad, "lo"), bad, "lo")
    if not hi:
        raise ShardError(f"no usable hi run among {len(hi_paths)} folder(s): {bad.skipped}")
    if lo_res is not None and hi_res is not None and (2 * lo_res[0], 2 * lo_res[1]) != hi_res:
        raise ConfigError(
            f"config key 'lo_runs': lo resolution {lo_res[0]}x{lo_res[1]} is not half the hi "
            f"resolution {hi_res[0]}x{hi_res[1]} (the model super-resolves by 2)"
        )
    unique_seeds(hi, "hi")
    unique_seeds(lo, "lo")

    by_seed = {r.seed: (r, run) for r, run in hi}
    assign = assign_splits(sorted(by_seed), cfg, bad.seeds)
    assigned = {s for k in HI_SPLITS for s in assign[k]}
    splits: dict[str, list[RunInfo]] = {k: [by_seed[s][0] for s in assign[k]] for k in HI_SPLITS}
    unassigned = [r for r, _ in hi if r.seed not in assigned]
    splits["heldout"] = [r for r, _ in sorted(lo, key=lambda x: x[0].seed)]

    items: dict[str, list[dict[str, Any]]] = {k: [] for k in SPLITS}
    for k in HI_SPLITS:
        for r in splits[k]:
            items[k] += [_item(r, s, "hi") for s in r.snapshots]
    paired = 0
    pool = {r.seed: (r, run) for r, run in hi if r.seed not in assigned}
    for r, run in sorted(lo, key=lambda x: x[0].seed):
        pairs = {}
        if r.seed in pool:
            try:
                pairs = _pairs(r, run, *pool[r.seed], cfg.pair_time_tol)
            except AthenaKFormatError as e:
                bad(r.sim, None, f"cannot pair with {pool[r.seed][0].sim}: {e}")
        for s in r.snapshots:
            it = _item(r, s, "native_lo")
            if s in pairs:
                h = pool[r.seed][0]
                it["pair"] = {"path": h.path, "sim": h.sim, "snapshot": pairs[s][0]}
                paired += 1
            items["heldout"].append(it)

    c = len(CHANNELS)
    hi_npy = npy_bytes((c, hi_res[1], hi_res[0]))
    lo_shape = (c, lo_res[1], lo_res[0]) if lo_res else None
    shards: list[ShardPlan] = []
    per_shard: dict[str, int] = {}
    for idx, k in enumerate(SPLITS):
        its = sorted(items[k], key=lambda it: (it["seed"], it["snapshot"]))
        perm = np.random.default_rng([cfg.shuffle_seed, idx]).permutation(len(its))
        its = [its[i] for i in perm]
        if k == "heldout":
            sample = tar_member_bytes(JSON_BYTES_BOUND) + (
                tar_member_bytes(npy_bytes(lo_shape)) if lo_shape else 0
            )
            if paired:
                sample += tar_member_bytes(hi_npy)
        else:
            sample = tar_member_bytes(JSON_BYTES_BOUND) + tar_member_bytes(hi_npy)
        n = max(1, (cfg.shard.max_bytes - 2 * TAR_BLOCK - TAR_RECORD) // sample)
        if cfg.shard.max_samples:
            n = min(n, cfg.shard.max_samples)
        per_shard[k] = n
        for i, chunk in enumerate(cut_shards(its, n)):
            sp = ShardPlan(f"{k}-{i:06d}.tar", k, chunk, stats=(k == "train"))
            sp.plan_hash = plan_hash(
                {
                    "format": FORMAT_VERSION,
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
        hi_resolution=hi_res,
        lo_resolution=lo_res,
        skipped=bad.skipped,
        unassigned=unassigned,
        paired=paired,
        samples_per_shard=per_shard,
    )
    plan.fingerprint = plan_hash([s.plan_hash for s in shards] + [bad.skipped])
    return plan
