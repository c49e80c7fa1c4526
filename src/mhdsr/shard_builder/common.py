"""What the SR sample plan (:mod:`mhdsr.shard_builder.plan`) and the forecast window plan
(:mod:`mhdsr.shard_builder.windows`) share: the shard format constants and byte bounds, the plan
dataclasses, opening and checking the run folders (seed ids, resolutions, the snapshot window,
bad input), the split assignment by seed, cutting a split into shards, and the plan hash.

The rules are those of :mod:`mhdsr.shard_builder.plan` (its module docstring).
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
from mhdsr.dataset.sims import SEED_DIR_RE, sim_name
from mhdsr.errors import AthenaKFormatError, ConfigError, ShardError
from mhdsr.shard_builder.config import HI_SPLITS, ShardBuildConfig

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


class BadInput:
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


def seed_of(run: AthenaKRun, path: Path) -> int | None:
    s = run.params.get("seed")
    if isinstance(s, int) and not isinstance(s, bool) and s >= 0:
        return s
    m = SEED_DIR_RE.match(path.name)
    return int(m.group(1)) if m else None


def mean_dt(run: AthenaKRun, snaps: list[int]) -> float:
    """Mean timestep ``time / cycle`` of the run's last snapshot (0 if cycle 0 or no snapshot)."""
    if not snaps:
        return 0.0
    t, c = run.snapshot_time(snaps[-1])
    return t / c if c > 0 else 0.0


def select_window(
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
        slack = mean_dt(run, snaps) * omega0 / (2 * math.pi)
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


def open_runs(
    paths: list[Path], cfg: ShardBuildConfig, bad: BadInput, kind: str
) -> list[tuple[RunInfo, AthenaKRun]]:
    """Open, check and window each run folder; bad ones are raised or recorded."""
    found: list[tuple[RunInfo, AthenaKRun]] = []
    for p in paths:
        sim = sim_name(p)
        m = SEED_DIR_RE.match(p.name)
        seed = int(m.group(1)) if m else None
        try:
            run = AthenaKRun(p)
            seed = seed_of(run, p)
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
            selected = select_window(run, all_snaps, cfg, incomplete)
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


def common_resolution(
    runs: list[tuple[RunInfo, AthenaKRun]], bad: BadInput, kind: str
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


def unique_seeds(runs: list[tuple[RunInfo, AthenaKRun]], kind: str) -> None:
    by_seed: dict[int, str] = {}
    for r, _ in runs:
        if r.seed in by_seed:
            raise ShardError(
                f"two {kind} runs have seed id {r.seed}: {by_seed[r.seed]} and {r.path} "
                "(seed ids must be unique per resolution; remove one from the globs)"
            )
        by_seed[r.seed] = r.path


def assign_splits(
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


def cut_shards(items: list[dict[str, Any]], per_shard: int) -> list[list[dict[str, Any]]]:
    """Fewest chunks of at most ``per_shard`` items, sizes differing by at most one, no empty."""
    if not items:
        return []
    k = math.ceil(len(items) / per_shard)
    bounds = [round(i * len(items) / k) for i in range(k + 1)]
    return [items[bounds[i] : bounds[i + 1]] for i in range(k)]


def plan_hash(obj: Any) -> str:
    return hashlib.sha256(
        json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
