"""Typed configuration of ``mhdsr sample`` (bulk inference to HDF5; DESIGN.md "Formats").

Loaded with :func:`mhdsr.config.load_config` (YAML + dotted ``key=value`` overrides). The
top-level names (``checkpoint``, ``output_dir``, ``shards``, ``weights``, ``inputs``,
``sampler``, ``ensemble``, ``batch_size``, ``seed``, ``device``, ``allow_other_resolution``,
``progress``) are the command-line contract. Each dataclass checks its own values here; what
needs the file system (the checkpoint exists, the inputs exist and select at least one snapshot,
the resolution fits the model) is checked by :func:`mhdsr.sample.bulk.prepare` before any
sample is drawn.

Relative paths are relative to the current working directory (the shipped configs assume the
repository root).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from mhdsr.config import require
from mhdsr.errors import ConfigError

INPUT_KINDS = ("shards", "runs")
WEIGHTS = ("ema", "raw")
DEVICES = ("auto", "cpu", "cuda")
SAMPLER_NAMES = ("heun", "euler", "euler_maruyama")
GRIDS = ("linear", "quadratic", "edm")


@dataclass
class InputsConfig:
    """Which low-resolution fields are super-resolved (one output file per sim)."""

    kind: str = "shards"  # shards: a split of the shard folder `shards` | runs: AthenaK run folders
    split: str = "test"  # kind=shards: manifest split (test | val | train | heldout)
    runs: list[str] = field(
        default_factory=list
    )  # kind=runs: globs of AthenaK run folders (native lo)
    snap_start: int | None = None  # first snapshot file number kept, inclusive (null = first)
    snap_end: int | None = None  # last snapshot file number kept, inclusive (null = last)
    stride: int = 1  # keep every stride-th snapshot of each sim's window, counting from the first

    def validate(self) -> None:
        """Raises ConfigError naming ``inputs.<key>``."""
        require(self.kind in INPUT_KINDS, "inputs.kind", " | ".join(INPUT_KINDS), self.kind)
        require(self.stride >= 1, "inputs.stride", "an integer >= 1", self.stride)
        for k in ("snap_start", "snap_end"):
            v = getattr(self, k)
            require(v is None or v >= 0, f"inputs.{k}", "an integer >= 0 or null", v)
        if self.snap_start is not None and self.snap_end is not None:
            require(
                self.snap_start <= self.snap_end,
                "inputs.snap_start/snap_end",
                "snap_start <= snap_end",
                (self.snap_start, self.snap_end),
            )
        if self.kind == "shards":
            require(bool(self.split), "inputs.split", "a shard split name", self.split)
        else:
            require(
                len(self.runs) > 0,
                "inputs.runs",
                "a non-empty list of run-folder globs (inputs.kind=runs)",
                self.runs,
            )


@dataclass
class SamplerConfig:
    """ODE/SDE sampler (:mod:`mhdsr.sample.samplers`); t range and sigma come from the export."""

    name: str = "heun"  # heun | euler (ODE) | euler_maruyama (SDE)
    steps: int = 10  # steps; network evaluations per sample: heun 2*steps, others steps
    grid: str = "linear"  # time grid: linear | quadratic | edm
    rho: float = 7.0  # EDM grid exponent (grid=edm only)
    options: dict[str, Any] = field(
        default_factory=dict
    )  # sampler keywords (euler_maruyama: delta, delta_schedule, max_churn)

    def validate(self) -> None:
        """Raises ConfigError naming ``sampler.<key>`` (unknown name, grid or option)."""
        require(self.name in SAMPLER_NAMES, "sampler.name", " | ".join(SAMPLER_NAMES), self.name)
        require(self.grid in GRIDS, "sampler.grid", " | ".join(GRIDS), self.grid)
        require(self.steps >= 1, "sampler.steps", "an integer >= 1", self.steps)
        require(self.rho > 0, "sampler.rho", "> 0", self.rho)
        allowed = sampler_options(self.name)
        unknown = sorted(set(self.options) - allowed)
        if unknown:
            raise ConfigError(
                f"config key 'sampler.options': sampler {self.name!r} takes no option(s) {unknown}; "
                f"it takes {sorted(allowed) or 'none'}"
            )


def sampler_options(name: str) -> set[str]:
    """Keyword options sampler ``name`` accepts beyond ``sigma``/``callback``."""
    from mhdsr.sample.samplers import get_sampler

    params = inspect.signature(get_sampler(name)).parameters.values()
    return {p.name for p in params if p.kind is p.KEYWORD_ONLY} - {"sigma", "callback"}


@dataclass
class SampleConfig:
    """``mhdsr sample`` configuration."""

    checkpoint: str = (
        "runs/demo/train"  # run folder (its latest export) or an exported weights file
    )
    output_dir: str = "runs/demo/samples"  # one HDF5 per sim + sample_config.yaml
    shards: str = ""  # shard folder (inputs.kind=shards); also tells the trained resolution
    weights: str = "ema"  # ema | raw: which exported weights to sample with
    inputs: InputsConfig = field(default_factory=InputsConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    ensemble: int = 4  # samples (members) per input snapshot
    batch_size: int = 8  # samples per network call (does not change the results)
    seed: int = 0  # noise base seed; member m of (sim seed s, snapshot n) uses key (s, n, m)
    device: str = "auto"  # auto (cuda if visible, else cpu) | cpu | cuda (the local rank's GPU)
    allow_other_resolution: bool = False  # fully-convolutional mode: accept inputs of another size
    progress: bool = True  # tqdm progress bar (samples/s) on the first task

    def validate(self) -> None:
        """Raises ConfigError naming the key at fault."""
        require(
            bool(self.checkpoint), "checkpoint", "a run folder or weights file", self.checkpoint
        )
        require(bool(self.output_dir), "output_dir", "a folder path", self.output_dir)
        require(self.weights in WEIGHTS, "weights", " | ".join(WEIGHTS), self.weights)
        require(self.device in DEVICES, "device", " | ".join(DEVICES), self.device)
        require(self.ensemble >= 1, "ensemble", "an integer >= 1", self.ensemble)
        require(self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size)
        require(self.seed >= 0, "seed", "an integer >= 0", self.seed)
        if self.inputs.kind == "shards":
            require(bool(self.shards), "shards", "a shard folder (inputs.kind=shards)", self.shards)
