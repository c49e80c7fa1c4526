"""The ``mhdsr`` console entry point: one program, one subcommand per pipeline stage.

Each stage's ``cli`` module exposes ``register(subparsers)``; it must import only light modules
at import time (torch and DeepSpeed are imported inside the handlers), so ``mhdsr --help`` and
``mhdsr athenak info`` start fast. User errors (:class:`~mhdsr.errors.MhdsrError`) print one
``error: ...`` line and exit with status 2; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from mhdsr import __version__
from mhdsr.errors import MhdsrError

#: Stage modules, in pipeline order. Each defines ``register(subparsers)``.
STAGES = (
    "mhdsr.athenak.cli",
    "mhdsr.shard_builder.cli",
    "mhdsr.train.cli",
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


def add_config_args(p: argparse.ArgumentParser, *, print_config: bool = True) -> None:
    """``--config FILE``, trailing ``key=value`` overrides and (optionally) ``--print-config``
    (shared by every config-driven command)."""
    p.add_argument("--config", required=True, metavar="FILE", help="YAML config file")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides applied after the file, e.g. max_steps=100 model.width=64",
    )
    if print_config:
        p.add_argument(
            "--print-config", action="store_true", help="print the resolved config and exit"
        )


def config_from_args(schema: type, args: argparse.Namespace) -> Any:
    """Load and validate ``schema`` from ``--config`` + overrides; with ``--print-config`` print
    the resolved YAML and return None (the caller then exits 0)."""
    from mhdsr.config import load_config, to_yaml

    cfg = load_config(schema, args.config, args.overrides)
    if getattr(args, "print_config", False):
        print(to_yaml(cfg), end="")
        return None
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except MhdsrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
