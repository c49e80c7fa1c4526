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

import contextlib
import datetime
import logging
import os
import socket
import subprocess
import sys
import threading
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
    device: str = "auto",
    backend: str = "auto",
    precision: str = "auto",
    timeout_s: float = 600.0,
) -> DistEnv:
    """Export the launch environment, select the accelerator for DeepSpeed and initialize the
    process group (also for a single process, so collectives work uniformly).

    Must run before ``import deepspeed`` anywhere in the process (``DS_ACCELERATOR`` is read at
    import time).

    Args:
        device, backend, precision: the ``engine`` choices (``auto`` resolved by :func:`resolve`).
        timeout_s: the process-group timeout (``engine.dist_timeout_s``): a collective that
            waits longer for another rank raises instead of waiting forever (gloo always;
            NCCL through its watchdog, which torch enables by default).
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
            timeout=datetime.timedelta(seconds=timeout_s),
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


#: store key under which a failed rank leaves its error message for the other ranks
FAILURE_KEY = "mhdsr/failed/rank{rank}"
#: store counter of the ranks that reported a failure (one request tells whether any did)
FAILURES_KEY = "mhdsr/failures"


def _store() -> torch.distributed.Store | None:
    """The process group's key-value store (torchrun's agent store, or rank 0's TCPStore), or
    None without a multi-rank process group. Only requests that never wait are made on it
    (``set``, ``add``, ``check``, and ``get`` of a key known to exist), so its timeout, which
    torch.distributed relies on elsewhere, is left alone."""
    if not (torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1):
        return None
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        return _get_default_store()
    except Exception:  # no store reachable: reporting is best effort
        return None


def mark_failed(rank: int, message: str) -> None:
    """Leave ``message`` in the store as rank ``rank``'s failure (best effort), so that the
    other ranks can say which rank failed and why (:func:`failed_peers`, :class:`PeerWatch`)."""
    store = _store()
    if store is None:
        return
    with contextlib.suppress(Exception):
        store.set(FAILURE_KEY.format(rank=rank), message[:2000])
        store.add(FAILURES_KEY, 1)


def failed_peers(rank: int, world_size: int) -> dict[int, str]:
    """``{rank: message}`` of the other ranks that reported a failure (:func:`mark_failed`);
    empty when none did or the store is unreachable (its host, rank 0 under srun, may be the
    rank that died)."""
    store = _store()
    out: dict[int, str] = {}
    if store is None:
        return out
    try:
        if store.add(FAILURES_KEY, 0) == 0:
            return out
        for r in range(world_size):
            key = FAILURE_KEY.format(rank=r)
            if r != rank and store.check([key]):
                out[r] = store.get(key).decode(errors="replace")
    except Exception:
        pass
    return out


class PeerWatch:
    """A daemon thread that ends this rank when another rank has failed and this one is stuck.

    A rank blocked in a collective on a peer that died runs no Python code: NCCL (and DeepSpeed's
    shared-memory CPU all-reduce) may wait until the process-group timeout, and gloo until the
    dead peer's sockets close. Every ``interval`` seconds this thread asks the store whether a
    rank reported a failure (one counter read, :func:`mark_failed`). When one did, the main
    thread gets ``grace`` seconds to fail on its own (it then raises
    :class:`~mhdsr.errors.PeerFailedError` naming the failed rank); if the process is still
    running after that, the thread prints which rank failed and why and ends the process with
    exit status 2 (``os._exit``: the main thread cannot be interrupted inside a collective;
    loader workers die with it, see :func:`mhdsr.dataset.stream._worker_init`).

    Args:
        rank, world_size: this process's place in the job.
        interval: seconds between two store reads.
        grace: seconds the main thread gets after a failure is seen.
    """

    def __init__(
        self, rank: int, world_size: int, interval: float = 1.0, grace: float = 10.0
    ) -> None:
        self.rank, self.world_size = rank, world_size
        self.interval, self.grace = interval, grace
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PeerWatch:
        if self.world_size > 1 and _store() is not None:
            self._thread = threading.Thread(target=self._run, name="mhdsr-peer-watch", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            peers = failed_peers(self.rank, self.world_size)
            if not peers:
                continue
            if self._stop.wait(self.grace):
                return  # the main thread ended on its own
            r = min(peers)
            print(
                f"error: rank {r} failed ({peers[r]}); rank {self.rank} was still waiting for it "
                f"{self.grace:.0f} s later (stuck in a collective) and stops now",
                file=sys.stderr,
                flush=True,
            )
            with contextlib.suppress(Exception):
                sys.stdout.flush()
            os._exit(2)
