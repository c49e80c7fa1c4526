"""Simulations on disk: run-folder globs and sim names (shared by every stage that reads runs).

A sim's name is ``"<resolution folder>/<run folder>"`` (e.g. ``"mri128_nu3e-5/seed_0002"``):
the name the shard builder records in each sample's ``json.sim``, and the name of every
inference and rollout output file. Seed folders are named ``seed_NNNN``; the seed id itself is
read from the deck (``problem/rseed``) when present.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path

from mhdsr.errors import ConfigError

SEED_DIR_RE = re.compile(r"^seed_(\d+)$")


def sim_name(path: Path) -> str:
    """``"<parent folder>/<run folder>"`` (the run relative to its resolution folder)."""
    return f"{path.parent.name}/{path.name}"


def resolve_globs(patterns: list[str], key: str) -> list[Path]:
    """Run folders matched by ``patterns`` (sorted, de-duplicated, absolute).

    Raises:
        ConfigError: a pattern matches no folder.
    """
    out: dict[str, Path] = {}
    for pat in patterns:
        hits = [Path(p) for p in sorted(glob.glob(os.path.expanduser(pat))) if Path(p).is_dir()]
        if not hits:
            raise ConfigError(
                f"config key {key!r}: glob {pat!r} matches no run folder (cwd {os.getcwd()})"
            )
        for h in hits:
            out.setdefault(str(h.resolve()), h.resolve())
    return [out[k] for k in sorted(out)]
