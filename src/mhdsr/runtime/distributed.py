"""Process-group setup that runs unchanged under a plain process, torchrun, the deepspeed
launcher, or srun/submitit on SLURM.

Rank and world size come from, in order: ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (torchrun, the
deepspeed launcher, submitit's ``TorchDistributedEnvironment().export()``), then SLURM's
``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID`` (plain ``srun``), else a single process.
The result is exported back to the environment because DeepSpeed reads only those variables
(it never reads SLURM_*). Device, backend and ``DS_ACCELERATOR`` are
chosen by configuration: ``cpu`` + ``gloo`` here, ``cuda`` + ``nccl`` on GPU clusters.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import subprocess
from dataclasses import dataclass

import torch

from mhdsr.errors import ConfigError

log = logging.getLogger("mhdsr.train")


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job.

    Attributes:
        rank, world_size: global rank and number of processes.
        local_rank: rank on this node (selects the GPU).
        launcher: ``single`` | ``env`` (torchrun, deepspeed, submitit) | ``slurm``.
        device: ``torch.device`` this rank computes on.
        backend: ``gloo`` | ``nccl``.
        precision: ``fp32`` | ``bf16``.
    """

    rank: int
    world_size: int
    local_rank: int
    launcher: str
    device: torch.device
    backend: str
    precision: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _first_slurm_host() -> str:
    nodelist = os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_JOB_NODELIST") or ""
    if not nodelist:
        return "127.0.0.1"
    try:  # argument list, never a shell string
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return out.stdout.split()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return nodelist.split(",")[0].split("[")[0]


def detect_launch() -> tuple[int, int, int, str]:
    """``(rank, world_size, local_rank, launcher)`` from the environment, exported back as
    ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT``."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world, local = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
        launcher = "env"
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        if "MASTER_PORT" not in env:
            if world > 1:
                raise ConfigError(
                    "RANK/WORLD_SIZE are set but MASTER_PORT is not: launch with torchrun or set it"
                )
            env["MASTER_PORT"] = str(_free_port())
    elif int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        rank, world, local = (
            int(env["SLURM_PROCID"]),
            int(env["SLURM_NTASKS"]),
            int(env.get("SLURM_LOCALID", 0)),
        )
        launcher = "slurm"
        env.setdefault("MASTER_ADDR", _first_slurm_host())
        env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
    else:
        rank, world, local, launcher = 0, 1, 0, "single"
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        env.setdefault("MASTER_PORT", str(_free_port()))
    env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"] = str(rank), str(world), str(local)
    env.setdefault("LOCAL_WORLD_SIZE", env.get("SLURM_NTASKS_PER_NODE", str(world)).split("(")[0])
    return rank, world, local, launcher


def resolve(device: str, backend: str, precision: str) -> tuple[str, str, str]:
    """Resolve ``auto`` choices: cuda+nccl+bf16 when a GPU is visible, else cpu+gloo+fp32.

    Raises:
        ConfigError: ``cuda`` requested without a GPU, or nccl on cpu.
    """
    has_cuda = torch.cuda.is_available()
    dev = ("cuda" if has_cuda else "cpu") if device == "auto" else device
    if dev == "cuda" and not has_cuda:
        raise ConfigError(
            "config key 'engine.device': cuda requested but no GPU is visible (use engine.device=cpu)"
        )
    be = ("nccl" if dev == "cuda" else "gloo") if backend == "auto" else backend
    if be == "nccl" and dev != "cuda":
        raise ConfigError(
            "config key 'engine.backend': nccl needs engine.device=cuda; use gloo on cpu"
        )
    prec = ("bf16" if dev == "cuda" else "fp32") if precision == "auto" else precision
    return dev, be, prec


def setup(
    device: str = "auto", backend: str = "auto", precision: str = "auto", timeout_min: int = 30
) -> DistEnv:
    """Export the launch environment, select the accelerator for DeepSpeed and initialize the
    process group (also for a single process, so collectives work uniformly).

    Must run before ``import deepspeed`` anywhere in the process (``DS_ACCELERATOR`` is read at
    import time).
    """
    rank, world, local, launcher = detect_launch()
    dev, be, prec = resolve(device, backend, precision)
    prev = os.environ.get("DS_ACCELERATOR")
    if prev and prev != dev:
        log.warning(
            "DS_ACCELERATOR=%s in the environment overridden by engine.device=%s", prev, dev
        )
    os.environ["DS_ACCELERATOR"] = dev
    if dev == "cuda":
        torch.cuda.set_device(local)
        torch_device = torch.device("cuda", local)
    else:
        torch_device = torch.device("cpu")
    import deepspeed

    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(
            dist_backend=be,
            auto_mpi_discovery=False,
            timeout=datetime.timedelta(minutes=timeout_min),
            verbose=False,
        )
    return DistEnv(
        rank=rank,
        world_size=world,
        local_rank=local,
        launcher=launcher,
        device=torch_device,
        backend=be,
        precision=prec,
    )


def barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (in place) and return it; a no-op without a process group."""
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(t)
    return t
