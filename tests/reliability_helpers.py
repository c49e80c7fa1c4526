"""Helpers for the reliability suite: real processes in their own session, bad shard folders."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def run_session(
    cmd: list[str], *, timeout: float, env: dict[str, str] | None = None, cwd: Path = REPO
) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``cmd`` in a new session (its own process group) to completion within ``timeout``
    seconds; returns the process and its wall time. A command still running at the deadline
    (a hang) fails the test, and its whole process group is killed. Afterwards no process of
    the group may remain (loader workers, ranks): they must end with the command."""
    t0 = time.monotonic()
    p = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise AssertionError(
            f"still running after {timeout:.0f} s (a hang): {' '.join(cmd)}\n"
            f"--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}"
        ) from None
    wall = time.monotonic() - t0
    deadline = time.monotonic() + 10
    while group_alive(p.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = group_alive(p.pid)
    if left:
        os.killpg(p.pid, signal.SIGKILL)
    assert not left, f"processes of the command outlived it: {left}"
    return subprocess.CompletedProcess(cmd, p.returncode, out, err), wall


def group_alive(pgid: int) -> list[str]:
    """Command lines of the live (not zombie) processes of process group ``pgid``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(f"{d.name}: {cmd[:200]}")
    return out


def copy_shards(src: Path, dst: Path) -> Path:
    """A copy of a shard folder (manifest and tars) to damage."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".build", ".build.lock"))
    return dst


def edit_manifest(folder: Path, edit: Any) -> dict[str, Any]:
    """Apply ``edit(manifest_dict)`` to ``folder/manifest.json`` in place; returns the dict."""
    path = folder / "manifest.json"
    m = json.loads(path.read_text())
    edit(m)
    path.write_text(json.dumps(m))
    return m


def python_env() -> dict[str, str]:
    """The environment of a child ``python -m mhdsr``: this checkout's sources, CPU DeepSpeed,
    one intra-op thread, no inherited launch variables."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO / "src") + os.pathsep + str(REPO / "tests")
    e["DS_ACCELERATOR"] = "cpu"
    e["OMP_NUM_THREADS"] = "1"
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        e.pop(k, None)
    return e


PY = sys.executable
