"""``mhdsr shard {build,inspect}``: AthenaK runs -> webdataset tar shards + manifest.json."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``shard`` command (light imports only; the work is imported by the handlers)."""
    from mhdsr.command import add_config_command

    p = sub.add_parser("shard", help="build and inspect webdataset shards of AthenaK runs")
    ssub = p.add_subparsers(dest="shard_command", metavar="ACTION", required=True)

    b = add_config_command(
        ssub,
        "build",
        help="build (or resume) a shard folder from a YAML config",
        description="Build train/val/test/heldout tar shards (or forecast windows) + manifest.json. "
        "Rerunning the same command resumes an interrupted build and does nothing when the output "
        "is complete.",
        example="output_dir=PATH workers=8 shard.max_samples=64",
        schema="mhdsr.shard_builder.config:ShardBuildConfig",
        runner="mhdsr.shard_builder.cli:build",
    )
    b.add_argument(
        "--overwrite", action="store_true", help="delete the builder's files in output_dir first"
    )

    i = ssub.add_parser(
        "inspect",
        help="summarize a shard folder and check its shards exist (exit 1 if not); "
        "--verify checks every byte",
    )
    i.add_argument("dir", metavar="DIR", help="shard folder (holding manifest.json)")
    i.add_argument(
        "--verify",
        action="store_true",
        help="re-hash every shard and check every sample's members (exit 1 on any problem)",
    )
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=_inspect)


def build(cfg: object, args: argparse.Namespace) -> int:
    """Build (or resume) the shard folder of ``cfg``."""
    from mhdsr.shard_builder.build import build as build_shards

    try:
        res = build_shards(cfg, overwrite=args.overwrite)
    except KeyboardInterrupt:
        print(_interrupted(cfg.output_dir, "SIGINT"), file=sys.stderr)
        return 130
    except SystemExit as e:  # mhdsr.cli turns SIGTERM into SystemExit(143)
        if isinstance(e.code, int) and e.code > 128:
            print(_interrupted(cfg.output_dir, f"signal {e.code - 128}"), file=sys.stderr)
        raise
    counts = ", ".join(f"{k} {n}" for k, n in res["samples"].items())
    print(f"{res['manifest']}: samples {counts}")
    _print_skipped(res["manifest"])
    return 0


def _print_skipped(manifest: str) -> None:
    """One stderr line per input that on_bad=skip left out (from the manifest's ``skipped``
    list), then the total: a skip is never silent."""
    try:
        skipped = json.loads(Path(manifest).read_text()).get("skipped") or []
    except (OSError, ValueError, AttributeError):
        return
    for s in skipped:
        snap = s.get("snapshot")
        where = f"{s.get('sim')}" + (f" snapshot {snap}" if snap is not None else "")
        print(f"skipped {where}: {s.get('reason')}", file=sys.stderr)
    if skipped:
        print(
            f"skipped {len(skipped)} input(s) in total (on_bad=skip; listed under 'skipped' in "
            f"{manifest})",
            file=sys.stderr,
        )


def _interrupted(out: str, how: str) -> str:
    return (
        f"interrupted ({how}): the shard build of {out} stopped; finished shards are kept, "
        "rerun the same command to resume"
    )


def _inspect(args: argparse.Namespace) -> int:
    from mhdsr.shard_builder.inspect import check_files, format_text, summarize, verify

    summary = summarize(args.dir)
    check = verify(args.dir) if args.verify else None
    files = check_files(args.dir) if check is None else None
    if args.json:
        print(json.dumps({**summary, "files": files, "verify": check}, indent=2))
    else:
        print(format_text(summary, check, files))
    return 0 if (check or files)["ok"] else 1
