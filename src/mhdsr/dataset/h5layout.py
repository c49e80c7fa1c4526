"""The HDF5 layouts of the outputs of ``mhdsr sample`` and ``mhdsr forecast rollout``: file
names, dataset keys, attribute names, and the settings of a complete file (docs/design.md
"Formats" and "Forecast stage"). The writers (:mod:`mhdsr.sample.h5out`,
:mod:`mhdsr.forecast.rollout`) and the readers (:mod:`mhdsr.sample.inputs` for the chain,
:mod:`mhdsr.eval`) take every name from here; no other module spells them.

Sample file ``<output_dir>/<sim with "/" -> "__">.h5`` (:func:`output_path`)::

    samples   (T, E, C, H, W) float32  physical units (denormalized)
    input     (T, C, h, w)    float32  physical lo fed to the model
    time      (T,)            float64  simulation time of each snapshot
    snapshot  (T,)            int64    AthenaK file number
    cycle     (T,)            int64    AthenaK cycle (-1 if unknown)
    key       (T,)            str      shard sample keys (inputs from shards only)
    init_index, lead (T,)     int64    chain files (inputs.kind=forecast) only

Rollout file (same name rule, attribute ``kind = "forecast"``)::

    forecast        (N, L, C, h, w) float32  leads 1 .. L
    truth           (N, L, C, h, w) float32  NaN where the run has no snapshot
    truth_snapshot  (N, L)          int64    -1: none
    time            (N, L)          float64
    lead            (L,)            int64;   lead_orbits (L,) float64
    init            (N, C, h, w)    float32; init_snapshot, init_time, init_cycle (N,)
    prev            (N, C, h, w)    float32; prev_snapshot (N,)

Both carry the attributes ``settings`` (JSON of everything that determines the numbers) and
``complete`` (set last, before the file is renamed to its final name).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SUFFIX = ".h5"

# --- attributes
KIND = "kind"
COMPLETE = "complete"
SETTINGS = "settings"
FINITE = "finite"
#: values of ``kind``: a rollout file, a super-resolved rollout (chain); absent = an SR file
KIND_FORECAST, KIND_CHAIN, KIND_SR = "forecast", "chain", "sr"

# --- sample files
SAMPLES = "samples"
INPUT = "input"
TIME = "time"
SNAPSHOT = "snapshot"
CYCLE = "cycle"
KEY = "key"
INIT_INDEX = "init_index"
LEAD = "lead"
#: chain files of an ensemble rollout: the forecast member each row super-resolves, ``(T,)``
MEMBER = "member"

# --- rollout files
FORECAST = "forecast"
TRUTH = "truth"
TRUTH_SNAPSHOT = "truth_snapshot"
LEAD_ORBITS = "lead_orbits"
INIT = "init"
INIT_SNAPSHOT = "init_snapshot"
INIT_TIME = "init_time"
INIT_CYCLE = "init_cycle"
PREV = "prev"
PREV_SNAPSHOT = "prev_snapshot"
#: ensemble rollouts (generative forecaster): every member's trajectory ``(N, E, L, C, h, w)``;
#: ``forecast`` then holds the ensemble mean over E
MEMBERS = "members"
#: rollout attributes: ``forecaster`` = "operator" (deterministic FNO) | "flow" (generative);
#: ``ensemble`` = E (1 for the operator)
FORECASTER, ENSEMBLE = "forecaster", "ensemble"
FORECASTER_OPERATOR, FORECASTER_FLOW = "operator", "flow"
#: what a rollout reader needs (``time``: t0 + k dt)
ROLLOUT_DATASETS = (FORECAST, TRUTH, TRUTH_SNAPSHOT, INIT, PREV, PREV_SNAPSHOT, INIT_SNAPSHOT,
                    LEAD_ORBITS, TIME)  # fmt: skip


def output_path(output_dir: str | Path, sim: str) -> Path:
    """``output_dir / (sim with "/" replaced by "__") + ".h5"`` (sample and rollout files)."""
    return Path(output_dir) / (sim.replace("/", "__") + SUFFIX)


def stale_tmps(path: Path) -> list[Path]:
    """Temporary files of ``path`` left by killed runs (``.<name>.tmp-*``)."""
    return sorted(path.parent.glob(f".{path.name}.tmp-*"))


def read_settings(path: str | Path) -> dict[str, Any] | None:
    """The JSON ``settings`` attribute of a COMPLETE output (a sample or rollout file), else
    ``None``: missing, unreadable, or not marked ``complete`` (a file being written or left by
    a killed run)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            if not bool(f.attrs.get(COMPLETE, False)):
                return None
            return json.loads(f.attrs[SETTINGS])
    except (OSError, KeyError, ValueError):
        return None


def file_kind(attrs: Any) -> str:
    """``"forecast"``, ``"chain"`` or ``"sr"`` from a file's attributes (absent = SR)."""
    k = attrs.get(KIND, KIND_SR)
    return k.decode() if isinstance(k, bytes) else str(k)
