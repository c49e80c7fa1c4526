"""Planning of ``mhdsr eval``: sample files -> one job per sim, the panel plan, the baseline
inputs and times in orbits. Cheap (headers and the manifest only); every user error is raised
here, before any heavy work or output.
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mhdsr.eval.baselines import BASELINES, BaselineInputs
from mhdsr.eval.inputs import EvalInputError, SampleFile, ShardTruth, read_inputs

HELDOUT = "heldout"
#: Group order in every output: test first, held-out last.
GROUP_ORDER = {"test": 0, "val": 1, "train": 2, HELDOUT: 9}


@dataclass
class SimJob:
    """One sim to score: its files, its group and the split holding its pixel truth.

    Attributes:
        sim: simulation id; ``group``: ``"test"``, ``"val"``, ... or ``"heldout"``.
        split: split of its pixel truth (``None`` for held-out sims).
        files: its sample files (one per method).
        omega: the box's angular frequency (orbit = ``t * omega / (2 pi)``).
    """

    sim: str
    group: str
    split: str | None
    files: list[SampleFile]
    omega: float = 1.0

    @property
    def n_members(self) -> int:
        """Ensemble size of the stochastic baselines: the largest among the sim's files."""
        return max(f.n_members for f in self.files)

    @property
    def sim_seed(self) -> int:
        """The sim's seed (``sim_seed`` attribute; else a crc32 of the sim id)."""
        seed = self.files[0].attrs.get("sim_seed")
        return int(seed) if seed is not None else zlib.crc32(self.sim.encode())

    @property
    def snapshots(self) -> list[int]:
        """Sorted union of the files' snapshot numbers."""
        return sorted({int(n) for f in self.files for n in f.snapshots})


def orbits(times: Sequence[float] | np.ndarray, omega: float = 1.0) -> list[float]:
    """Times in orbits, ``t / (2 pi / Omega)`` (docs/design.md, "Sample-quality metrics")."""
    return [float(t) * omega / (2.0 * math.pi) for t in np.asarray(times, np.float64)]


def sim_omega(manifest: dict[str, Any], sim: str) -> float:
    """``omega0`` of a sim's input deck from the manifest's provenance (1 when unknown, the
    value of every bundled and planned run, docs/design.md)."""
    params = manifest.get("provenance", {}).get("sims", {}).get(sim, {}).get("params", {})
    try:
        om = float(params.get("omega0", 1.0))
    except (TypeError, ValueError):
        return 1.0
    return om if om > 0 else 1.0


def _split_sims(truth: ShardTruth) -> dict[str, list[str]]:
    return {
        s: list(r.get("sims", []))
        for s, r in truth.manifest["splits"].items()
        if r.get("source") == "hi"
    }


