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
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mhdsr.channels import CHANNELS
from mhdsr.errors import ShardError
from mhdsr.io_utils import path_inside, sha256_file

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
        ShardError: ``path`` does not exist, missing or unparsable file, unsupported
            ``schema_version``, a missing key, or a value of the wrong type or range (see
            :func:`validate_manifest`); the message names the file and the key.
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
        raise ShardError(
            f"{path}: expected a shard folder holding manifest.json, got a file"
            if Path(path).is_file() and Path(path).name != MANIFEST_NAME
            else f"{f}: cannot read manifest: {e}"
        ) from None
    if not isinstance(m, dict):
        raise ShardError(f"{f}: manifest is not a JSON object")
    if m.get("schema_version") != SCHEMA_VERSION:
        raise ShardError(
            f"{f}: schema_version {m.get('schema_version')!r} is not supported "
            f"(this mhdsr reads {SCHEMA_VERSION})"
        )
    validate_manifest(m, str(f))
    return m


def _bad(where: str, key: str, value: Any, expected: str) -> ShardError:
    return ShardError(f"{where}: manifest key {key!r} = {value!r}: expected {expected}")


def _int(where: str, key: str, v: Any, lo: int = 0) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise _bad(where, key, v, f"an integer >= {lo}")
    return v


def _number(where: str, key: str, v: Any) -> float:
    """A finite JSON number (not a string, not a bool, not NaN/inf)."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise _bad(where, key, v, "a finite number")
    return float(v)


def _table(where: str, key: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _bad(where, key, v, "a JSON object")
    return v


def _list(where: str, key: str, v: Any) -> list[Any]:
    if not isinstance(v, list):
        raise _bad(where, key, v, "a list")
    return v


def _check_shard_name(where: str, key: str, name: Any) -> None:
    """A shard name is a plain file name inside the shard folder (no folder part, no '..')."""
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\0" in name
    ):
        raise _bad(where, key, name, "a plain file name inside the shard folder (no '/', no '..')")


def _check_stats(where: str, key: str, s: Any) -> None:
    """One channel's statistics: count >= 0; when count > 0 finite mean/std/min/max with
    std >= 0, min <= mean <= max and std <= (max - min) / 2 (Popoviciu's bound on the
    population variance, (max - min)^2 / 4), each with a float64 round-off allowance."""
    s = _table(where, key, s)
    for k in ("count", "mean", "std", "min", "max"):
        if k not in s:
            raise ShardError(f"{where}: manifest lacks key '{key}.{k}'")
    count = _int(where, f"{key}.count", s["count"])
    if count == 0:  # an empty train split: no statistics (normalization() refuses them)
        return
    mean, std, lo, hi = (_number(where, f"{key}.{k}", s[k]) for k in ("mean", "std", "min", "max"))
    if std < 0:
        raise _bad(where, f"{key}.std", s["std"], "a standard deviation >= 0")
    tol = 1e-9 * max(abs(lo), abs(hi), 1e-300)
    if lo > hi:
        raise _bad(where, f"{key}.min", s["min"], f"<= {key}.max = {s['max']!r}")
    if not lo - tol <= mean <= hi + tol:
        raise _bad(where, f"{key}.mean", s["mean"], f"within [min, max] = [{lo!r}, {hi!r}]")
    if std > 0.5 * (hi - lo) * (1 + 1e-9) + tol:
        raise _bad(
            where, f"{key}.std", s["std"], f"<= (max - min) / 2 = {0.5 * (hi - lo)!r} (Popoviciu)"
        )


def validate_manifest(m: dict[str, Any], where: str = "manifest") -> None:
    """Check a parsed manifest once, for every consumer (training, sampling, eval, inspect).

    Checks every key of the module docstring that a consumer reads: ``channels`` (a non-empty
    list of distinct known channel names), ``dtype`` float32 and ``byte_order`` little,
    ``shapes`` (lists of positive integers whose channel axis -3 holds ``len(channels)``; ``hi``
    and ``lo`` present), ``splits`` (``seeds`` integers, ``samples`` an integer >= 0, ``source``
    text, ``shards`` records with a plain file ``name`` unique in the manifest, integer
    ``samples`` and ``bytes`` >= 0 and a ``sha256`` text), ``stats`` (per kind and channel of
    ``channels``: see :func:`_check_stats`) and ``std_floor`` (finite numbers >= 0). Keys it
    does not know are left alone (a newer builder may add some). Whether the counts agree with
    the shards' contents is :func:`mhdsr.shard_builder.inspect.verify`'s business.

    Raises:
        ShardError: naming ``where`` and the first offending key, its value and what was
            expected (e.g. ``manifest key 'stats.hi.density.std' = -1.0: expected a standard
            deviation >= 0``).
    """
    for k in REQUIRED_KEYS:
        if k not in m:
            raise ShardError(f"{where}: manifest lacks key {k!r}")
    chans = _list(where, "channels", m["channels"])
    if not chans or any(c not in CHANNELS for c in chans) or len(set(chans)) != len(chans):
        raise _bad(where, "channels", chans, f"distinct names among {list(CHANNELS)}")
    if m["dtype"] != "float32":
        raise _bad(where, "dtype", m["dtype"], "'float32'")
    if m["byte_order"] != "little":
        raise _bad(where, "byte_order", m["byte_order"], "'little'")
    shapes = _table(where, "shapes", m["shapes"])
    for k in ("hi", "lo"):
        if k not in shapes:
            raise ShardError(f"{where}: manifest lacks key 'shapes.{k}'")
    for k, shape in shapes.items():
        if (
            not isinstance(shape, list)
            or len(shape) < 3
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape)
            or shape[-3] != len(chans)
        ):
            raise _bad(
                where, f"shapes.{k}", shape,
                f"positive integers [..., C, H, W] with C = {len(chans)} (the channels)",
            )  # fmt: skip
    names: dict[str, str] = {}
    for split, s in _table(where, "splits", m["splits"]).items():
        s = _table(where, f"splits.{split}", s)
        for k in SPLIT_KEYS:
            if k not in s:
                raise ShardError(f"{where}: manifest lacks key 'splits.{split}.{k}'")
        for i, seed in enumerate(_list(where, f"splits.{split}.seeds", s["seeds"])):
            _int(where, f"splits.{split}.seeds[{i}]", seed)
        _int(where, f"splits.{split}.samples", s["samples"])
        if not isinstance(s["source"], str):
            raise _bad(where, f"splits.{split}.source", s["source"], "text")
        for i, sh in enumerate(_list(where, f"splits.{split}.shards", s["shards"])):
            key = f"splits.{split}.shards[{i}]"
            sh = _table(where, key, sh)
            for k in SHARD_KEYS:
                if k not in sh:
                    raise ShardError(f"{where}: manifest lacks key '{key}.{k}'")
            _check_shard_name(where, f"{key}.name", sh["name"])
            if sh["name"] in names:
                raise _bad(
                    where,
                    f"{key}.name",
                    sh["name"],
                    f"a name not used before (also {names[sh['name']]})",
                )
            names[sh["name"]] = key
            _int(where, f"{key}.samples", sh["samples"])
            _int(where, f"{key}.bytes", sh["bytes"])
            if not isinstance(sh["sha256"], str):
                raise _bad(where, f"{key}.sha256", sh["sha256"], "a hex digest (text)")
    for kind, table in _table(where, "stats", m["stats"]).items():
        for ch, st in _table(where, f"stats.{kind}", table).items():
            if ch not in chans:
                raise _bad(where, f"stats.{kind}", ch, f"channel names among {chans}")
            _check_stats(where, f"stats.{kind}.{ch}", st)
    floor = _table(where, "std_floor", m["std_floor"])
    for k in ("relative", "absolute"):
        if k not in floor:
            raise ShardError(f"{where}: manifest lacks key 'std_floor.{k}'")
        if _number(where, f"std_floor.{k}", floor[k]) < 0:
            raise _bad(where, f"std_floor.{k}", floor[k], "a number >= 0")


def shard_paths(manifest_dir: str | Path, manifest: dict[str, Any], split: str) -> list[str]:
    """Absolute paths of a split's shards, in manifest order.

    Every path resolves inside the shard folder (:func:`mhdsr.io_utils.path_inside`): a name
    with a folder part, ``..``, an absolute path, or a shard that is a symbolic link to a file
    outside the folder is refused, so a hand-edited manifest cannot make a reader open (or
    hash) a file elsewhere.

    Raises:
        ShardError: the manifest has no such split, or a shard path leaves the folder (names
            the key).
    """
    if split not in manifest["splits"]:
        raise ShardError(f"manifest has no split {split!r} (has {sorted(manifest['splits'])})")
    root = Path(manifest_dir)
    if root.is_file():
        root = root.parent
    root = root.resolve()
    return [
        str(path_inside(root, s["name"], f"{root / MANIFEST_NAME}: manifest key "
                        f"'splits.{split}.shards[{i}].name'", ShardError))
        for i, s in enumerate(manifest["splits"][split]["shards"])
    ]  # fmt: skip


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
        ShardError: unknown kind or channel, or no statistics (count 0: an empty train split).
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
        if not s["count"]:
            raise ShardError(
                f"manifest stats.{kind}.{n}: count 0 (the train split is empty): no statistics "
                "to normalize with"
            )
        scale = max(abs(float(s["min"])), abs(float(s["max"])))
        mean.append(float(s["mean"]))
        std.append(max(float(s["std"]), rel * scale, ab))
    return np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
