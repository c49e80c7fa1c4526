"""Typed configuration of ``mhdsr sample`` (bulk inference to HDF5; docs/design.md "Formats").

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

from dataclasses import dataclass, field
from typing import Literal

from mhdsr.config import require
from mhdsr.method.config import SamplerConfig

#: Where the lo fields come from (forecast: every lead of ``mhdsr forecast rollout`` files).
InputKind = Literal["shards", "runs", "forecast"]
#: Which exported weights to sample with.
Weights = Literal["ema", "raw"]
Device = Literal["auto", "cpu", "cuda"]


@dataclass
class InputsConfig:
    """Which low-resolution fields are super-resolved (one output file per sim)."""

    #: shards: a split of the shard folder `shards` | runs: AthenaK run folders | forecast:
    #: rollout files of `mhdsr forecast rollout` (the chain: every lead step is super-resolved)
    kind: InputKind = "shards"
    #: kind=shards: manifest split (test | val | train | heldout)
    split: str = "test"
    #: kind=runs: globs of AthenaK run folders (native lo)
    runs: list[str] = field(default_factory=list)
    #: first snapshot file number kept, inclusive (null = first)
    snap_start: int | None = None
    #: last snapshot file number kept, inclusive (null = last)
    snap_end: int | None = None
    #: keep every stride-th snapshot of each sim's window, counting from the first
    stride: int = 1
    #: kind=forecast: rollout HDF5 files (globs; a folder means its *.h5); snap_* and stride do
    #: not apply, every initial state and lead is taken
    forecasts: list[str] = field(default_factory=list)
    #: kind=forecast: super-resolve leads 1 .. max_lead (0 = every lead of the files)
    max_lead: int = 0
    #: kind=forecast, rollout files with a ``members`` dataset (ensemble rollouts of the
    #: generative forecaster): super-resolve members 0 .. max_members - 1 (0 = every member);
    #: files without ``members`` have one input per lead (their ``forecast``) whatever this is
    max_members: int = 0
    #: kind=forecast: only the leads at which the run has a truth snapshot (what the chain is
    #: scored on; a 0.1-orbit forecast of a run written every 0.25 orbit has truth at every
    #: 5th lead); false: every lead up to max_lead
    truth_only: bool = False

    def validate(self) -> None:
        """Raises ConfigError naming ``inputs.<key>``."""
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
        require(self.max_lead >= 0, "inputs.max_lead", "an integer >= 0", self.max_lead)
        require(
            isinstance(self.max_members, int)
            and not isinstance(self.max_members, bool)
            and self.max_members >= 0,
            "inputs.max_members",
            "an integer >= 0 (0 = every ensemble member of the rollout files)",
            self.max_members,
        )
        if self.kind == "shards":
            require(bool(self.split), "inputs.split", "a shard split name", self.split)
        elif self.kind == "forecast":
            require(
                len(self.forecasts) > 0,
                "inputs.forecasts",
                "a non-empty list of rollout files or folders (inputs.kind=forecast)",
                self.forecasts,
            )
        else:
            require(
                len(self.runs) > 0,
                "inputs.runs",
                f"a non-empty list of run-folder globs (inputs.kind={self.kind})",
                self.runs,
            )


@dataclass
class SampleConfig:
    """``mhdsr sample`` configuration."""

    #: run folder (its latest export) or an exported weights file
    checkpoint: str = "runs/demo/train"
    #: one HDF5 per sim + sample_config.yaml
    output_dir: str = "runs/demo/samples"
    #: shard folder (inputs.kind=shards); also tells the trained resolution
    shards: str = ""
    #: which exported weights to sample with
    weights: Weights = "ema"
    inputs: InputsConfig = field(default_factory=InputsConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    #: samples (members) per input snapshot
    ensemble: int = 4
    #: samples per network call (does not change the results)
    batch_size: int = 8
    #: noise base seed; member m of (sim named sim, seed s, snapshot n) uses key (crc32(sim), s, n, m)
    seed: int = 0
    #: auto (cuda if visible, else cpu) | cpu | cuda (the local rank's GPU)
    device: Device = "auto"
    #: fully-convolutional mode: accept inputs of another size
    allow_other_resolution: bool = False
    #: hard consistency projection onto avgpool2(sample) = lo: null = as the model was trained
    #: (its method.project), true / false to override (a post-processing choice)
    project: bool | None = None
    #: replace jz by curl B of the sample: null = as trained (method.derive_jz), true / false
    derive_jz: bool | None = None
    #: tqdm progress bar (samples/s) on the first task
    progress: bool = True

    def validate(self) -> None:
        """Raises ConfigError naming the key at fault."""
        require(
            bool(self.checkpoint), "checkpoint", "a run folder or weights file", self.checkpoint
        )
        require(bool(self.output_dir), "output_dir", "a folder path", self.output_dir)
        require(self.ensemble >= 1, "ensemble", "an integer >= 1", self.ensemble)
        require(self.batch_size >= 1, "batch_size", "an integer >= 1", self.batch_size)
        require(self.seed >= 0, "seed", "an integer >= 0", self.seed)
        if self.inputs.kind == "shards":
            require(bool(self.shards), "shards", "a shard folder (inputs.kind=shards)", self.shards)
