"""``mhdsr forecast rollout``: autoregressive forecasts from chosen initial snapshots, one HDF5
file per run (docs/design.md "Forecast stage"; layout below).

For each run of ``inputs.runs``: the lo field of every snapshot is the snapshot itself (a native
lo run on the model's grid, ``lo_kind = native_lo``) or ``avgpool2`` of it (a hi run of twice
the grid, ``lo_kind = avgpool2_hi``; :func:`mhdsr.dataset.cadence.lo_of_hi`, as the window
shards). The snapshots ``dt`` apart (header times, :mod:`mhdsr.dataset.cadence`) give, for an
initial snapshot ``n0`` at ``t0``, its history (``x(t0 - dt)`` when the model takes two states)
and the truth at ``t0 + k dt``, ``k = 1 .. steps``, where the run has it.

Output ``<output_dir>/<resolution folder>__<run folder>.h5`` (names:
:mod:`mhdsr.dataset.h5layout`)::

    forecast        (N, L, C, h, w) float32  physical units, leads 1 .. L
    truth           (N, L, C, h, w) float32  the run at t0 + k dt (NaN where it has no snapshot)
    truth_snapshot  (N, L)          int64    its file number (-1: none)
    time            (N, L)          float64  t0 + k dt (code units)
    lead            (L,)            int64    k;  lead_orbits (L,) float64: k * dt in orbits
    init            (N, C, h, w)    float32  x(t0);  init_snapshot, init_time, init_cycle (N,)
    prev            (N, C, h, w)    float32  x(t0 - dt) (NaN where absent); prev_snapshot (N,)
    attrs: kind = "forecast", channels, checkpoint, checkpoint_sha256, checkpoint_step, weights,
           code_version, sim, sim_seed, source, lo_kind, run_dir, dt_orbits, dt, omega0,
           history, steps, norm_mean, norm_std, units, settings (JSON), complete

``prev`` feeds the linear-extrapolation baseline of ``mhdsr eval``. A file is written under a
temporary name and renamed when complete; complete files made with the same settings are
skipped (a killed run reruns only what is missing, with the same numbers), files made with
other settings are refused. Ranks (torchrun / srun) take disjoint runs, round-robin; the
array tasks of ``mhdsr launch rollout`` (:mod:`mhdsr.launch`) take runs ``k, k + n, ...`` of
:func:`list_work` (then the ranks of a task split its share).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mhdsr.channels import CHANNELS
from mhdsr.config import to_dict, to_yaml
from mhdsr.dataset import h5layout as H
from mhdsr.dataset.cadence import Cadence, cadence, lo_of_hi, orbit_time
from mhdsr.dataset.h5layout import output_path, read_settings, stale_tmps
from mhdsr.errors import ConfigError
from mhdsr.forecast.config import RolloutConfig
from mhdsr.forecast.loss import rollout
from mhdsr.forecast.models import FlowForecaster, ForecastModel, load_forecast_model
from mhdsr.io_utils import atomic_path, make_output_dir, write_text_atomic
from mhdsr.method.samplers import expected_nfe
from mhdsr.units import orbits

log = logging.getLogger("mhdsr.forecast")

KIND = H.KIND_FORECAST
CONFIG_NAME = "rollout_config.yaml"
NATIVE, POOLED = "native_lo", "avgpool2_hi"
#: an exported forecaster of either kind
Forecaster = ForecastModel | FlowForecaster
#: the noise-key word of rollout member streams: member e of the rollout from initial snapshot
#: n of sim s draws, at step k, from generator (seed, ROLLOUT_KEY, name_word(s), n, k, e)
ROLLOUT_KEY = 7


# ----------------------------------------------------------------------------------------------
# What to roll out


@dataclass
class RunPlan:
    """One run's initial states and truth.

    Attributes:
        sim: ``"<resolution folder>/<run folder>"``; ``seed`` the sim seed; ``run_dir`` the folder.
        lo_kind: ``native_lo`` | ``avgpool2_hi``.
        cad: the run's snapshots at spacing ``dt``.
        inits: initial snapshot numbers; ``prevs`` the one ``dt`` before each (or ``None``);
            ``truth`` per init the snapshots at ``t0 + k dt`` (``None`` where absent).
        omega0: from the deck.
    """

    sim: str
    seed: int
    run_dir: str
    lo_kind: str
    cad: Cadence
    inits: list[int]
    prevs: list[int | None]
    truth: list[list[int | None]]
    omega0: float
    _run: Any = field(default=None, repr=False)

    def read(self, snapshot: int, channels: list[str]) -> tuple[np.ndarray, float, int]:
        """The lo field ``(C, h, w)`` float32 of ``snapshot`` (physical), its time and cycle."""
        snap = self._run.read_snapshot(snapshot, channels)
        lo = lo_of_hi(snap.data) if self.lo_kind == POOLED else np.ascontiguousarray(snap.data)
        return lo, float(snap.time), int(snap.cycle)


def plan_runs(cfg: RolloutConfig, fm: Forecaster) -> list[RunPlan]:
    """The runs and initial snapshots of ``cfg.inputs`` (reads headers only).

    Raises:
        ConfigError: a glob matches nothing, a run's grid is neither the model's nor twice it,
            a listed initial snapshot is missing or lacks the history the model needs, or no
            initial snapshot is selected at all.
        AthenaKFormatError: an unreadable run.
    """
    from mhdsr.athenak import open_run
    from mhdsr.dataset.sims import SEED_DIR_RE, resolve_globs, sim_name

    inp = cfg.inputs
    plans = []
    for path in resolve_globs(list(inp.runs), "inputs.runs"):
        run = open_run(path)
        nx1, nx2, nx3 = run.resolution
        h, w = fm.grid
        if nx3 == 1 and (nx2, nx1) == (h, w):
            lo_kind = NATIVE
        elif nx3 == 1 and (nx2, nx1) == (2 * h, 2 * w):
            lo_kind = POOLED
        else:
            raise ConfigError(
                f"config key 'inputs.runs': {path} is {nx1}x{nx2}x{nx3}; the model forecasts on "
                f"{w}x{h} (a native run of that grid, or a 2D run of twice it via avgpool2)"
            )
        seed = run.params.get("seed")
        if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
            m = SEED_DIR_RE.match(path.name)
            seed = int(m.group(1)) if m else -1
        omega0 = float(run.params.get("omega0", 1.0) or 1.0)
        snaps = run.snapshots(CHANNELS)
        if not snaps:
            raise ConfigError(f"config key 'inputs.runs': {path} has no complete snapshot")
        t_last, c_last = run.snapshot_time(snaps[-1])
        mean_step = t_last / c_last if c_last > 0 else 0.0
        dt = orbit_time(fm.dt_orbits, omega0)
        cad = cadence(snaps, [run.snapshot_time(s)[0] for s in snaps], dt,
                      min(cfg.time_tol * mean_step, dt / 3))  # fmt: skip
        slack = mean_step * omega0 / (2 * math.pi)
        if inp.init_snapshots:
            missing = [s for s in inp.init_snapshots if s not in cad.snapshots]
            if missing:
                raise ConfigError(
                    f"config key 'inputs.init_snapshots': {sim_name(path)} has no snapshot(s) "
                    f"{missing} (has {cad.snapshots})"
                )
            inits = list(inp.init_snapshots)
            if fm.history > 1:
                short = [s for s in inits if cad.before(s) is None]
                if short:
                    raise ConfigError(
                        f"config key 'inputs.init_snapshots': snapshot(s) {short} of "
                        f"{sim_name(path)} have no snapshot {fm.dt_orbits} orbits earlier, which the "
                        f"model (history {fm.history}) needs"
                    )
        else:
            inits = []
            for s, t in zip(cad.snapshots, cad.times):
                orb = orbits(t, omega0)
                if orb < inp.orbit_start - slack:
                    continue
                if inp.orbit_end is not None and orb > inp.orbit_end + slack:
                    continue
                if fm.history > 1 and cad.before(s) is None:
                    continue
                inits.append(s)
        inits = inits[:: inp.stride]
        if not inits:
            continue
        plans.append(
            RunPlan(
                sim=sim_name(path), seed=int(seed), run_dir=str(path), lo_kind=lo_kind, cad=cad,
                inits=inits, prevs=[cad.before(s) for s in inits],
                truth=[_truth(cad, s, cfg.steps) for s in inits], omega0=omega0, _run=run,
            )
        )  # fmt: skip
    if not plans:
        raise ConfigError(
            f"config keys 'inputs.*': no initial snapshot selected in {list(inp.runs)} (orbit "
            f"range [{inp.orbit_start}, {inp.orbit_end}], history {fm.history})"
        )
    return plans


def _truth(cad: Cadence, init: int, steps: int) -> list[int | None]:
    """The snapshots at ``t0 + k dt``, ``k = 1 .. steps`` (each within the tolerance of its
    nominal time, so a gap in between does not hide a later truth), ``None`` where absent."""
    t0 = cad.times[cad.snapshots.index(init)]
    return [cad.at_time(t0 + k * cad.dt) for k in range(1, steps + 1)]


# ----------------------------------------------------------------------------------------------
# Files


def _settings(cfg: RolloutConfig, fm: Forecaster, rp: RunPlan) -> dict[str, Any]:
    return {
        "checkpoint_sha256": fm.sha256,
        "weights": fm.weights,
        "channels": list(fm.channels),
        "steps": int(cfg.steps),
        "inits": list(rp.inits),
        "truth": rp.truth,
        "lo_kind": rp.lo_kind,
        "dt_orbits": fm.dt_orbits,
        "time_tol": float(cfg.time_tol),
        **(
            {
                "forecaster": H.FORECASTER_FLOW,
                "ensemble": int(cfg.ensemble),
                "sampler": to_dict(cfg.sampler),
                "seed": int(cfg.seed),
            }
            if isinstance(fm, FlowForecaster)
            else {}
        ),  # fmt: skip
    }


@torch.no_grad()
def rollout_run(cfg: RolloutConfig, fm: Forecaster, rp: RunPlan, device: torch.device) -> Path:
    """Roll out every initial state of ``rp`` and write its file atomically."""
    import h5py

    from mhdsr import __version__

    n, steps, c = len(rp.inits), int(cfg.steps), len(fm.channels)
    h, w = fm.grid
    path = output_path(cfg.output_dir, rp.sim)
    for old in stale_tmps(path):
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
    dt_code = orbit_time(fm.dt_orbits, rp.omega0)
    cache: dict[int, tuple[np.ndarray, float, int]] = {}

    def field_of(s: int) -> tuple[np.ndarray, float, int]:
        if s not in cache:
            cache[s] = rp.read(s, fm.channels)
        return cache[s]

    nan = np.full((c, h, w), np.nan, dtype=np.float32)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset(H.FORECAST, (n, steps, c, h, w), dtype="f4", chunks=(1, 1, c, h, w))
        f.create_dataset(H.TRUTH, (n, steps, c, h, w), dtype="f4", chunks=(1, 1, c, h, w))
        f[H.LEAD] = np.arange(1, steps + 1, dtype=np.int64)
        f[H.LEAD_ORBITS] = np.arange(1, steps + 1, dtype=np.float64) * fm.dt_orbits
        f[H.TRUTH_SNAPSHOT] = np.array(
            [[-1 if s is None else s for s in row] for row in rp.truth], dtype=np.int64
        )
        init = np.stack([field_of(s)[0] for s in rp.inits])
        f[H.INIT] = init
        f[H.INIT_SNAPSHOT] = np.asarray(rp.inits, dtype=np.int64)
        t0 = np.array([field_of(s)[1] for s in rp.inits], dtype=np.float64)
        f[H.INIT_TIME] = t0
        f[H.INIT_CYCLE] = np.array([field_of(s)[2] for s in rp.inits], dtype=np.int64)
        f[H.TIME] = t0[:, None] + dt_code * np.arange(1, steps + 1)[None, :]
        f[H.PREV] = np.stack([nan if p is None else field_of(p)[0] for p in rp.prevs])
        f[H.PREV_SNAPSHOT] = np.array([-1 if p is None else p for p in rp.prevs], dtype=np.int64)
        for i, row in enumerate(rp.truth):
            for k, s in enumerate(row):
                f[H.TRUTH][i, k] = nan if s is None else field_of(s)[0]
        flow = isinstance(fm, FlowForecaster)
        e_n = int(cfg.ensemble) if flow else 1
        if flow:
            f.create_dataset(
                H.MEMBERS, (n, e_n, steps, c, h, w), dtype="f4", chunks=(1, 1, 1, c, h, w)
            )
        for b0 in range(0, n, cfg.batch_size):
            idx = list(range(b0, min(n, b0 + cfg.batch_size)))
            hist = []
            for i in idx:
                frames = [init[i]] if fm.history == 1 else [field_of(rp.prevs[i])[0], init[i]]
                hist.append(np.stack(frames))
            states = fm.norm.normalize(torch.from_numpy(np.stack(hist)).to(device))
            if flow:
                members = _flow_members(cfg, fm, rp, [rp.inits[i] for i in idx], states[:, -1])
                f[H.MEMBERS][idx[0] : idx[-1] + 1] = members
                f[H.FORECAST][idx[0] : idx[-1] + 1] = members.astype(np.float64).mean(axis=1)
                continue
            dt = torch.full((len(idx),), fm.dt_orbits, device=device)
            pred = fm.norm.denormalize(rollout(fm.model, states, dt, steps)).cpu().numpy()
            f[H.FORECAST][idx[0] : idx[-1] + 1] = pred.astype(np.float32)
        attrs = {
            H.KIND: KIND,
            "channels": list(fm.channels),
            "checkpoint": fm.path,
            "checkpoint_sha256": fm.sha256,
            "checkpoint_step": fm.step,
            "weights": fm.weights,
            "code_version": __version__,
            "sim": rp.sim,
            "sim_seed": rp.seed,
            "source": "runs",
            "lo_kind": rp.lo_kind,
            "run_dir": str(Path(rp.run_dir).resolve()),
            "dt_orbits": fm.dt_orbits,
            "dt": dt_code,
            "omega0": rp.omega0,
            "history": fm.history,
            "steps": steps,
            H.FORECASTER: fm.kind,
            H.ENSEMBLE: e_n,
            "norm_mean": [float(x) for x in fm.norm.mean],
            "norm_std": [float(x) for x in fm.norm.std],
            "units": "physical (code units); lo grid",
            H.SETTINGS: json.dumps(_settings(cfg, fm, rp), sort_keys=True),
        }
        if flow:
            attrs["source_mean"] = fm.source
            attrs["sampler"] = json.dumps(to_dict(cfg.sampler), sort_keys=True)
            attrs["nfe_per_step"] = expected_nfe(cfg.sampler.name, cfg.sampler.steps)
        for k, v in attrs.items():
            f.attrs[k] = v
        finite = bool(np.isfinite(f[H.FORECAST][()]).all())
        f.attrs[H.FINITE] = finite
        f.attrs[H.COMPLETE] = True
    if not finite:
        log.warning(
            "%s: the forecast holds NaN/inf (the rollout diverged); kept and flagged", rp.sim
        )
    return path


def _flow_members(
    cfg: RolloutConfig, fm: FlowForecaster, rp: RunPlan, inits: list[int], x0: torch.Tensor
) -> np.ndarray:
    """Every member's trajectory from normalized initial states ``x0`` ``(n, C, h, w)``:
    ``(n, E, L, C, h, w)`` float32 physical. Member ``e`` of initial snapshot ``inits[i]`` is its
    own autoregressive chain; its step ``k`` draws from the keyed stream
    ``(cfg.seed, ROLLOUT_KEY, name_word(sim), inits[i], k, e)``, so a member's numbers do not
    depend on the batch, the other members or the rank."""
    from mhdsr.method.noise import PerSampleNoise, name_word

    e_n, steps = int(cfg.ensemble), int(cfg.steps)
    word = name_word(rp.sim)
    x = x0.repeat_interleave(e_n, dim=0)
    out = np.empty((x0.shape[0], e_n, steps, *x0.shape[1:]), dtype=np.float32)
    for k in range(1, steps + 1):
        keys = [(ROLLOUT_KEY, word, n0, k, e) for n0 in inits for e in range(e_n)]
        noise = PerSampleNoise.from_keys(cfg.seed, keys, device=x.device)
        x = fm.step_once(x, noise, cfg.sampler)
        phys = fm.norm.denormalize(x).cpu().numpy().astype(np.float32)
        out[:, :, k - 1] = phys.reshape(x0.shape[0], e_n, *x0.shape[1:])
    return out


def _task() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` of this process (torchrun or srun; else 0, 1, 0)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def _check_settings(cfg: RolloutConfig, fm: Forecaster, plans: list[RunPlan]) -> None:
    """Refuse complete output files made with other settings (before any file is written)."""
    for rp in plans:
        path = output_path(cfg.output_dir, rp.sim)
        old = read_settings(path)
        new = _settings(cfg, fm, rp)
        if old is not None and old != new:
            diff = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                    if old.get(k) != new.get(k)]  # fmt: skip
            raise ConfigError(
                f"{path} exists and was made with other settings ({'; '.join(diff)}); use "
                "another output_dir or delete it"
            )


def prepare(
    cfg: RolloutConfig, device: torch.device | str = "cpu"
) -> tuple[Forecaster, list[RunPlan]]:
    """Everything a rollout checks before writing: the checkpoint (a forecast export), the
    inputs (:func:`plan_runs`) and existing outputs made with other settings. ``mhdsr launch
    rollout`` runs it on cpu before submitting.

    Raises:
        CheckpointError, ConfigError, AthenaKFormatError: see :func:`run_rollout`.
    """
    fm = load_forecast_model(cfg.checkpoint, cfg.weights, device)
    cfg.sampler.check_channels(fm.channels)
    plans = plan_runs(cfg, fm)
    _check_settings(cfg, fm, plans)
    return fm, plans


def list_work(cfg: RolloutConfig) -> list[str]:
    """The runs' sim names in work order (that of :func:`plan_runs`: sorted run folders with at
    least one initial snapshot); array task ``k`` of ``n`` takes entries ``k, k + n, ...``.
    Loads the model on cpu (the selection depends on its cadence and history).

    Raises:
        CheckpointError, ConfigError, AthenaKFormatError: a bad checkpoint or inputs.
    """
    fm = load_forecast_model(cfg.checkpoint, cfg.weights, "cpu")
    return [rp.sim for rp in plan_runs(cfg, fm)]


def status(cfg: RolloutConfig, names: list[str] | None = None) -> dict[str, list[str]]:
    """``{"done": [...], "pending": [...]}``: sims with / without a complete output file made
    with the settings of ``cfg`` (a file with other settings counts as pending here; the
    rollout itself refuses it).

    Args:
        names: the sims to check, a subset of :func:`list_work` (default: all of it).
    """
    fm = load_forecast_model(cfg.checkpoint, cfg.weights, "cpu")
    out: dict[str, list[str]] = {"done": [], "pending": []}
    for rp in plan_runs(cfg, fm):
        if names is not None and rp.sim not in names:
            continue
        same = read_settings(output_path(cfg.output_dir, rp.sim)) == _settings(cfg, fm, rp)
        out["done" if same else "pending"].append(rp.sim)
    return out


def run_rollout(
    cfg: RolloutConfig, *, task_index: int | None = None, num_tasks: int | None = None
) -> dict[str, Any]:
    """Roll out this task's share of the runs (see the module docstring).

    The share: array task ``task_index`` of ``num_tasks`` (``mhdsr launch rollout``) owns runs
    ``k, k + n, ...`` of :func:`list_work`; within it, the ranks of a torchrun / srun launch
    (:func:`_task`) take every ``world``-th run from ``rank``. Without ``task_index`` /
    ``num_tasks`` the array split is 0 of 1 (all runs, split over the ranks). A run's file does
    not depend on which task or rank writes it (noise is keyed per sim, initial snapshot, step
    and member). Each file is written under a lock (:func:`mhdsr.io_utils.sim_lock`), so two
    tasks never write the same run at once: a run locked by another live task is left to it
    (``busy``).

    Returns:
        ``{"done", "skipped", "busy"}`` (sim names of this task), ``"files"``, ``"seconds"``,
        ``"task"`` (``[rank, world]``), ``"task_index"``, ``"num_tasks"``, ``"output_dir"``.

    Raises:
        CheckpointError, ConfigError, AthenaKFormatError: a bad checkpoint or inputs, or an
            existing output made with other settings (all before any file is written).
    """
    from mhdsr.io_utils import sim_lock
    from mhdsr.model.inference import resolve_device

    if task_index is None and num_tasks is None:
        task_index, num_tasks = 0, 1
    elif task_index is None or num_tasks is None:
        raise ConfigError("run_rollout: give both task_index and num_tasks, or neither")
    if not (num_tasks >= 1 and 0 <= task_index < num_tasks):
        raise ConfigError(
            f"run_rollout: need 0 <= task_index < num_tasks, got {task_index}, {num_tasks}"
        )
    rank, world, local = _task()
    device = resolve_device(cfg.device, local)
    fm, plans = prepare(cfg, device)
    out = make_output_dir(cfg.output_dir, "output_dir")
    if rank == 0 and task_index == 0:
        write_text_atomic(
            out / CONFIG_NAME,
            f"# checkpoint file: {fm.path}\n# checkpoint sha256: {fm.sha256} (step {fm.step})\n"
            + to_yaml(cfg),
        )
    mine = plans[task_index::num_tasks][rank::world]
    done, skipped, busy, t0 = [], [], [], time.perf_counter()
    for rp in mine:
        path = output_path(cfg.output_dir, rp.sim)
        if read_settings(path) is not None:
            skipped.append(rp.sim)
            continue
        with sim_lock(path) as held:  # one writer per run, even across submissions
            if not held:
                busy.append(rp.sim)
                log.info("%s: another live task is writing it: left to that task", rp.sim)
                continue
            if read_settings(path) is not None:  # completed meanwhile by another task
                skipped.append(rp.sim)
                continue
            ts = time.perf_counter()
            rollout_run(cfg, fm, rp, device)
        done.append(rp.sim)
        log.info(
            "%s: %d initial state(s) x %d step(s) (%s) in %.1f s -> %s",
            rp.sim, len(rp.inits), cfg.steps, rp.lo_kind, time.perf_counter() - ts, path,
        )  # fmt: skip
    return {
        "done": done,
        "skipped": skipped,
        "busy": busy,
        "files": [str(output_path(cfg.output_dir, rp.sim)) for rp in mine],
        "seconds": time.perf_counter() - t0,
        "task": [rank, world],
        "task_index": task_index,
        "num_tasks": num_tasks,
        "output_dir": str(cfg.output_dir),
    }


def run_rollout_cli(cfg: RolloutConfig) -> int:
    """``mhdsr forecast rollout``: run and print one summary line (exit 0)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    res = run_rollout(cfg)
    print(
        f"mhdsr forecast rollout (task {res['task'][0]}/{res['task'][1]}): {len(res['done'])} "
        f"file(s) written, {len(res['skipped'])} already complete"
        + (f", {len(res['busy'])} being written by another task" if res["busy"] else "")
        + f" -> {cfg.output_dir} "
        f"({res['seconds']:.1f} s)",
        file=sys.stdout,
    )
    return 0