def plan_jobs(files: Sequence[SampleFile], truth: ShardTruth) -> list[SimJob]:
    """Group files by sim and find each sim's truth split.

    A ``derived_avgpool2`` file needs its sim among a hi split's sims (preferring the split in
    its ``source`` attribute, ``"shards:<split>"``) and every one of its keys in that split; a
    ``native`` file is a held-out sim (no pixel truth).

    Raises:
        EvalInputError: a derived file's sim or keys are not in the shards, a channel is not
            in the shards, or one sim has both derived and native files.
    """
    by_sim: dict[str, list[SampleFile]] = defaultdict(list)
    for f in files:
        unknown = [c for c in f.channels if c not in truth.channels]
        if unknown:
            raise EvalInputError(
                f"{f.rel}: channels {unknown} are not in the shards' {truth.channels}"
            )
        by_sim[f.sim].append(f)
    jobs = []
    for sim, group in by_sim.items():
        omega = sim_omega(truth.manifest, sim)
        kinds = {f.lo_kind for f in group}
        if len(kinds) > 1:
            raise EvalInputError(
                f"sim {sim!r} has both derived and native-lo sample files: {[f.rel for f in group]}"
            )
        if kinds == {"native"}:
            jobs.append(SimJob(sim, HELDOUT, None, group, omega))
            continue
        f0 = group[0]
        cands = truth.splits_with_sim(sim)
        src = str(f0.attrs.get("source", ""))
        wanted = src.split(":", 1)[1] if src.startswith("shards:") else None
        if wanted in cands or (not cands and wanted and truth.has_split(wanted)):
            split = wanted
        elif cands:
            split = cands[0]
        else:
            raise EvalInputError(
                f"{f0.rel}: sim {sim!r} has no truth in the shards {truth.root} (hi splits hold "
                f"{_split_sims(truth)}); evaluate against the shard folder it was sampled from"
            )
        index = truth.index(split)
        for f in group:
            missing = [k for k in f.truth_keys() if k not in index or "hi.npy" not in index[k]]
            if missing:
                raise EvalInputError(
                    f"{f.rel}: sim {sim!r} has no truth in the shards {truth.root} for "
                    f"{len(missing)} snapshot(s), e.g. keys {missing[:3]} (split {split!r})"
                )
        jobs.append(SimJob(sim, split, split, group, omega))
    return sorted(jobs, key=lambda j: (GROUP_ORDER.get(j.group, 5), j.group, j.sim))


