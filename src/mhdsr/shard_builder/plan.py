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

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mhdsr.athenak import AthenaKRun
from mhdsr.channels import CHANNELS
from mhdsr.dataset.sims import SEED_DIR_RE, resolve_globs, sim_name
from mhdsr.errors import AthenaKFormatError, ConfigError, ShardError
from mhdsr.shard_builder.config import HI_SPLITS, SPLITS, ShardBuildConfig

#: bump when the bytes written for the same plan change (part of every shard's plan hash)
FORMAT_VERSION = 2  # 2: json records the members' digests
TAR_BLOCK = 512
TAR_RECORD = 10240  # tarfile pads the archive to a multiple of this (20 blocks)
JSON_BYTES_BOUND = 1024  # sample json is < 1 KiB (checked when written)


@dataclass
class RunInfo:
    """One run folder that passed the checks."""

    path: str  # absolute path of the run folder
    sim: str  # "<resolution folder>/<run folder>", e.g. "mri256_nu3e-5/seed_0000"
    seed: int
    resolution: tuple[int, int]  # (nx1, nx2)
    params: dict[str, Any]
    snapshots: list[int]  # complete ones in the window, after stride
    layout: str = "single"
    n_ranks: int = 1


@dataclass
class ShardPlan:
    """One shard to write: its name, split and samples (each a plain dict, picklable)."""

    name: str
    split: str
    items: list[dict[str, Any]]
    stats: bool  # accumulate hi/lo statistics (train split)
    plan_hash: str = ""


@dataclass
class BuildPlan:
    """Everything the builder needs, computed before any output is written."""

    splits: dict[str, list[RunInfo]]
    shards: list[ShardPlan]
    hi_resolution: tuple[int, int] | None
    lo_resolution: tuple[int, int] | None
    skipped: list[dict[str, Any]] = field(default_factory=list)
    unassigned: list[RunInfo] = field(default_factory=list)
    paired: int = 0
    samples_per_shard: dict[str, int] = field(default_factory=dict)
    fingerprint: str = ""
    #: "sr" or "forecast" (:mod:`mhdsr.shard_builder.windows`)
    task: str = "sr"
    #: forecast: per sim, its chains, window count, gaps, split and source
    windows: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: forecast: ``(K, C, h, w)`` of ``seq.npy``
    seq_shape: tuple[int, ...] | None = None

    def split_items(self, split: str) -> int:
        return sum(len(s.items) for s in self.shards if s.split == split)


def tar_member_bytes(payload: int) -> int:
    """Bytes a member of ``payload`` bytes takes in a ustar archive (header + padded data)."""
    return TAR_BLOCK + TAR_BLOCK * math.ceil(payload / TAR_BLOCK)


def npy_bytes(shape: tuple[int, ...]) -> int:
    """Size of a float32 ``.npy`` file of ``shape`` (format 1.0: 128-byte header here)."""
    return 128 + 4 * math.prod(shape)


class _Bad:
    """Collects bad-input findings: raise at once (on_bad=error) or record (on_bad=skip)."""

    def __init__(self, on_bad: str) -> None:
        self.on_bad = on_bad
        self.skipped: list[dict[str, Any]] = []
        self.seeds: set[int] = set()  # seed ids of skipped runs (when known)

    def __call__(
        self, sim: str, snapshot: int | None, reason: str, seed: int | None = None
    ) -> None:
        if seed is not None:
            self.seeds.add(seed)
        if self.on_bad == "error":
            where = sim if snapshot is None else f"{sim} snapshot {snapshot:05d}"
            raise ShardError(f"{where}: {reason} (on_bad=skip skips and records such input)")
        self.skipped.append({"sim": sim, "snapshot": snapshot, "reason": reason})


def _seed_of(run: AthenaKRun, path: Path) -> int | None:
    s = run.params.get("seed")
    if isinstance(s, int) and not isinstance(s, bool) and s >= 0:
        return s
    m = SEED_DIR_RE.match(path.name)
    return int(m.group(1)) if m else None


def _mean_dt(run: AthenaKRun, snaps: list[int]) -> float:
    """Mean timestep ``time / cycle`` of the run's last snapshot (0 if cycle 0 or no snapshot)."""
    if not snaps:
        return 0.0
    t, c = run.snapshot_time(snaps[-1])
    return t / c if c > 0 else 0.0


