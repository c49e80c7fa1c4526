"""Helpers for the shard-builder tests: configs on disk, tar reading, run-folder copies."""

from __future__ import annotations

import io
import os
import shutil
import signal
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mhdsr.config import load_config
from mhdsr.errors import ShardError
from mhdsr.shard_builder.config import ShardBuildConfig

REPO = Path(__file__).resolve().parents[1]
HI = REPO / "data" / "athenak" / "mri256_nu3e-5"
LO = REPO / "data" / "athenak" / "mri128_nu3e-5"


def write_config(path: Path, **cfg: Any) -> Path:
    """Write a YAML build config (plain dict, nested dicts for sections)."""
    cfg.setdefault("progress", False)
    path.write_text(yaml.safe_dump(cfg))
    return path


def load(path: Path, *overrides: str) -> ShardBuildConfig:
    return load_config(ShardBuildConfig, path, list(overrides))


def read_tar(path: Path) -> list[tuple[str, str, bytes]]:
    """All members of a tar in file order: (key, extension, bytes)."""
    out = []
    with tarfile.open(path) as tf:
        for ti in tf:
            base = ti.name.rsplit("/", 1)[-1]
            key, _, ext = base.partition(".")
            out.append((key, ext, tf.extractfile(ti).read()))
    return out


def samples(path: Path) -> dict[str, dict[str, bytes]]:
    """Members grouped by key (asserting each key's members are adjacent)."""
    out: dict[str, dict[str, bytes]] = {}
    last = None
    for key, ext, data in read_tar(path):
        if key != last:
            assert key not in out, f"members of {key} not adjacent in {path}"
            out[key] = {}
            last = key
        out[key][ext] = data
    return out


def npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def copy_run(src: Path, dst: Path, replace: tuple[bytes, bytes] | None = None) -> Path:
    """Copy a run folder; ``replace`` = (old, new) same-length bytes patched into every file."""
    shutil.copytree(src, dst)
    if replace is not None:
        old, new = replace
        assert len(old) == len(new)
        for p in dst.rglob("*.bin"):
            b = p.read_bytes()
            assert old in b, p
            p.write_bytes(b.replace(old, new, 1))
    return dst


# ---------------------------------------------------------------- processes (Linux /proc)


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state letter, start time in clock ticks) of a process, or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
    return int(fields[1]), fields[0], int(fields[19])


def descendants(pid: int) -> dict[int, tuple[int, str]]:
    """Every live descendant of ``pid``: {pid: (start time, command line)}."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (st := _stat(int(d.name))) is not None:
            children.setdefault(st[0], []).append(int(d.name))
    out: dict[int, tuple[int, str]] = {}
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            st = _stat(c)
            try:
                cmd = Path(f"/proc/{c}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if st is not None:
                out[c] = (st[2], cmd)
                todo.append(c)
    return out


def still_running(procs: dict[int, tuple[int, str]]) -> dict[int, str]:
    """Those of ``procs`` (from :func:`descendants`) still running (zombies count as gone; a
    reused pid is told apart by its start time)."""
    out = {}
    for pid, (start, cmd) in procs.items():
        st = _stat(pid)
        if st is not None and st[1] != "Z" and st[2] == start:
            out[pid] = cmd
    return out


def temporaries(out: Path) -> list[str]:
    """Half-written files the builder leaves behind when killed (``.*.tmp*``)."""
    return sorted(str(p) for d in (out, out / ".build") for p in d.glob(".*tmp*"))


def pool_job(job: dict[str, Any]) -> dict[str, Any]:
    """A :class:`~mhdsr.shard_builder.pool.WorkerPool` test job: sleep ``sleep`` s, then kill
    its own process (``kill``), raise (``raise``: ``"shard"`` or ``"value"``) or return."""
    time.sleep(job.get("sleep", 0))
    if job.get("kill"):
        os.kill(os.getpid(), signal.SIGKILL)
    if job.get("raise") == "shard":
        raise ShardError(f"bad input in job {job['x']}")
    if job.get("raise") == "value":
        raise ValueError(f"a bug in job {job['x']}")
    return {"x": job["x"], "pid": os.getpid()}
