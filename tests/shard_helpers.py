"""Helpers for the shard-builder tests: configs on disk, tar reading, run-folder copies."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from mhdsr.config import load_config
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