def panel_plan(jobs: Sequence[SimJob], max_panels: int) -> dict[str, list[int]]:
    """Snapshots to draw, ``sim -> [snapshot, ...]``: ``max_panels`` spread round-robin over the
    sims (in job order: sims with truth first), evenly inside each sim (1 pick = the middle)."""
    if max_panels <= 0 or not jobs:
        return {}
    per = [max_panels // len(jobs) + (i < max_panels % len(jobs)) for i in range(len(jobs))]
    plan: dict[str, list[int]] = {}
    for job, k in zip(jobs, per):
        snaps = job.snapshots
        if k <= 0:
            continue
        # the centres of k equal parts of the snapshot list (distinct, since len(snaps) >= k)
        k = min(k, len(snaps))
        plan[job.sim] = [snaps[int((i + 0.5) * len(snaps) / k)] for i in range(k)]
    return plan


def panel_baselines(baselines: Sequence[str]) -> list[str]:
    """Baseline columns of the comparison panels: the best deterministic interpolant selected
    (spline > bicubic > bilinear) and spectral-noise (one member) if selected."""
    out = [b for b in ("spline", "bicubic", "bilinear") if b in baselines][:1]
    return out + (["spectral-noise"] if "spectral-noise" in baselines else [])


@dataclass
class UnionInputs:
    """The union of a sim's snapshots over its files, sorted: numbers, times, shard keys
    (``None`` without), lo inputs ``(T, C, h, w)`` float32 physical, and notes."""

    snapshots: list[int]
    times: list[float]
    keys: list[str | None]
    inputs: np.ndarray
    notes: list[str]


def union_inputs(job: SimJob) -> UnionInputs:
    """Read the lo inputs of every file of ``job`` (small) and take their union by snapshot;
    an input of one snapshot that differs between files is noted (the baselines use the first)."""
    notes: list[str] = []
    table: dict[int, tuple[float, str | None, np.ndarray, str]] = {}
    for f in job.files:
        lo = read_inputs(f.path)
        keys = f.truth_keys() if job.split is not None else (f.keys or [None] * len(f.snapshots))
        for i, n in enumerate(f.snapshots.tolist()):
            if n in table:
                other = table[n]
                if not np.array_equal(other[2], lo[i]):
                    d = float(np.max(np.abs(other[2] - lo[i])))
                    notes.append(
                        f"sim {job.sim} snapshot {n}: input differs between {other[3]} and {f.rel} "
                        f"(max |diff| {d:.3g}); the baselines use the first"
                    )
            else:
                table[n] = (float(f.times[i]), keys[i], lo[i], f.rel)
    snaps = sorted(table)
    return UnionInputs(
        snaps,
        [table[n][0] for n in snaps],
        [table[n][1] for n in snaps],
        np.stack([table[n][2] for n in snaps]),
        notes,
    )


def check_baselines(
    baselines: Sequence[str], files: Sequence[SampleFile], truth: ShardTruth, train_split: str
) -> None:
    """Raise EvalInputError now if a selected baseline cannot be made from these inputs:
    ``spectral-noise`` needs a hi ``train_split`` in the shards; ``noise`` needs ``sigma`` and
    a known ``upsample`` mode in every sample file."""
    from typing import get_args

    from mhdsr.method.config import UpsampleMode

    modes = get_args(UpsampleMode)
    if "spectral-noise" in baselines and not truth.has_split(train_split):
        raise EvalInputError(
            f"baseline spectral-noise needs the train statistics: shards {truth.root} have no hi "
            f"split {train_split!r} (set train_split, or drop spectral-noise from baselines)"
        )
    if "noise" in baselines:
        for f in files:
            sigma, mode = f.attrs.get("sigma"), f.attrs.get("upsample", "bilinear")
            if not isinstance(sigma, (int, float)) or not sigma >= 0 or mode not in modes:
                raise EvalInputError(
                    f"{f.rel}: baseline noise needs attributes sigma >= 0 and upsample in "
                    f"{list(modes)}, got sigma={sigma!r}, upsample={mode!r} (drop noise "
                    "from baselines)"
                )


def baseline_inputs(
    job: SimJob,
    baselines: Sequence[str],
    *,
    seed: int,
    std: np.ndarray | None,
    noise_spectrum: np.ndarray | None,
) -> tuple[BaselineInputs, list[str]]:
    """The :class:`BaselineInputs` of one sim, and notes.

    Args:
        job: the sim.
        baselines: selected baseline names.
        seed: ``baseline_seed``.
        std: ``(C,)`` train std of the file's channels (physical units), for ``noise``.
        noise_spectrum: ``(C, S)`` target of ``spectral-noise`` (or ``None``).
    """
    f0 = job.files[0]
    notes = []
    sigma, level = None, None
    mode = str(f0.attrs.get("upsample", "bilinear"))
    if "noise" in baselines and std is not None:
        pairs = {
            (float(f.attrs["sigma"]), str(f.attrs.get("upsample", "bilinear"))) for f in job.files
        }
        if len(pairs) > 1:
            notes.append(
                f"sim {job.sim}: method files disagree on (sigma, upsample) {sorted(pairs)}; the "
                f"noise baseline uses those of {f0.rel}"
            )
        model_std = f0.attrs.get("norm_std")  # the model's own units when the file records them
        unit = np.asarray(model_std if model_std is not None else std, np.float64)
        sigma = float(f0.attrs["sigma"]) * unit
        residual = f0.attrs.get("formulation") == "residual"
        if residual and f0.attrs.get("residual_std") is not None:
            sigma = sigma * np.asarray(f0.attrs["residual_std"], np.float64)
        if f0.attrs.get("scale") == "instance":
            level = (
                np.asarray(f0.attrs["norm_mean"], np.float64),
                np.asarray(f0.attrs["norm_std"], np.float64),
                # the noise is x0 decoded: residual models scale it by the residual level b
                int(
                    (residual and f0.attrs.get("residual_kmin", 0)) or f0.attrs.get("scale_kmin", 0)
                ),
                float(f0.attrs.get("scale_floor", 1e-4)),
            )
    needs = {BASELINES[b].needs for b in baselines}
    return (
        BaselineInputs(
            factor=f0.n_hi // f0.n_lo,
            n_members=job.n_members,
            seed=seed,
            sim_seed=job.sim_seed,
            noise_spectrum=noise_spectrum if "noise_spectrum" in needs else None,
            sigma=sigma,
            upsample=mode,
            level=level,
        ),
        notes,
    )
