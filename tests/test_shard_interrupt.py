"""Interrupting ``mhdsr shard build`` (Ctrl-C, SIGTERM from ``kill`` or SLURM) in a real process.

Each case starts the CLI on the bundled sample with one sample per shard (32 small shards, two
workers), signals it at a given moment and checks: it ends within seconds with 130 (SIGINT) /
143 (SIGTERM), prints one ``interrupted`` line and no traceback, leaves no process of its own
behind (workers, forkserver, resource tracker) and no half-written file; rerunning the same
command then completes and verifies.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mhdsr.cli import main
from mhdsr.errors import ShardError
from mhdsr.shard_builder.pool import WorkerPool
from shard_helpers import descendants, pool_job, still_running, temporaries

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "shard" / "demo.yaml"
ARGS = ["workers=2", "shard.max_samples=1"]

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def _default_sigint() -> None:
    """In the child before exec: SIGINT handled by default. A shell that starts the test run in
    the background (``cmd &`` without job control) makes SIGINT ignored, and an ignored signal
    stays ignored across exec, so Python would never raise KeyboardInterrupt in the build."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _started(out: Path) -> bool:
    """A first shard (tar or its sidecar) exists."""
    return bool(list(out.glob("*.tar")) or list((out / ".build").glob("*.tar.json")))


def _forkserver_up(pid: int) -> bool:
    """The build's forkserver exists (it is importing torch for ~2 s: workers not yet forked)."""
    return any("forkserver" in cmd for _, cmd in descendants(pid).values())


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig, whole_group, moment",
    [
        (signal.SIGINT, True, "shards"),  # Ctrl-C in a terminal: every process of the group
        (signal.SIGINT, True, "forkserver"),  # Ctrl-C while the worker server imports torch
        (signal.SIGINT, False, "shards"),  # kill -INT PID
        (signal.SIGTERM, False, "shards"),  # kill PID
        (signal.SIGTERM, True, "shards"),  # SLURM (scancel, time limit): the whole job step
    ],
    ids=["ctrl-c", "ctrl-c-at-start", "sigint-pid", "sigterm-pid", "sigterm-group"],
)
def test_interrupted_build_stops_cleanly_and_resumes(
    tmp_path: Path, monkeypatch, sig: int, whole_group: bool, moment: str
) -> None:
    out = tmp_path / "shards"
    log_out, log_err = tmp_path / "stdout", tmp_path / "stderr"
    cmd = [sys.executable, "-m", "mhdsr", "shard", "build", "--config", str(DEMO),
           f"output_dir={out}", *ARGS]  # fmt: skip
    with open(log_out, "w") as fo, open(log_err, "w") as fe:
        p = subprocess.Popen(cmd, cwd=REPO, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL,
                             start_new_session=True, preexec_fn=_default_sigint)  # fmt: skip
    try:
        ready = (lambda: _started(out)) if moment == "shards" else (lambda: _forkserver_up(p.pid))
        t0 = time.monotonic()
        while not ready():
            assert p.poll() is None, f"build ended (rc {p.returncode}) before the signal"
            assert time.monotonic() - t0 < 60, "the build did not get going within 60 s"
            time.sleep(0.005)
        procs = descendants(p.pid)
        if moment == "shards":  # the workers (forked by the forkserver) are running
            assert sum("forkserver" in c for _, c in procs.values()) == 3, procs  # server + 2
        t_sig = time.monotonic()
        if whole_group:
            os.killpg(p.pid, sig)
        else:
            os.kill(p.pid, sig)
        rc = p.wait(timeout=20)
        took = time.monotonic() - t_sig
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    err = log_err.read_text()
    assert rc == 128 + sig, err[-3000:]
    assert took < 20
    assert "Traceback" not in err and "Error" not in err, err[-3000:]
    said = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert len(said) == 1 and "rerun the same command to resume" in said[0], err[-3000:]
    # its processes end with it (the forkserver and the resource tracker notice within seconds)
    deadline = time.monotonic() + 10
    while still_running(procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert still_running(procs) == {}
    assert temporaries(out) == []

    monkeypatch.chdir(REPO)  # the demo config's globs are relative to the repository
    assert main(["shard", "build", "--config", str(DEMO), f"output_dir={out}", *ARGS,
                 "progress=false"]) == 0  # fmt: skip
    assert main(["shard", "inspect", str(out), "--verify"]) == 0


# ---------------------------------------------------------------- the worker pool itself


def _pool(n: int = 2) -> WorkerPool:
    ctx = multiprocessing.get_context("forkserver")
    return WorkerPool(pool_job, n, ctx, describe=lambda j: f"job {j['x']}")


def test_pool_runs_every_job_on_every_worker_and_exits_cleanly() -> None:
    got: dict[int, dict] = {}
    with _pool() as pool:
        pool.run([{"x": i, "sleep": 0.05} for i in range(6)], got.__setitem__)
    assert sorted(got) == list(range(6)) and [got[i]["x"] for i in range(6)] == list(range(6))
    assert {r["pid"] for r in got.values()} == {p.pid for p in pool.procs}  # both did work
    assert [p.exitcode for p in pool.procs] == [0, 0]  # asked to exit, not killed


def test_pool_error_stops_the_busy_workers_at_once() -> None:
    t0 = time.monotonic()
    with pytest.raises(ShardError, match="^bad input in job 1$"), _pool() as pool:
        pool.run([{"x": 0, "sleep": 60}, {"x": 1, "sleep": 0.2, "raise": "shard"}], print)
    assert time.monotonic() - t0 < 15  # not the 60 s of the other job
    assert all(p.exitcode is not None for p in pool.procs)
    # a bug (not an MhdsrError) keeps the worker's traceback
    with pytest.raises(ValueError, match="a bug in job 0") as e, _pool(1) as pool:
        pool.run([{"x": 0, "raise": "value"}], print)
    (note,) = e.value.__notes__
    assert "raised in a worker process (job 0)" in note and "in pool_job" in note


def test_pool_worker_death_is_an_error_naming_the_job() -> None:
    with (
        pytest.raises(
            ShardError, match=r"killed by SIGKILL \(out of memory\?\) while building job 1"
        ),
        _pool() as pool,
    ):
        pool.run([{"x": 0, "sleep": 60}, {"x": 1, "kill": True}], print)
    assert all(p.exitcode is not None for p in pool.procs)


def test_pool_interrupted_parent_terminates_busy_workers() -> None:
    def stop(i: int, r: dict) -> None:
        raise KeyboardInterrupt  # as a Ctrl-C would, while the other worker is busy

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt), _pool() as pool:
        pool.run([{"x": 0, "sleep": 60}, {"x": 1}], stop)
    assert time.monotonic() - t0 < 15
    codes = sorted(p.exitcode for p in pool.procs)
    assert codes == [-signal.SIGTERM, -signal.SIGTERM]  # terminated; the idle one too


