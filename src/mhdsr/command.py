"""The command-line scaffolding every stage shares: ``--config FILE [key=value ...]
[--print-config]`` subcommands whose schema and runner are imported only when they run.

A stage's ``cli.register(subparsers)`` calls :func:`add_config_command` once per command; the
root program (:mod:`mhdsr.cli`) dispatches to the registered handler and turns user errors into
one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
from typing import Any


def add_config_args(
    p: argparse.ArgumentParser, *, print_config: bool = True, example: str = "output_dir=PATH"
) -> None:
    """``--config FILE``, ``key=value`` overrides and (optionally) ``--print-config``
    (shared by every config-driven command; ``example`` shows typical overrides)."""
    p.add_argument("--config", required=True, metavar="FILE", help="YAML config file")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help=f"dotted overrides applied after the file (YAML values), e.g. {example}",
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


def _resolve(ref: str) -> Any:
    """The object named ``"package.module:attribute"`` (imported on first use)."""
    mod, _, attr = ref.partition(":")
    return getattr(importlib.import_module(mod), attr)


def add_config_command(
    sub: argparse._SubParsersAction,
    name: str,
    *,
    help: str,
    description: str,
    example: str,
    schema: str,
    runner: str,
) -> argparse.ArgumentParser:
    """Register a config-driven subcommand: ``NAME --config FILE [key=value ...]
    [--print-config]`` (the one piece of CLI scaffolding every stage shares).

    ``schema`` and ``runner`` are ``"module:attribute"`` references, imported only when the
    command runs (so ``mhdsr --help`` stays light); a schema that is a function (not a class)
    is called with the parsed arguments and returns the class (a command whose config file
    says which of several schemas it is). The runner is called with the validated
    config, plus the parsed arguments when it takes two positional parameters (for stage-specific flags);
    an ``int`` it returns is the exit status, anything else (a summary dict, ``None``) means 0.

    Returns:
        The subparser, for stage-specific extra flags.
    """
    p = sub.add_parser(name, help=help, description=description)
    add_config_args(p, example=example)
    p.set_defaults(func=functools.partial(_run_config_command, schema, runner))
    return p


def _run_config_command(schema: str, runner: str, args: argparse.Namespace) -> int:
    obj = _resolve(schema)
    cfg = config_from_args(obj if isinstance(obj, type) else obj(args), args)
    if cfg is None:
        return 0
    fn = _resolve(runner)
    positional = [
        q
        for q in inspect.signature(fn).parameters.values()
        if q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD)
    ]
    wants_args = len(positional) >= 2
    rc = fn(cfg, args) if wants_args else fn(cfg)
    return rc if isinstance(rc, int) and not isinstance(rc, bool) else 0
