"""Helpers for trainer tests: run ``mhdsr train`` as real processes (python / torchrun)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))

#: a ~46k-parameter UNet on 32x32 crops: DeepSpeed + data path in seconds per step on a CPU
TINY = [
    "model.width=8", "model.mults=[1,2]", "model.attn_levels=[]", "model.groups=4", "model.attn_head_dim=8",
    "data.crop=32", "data.micro_batch=2", "data.workers=1", "data.shuffle_buffer=2", "log.image_every=0",
    "log.val_every=0", "log.every=1", "optim.warmup_steps=2", "ema.start_step=1",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO / "src") + os.pathsep + e.get("PYTHONPATH", "")
    e["DS_ACCELERATOR"] = "cpu"
    e.pop("RANK", None), e.pop("WORLD_SIZE", None), e.pop("LOCAL_RANK", None)
    e["OMP_NUM_THREADS"] = "1"
    return e


def train_cmd(
    shards: Path,
    run_dir: Path,
    *overrides: str,
    nproc: int = 1,
    config: str = "configs/train/cpu-small.yaml",
) -> list[str]:
    args = [
        "-m",
        "mhdsr",
        "train",
        "--config",
        str(REPO / config),
        f"shards={shards}",
        f"run_dir={run_dir}",
        *TINY,
        *overrides,
    ]
    if nproc == 1:
        return [sys.executable, *args]
    return [TORCHRUN, f"--nproc_per_node={nproc}", f"--master_port={free_port()}", *args]


def run_train(
    shards: Path,
    run_dir: Path,
    *overrides: str,
    nproc: int = 1,
    timeout: float = 300,
    check: bool = True,
    **kw,
) -> subprocess.CompletedProcess:
    """Run a training command to completion (bounded by ``timeout``); returns the process."""
    cmd = train_cmd(shards, run_dir, *overrides, nproc=nproc, **kw)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env(), cwd=REPO)
    if check and p.returncode != 0:
        raise AssertionError(
            f"exit {p.returncode}: {' '.join(cmd)}\n--- stdout\n{p.stdout[-4000:]}\n--- stderr\n{p.stderr[-4000:]}"
        )
    return p


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())