def _window(
    run: AthenaKRun, snaps: list[int], cfg: ShardBuildConfig, incomplete: Iterable[int] = ()
) -> list[int]:
    """Apply ``cfg.window`` to a run's snapshots.

    Args:
        run: the open run.
        snaps: its complete snapshots (sorted).
        cfg: the build config (``cfg.window``).
        incomplete: indices some group or rank folder lacks. They take part in the window like
            complete ones (the stride counts them, so a lost file never shifts which snapshots
            are selected) and the caller reports those selected; one whose time cannot be read
            is kept by orbit bounds (reported, never dropped silently).

    Returns:
        The selected indices, sorted (complete and incomplete).
    """
    w = cfg.window
    bad = set(incomplete)
    out = [
        s
        for s in sorted(set(snaps) | bad)
        if (w.snap_start is None or s >= w.snap_start) and (w.snap_end is None or s <= w.snap_end)
    ]
    if out and (w.orbit_start is not None or w.orbit_end is not None):
        omega0 = float(run.params.get("omega0", 1.0) or 1.0)
        slack = _mean_dt(run, snaps) * omega0 / (2 * math.pi)
        keep = []
        for s in out:
            try:
                orb = run.snapshot_time(s)[0] * omega0 / (2 * math.pi)
            except AthenaKFormatError:
                if s not in bad:
                    raise
                keep.append(s)
                continue
            if w.orbit_start is not None and orb < w.orbit_start - slack:
                continue
            if w.orbit_end is not None and orb > w.orbit_end + slack:
                continue
            keep.append(s)
        out = keep
    return out[:: w.stride]


def _open_runs(
    paths: list[Path], cfg: ShardBuildConfig, bad: _Bad, kind: str
) -> list[tuple[RunInfo, AthenaKRun]]:
    """Open, check and window each run folder; bad ones are raised or recorded."""
    found: list[tuple[RunInfo, AthenaKRun]] = []
    for p in paths:
        sim = sim_name(p)
        m = SEED_DIR_RE.match(p.name)
        seed = int(m.group(1)) if m else None
        try:
            run = AthenaKRun(p)
            seed = _seed_of(run, p)
            nx1, nx2, nx3 = run.resolution
            all_snaps = run.snapshots(CHANNELS)
            incomplete = run.incomplete_snapshots(CHANNELS)
        except AthenaKFormatError as e:
            bad(sim, None, f"unusable {kind} run: {e}", seed)
            continue
        if seed is None:
            bad(
                sim,
                None,
                "no seed id: the deck has no problem/rseed and the folder is not seed_XXXX",
            )
            continue
        if nx3 != 1:
            bad(sim, None, f"{nx1}x{nx2}x{nx3} is not a 2D run", seed)
            continue
        if nx1 % 2 or nx2 % 2:
            bad(sim, None, f"resolution {nx1}x{nx2} is not even (avgpool2 needs even sizes)", seed)
            continue
        try:
            selected = _window(run, all_snaps, cfg, incomplete)
        except AthenaKFormatError as e:
            bad(sim, None, f"cannot read snapshot times: {e}", seed)
            continue
        # an incomplete snapshot in the window is bad input, never a silent gap
        for s in selected:
            if s in incomplete:
                bad(sim, s, f"incomplete snapshot: {incomplete[s]}")
        snaps = [s for s in selected if s not in incomplete]
        if not snaps:
            if selected:
                why = "every snapshot in the window is incomplete"
            elif all_snaps:
                why = "no snapshot in the window"
            else:
                why = "no snapshot with all 8 channels"
            shown = f"{all_snaps[:6]}{'...' if len(all_snaps) > 6 else ''}"
            bad(sim, None, f"{why} (complete snapshots present: {shown})", seed)
            continue
        params = {k: v for k, v in run.params.items() if isinstance(v, (int, float, str, bool))}
        info = RunInfo(str(p), sim, seed, (nx1, nx2), params, snaps, run.layout, run.n_ranks)
        found.append((info, run))
    return found


def _common_resolution(
    runs: list[tuple[RunInfo, AthenaKRun]], bad: _Bad, kind: str
) -> tuple[list[tuple[RunInfo, AthenaKRun]], tuple[int, int] | None]:
    """Keep the runs at the most common resolution (ties: the larger grid); others are bad."""
    if not runs:
        return runs, None
    counts = Counter(r.resolution for r, _ in runs)
    ref = max(counts, key=lambda res: (counts[res], res[0] * res[1]))
    if len(counts) > 1:
        others = ", ".join(f"{a}x{b}: {n} run(s)" for (a, b), n in sorted(counts.items()))
        for r, _ in runs:
            if r.resolution != ref:
                bad(
                    r.sim,
                    None,
                    f"{kind} resolution {r.resolution[0]}x{r.resolution[1]} differs from the "
                    f"other {kind} runs ({ref[0]}x{ref[1]}; found {others})",
                    r.seed,
                )
    return [x for x in runs if x[0].resolution == ref], ref


def _unique_seeds(runs: list[tuple[RunInfo, AthenaKRun]], kind: str) -> None:
    by_seed: dict[int, str] = {}
    for r, _ in runs:
        if r.seed in by_seed:
            raise ShardError(
                f"two {kind} runs have seed id {r.seed}: {by_seed[r.seed]} and {r.path} "
                "(seed ids must be unique per resolution; remove one from the globs)"
            )
        by_seed[r.seed] = r.path


