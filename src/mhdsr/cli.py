"""The ``mhdsr`` console entry point: one program, one subcommand per pipeline stage.

Each stage's ``cli`` module exposes ``register(subparsers)`` (built with the shared scaffolding of
:mod:`mhdsr.command`); it must import only light modules at import time (torch and DeepSpeed are imported inside the handlers), so ``mhdsr --help`` and
``mhdsr athenak info`` start fast. User errors (:class:`~mhdsr.errors.MhdsrError`) print one
``error: ...`` line and exit with status 2; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from mhdsr import __version__
from mhdsr.errors import MhdsrError

#: Stage modules, in pipeline order. Each defines ``register(subparsers)``.
STAGES = (
    "mhdsr.athenak.cli",
    "mhdsr.shard_builder.cli",
    "mhdsr.train.cli",
    "mhdsr.forecast.cli",
    "mhdsr.sample.cli",
    "mhdsr.eval.cli",
    "mhdsr.launch.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (all subcommands)."""
    parser = argparse.ArgumentParser(
        prog="mhdsr",
        description="Flow-matching super-resolution of AthenaK MRI shearing-box turbulence.",
    )
    parser.add_argument("--version", action="version", version=f"mhdsr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for mod in STAGES:
        importlib.import_module(mod).register(sub)
    return parser


def _on_sigterm(signum: int, frame: Any) -> None:
    # SLURM, kill and torchrun stop processes with SIGTERM: unwind like an exception so that
    # every ``finally`` runs (temporary files removed, worker processes stopped).
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status.

    ``key=value`` overrides may also follow flags (``--print-config max_steps=3``). User errors
    (:class:`MhdsrError`, and OS errors about the paths given, such as an output folder that is
    a file) print one ``error:`` line and return 2; SIGINT returns 130; SIGTERM exits 143 after
    cleanup. Anything else is a bug and shows its traceback.
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    # restored on return: a SIGTERM after the command ended (torchrun stopping a rank that is
    # already exiting) then ends the process at once instead of interrupting its teardown
    prev_sigterm = None
    if threading.current_thread() is threading.main_thread():
        prev_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _run(args)
    finally:
        if prev_sigterm is not None:
            signal.signal(signal.SIGTERM, prev_sigterm)


def _run(args: argparse.Namespace) -> int:
    """Run the parsed command; user errors -> one ``error:`` line and status 2 (see :func:`main`)."""
    try:
        rc = args.func(args)
    except MhdsrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout closed early (`mhdsr ... | head`): stop quietly, like cat
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:  # e.g. an output path that is a file, a folder without permission
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
