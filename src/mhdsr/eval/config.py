"""Typed configuration of ``mhdsr eval`` (docs/design.md, "Command-line contract").

Top-level keys ``samples``, ``shards`` and ``output_dir`` are the overrides the contract names.
Every field has a one-line comment with its meaning; paths are relative to the working
directory (the repository root for the shipped configs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mhdsr.config import require
from mhdsr.eval.baselines import BASELINE_NAMES, BaselineName

#: Baselines the evaluation knows (docs/design.md, "Baselines"; defined in mhdsr.eval.baselines).
BASELINES: tuple[str, ...] = BASELINE_NAMES
#: Values of ``native_reference`` (the held-out shape-error reference, mhdsr.eval.native_shape).
NATIVE_REFERENCES: tuple[str, ...] = ("all", "split")


@dataclass
class ClimatologyConfig:
    """The climatology baseline of ensemble forecasts: ``members`` snapshots drawn once (keyed
    RNG) from train runs in an orbit window, the same ensemble for every (initial state, lead)."""

    runs: list[str] = field(default_factory=list)  # globs of train run folders; [] = no climatology
    orbit_start: float = 0.0  # window start (orbits, the run's header time * omega0 / 2 pi)
    orbit_end: float = 1.0e9  # window end (orbits, inclusive)
    members: int = 8  # snapshots drawn (without replacement)
    seed: int = 0  # key of the draw

    def validate(self) -> None:
        """Raises ConfigError naming ``forecast.climatology.<key>``."""
        k = "forecast.climatology."
        require(self.members >= 2, k + "members", ">= 2", self.members)
        require(self.orbit_end >= self.orbit_start, k + "orbit_end", ">= orbit_start",
                self.orbit_end)  # fmt: skip


@dataclass
class ForecastEvalConfig:
    """Settings of the forecast and chain evaluation (rollout / chain files below ``samples``;
    docs/design.md "Forecast stage")."""

    field_leads: list[int] = field(default_factory=lambda: [1, 2, 4, 8])  # leads drawn as panels
    goal_orbits: float = 1.0  # goals: energies and the chain are judged up to this lead (orbits)
    energy_tol: float = 0.1  # goal: |E_model / E_truth - 1| at most this (mean over initial states)
    finite_orbits: float = 4.0  # goal: rollouts stay finite this long (orbits)
    hst_check: bool = True  # cross-check field energies against each run's AthenaK history file
    # glob of rollout files of the deterministic FNO (baseline "fno" of ensemble rollouts, paired
    # by sim and initial snapshot; "fno+spline" of the chain); "" = none
    operator_rollouts: str = ""
    climatology: ClimatologyConfig = field(default_factory=ClimatologyConfig)
    # --- goals of ensemble forecasts (defaults: the thresholds)
    ensemble_goal_orbits: float = 4.0  # ensemble goals are judged at every lead <= this (orbits)
    min_members: int = 8  # goal: ensemble size at least this
    spectral_tol: float = 0.15  # goal: member band spectral error (dex) at most this
    bounded_rel: float = 1.0  # goal: every member's |E / E_truth - 1| at most this (finite_orbits)
    climatology_orbits: float = 0.3  # goal: CRPS < climatology's at leads <= this (orbits)
    climatology_factor: float = 1.05  # goal: CRPS <= this x climatology's at every lead
    spread_skill_range: list[float] = field(default_factory=lambda: [0.8, 1.2])  # goal range
    spread_skill_orbits: float = 0.2  # goal: spread/skill judged at leads >= this (orbits)
    chain_leads_orbits: list[float] = field(default_factory=lambda: [0.5, 1.0])  # chain spectra
    chain_spectral_tol: float = 0.2  # goal: chain member band error (dex, hi grid) at most this

    def validate(self) -> None:
        """Raises ConfigError naming ``forecast.<key>``."""
        require(
            all(k >= 1 for k in self.field_leads),
            "forecast.field_leads",
            "leads >= 1",
            self.field_leads,
        )
        require(self.goal_orbits > 0, "forecast.goal_orbits", "> 0", self.goal_orbits)
        require(self.energy_tol > 0, "forecast.energy_tol", "> 0", self.energy_tol)
        require(self.finite_orbits > 0, "forecast.finite_orbits", "> 0", self.finite_orbits)
        for key in ("ensemble_goal_orbits", "spectral_tol", "bounded_rel", "climatology_factor",
                    "chain_spectral_tol"):  # fmt: skip
            require(getattr(self, key) > 0, f"forecast.{key}", "> 0", getattr(self, key))
        require(self.min_members >= 1, "forecast.min_members", ">= 1", self.min_members)
        r = self.spread_skill_range
        require(len(r) == 2 and 0 < r[0] < r[1], "forecast.spread_skill_range",
                "[lo, hi] with 0 < lo < hi", r)  # fmt: skip


@dataclass
class EvalConfig:
    """``mhdsr eval`` configuration."""

    samples: str = (
        "runs/demo/samples"  # folder; every *.h5 below it (recursively) is one (method, sim) result
    )
    shards: str = "runs/demo/shards"  # shard folder: pixel truth (by key), reference split
    output_dir: str = "runs/demo/eval"  # metrics.json, report.md and figures/*.png go here
    # subset of bilinear, bicubic, spline, spectral-noise, noise (all by default); stochastic
    # ones get as many members as the methods of the sim
    baselines: list[BaselineName] = field(default_factory=lambda: list(BASELINES))
    baseline_seed: int = (
        0  # seed of the stochastic baselines' noise (keyed per sim/snapshot/member)
    )
    train_split: str = "train"  # hi split whose mean spectra define spectral-noise
    train_max_snapshots: int = 512  # at most this many (evenly spaced) train snapshots for them
    max_panels: int = 4  # number of comparison-panel figures (snapshots), 0 = none
    progress: bool = True  # tqdm progress bar over sample files (stderr)
    # hi split whose mean spectrum is the reference of held-out (native lo) sims, and whose
    # avgpool2(hi) is compared with the native lo inputs (domain gap)
    reference_split: str = "test"
    # reference of the held-out sims' level-free shape error (metrics.json native_shape): "all" =
    # the mean over EVERY hi seed (train, val, test) of its mean spectrum in the held-out orbit
    # window, with the leave-one-out realization floor; "split" = none (reference_split only)
    native_reference: str = "all"
    # at most this many values per channel and side enter the domain-gap histogram distances
    # (an even pixel stride over all snapshots keeps memory bounded at full scale)
    hist_max_values: int = 2_000_000
    # at most this many (evenly spaced) reference snapshots enter its PDFs, flatness and physics
    # floor (its mean spectrum and the domain gap use all of them)
    reference_pdf_snapshots: int = 256
    # rollout (kind forecast) and chain (kind chain) files: their own evaluation, see above
    forecast: ForecastEvalConfig = field(default_factory=ForecastEvalConfig)

    def validate(self) -> None:
        """Raises ConfigError naming the key (file-system checks happen when the run starts)."""
        for key in ("samples", "shards", "output_dir", "reference_split", "train_split"):
            val = getattr(self, key)
            require(bool(val and val.strip()), key, "a non-empty string", val)
        require(
            all(b in BASELINES for b in self.baselines)
            and len(set(self.baselines)) == len(self.baselines),
            "baselines",
            f"distinct names among {list(BASELINES)}",
            self.baselines,
        )
        require(
            self.native_reference in NATIVE_REFERENCES,
            "native_reference",
            f"one of {list(NATIVE_REFERENCES)}",
            self.native_reference,
        )
        require(self.max_panels >= 0, "max_panels", "an integer >= 0", self.max_panels)
        for key in ("train_max_snapshots", "reference_pdf_snapshots"):
            require(getattr(self, key) >= 1, key, "an integer >= 1", getattr(self, key))
        require(
            self.hist_max_values >= 1000,
            "hist_max_values",
            "an integer >= 1000",
            self.hist_max_values,
        )
