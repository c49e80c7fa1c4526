"""``manifest.json`` of a shard folder: reading, validation, shard paths, normalization.

The manifest (docs/design.md "Formats") is written last and atomically by ``mhdsr shard build``; its
presence means the shard folder is complete. Keys::

    schema_version, channels, dtype ("float32"), byte_order ("little"),
    shapes {hi: [C, H, W], lo: [C, h, w]},
    splits {train|val|test|heldout: {seeds, sims, samples, source, shards: [{name, samples,
            bytes, sha256}], (heldout) paired_hi}},
    stats {hi|lo: {channel: {count, mean, std, min, max}}}   (train split; std = population std)
    std_floor {relative, absolute, rule}, skipped [{sim, snapshot, reason}],
    provenance {...}, config {...}

Normalization floor (what every loader applies, :func:`normalization`)::

    std_used = max(std, relative * max(|min|, |max|), absolute),  relative = 1e-6, absolute = 1e-12

The stored ``std`` is the true population std (0 for a constant channel). The relative term is
~8 float32 ulps of the channel's magnitude: a channel constant in training (e.g. density = 1 in
a data set of initial conditions) maps float32 round-off to O(0.1) instead of dividing by 0; the
absolute term only guards an all-zero channel against division by zero. Neither affects the
bundled or full-scale data, whose smallest std (velocity noise at t = 0) is ~6e-5.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mhdsr.channels import CHANNELS
from mhdsr.errors import ShardError
from mhdsr.io_utils import sha256_file

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
STD_FLOOR_RELATIVE = 1e-6
STD_FLOOR_ABSOLUTE = 1e-12
STD_FLOOR = {
    "relative": STD_FLOOR_RELATIVE,
    "absolute": STD_FLOOR_ABSOLUTE,
    "rule": "std_used = max(std, relative * max(|min|, |max|), absolute)",
}
REQUIRED_KEYS = (
    "schema_version",
    "channels",
    "dtype",
    "byte_order",
    "shapes",
    "splits",
    "stats",
    "std_floor",
    "provenance",
    "config",
)
SPLIT_KEYS = ("seeds", "samples", "source", "shards")
SHARD_KEYS = ("name", "samples", "bytes", "sha256")


def _manifest_file(path: str | Path) -> Path:
    p = Path(path)
    return p / MANIFEST_NAME if p.is_dir() else p


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and validate a shard folder's manifest.

    Args:
        path: the shard folder or its ``manifest.json``.

    Returns:
        The manifest dict (see module docstring).

    Raises:
        ShardError: ``path`` does not exist, missing or unparsable file, unsupported ``schema_version``, or a missing
            key (the message names the file and the key).
    """
    if not Path(path).exists():
        raise ShardError(f"{path} does not exist")
    f = _manifest_file(path)
    if not f.is_file():
        raise ShardError(
            f"{f}: no manifest (not a shard folder, or its build did not finish; "
            "rerun `mhdsr shard build` with the same config to complete it)"
        )
    try:
        m = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise ShardError(f"{f}: cannot read manifest: {e}") from None
    if not isinstance(m, dict):
        raise ShardError(f"{f}: manifest is not a JSON object")
    if m.get("schema_version") != SCHEMA_VERSION:
        raise ShardError(
            f"{f}: schema_version {m.get('schema_version')!r} is not supported "
            f"(this mhdsr reads {SCHEMA_VERSION})"
        )
    for k in REQUIRED_KEYS:
        if k not in m:
            raise ShardError(f"{f}: manifest lacks key {k!r}")
    for split, s in m["splits"].items():
        for k in SPLIT_KEYS:
            if k not in s:
                raise ShardError(f"{f}: manifest lacks key 'splits.{split}.{k}'")
        for i, sh in enumerate(s["shards"]):
            for k in SHARD_KEYS:
                if k not in sh:
                    raise ShardError(f"{f}: manifest lacks key 'splits.{split}.shards[{i}].{k}'")
    for k in ("hi", "lo"):
        if k not in m["shapes"]:
            raise ShardError(f"{f}: manifest lacks key 'shapes.{k}'")
    return m


def shard_paths(manifest_dir: str | Path, manifest: dict[str, Any], split: str) -> list[str]:
    """Absolute paths of a split's shards, in manifest order.

    Raises:
        ShardError: the manifest has no such split.
    """
    if split not in manifest["splits"]:
        raise ShardError(f"manifest has no split {split!r} (has {sorted(manifest['splits'])})")
    root = Path(manifest_dir)
    if root.is_file():
        root = root.parent
    root = root.resolve()
    return [str(root / s["name"]) for s in manifest["splits"][split]["shards"]]


def manifest_sha256(path: str | Path) -> str:
    """Hex sha256 of the manifest file (a shard folder or the file itself)."""
    return sha256_file(_manifest_file(path))


def normalization(
    manifest: dict[str, Any], kind: str = "hi", channels: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(mean, std_used)`` for normalizing fields: ``(x - mean) / std_used``.

    Args:
        manifest: a manifest from :func:`read_manifest`.
        kind: ``"hi"`` (256^2 fields) or ``"lo"`` (avgpool2 of hi), train-split statistics.
        channels: channel names (default all, canonical order).

    Returns:
        Two float64 arrays of shape (len(channels),); ``std_used`` applies the floor of the
        module docstring (always > 0).

    Raises:
        ShardError: unknown kind or channel.
    """
    if kind not in manifest["stats"]:
        raise ShardError(f"manifest stats have no kind {kind!r} (have {sorted(manifest['stats'])})")
    table = manifest["stats"][kind]
    names = list(channels) if channels else list(manifest.get("channels", CHANNELS))
    floor = manifest.get("std_floor", STD_FLOOR)
    rel, ab = float(floor["relative"]), float(floor["absolute"])
    mean, std = [], []
    for n in names:
        if n not in table:
            raise ShardError(f"manifest stats.{kind} have no channel {n!r} (have {list(table)})")
        s = table[n]
        scale = max(abs(float(s["min"])), abs(float(s["max"])))
        mean.append(float(s["mean"]))
        std.append(max(float(s["std"]), rel * scale, ab))
    return np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
