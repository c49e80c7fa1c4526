"""Typed configuration of ``mhdsr shard build`` (YAML + dotted ``key=value`` overrides).

Loaded with :func:`mhdsr.config.load_config`; every dataclass here validates its own values
(``validate()``), and :func:`mhdsr.shard_builder.plan.make_plan` checks everything that needs
the file system (globs match run folders, explicit seeds exist) before any shard is written.

Relative paths (``hi_runs``, ``lo_runs``, ``output_dir``) are relative to the current working
directory; the shipped configs assume the repository root.

``task: sr`` (default) builds super-resolution samples; ``task: forecast`` builds windows of
``forecast.length`` consecutive snapshots at cadence ``forecast.dt_orbits`` on the lo grid
(docs/design.md "Forecast stage"; :mod:`mhdsr.shard_builder.windows`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mhdsr.config import require
from mhdsr.errors import ConfigError

#: what a build writes: super-resolution samples (hi.npy / lo.npy) or forecast windows (seq.npy)
Task = Literal["sr", "forecast"]

#: names of the seed-split subsets built from the hi runs (the fourth, ``heldout``, holds lo runs)
HI_SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLITS: tuple[str, ...] = (*HI_SPLITS, "heldout")

#: 256 MiB: ~127 samples of 256^2 x 8 float32 per shard. Large enough for long sequential reads
#: (a shard streams in ~0.1-1 s from a parallel file system) and small enough that the full-scale
#: train split (~72k samples) still has ~570 shards, more than the ~500 loader workers of a
#: 64-GPU job, so every worker gets distinct shards each epoch.
DEFAULT_MAX_BYTES = 256 * 2**20


@dataclass
class WindowConfig:
    """Which snapshots of each run (hi and lo alike) are used (bounds inclusive; ``None`` =
    unbounded).

    ``snap_*`` are AthenaK file numbers (NNNNN). ``orbit_*`` are orbits ``t * omega0 / (2 pi)``
    with ``omega0`` from each run's deck; because AthenaK writes a snapshot at the first step
    at or after its nominal time, orbit bounds accept one mean timestep of slack
    (``time / cycle`` of the run's last snapshot). ``stride`` keeps every S-th snapshot
    present in the window (counting from the first), as ``mhdsr athenak to-npy --snap-stride``.
    """

    #: first file number (inclusive)
    snap_start: int | None = None
    #: last file number (inclusive)
    snap_end: int | None = None
    #: first orbit (inclusive, one timestep of slack)
    orbit_start: float | None = None
    #: last orbit (inclusive, one timestep of slack)
    orbit_end: float | None = None
    #: keep every stride-th snapshot present in the window
    stride: int = 1

    def validate(self) -> None:
        """Raises ConfigError naming ``window.<key>``."""
        require(self.stride >= 1, "window.stride", "an integer >= 1", self.stride)
        for k in ("snap_start", "snap_end"):
            v = getattr(self, k)
            require(v is None or v >= 0, f"window.{k}", "an integer >= 0 or null", v)
        for k in ("orbit_start", "orbit_end"):
            v = getattr(self, k)
            require(v is None or v >= 0, f"window.{k}", "a number >= 0 or null", v)
        if self.snap_start is not None and self.snap_end is not None:
            require(
                self.snap_start <= self.snap_end,
                "window.snap_end",
                f"a value >= window.snap_start={self.snap_start}",
                self.snap_end,
            )
        if self.orbit_start is not None and self.orbit_end is not None:
            require(
                self.orbit_start <= self.orbit_end,
                "window.orbit_end",
                f"a value >= window.orbit_start={self.orbit_start}",
                self.orbit_end,
            )


@dataclass
class FractionsConfig:
    """Fractions of the hi seeds per split (used when no explicit seed lists are given)."""

    train: float = 0.8
    val: float = 0.1
    test: float = 0.1

    def validate(self) -> None:
        """Raises ConfigError: a negative fraction, or fractions not summing to 1."""
        for k in HI_SPLITS:
            v = getattr(self, k)
            require(0.0 <= v <= 1.0, f"split.fractions.{k}", "a number in [0, 1]", v)
        total = self.train + self.val + self.test
        require(
            abs(total - 1.0) <= 1e-9,
            "split.fractions",
            "train + val + test = 1",
            f"{self.train} + {self.val} + {self.test} = {total}",
        )
        require(self.train > 0, "split.fractions.train", "a number > 0", self.train)


@dataclass
class SeedListsConfig:
    """Explicit seed ids per split; when any list is non-empty they replace the fractions.

    Seed ids are per resolution (AthenaK's noise depends on the grid): these are ids of the hi
    runs. Hi runs whose seed is in no list are left out of train/val/test and may pair with
    held-out lo runs of the same seed id (see ``ShardBuildConfig``).
    """

    train: list[int] = field(default_factory=list)
    val: list[int] = field(default_factory=list)
    test: list[int] = field(default_factory=list)

    @property
    def given(self) -> bool:
        """True when any explicit list is non-empty."""
        return bool(self.train or self.val or self.test)

    def validate(self) -> None:
        """Raises ConfigError: negative or repeated ids, a seed in two lists, or an empty train
        list while val/test are given."""
        if not self.given:
            return
        require(
            bool(self.train),
            "split.seeds.train",
            "a non-empty list when explicit seed lists are given",
            self.train,
        )
        check_seed_lists(self, "split.seeds")


def check_seed_lists(lists: object, prefix: str) -> None:
    """Seed ids >= 0, each in at most one of ``lists.train/val/test``.

    Raises:
        ConfigError: naming ``<prefix>.<split>`` and the seed.
    """
    owner: dict[int, str] = {}
    for k in HI_SPLITS:
        ids = getattr(lists, k)
        for s in ids:
            require(s >= 0, f"{prefix}.{k}", "seed ids >= 0", ids)
            if s in owner:
                where = "twice" if owner[s] == k else f"also in {prefix}.{owner[s]}"
                raise ConfigError(
                    f"config key '{prefix}.{k}': seed {s} listed {where}; "
                    "every seed belongs to exactly one split"
                )
            owner[s] = k


@dataclass
class LoSeedListsConfig:
    """Native lo seed ids per split of a forecast build (ids of the lo runs; per resolution).
    Lo runs whose seed is in no list go to ``heldout``."""

    train: list[int] = field(default_factory=list)
    val: list[int] = field(default_factory=list)
    test: list[int] = field(default_factory=list)

    def validate(self) -> None:
        """Raises ConfigError: negative or repeated ids, or a seed in two lists."""
        check_seed_lists(self, "forecast.lo_seeds")


@dataclass
class ForecastWindowConfig:
    """Forecast windows (``task: forecast``; docs/design.md "Forecast stage").

    A window is ``length`` snapshots of one run with times ``t_0, t_0 + dt, ...``, every spacing
    within ``time_tol`` mean timesteps of ``dt = dt_orbits * 2 pi / omega0`` (AthenaK writes at
    the first step at or after each nominal time). Spacings come from the header times, never
    from file numbers: a run written at a finer cadence (or thinned, with gaps in its
    numbering) gives windows of the snapshots that fall on the ``dt`` grid; a window never spans
    a missing snapshot, an off-cadence file or a change of cadence.
    """

    #: snapshots per window K (>= 2): enough for the model's history plus its rolled-out loss
    length: int = 4
    #: window cadence dt in orbits (one for the whole build; required for task=forecast)
    dt_orbits: float = 0.0
    #: a window starts at every start_stride-th snapshot of an evenly spaced chain
    start_stride: int = 1
    #: |t_{i+1} - t_i - dt| <= time_tol * (mean timestep time / cycle of the run)
    time_tol: float = 1.5
    #: native lo seed ids per split (the hi runs are split by ``split``); others: heldout
    lo_seeds: LoSeedListsConfig = field(default_factory=LoSeedListsConfig)

    def validate(self) -> None:
        """Raises ConfigError naming ``forecast.<key>`` (``dt_orbits`` is checked with the task
        by :meth:`ShardBuildConfig.validate`)."""
        require(self.length >= 2, "forecast.length", "an integer >= 2", self.length)
        require(self.dt_orbits >= 0, "forecast.dt_orbits", "a number > 0 (orbits)", self.dt_orbits)
        require(
            self.start_stride >= 1, "forecast.start_stride", "an integer >= 1", self.start_stride
        )
        require(self.time_tol > 0, "forecast.time_tol", "a number > 0", self.time_tol)


@dataclass
class SplitConfig:
    """Split of the hi runs by seed (never by snapshot)."""

    fractions: FractionsConfig = field(default_factory=FractionsConfig)
    #: RNG seed of the fraction-based split (permutation of the sorted seed ids)
    seed: int = 0
    seeds: SeedListsConfig = field(default_factory=SeedListsConfig)


@dataclass
class ShardSizeConfig:
    """Target shard size. Samples per shard = floor(max_bytes / bytes of the largest sample),
    capped by max_samples (0 = no cap), at least 1; a split's samples are then spread evenly over
    the fewest shards that respect that bound."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_samples: int = 0

    def validate(self) -> None:
        """Raises ConfigError naming ``shard.<key>``."""
        require(self.max_bytes >= 1, "shard.max_bytes", "an integer >= 1 (bytes)", self.max_bytes)
        require(self.max_samples >= 0, "shard.max_samples", "an integer >= 0", self.max_samples)


@dataclass
class ShardBuildConfig:
    """``mhdsr shard build`` configuration (docs/design.md "Formats")."""

    #: sr: super-resolution samples | forecast: windows of consecutive lo-grid snapshots
    task: Task = "sr"
    #: globs of hi-res seed folders (train/val/test; forecast: avgpool2 to the lo grid)
    hi_runs: list[str] = field(default_factory=list)
    #: globs of native lo-res seed folders (heldout; forecast: split by forecast.lo_seeds)
    lo_runs: list[str] = field(default_factory=list)
    #: shard folder (tars + manifest.json + .build/)
    output_dir: str = ""
    window: WindowConfig = field(default_factory=WindowConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    shard: ShardSizeConfig = field(default_factory=ShardSizeConfig)
    #: worker processes; 0 = one per available CPU, at most 16
    workers: int = 0
    #: RNG seed of the within-split shuffle across seeds
    shuffle_seed: int = 0
    #: bad input (unreadable, non-finite, wrong resolution...): error | skip
    on_bad: Literal["error", "skip"] = "error"
    #: heldout pairing: a lo snapshot pairs with the hi snapshot of the same seed id nearest in time
    #: when |t_lo - t_hi| <= pair_time_tol * max(mean timestep of the two runs); AthenaK writes at
    #: the first step at or after the nominal time, so equal nominal times differ by < one step.
    pair_time_tol: float = 1.5
    #: tqdm progress bar
    progress: bool = True
    #: task=forecast: the window settings
    forecast: ForecastWindowConfig = field(default_factory=ForecastWindowConfig)

    def validate(self) -> None:
        """Raises ConfigError naming the key (file-system checks happen in ``make_plan``)."""
        if self.task == "forecast":
            require(
                bool(self.hi_runs or self.lo_runs),
                "hi_runs/lo_runs",
                "a non-empty list of globs in at least one of them (task=forecast)",
                (self.hi_runs, self.lo_runs),
            )
            require(
                self.forecast.dt_orbits > 0,
                "forecast.dt_orbits",
                "the window cadence in orbits, > 0 (task=forecast)",
                self.forecast.dt_orbits,
            )
        else:
            require(bool(self.hi_runs), "hi_runs", "a non-empty list of globs", self.hi_runs)
        for k in ("hi_runs", "lo_runs"):
            for g in getattr(self, k):
                require(bool(g and g.strip()), k, "non-empty glob strings", getattr(self, k))
        require(bool(self.output_dir.strip()), "output_dir", "a folder path", self.output_dir)
        require(self.workers >= 0, "workers", "an integer >= 0 (0 = auto)", self.workers)
        require(self.pair_time_tol > 0, "pair_time_tol", "a number > 0", self.pair_time_tol)


#: config keys that do not change the output (ignored when comparing with an existing build)
NON_OUTPUT_KEYS: frozenset[str] = frozenset({"workers", "progress", "output_dir"})