def test_pool_workers_exit_when_the_parent_is_killed_outright(tmp_path: Path) -> None:
    # SIGKILL (or the OOM killer) gives the parent no chance to clean up: each busy worker's
    # watchdog must notice and exit, not finish its 60 s job as an orphan
    script = (
        "import multiprocessing, sys, time\n"
        "from mhdsr.shard_builder.pool import WorkerPool\n"
        "from shard_helpers import pool_job\n"
        "if __name__ == '__main__':\n"
        "    ctx = multiprocessing.get_context('forkserver')\n"
        "    with WorkerPool(pool_job, 2, ctx) as pool:\n"
        "        print(*[p.pid for p in pool.procs], flush=True)\n"
        "        pool.run([{'x': 0, 'sleep': 60}, {'x': 1, 'sleep': 60}], print)\n"
    )
    path = [str(REPO / "tests"), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                         env=env, start_new_session=True)  # fmt: skip
    try:
        pids = [int(x) for x in p.stdout.readline().split()]
        assert len(pids) == 2
        time.sleep(0.5)  # both are in their 60 s job
        workers = {pid: v for pid, v in descendants(p.pid).items() if pid in pids}
        assert len(workers) == 2
        p.kill()
        p.wait(timeout=10)
        deadline = time.monotonic() + 10
        while still_running(workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert still_running(workers) == {}
    finally:
        if p.poll() is None:
            p.kill()
        p.stdout.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
