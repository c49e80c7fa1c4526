"""A process pool that can always be stopped: no hang, no orphan, no worker traceback.

Why not :class:`concurrent.futures.ProcessPoolExecutor` or :class:`multiprocessing.pool.Pool`:
both feed workers through one queue guarded by a shared lock. A worker killed (or interrupted)
while holding that lock leaves its siblings blocked forever in ``SemLock.__enter__``; workers
whose parent died wait in ``Queue.get`` forever; the parent's exit handler joins them forever;
a worker started while the queue's semaphores are being unlinked fails in ``SemLock._rebuild``.

Here every worker has its own pipe, so stopping one process can never block another:

* **workers** ignore SIGINT (a terminal's Ctrl-C reaches the whole process group; the parent
  alone decides), die at once on SIGTERM (default action), exit when their pipe reaches EOF,
  and a watchdog thread ends a worker as soon as the parent process is gone (even SIGKILLed);
* the **forkserver** they fork from is started with SIGINT blocked, so a Ctrl-C during its
  preload (webdataset -> torch, ~2 s) prints nothing; the mask is inherited by every worker;
* the **parent** sends one job at a time to an idle worker and waits on the pipes and process
  sentinels. A worker that dies without answering is an error naming the shard. On any exit
  that is not a clean finish (an error, KeyboardInterrupt, SystemExit from a SIGTERM handler)
  it terminates every worker (SIGTERM, then SIGKILL after a timeout) and joins them before
  returning; a second signal during that teardown does not cut it short (it is re-raised
  after). Worker processes are daemonic, so even an unexpected path out of the interpreter
  terminates them instead of joining them.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, NoReturn

from mhdsr.errors import MhdsrError, ShardError

#: seconds a worker gets to exit after SIGTERM before SIGKILL
TERMINATE_TIMEOUT = 5.0


def _watch_parent() -> None:
    """Exit this worker as soon as its parent process is gone (daemon thread)."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:  # pragma: no cover - always set for children
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _serve(conn: Connection, fn: Callable[[Any], Any]) -> None:
    """Worker loop: receive ``(index, job)``, reply ``(index, True, fn(job))`` or
    ``(index, False, (pickled exception or None, traceback text))``; stop on None or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _watch_parent()
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent closed its end or died
            return
        if msg is None:
            return
        idx, job = msg
        try:
            reply = (idx, True, fn(job))
        except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent
            tb = "".join(traceback.format_exception(e))
            try:
                blob: bytes | None = pickle.dumps(e)
            except Exception:  # noqa: BLE001 - an exception that cannot be pickled
                blob = None
            reply = (idx, False, (blob, tb))
        try:
            conn.send(reply)
        except (OSError, ValueError):  # the parent is gone
            return


def _remote_error(payload: tuple[bytes | None, str], what: str) -> BaseException:
    """The exception a worker raised, rebuilt in the parent; a bug keeps the worker's
    traceback as a note, a user error (:class:`MhdsrError`) its one-line message."""
    blob, tb = payload
    exc: BaseException | None = None
    if blob is not None:
        with contextlib.suppress(Exception):
            exc = pickle.loads(blob)
    if exc is None:
        return ShardError(f"{what} failed in a worker process:\n{tb}")
    if not isinstance(exc, MhdsrError):
        exc.add_note(f"raised in a worker process ({what}):\n{tb}")
    return exc


def _start_forkserver() -> None:
    """Start the forkserver (if not running) with SIGINT blocked: the server and every worker
    forked from it inherit the mask, so no Ctrl-C reaches them (not even during the server's
    preload). A SIGINT meant for this process stays pending and arrives after the unblock."""
    from multiprocessing import forkserver, resource_tracker

    resource_tracker.ensure_running()  # it blocks and then unblocks SIGINT around its own start
    # a per-thread mask, inherited by what this thread forks; a SIGINT sent meanwhile is not
    # lost: it stays pending here until the unblock (or another thread takes it)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class WorkerPool:
    """``n`` worker processes running ``fn`` on jobs, one private pipe each.

    Use as a context manager: leaving the block normally asks idle workers to exit; leaving it
    by any exception (including KeyboardInterrupt and SystemExit) terminates them. Either way
    every worker is gone when the block is left.

    Args:
        fn: picklable (module-level) function of one picklable job.
        n: number of worker processes (>= 1).
        ctx: a multiprocessing context (``forkserver`` recommended; see the module docstring).
        describe: ``describe(job) -> str`` names a job in error messages.
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        n: int,
        ctx: Any,
        describe: Callable[[Any], str] = repr,
    ) -> None:
        self.fn, self.n, self.ctx, self.describe = fn, n, ctx, describe
        self.procs: list[Any] = []
        self.conns: list[Connection] = []
        self._child_ends: list[Connection] = []

    def __enter__(self) -> WorkerPool:
        try:
            if self.ctx.get_start_method() == "forkserver":
                _start_forkserver()
            for k in range(self.n):
                parent_end, child_end = self.ctx.Pipe(duplex=True)
                self.conns.append(parent_end)
                self._child_ends.append(child_end)
                p = self.ctx.Process(
                    target=_serve,
                    args=(child_end, self.fn),
                    name=f"mhdsr-shard-worker-{k}",
                    daemon=True,
                )
                p.start()
                self.procs.append(p)
                child_end.close()
        except BaseException:
            self._stop(graceful=False)
            raise
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._stop(graceful=exc_type is None)

    def run(self, jobs: Sequence[Any], on_result: Callable[[int, Any], None]) -> None:
        """Run every job; ``on_result(index, result)`` is called as each finishes (any order).

        Raises:
            The first exception a job raised (rebuilt from the worker; other workers are
            stopped when the pool's block is left), or ShardError when a worker process died
            without an answer (e.g. killed by the out-of-memory killer).
        """
        todo = deque(enumerate(jobs))
        idle = list(range(len(self.procs)))
        busy: dict[int, int] = {}  # worker -> job index
        while todo or busy:
            while todo and idle:
                w = idle.pop()
                i, job = todo.popleft()
                try:
                    self.conns[w].send((i, job))
                except OSError:
                    busy[w] = i  # dead worker: reported below through its sentinel
                    break
                busy[w] = i
            waitables: list[Any] = []
            for w in busy:
                waitables += [self.conns[w], self.procs[w].sentinel]
            ready = set(wait(waitables))
            for w in list(busy):
                conn, proc = self.conns[w], self.procs[w]
                if conn in ready or conn.poll():  # a reply first: it may exit right after
                    try:
                        i, ok, payload = conn.recv()
                    except (EOFError, OSError):
                        self._died(w, busy[w], jobs)
                    if not ok:
                        raise _remote_error(payload, self.describe(jobs[i]))
                    del busy[w]
                    idle.append(w)
                    on_result(i, payload)
                elif proc.sentinel in ready:
                    self._died(w, busy[w], jobs)

    def _died(self, w: int, i: int, jobs: Sequence[Any]) -> NoReturn:
        """Raise the error of worker ``w`` gone without answering job ``i``."""
        p = self.procs[w]
        p.join(1.0)
        code = p.exitcode
        if code is not None and code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
            if code == -signal.SIGKILL:
                how += " (out of memory?)"
        else:
            how = f"exited with status {code}"
        raise ShardError(
            f"worker process {p.pid} {how} while building {self.describe(jobs[i])}; "
            "rerun the same command to resume"
        )

    def _stop(self, graceful: bool) -> None:
        """Make sure every worker has exited; a KeyboardInterrupt or SystemExit arriving
        meanwhile (a second Ctrl-C, a SIGTERM) is re-raised only once they have."""
        late: BaseException | None = None
        while True:
            try:
                self._stop_once(graceful)
                break
            except BaseException as e:  # noqa: BLE001 - finish the teardown first
                late = late or e
                graceful = False
        if late is not None:
            raise late

    def _stop_once(self, graceful: bool) -> None:
        if graceful:
            for c in self.conns:
                with contextlib.suppress(OSError, ValueError):
                    c.send(None)
            self._join_all(TERMINATE_TIMEOUT)
        for p in self.procs:
            if p.exitcode is None:
                with contextlib.suppress(OSError, ValueError):
                    p.terminate()
        self._join_all(TERMINATE_TIMEOUT)
        for p in self.procs:
            if p.exitcode is None:
                with contextlib.suppress(OSError, ValueError):
                    p.kill()
        self._join_all(TERMINATE_TIMEOUT)
        for c in self.conns + self._child_ends:  # EOF for a worker whose start was interrupted
            c.close()

    def _join_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