def _assign(
    seeds: list[int], cfg: ShardBuildConfig, skipped_seeds: set[int]
) -> dict[str, list[int]]:
    """Seed ids per split (explicit lists, or exact-count fractions of a seeded permutation)."""
    sp = cfg.split
    if sp.seeds.given:
        have = set(seeds)
        out = {}
        for k in HI_SPLITS:
            listed = list(getattr(sp.seeds, k))
            missing = [s for s in listed if s not in have and s not in skipped_seeds]
            if missing:
                raise ConfigError(
                    f"config key 'split.seeds.{k}': seed(s) {missing} match no hi run "
                    f"(hi seeds found: {sorted(have)})"
                )
            out[k] = sorted(s for s in listed if s in have)
        return out
    order = sorted(seeds)
    perm = np.random.default_rng(sp.seed).permutation(len(order))
    shuffled = [order[i] for i in perm]
    fr = [getattr(sp.fractions, k) for k in HI_SPLITS]
    n = len(order)
    counts = [math.floor(f * n + 1e-9) for f in fr]
    rema = sorted(range(3), key=lambda i: (-(fr[i] * n - counts[i]), i))
    for i in rema[: n - sum(counts)]:
        counts[i] += 1
    # a split with a positive fraction gets a seed whenever another split can spare one
    for i in range(3):
        if fr[i] > 0 and counts[i] == 0:
            j = max(range(3), key=lambda k: counts[k])
            if counts[j] > 1:
                counts[j] -= 1
                counts[i] += 1
    out, start = {}, 0
    for k, c in zip(HI_SPLITS, counts):
        out[k] = sorted(shuffled[start : start + c])
        start += c
    return out


def _pairs(
    lo: RunInfo, lo_run: AthenaKRun, hi: RunInfo, hi_run: AthenaKRun, tol_steps: float
) -> dict[int, tuple[int, float]]:
    """lo snapshot -> (hi snapshot, |dt|) for lo snapshots with a hi snapshot close in time."""
    hi_snaps = hi_run.snapshots(CHANNELS)
    hi_t = np.array([hi_run.snapshot_time(s)[0] for s in hi_snaps])
    tol = tol_steps * max(_mean_dt(lo_run, lo.snapshots), _mean_dt(hi_run, hi_snaps))
    out = {}
    for s in lo.snapshots:
        t = lo_run.snapshot_time(s)[0]
        j = int(np.argmin(np.abs(hi_t - t)))
        if abs(hi_t[j] - t) <= tol:
            out[s] = (hi_snaps[j], float(abs(hi_t[j] - t)))
    return out


def _item(r: RunInfo, snap: int, source: str) -> dict[str, Any]:
    return {"path": r.path, "sim": r.sim, "seed": r.seed, "snapshot": snap, "source": source}


def _cut(items: list[dict[str, Any]], per_shard: int) -> list[list[dict[str, Any]]]:
    """Fewest chunks of at most ``per_shard`` items, sizes differing by at most one, no empty."""
    if not items:
        return []
    k = math.ceil(len(items) / per_shard)
    bounds = [round(i * len(items) / k) for i in range(k + 1)]
    return [items[bounds[i] : bounds[i + 1]] for i in range(k)]


def _hash(obj: Any) -> str:
    return hashlib.sha256(
        json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


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
        from mhdsr.shard_builder.windows import make_window_plan

        return make_window_plan(cfg)
    bad = _Bad(cfg.on_bad)
    hi_paths = resolve_globs(list(cfg.hi_runs), "hi_runs")
    lo_paths = resolve_globs(list(cfg.lo_runs), "lo_runs") if cfg.lo_runs else []
    both = sorted(set(map(str, hi_paths)) & set(map(str, lo_paths)))
    if both:
        raise ConfigError(f"config keys 'hi_runs' and 'lo_runs' both match {both}")

    hi, hi_res = _common_resolution(_open_runs(hi_paths, cfg, bad, "hi"), bad, "hi")
    lo, lo_res = _common_resolution(_open_runs(lo_paths, cfg, bad, "lo"), bad, "lo")
    if not hi:
        raise ShardError(f"no usable hi run among {len(hi_paths)} folder(s): {bad.skipped}")
    if lo_res is not None and hi_res is not None and (2 * lo_res[0], 2 * lo_res[1]) != hi_res:
        raise ConfigError(
            f"config key 'lo_runs': lo resolution {lo_res[0]}x{lo_res[1]} is not half the hi "
            f"resolution {hi_res[0]}x{hi_res[1]} (the model super-resolves by 2)"
        )
    _unique_seeds(hi, "hi")
    _unique_seeds(lo, "lo")

    by_seed = {r.seed: (r, run) for r, run in hi}
    assign = _assign(sorted(by_seed), cfg, bad.seeds)
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
        for i, chunk in enumerate(_cut(its, n)):
            sp = ShardPlan(f"{k}-{i:06d}.tar", k, chunk, stats=(k == "train"))
            sp.plan_hash = _hash(
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
    plan.fingerprint = _hash([s.plan_hash for s in shards] + [bad.skipped])
    return plan
