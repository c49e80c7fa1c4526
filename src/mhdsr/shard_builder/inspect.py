"""``mhdsr shard inspect DIR [--verify]``: summarize a shard folder and check every byte of it.

:func:`summarize` reads the manifest and the first sample of the first shard;
:func:`check_files` checks that every listed shard exists with its size. :func:`verify`
streams every shard once: it re-computes the sha256 and size, and checks every sample (members
of one key adjacent, ``hi.npy``/``lo.npy`` present as the split requires, float32 little-endian
C-order with the manifest's shape, finite values, ``json`` parseable and consistent with the key
and the split's seeds, sample counts as in the manifest, no key twice in a split). Forecast
window folders (``task: forecast``): ``seq.npy`` of ``shapes.seq`` and a ``json`` whose
snapshots and times form an evenly spaced window at the recorded cadence.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from mhdsr.dataset.manifest import read_manifest, shard_paths
from mhdsr.dataset.shards import ARRAY_MEMBERS, CHECKSUM_FIELD, digest, iter_members, sample_key
from mhdsr.dataset.shards import first_sample as read_first_sample
from mhdsr.errors import ShardError

NPY_MEMBERS = ("hi.npy", "lo.npy")


class _HashingReader:
    """Read-only file wrapper hashing every byte read."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.h = hashlib.sha256()
        self.n = 0

    def read(self, size: int = -1) -> bytes:
        b = self.f.read(size)
        self.h.update(b)
        self.n += len(b)
        return b

    def drain(self) -> None:
        while self.read(1 << 22):
            pass


