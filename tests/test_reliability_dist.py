"""A failing rank must not leave its peers waiting in a collective forever.

Three layers, each under a timeout far below the old 30-minute process-group timeout:

- ``mhdsr train`` under torchrun with 2 ranks and a loader worker each, rank 1 failing at
  step 4: both ranks end, the output names rank 1 and its error, no process is left.
- :class:`mhdsr.runtime.distributed.PeerWatch`: a rank blocked in an all-reduce on a peer that
  reported a failure but hangs (its sockets stay open) is ended with exit status 2 and a
  message naming the failed rank.
- ``engine.dist_timeout_s``: a rank waiting on a peer that hangs without reporting anything
  gives up after the configured timeout.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from reliability_helpers import PY, python_env, run_session
from train_helpers import TINY, TORCHRUN, free_port

REPO = Path(__file__).resolve().parents[1]
CPU_SMALL = str(REPO / "configs" / "train" / "cpu-small.yaml")

pytestmark = [
    pytest.mark.dist,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc"),
]


@pytest.mark.timeout(300)
def test_one_failing_rank_ends_the_torchrun_job(demo_shards, tmp_path) -> None:
    """Rank 1 raises at step 4 while rank 0 goes on into the step's gradient all-reduce. Before
    the fix rank 1 hung at exit (its loader worker ignored SIGTERM), so torchrun never saw it
    fail and rank 0 waited in the collective for the 30-minute process-group timeout."""
    cmd = [TORCHRUN, "--nproc_per_node=2", f"--master_port={free_port()}", "-m", "mhdsr", "train",
           "--config", CPU_SMALL, f"shards={demo_shards}", f"run_dir={tmp_path / 'run'}", *TINY,
           "max_steps=8", "data.workers=1", "debug.raise_at_step=4",
           "debug.raise_on_rank=1"]  # fmt: skip
    t0 = time.monotonic()
    p, wall = run_session(cmd, timeout=240, env=python_env())
    out = p.stdout + p.stderr
    assert p.returncode != 0, out[-3000:]
    # the failed rank says so itself, with its error; rank 0 (when it reports before torchrun
    # stops it) and torchrun's summary name rank 1 too
    assert "[rank 1] rank 1 failed at step 4: RuntimeError: debug.raise_at_step=4" in out, out[
        -3000:
    ]
    named = "error: rank 1 failed (at step 4" in out or "rank      : 1 (local_rank: 1)" in out
    assert named, out[-3000:]
    assert time.monotonic() - t0 < 240


def _rank_script(scenario: str) -> str:
    return textwrap.dedent(
        f"""
        import os, sys, time, datetime
        import torch
        import torch.distributed as dist
        from mhdsr.runtime import distributed as D

        scenario = {scenario!r}
        if scenario == "timeout":
            env = D.setup("cpu", "gloo", "fp32", timeout_s=3.0)
        else:
            dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=300))
        rank = dist.get_rank()
        x = torch.ones(4)
        dist.all_reduce(x)  # both ranks are up
        if rank == 1:
            if scenario == "watch":
                D.mark_failed(1, "at step 7: RuntimeError: boom")
            print("rank 1 hangs", flush=True)
            time.sleep(120)  # hung, sockets open: no connection error reaches rank 0
            sys.exit(0)
        if scenario == "watch":
            D.PeerWatch(0, 2, interval=0.2, grace=1.0).start()
        t0 = time.monotonic()
        try:
            dist.all_reduce(x)  # rank 1 never joins
        except Exception as e:
            print(f"rank 0 gave up after {{time.monotonic() - t0:.1f}} s: {{str(e)[:200]}}", flush=True)
            sys.exit(3)
        print("rank 0: all_reduce returned", flush=True)
        """
    )


def _two_ranks(scenario: str, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    """Run rank 0 in the foreground (returns its process and wall time from the moment rank 1
    reported it hangs); rank 1 in the background, killed afterwards."""
    env = python_env()
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2")
    code = _rank_script(scenario)
    r1 = subprocess.Popen([PY, "-c", code], env={**env, "RANK": "1", "LOCAL_RANK": "1"},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        p, wall = run_session([PY, "-c", code], timeout=timeout,
                              env={**env, "RANK": "0", "LOCAL_RANK": "0"})  # fmt: skip
    finally:
        r1.kill()
        r1.wait()
    return p, wall


@pytest.mark.timeout(180)
def test_peer_watch_ends_a_rank_stuck_on_a_failed_peer() -> None:
    """Rank 1 reports a failure and hangs with its sockets open, rank 0 is blocked in an
    all-reduce (process-group timeout 300 s): rank 0's watch thread ends it within
    interval + grace (1.2 s) of the report, exit 2, naming rank 1 and its error."""
    p, wall = _two_ranks("watch", timeout=150)
    assert p.returncode == 2, p.stdout + p.stderr
    assert (
        "error: rank 1 failed (at step 7: RuntimeError: boom); rank 0 was still waiting" in p.stderr
    )
    assert "all_reduce returned" not in p.stdout and "gave up" not in p.stdout
    assert wall < 150


@pytest.mark.timeout(180)
def test_dist_timeout_bounds_the_wait_on_a_hung_peer() -> None:
    """Rank 1 hangs without reporting anything: rank 0's all-reduce fails after
    ``timeout_s`` = 3 s (``engine.dist_timeout_s``), not after 30 minutes."""
    p, _ = _two_ranks("timeout", timeout=150)
    assert p.returncode == 3, p.stdout + p.stderr
    (line,) = [x for x in p.stdout.splitlines() if x.startswith("rank 0 gave up")]
    waited = float(line.split("after ")[1].split(" s")[0])
    assert 2.5 <= waited < 15, line


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
