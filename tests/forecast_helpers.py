"""Helpers of the forecast tests: synthetic evenly spaced runs, their window shards, a tiny
forecast model trained as a real ``mhdsr forecast train`` process."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from athenak_writer import make_deck, write_run
from shard_helpers import write_config
from train_helpers import REPO, env

ORBIT = 2 * math.pi

#: a ~10k-parameter FNO: DeepSpeed + the window stream in about a second per step
TINY_FNO = [
    "model.width=8", "model.modes=9", "model.layers=2", "data.micro_batch=2", "data.workers=1",
    "data.shuffle_buffer=2", "data.val_samples=2", "log.image_every=0", "log.val_every=0",
    "log.every=1", "optim.warmup_steps=2", "ema.start_step=1", "engine.zero_stage=2",
]  # fmt: skip


def evolving_run(path: Path, seed: int, n: int, snaps: list[int], orbits: list[float]) -> Path:
    """A run whose snapshots differ in pattern as well as amplitude (each a roll of smooth
    fields), ``omega0 = 1``, times ``orbits * 2 pi`` (so spacings come from the headers)."""
    rng = np.random.default_rng(seed)
    k2 = np.add.outer(np.fft.fftfreq(n) ** 2, np.fft.rfftfreq(n) ** 2) * n * n
    spec = rng.standard_normal((8, n, n // 2 + 1)) + 1j * rng.standard_normal((8, n, n // 2 + 1))
    base = np.fft.irfft2(spec / (1 + k2), s=(n, n))
    base = base / base.std(axis=(-2, -1), keepdims=True)
    base[0] = 1.0 + 0.01 * base[0]  # density ~ 1
    for c in range(1, 8):
        base[c] *= 0.05
    # write_run scales snapshot s by (1 + s); here each snapshot is rolled by its index instead
    for s, o in zip(snaps, orbits):
        f = np.roll(base, s, axis=-1)[:, None].astype(np.float32) / (1 + s)
        write_run(path, f, nx=(n, n, 1), mb=(8, 8, 1), snapshots=[s], times=[o * ORBIT],
                  deck=make_deck((n, n, 1), (8, 8, 1), seed=seed))  # fmt: skip
    return path


def window_shards(root: Path, n: int = 32) -> Path:
    """Window shards (length 4, dt 0.5 orbit) of two synthetic lo runs: seed 1 train (8
    snapshots), seed 2 val (5 snapshots)."""
    a = evolving_run(root / "syn" / "seed_0001", 1, n, list(range(8)), [0.5 * i for i in range(8)])
    b = evolving_run(root / "syn" / "seed_0002", 2, n, list(range(5)), [0.5 * i for i in range(5)])
    cfg = write_config(
        root / "fc.yaml",
        task="forecast",
        lo_runs=[str(a), str(b)],
        output_dir=str(root / "shards"),
        forecast={"length": 4, "dt_orbits": 0.5, "lo_seeds": {"train": [1], "val": [2]}},
        shard={"max_samples": 2},
        workers=1,
    )
    from mhdsr.cli import main

    assert main(["shard", "build", "--config", str(cfg)]) == 0
    return root / "shards"


def forecast_cmd(shards: Path, run_dir: Path, *overrides: str) -> list[str]:
    return [
        sys.executable, "-m", "mhdsr", "forecast", "train",
        "--config", str(REPO / "configs/forecast/cpu-small.yaml"),
        f"shards={shards}", f"run_dir={run_dir}", *TINY_FNO, *overrides,
    ]  # fmt: skip


def run_forecast(
    shards: Path, run_dir: Path, *overrides: str, check: bool = True, timeout: float = 900
):
    """Run ``mhdsr forecast train`` as a process (one rank); returns the completed process."""
    cmd = forecast_cmd(shards, run_dir, *overrides)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env(), cwd=REPO)
    if check and p.returncode != 0:
        raise AssertionError(
            f"exit {p.returncode}: {' '.join(cmd)}\n--- stdout\n{p.stdout[-4000:]}\n--- stderr\n{p.stderr[-4000:]}"
        )
    return p


def write_rollout(
    path: Path,
    *,
    init: np.ndarray,
    truth: np.ndarray,
    tsnap: np.ndarray,
    init_snapshot: list[int],
    sim: str,
    forecast: np.ndarray | None = None,
    members: np.ndarray | None = None,
    prev: np.ndarray | None = None,
    prev_snapshot: list[int] | None = None,
    dt_orbits: float = 0.5,
    run_dir: str = "",
    lo_kind: str = "native_lo",
    channels: list[str] | None = None,
) -> Path:
    """A complete rollout file as ``mhdsr forecast rollout`` writes it: ``init (N, C, h, w)``,
    ``truth (N, L, C, h, w)``, ``tsnap (N, L)``; with ``members (N, E, L, C, h, w)`` an ensemble
    rollout (``forecast`` = their mean, forecaster "flow"), else an operator rollout of
    ``forecast``. No previous states unless given."""
    import h5py

    from mhdsr.channels import CHANNELS

    n, steps = truth.shape[:2]
    if members is not None:
        forecast = members.astype(np.float64).mean(axis=1).astype(np.float32)
    prev = np.full_like(init, np.nan) if prev is None else prev
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["forecast"], f["truth"], f["init"], f["prev"] = forecast, truth, init, prev
        if members is not None:
            f["members"] = members.astype(np.float32)
        f["truth_snapshot"] = tsnap
        f["init_snapshot"] = np.asarray(init_snapshot)
        f["prev_snapshot"] = np.asarray(prev_snapshot if prev_snapshot else [-1] * n)
        f["lead"] = np.arange(1, steps + 1)
        f["lead_orbits"] = dt_orbits * np.arange(1, steps + 1)
        f["time"] = np.zeros((n, steps))
        f.attrs.update({"kind": "forecast", "channels": channels or list(CHANNELS), "sim": sim,
                        "sim_seed": 1, "lo_kind": lo_kind, "run_dir": run_dir,
                        "dt_orbits": dt_orbits, "complete": True, "finite": True,
                        "forecaster": "flow" if members is not None else "operator",
                        "ensemble": members.shape[1] if members is not None else 1})  # fmt: skip
    return path


def tiny_forecaster(root: Path) -> tuple[Path, str]:
    """A 2-step tiny forecaster (``<root>/train``) and three synthetic 32^2 lo runs
    ``<root>/syn/seed_000{1,2,3}`` (seed 3 held out of the shards); returns the run folder and
    the glob of the runs (for ``inputs.runs``)."""
    shards = window_shards(root)
    run_forecast(shards, root / "train", "max_steps=2")
    evolving_run(root / "syn" / "seed_0003", 3, 32, list(range(5)), [0.5 * i for i in range(5)])
    return root / "train", str(root / "syn" / "seed_*")


def rollout_overrides(ckpt: Path, runs: str, out: Path) -> list[str]:
    """``mhdsr forecast rollout`` overrides: 2 initial states (0.5, 1 orbit) x 2 steps per run."""
    return [f"checkpoint={ckpt}", f"output_dir={out}", f"inputs.runs=[{runs}]",
            "inputs.orbit_start=0.5", "inputs.orbit_end=1.0", "inputs.stride=1", "steps=2",
            "device=cpu"]  # fmt: skip