def npy_info(data: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """``(shape, fortran_order, dtype, header bytes)`` of ``.npy`` bytes.

    Raises:
        ValueError: not a valid ``.npy`` header.
    """
    f = io.BytesIO(data)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    return tuple(shape), bool(fortran), dtype, f.tell()


def _check_npy(data: bytes, expect: list[int], where: str) -> list[str]:
    try:
        shape, fortran, dtype, off = npy_info(data)
    except ValueError as e:
        return [f"{where}: not a valid .npy ({e})"]
    probs = []
    if dtype.str != "<f4":
        probs.append(f"{where}: dtype {dtype.str}, expected <f4 (float32 little-endian)")
    if fortran:
        probs.append(f"{where}: Fortran order, expected C order")
    if list(shape) != list(expect):
        probs.append(f"{where}: shape {list(shape)}, expected {expect}")
    if len(data) != off + dtype.itemsize * math.prod(shape):
        probs.append(f"{where}: {len(data) - off} data bytes for shape {list(shape)}")
    elif dtype.str == "<f4" and not np.isfinite(np.frombuffer(data, "<f4", offset=off)).all():
        probs.append(f"{where}: non-finite values")
    return probs


def _check_sums(members: dict[str, bytes], meta: Any, where: str) -> list[str]:
    """Array members whose bytes differ from the digest recorded in the json (shards built
    before checksums carry none: nothing to check)."""
    sums = meta.get(CHECKSUM_FIELD) if isinstance(meta, dict) else None
    if not isinstance(sums, dict):
        return []
    probs = []
    for m in ARRAY_MEMBERS:
        if m in members and m not in sums:
            probs.append(f"{where}: no checksum recorded for {m}")
        elif m in members and digest(members[m]) != sums[m]:
            probs.append(f"{where} {m}: bytes fail the recorded checksum ({CHECKSUM_FIELD})")
    return probs


def _check_window(
    key: str, members: dict[str, bytes], split: str, manifest: dict[str, Any], shard: str
) -> list[str]:
    """Problems of one forecast window (members by extension)."""
    where = f"shard {shard} key {key}"
    probs = []
    extra = sorted(set(members) - {"seq.npy", "json"})
    if extra:
        probs.append(f"{where}: unexpected member(s) {extra}")
    for m in ("seq.npy", "json"):
        if m not in members:
            probs.append(f"{where}: missing member {m}")
    if "seq.npy" in members:
        probs += _check_npy(members["seq.npy"], manifest["shapes"]["seq"], f"{where} seq.npy")
    if "json" not in members:
        return probs
    try:
        meta = json.loads(members["json"])
        probs += _check_sums(members, meta, where)
        k = int(manifest["shapes"]["seq"][0])
        exp_key = sample_key(meta["seed"], meta["snapshot"])
        times, snaps = [float(t) for t in meta["times"]], list(meta["snapshots"])
        rec = manifest["provenance"]["windows"][meta["sim"]]
    except (ValueError, KeyError, TypeError, IndexError):
        return [*probs, f"{where}: json lacks seed/snapshot/times/snapshots/sim of a window"]
    if exp_key != key:
        probs.append(f"{where}: json seed/snapshot give key {exp_key}")
    if meta["seed"] not in manifest["splits"][split]["seeds"]:
        probs.append(f"{where}: seed {meta['seed']} is not among split {split}'s seeds")
    if len(times) != k or len(snaps) != k or snaps[0] != meta["snapshot"]:
        probs.append(f"{where}: json holds {len(snaps)} snapshots/{len(times)} times, expected {k}")
    gaps = [b - a for a, b in zip(times, times[1:])]
    if any(abs(g - rec["dt"]) > rec["time_tol"] for g in gaps):
        probs.append(f"{where}: spacings {gaps} are not {rec['dt']} +- {rec['time_tol']}")
    return probs


def _check_sample(
    key: str, members: dict[str, bytes], split: str, manifest: dict[str, Any], shard: str
) -> list[str]:
    """Problems of one sample (members by extension)."""
    if manifest.get("task") == "forecast":
        return _check_window(key, members, split, manifest, shard)
    where = f"shard {shard} key {key}"
    heldout = manifest["splits"][split]["source"] == "native_lo"
    probs = []
    extra = sorted(set(members) - {"hi.npy", "lo.npy", "json"})
    if extra:
        probs.append(f"{where}: unexpected member(s) {extra}")
    meta: dict[str, Any] = {}
    if "json" not in members:
        probs.append(f"{where}: missing member json")
    else:
        try:
            meta = json.loads(members["json"])
            assert isinstance(meta, dict)
        except (ValueError, AssertionError):
            probs.append(f"{where}: json member does not parse as a JSON object")
            meta = {}
    if meta:
        try:
            exp_key = sample_key(meta["seed"], meta["snapshot"])
        except (KeyError, TypeError, ValueError):
            exp_key = "<json lacks integer seed/snapshot>"
        if exp_key != key:
            probs.append(f"{where}: json seed/snapshot give key {exp_key}")
        if meta.get("seed") not in manifest["splits"][split]["seeds"]:
            probs.append(f"{where}: seed {meta.get('seed')} is not among split {split}'s seeds")
    need = ["lo.npy"] if heldout else ["hi.npy"]
    if heldout and (meta.get("hi_sim") is not None or "hi.npy" in members):
        need.append("hi.npy")
    if not heldout and "lo.npy" in members:
        probs.append(f"{where}: lo.npy in a split whose lo is derived (source hi)")
    for m in need:
        if m not in members:
            probs.append(f"{where}: missing member {m}")
    for m in NPY_MEMBERS:
        if m in members:
            probs += _check_npy(members[m], manifest["shapes"][m[:2]], f"{where} {m}")
    return probs + _check_sums(members, meta, where)


def scan_shard(path: str | Path, split: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Stream one shard once: sha256, size, keys and per-sample problems.

    Returns:
        ``{"sha256", "bytes", "samples", "keys", "problems"}``.
    """
    path = Path(path)
    name = path.name
    probs: list[str] = []
    keys: list[str] = []
    with open(path, "rb") as f:
        hr = _HashingReader(f)
        try:
            current, members, flagged = None, {}, set()
            for ti, key, ext, data in iter_members(hr, name, stream=True):
                if not ti.isfile():
                    probs.append(f"shard {name}: member {ti.name} is not a regular file")
                    continue
                if key is None:
                    probs.append(f"shard {name}: member {ti.name} is not sample data")
                    continue
                if key != current:
                    if current is not None and current not in flagged:
                        probs += _check_sample(current, members, split, manifest, name)
                    if key in keys:
                        probs.append(f"members of key {key} not adjacent in shard {name}")
                        flagged.add(key)
                    else:
                        keys.append(key)
                    current, members = key, {}
                if ext in members:
                    probs.append(f"shard {name} key {key}: member {ext} appears twice")
                members[ext] = data
            if current is not None and current not in flagged:
                probs += _check_sample(current, members, split, manifest, name)
        except (tarfile.TarError, ShardError) as e:
            probs.append(f"shard {name}: not a readable tar ({e})")
        hr.drain()
    return {
        "sha256": hr.h.hexdigest(),
        "bytes": hr.n,
        "samples": len(keys),
        "keys": keys,
        "problems": probs,
    }


def verify(shard_dir: str | Path) -> dict[str, Any]:
    """Check every shard of a folder against its manifest.

    Returns:
        ``{"ok", "problems": [str], "shards_checked", "samples_checked"}``.

    Raises:
        ShardError: the manifest is missing or invalid.
    """
    root = Path(shard_dir)
    m = read_manifest(root)
    probs: list[str] = []
    n_shards = n_samples = 0
    listed = set()
    for split, s in m["splits"].items():
        seen: dict[str, str] = {}
        for rec, path in zip(s["shards"], shard_paths(root, m, split)):
            listed.add(rec["name"])
            if not Path(path).is_file():
                probs.append(f"shard {rec['name']}: missing")
                continue
            r = scan_shard(path, split, m)
            n_shards += 1
            n_samples += r["samples"]
            probs += r["problems"]
            if r["bytes"] != rec["bytes"]:
                probs.append(
                    f"shard {rec['name']}: {r['bytes']} bytes, manifest says {rec['bytes']}"
                )
            if r["sha256"] != rec["sha256"]:
                probs.append(
                    f"shard {rec['name']}: sha256 {r['sha256']} differs from the manifest's {rec['sha256']}"
                )
            if r["samples"] != rec["samples"]:
                probs.append(
                    f"shard {rec['name']}: {r['samples']} samples, manifest says {rec['samples']}"
                )
            for k in r["keys"]:
                if k in seen:
                    probs.append(
                        f"key {k} appears in shards {seen[k]} and {rec['name']} of split {split}"
                    )
                seen[k] = rec["name"]
        total = sum(sh["samples"] for sh in s["shards"])
        if total != s["samples"]:
            probs.append(
                f"split {split}: the manifest's split total says {s['samples']} samples, but its shard records add up to {total}"
            )
    for p in sorted(root.glob("*.tar")):
        if p.name not in listed:
            probs.append(f"{p.name}: tar file not listed in the manifest")
    return {
        "ok": not probs,
        "problems": probs,
        "shards_checked": n_shards,
        "samples_checked": n_samples,
    }


def check_files(shard_dir: str | Path) -> dict[str, Any]:
    """Cheap check of a shard folder: every shard the manifest lists exists with its size
    (nothing is read; :func:`verify` re-hashes every byte).

    Returns:
        ``{"ok", "problems": [str], "shards_checked"}``.

    Raises:
        ShardError: the folder does not exist, or its manifest is missing or invalid.
    """
    root = Path(shard_dir)
    m = read_manifest(root)
    probs: list[str] = []
    n = 0
    for split, s in m["splits"].items():
        for rec, path in zip(s["shards"], shard_paths(root, m, split)):
            n += 1
            try:
                size = Path(path).stat().st_size
            except OSError:
                probs.append(f"shard {rec['name']}: missing")
                continue
            if size != rec["bytes"]:
                probs.append(f"shard {rec['name']}: {size} bytes, manifest says {rec['bytes']}")
    return {"ok": not probs, "problems": probs, "shards_checked": n}


def _sample_members(path: str | Path) -> tuple[str, dict[str, Any]]:
    """Key and member summaries of a shard's first sample."""
    first = read_first_sample(str(path))
    if first is None:
        raise ValueError(f"{path}: empty tar")
    members: dict[str, Any] = {}
    for ext, data in first.items():
        if ext.startswith("__"):
            continue
        if ext.endswith("npy"):
            shape, _, dtype, _ = npy_info(data)
            members[ext] = {"dtype": dtype.str, "shape": list(shape)}
        elif ext == "json":
            members[ext] = json.loads(data)
        else:
            members[ext] = {"bytes": len(data)}
    return first["__key__"], members


def first_sample(shard_dir: str | Path) -> dict[str, Any] | None:
    """Member shapes of the first sample of the first readable shard (train split first);
    shards that are missing or unreadable are passed over (:func:`check_files` and
    :func:`verify` report them)."""
    root = Path(shard_dir)
    m = read_manifest(root)
    for split, s in m["splits"].items():
        for rec, path in zip(s["shards"], shard_paths(root, m, split)):
            try:
                key, members = _sample_members(path)
            except (OSError, tarfile.TarError, ValueError):
                continue
            return {"split": split, "shard": rec["name"], "members": members, "key": key}
    return None


def summarize(shard_dir: str | Path) -> dict[str, Any]:
    """Manifest summary: per split seeds/samples/shards/bytes, stats, one sample's members."""
    m = read_manifest(shard_dir)
    splits = {
        k: {
            "source": s["source"],
            "seeds": s["seeds"],
            "samples": s["samples"],
            "shards": len(s["shards"]),
            "bytes": sum(sh["bytes"] for sh in s["shards"]),
            **({"paired_hi": s["paired_hi"]} if "paired_hi" in s else {}),
        }
        for k, s in m["splits"].items()
    }
    return {
        "dir": str(Path(shard_dir)),
        "schema_version": m["schema_version"],
        "builder": m["provenance"].get("builder"),
        "created": m["provenance"].get("created"),
        "shapes": m["shapes"],
        "channels": m["channels"],
        "splits": splits,
        "stats": m["stats"],
        "std_floor": m["std_floor"],
        "skipped": m.get("skipped", []),
        "sample": first_sample(shard_dir),
    }


def format_text(
    summary: dict[str, Any], check: dict[str, Any] | None, files: dict[str, Any] | None = None
) -> str:
    """Human-readable report of :func:`summarize` (and :func:`verify` or
    :func:`check_files`) output."""
    lines = [
        f"shard folder  {summary['dir']}  (schema {summary['schema_version']}, "
        f"{summary['builder']}, {summary['created']})",
        "shapes        "
        + "  ".join(f"{k} {'x'.join(map(str, v))}" for k, v in summary["shapes"].items())
        + "  float32 little-endian",
        "",
        f"{'split':<8} {'source':<10} {'samples':>8} {'shards':>7} {'MB':>9}  seeds",
    ]
    for k, s in summary["splits"].items():
        seeds = ",".join(map(str, s["seeds"]))
        extra = f"  (paired hi: {s['paired_hi']})" if "paired_hi" in s else ""
        lines.append(
            f"{k:<8} {s['source']:<10} {s['samples']:>8} {s['shards']:>7} "
            f"{s['bytes'] / 1e6:>9.1f}  {seeds}{extra}"
        )
    for kind, table in summary["stats"].items():
        lines += ["", f"stats of the train split, {kind} (population std)"]
        lines.append(
            f"{'channel':<8} {'count':>10} {'mean':>12} {'std':>12} {'min':>12} {'max':>12}"
        )
        for ch, s in table.items():
            lines.append(
                f"{ch:<8} {s['count']:>10} {s['mean']:>12.5g} {s['std']:>12.5g} "
                f"{s['min']:>12.5g} {s['max']:>12.5g}"
            )
    smp = summary["sample"]
    if smp:
        lines += ["", f"sample {smp['key']} ({smp['split']}, {smp['shard']}):"]
        for ext, v in smp["members"].items():
            if ext.endswith("npy"):
                lines.append(f"  {ext:<7} {v['dtype']} {tuple(v['shape'])}")
            else:
                lines.append(f"  {ext:<7} {json.dumps(v)}")
    if summary["skipped"]:
        lines += ["", f"skipped input ({len(summary['skipped'])}):"]
        lines += [
            f"  {s['sim']}"
            + (f" snapshot {s['snapshot']:05d}" if s["snapshot"] is not None else "")
            + f": {s['reason']}"
            for s in summary["skipped"]
        ]
    if files is not None and check is None:
        lines.append("")
        if files["ok"]:
            lines.append(
                f"files: OK ({files['shards_checked']} shards present with their sizes; "
                "--verify re-hashes them)"
            )
        else:
            lines.append(f"files: {len(files['problems'])} problem(s)")
            lines += [f"  {p}" for p in files["problems"]]
    if check is not None:
        lines.append("")
        if check["ok"]:
            lines.append(
                f"verify: OK ({check['shards_checked']} shards, {check['samples_checked']} "
                "samples re-hashed and checked)"
            )
        else:
            lines.append(f"verify: {len(check['problems'])} problem(s)")
            lines += [f"  {p}" for p in check["problems"]]
    return "\n".join(lines)
