"""What ``mhdsr eval`` reads: inference HDF5 files and the truth in a shard folder.

- :func:`discover` finds every ``*.h5`` below the samples folder and reads its header (attrs and
  the small datasets ``snapshot``, ``time``, ``key``), never the big ``samples`` array;
  :func:`label_methods` names the method of each file (``weights/sampler-steps``).
- :class:`ShardTruth` gives random access to a shard folder's ``hi.npy`` by ``(split, key)``
  from an index of the tar headers (one pass over each needed split, no decompression: the
  shards are plain tars), so the truth of one sim is read without streaming a whole split.

Formats: docs/design.md, "Formats" (inference output and shard samples).
"""

from __future__ import annotations

import io
import json
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mhdsr.dataset import h5layout as H
from mhdsr.dataset.shards import HI, JSON, MemberRef, index_shard, read_ref, sample_key
from mhdsr.errors import MhdsrError

#: Datasets every inference file must hold (``key`` is optional: absent for run-folder inputs).
REQUIRED_DATASETS = (H.SAMPLES, H.INPUT, H.TIME, H.SNAPSHOT)
#: Attributes every inference file must hold.
REQUIRED_ATTRS = ("channels", "sampler", "weights", "sim", "lo_kind")
LO_KINDS = ("derived_avgpool2", "native")


class EvalInputError(MhdsrError, ValueError):
    """A sample file or the shard folder cannot be evaluated (the message names the file)."""


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _plain(v: Any) -> Any:
    """An HDF5 attribute as a JSON-able Python value."""
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()]
    if isinstance(v, np.generic):
        return v.item()
    return v


@dataclass
class SampleFile:
    """Header of one inference file (docs/design.md, "Formats"); the arrays stay on disk.

    Attributes:
        path: the file; ``rel`` its path relative to the samples folder.
        method: method label, set by :func:`label_methods` (``"ema/heun-8"``).
        base_method: ``weights/name-steps`` from the attributes.
        sim: simulation id, e.g. ``"mri256_nu3e-5/seed_0001"``.
        channels: the ``C`` channel names of ``samples`` and ``input``.
        shape: ``(T, E, C, H, W)`` of ``samples``; ``lo_shape`` ``(T, C, h, w)`` of ``input``.
        lo_kind: ``"derived_avgpool2"`` (pixel truth exists in the shards) or ``"native"``.
        snapshots, times: ``(T,)`` int64 snapshot numbers and float64 times.
        keys: ``T`` shard keys (``s{seed:04d}_n{snapshot:05d}``) or ``None``.
        attrs: every attribute as a JSON-able dict (``sampler`` parsed from its JSON string).
    """

    path: Path
    rel: str
    base_method: str
    sim: str
    channels: tuple[str, ...]
    shape: tuple[int, int, int, int, int]
    lo_shape: tuple[int, int, int, int]
    lo_kind: str
    snapshots: np.ndarray
    times: np.ndarray
    keys: list[str] | None
    attrs: dict[str, Any]
    method: str = ""

    @property
    def n_members(self) -> int:
        return self.shape[1]

    @property
    def n_hi(self) -> int:
        return self.shape[-1]

    @property
    def n_lo(self) -> int:
        return self.lo_shape[-1]

    def truth_keys(self) -> list[str]:
        """Shard keys of the ``T`` snapshots: the ``key`` dataset, else built from ``sim_seed``.

        Raises:
            EvalInputError: no ``key`` dataset and no ``sim_seed`` attribute.
        """
        if self.keys is not None:
            return list(self.keys)
        seed = self.attrs.get("sim_seed")
        if seed is None:
            raise EvalInputError(
                f"{self.path}: has neither a 'key' dataset nor a 'sim_seed' attribute"
            )
        return [sample_key(int(seed), int(n)) for n in self.snapshots]


def read_header(path: Path, root: Path) -> SampleFile:
    """Read one inference file's header and check its layout.

    Raises:
        EvalInputError: unreadable file, a missing dataset/attribute, ``complete`` not true,
            inconsistent shapes, or a non-square / non-integer-ratio grid.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            for name in REQUIRED_DATASETS:
                if name not in f:
                    raise EvalInputError(f"{path}: missing dataset {name!r}")
            for name in REQUIRED_ATTRS:
                if name not in f.attrs:
                    raise EvalInputError(f"{path}: missing attribute {name!r}")
            attrs = {k: _plain(v) for k, v in f.attrs.items()}
            shape = tuple(int(n) for n in f[H.SAMPLES].shape)
            lo_shape = tuple(int(n) for n in f[H.INPUT].shape)
            snapshots = np.asarray(f[H.SNAPSHOT][()], dtype=np.int64)
            times = np.asarray(f[H.TIME][()], dtype=np.float64)
            keys = [_text(k) for k in f[H.KEY][()]] if H.KEY in f else None
    except EvalInputError:
        raise
    except Exception as e:  # h5py raises OSError, KeyError, ... for broken files
        raise EvalInputError(f"{path}: cannot read as an inference HDF5 file: {e}") from None

    if not attrs.get(H.COMPLETE, True):
        raise EvalInputError(f"{path}: attribute complete is false (an unfinished sample run)")
    try:
        sampler = attrs["sampler"]
        attrs["sampler"] = json.loads(sampler) if isinstance(sampler, str) else dict(sampler)
        name, steps = attrs["sampler"]["name"], attrs["sampler"]["steps"]
    except (ValueError, KeyError, TypeError):
        raise EvalInputError(
            f"{path}: attribute sampler must be a JSON object with name and steps, got "
            f"{attrs['sampler']!r}"
        ) from None
    channels = tuple(str(c) for c in np.atleast_1d(attrs["channels"]))
    attrs["channels"] = list(channels)
    lo_kind = str(attrs["lo_kind"])
    if len(shape) != 5 or len(lo_shape) != 4:
        raise EvalInputError(
            f"{path}: samples {shape} must be (T,E,C,H,W), input {lo_shape} (T,C,h,w)"
        )
    t, e, c, h, w = shape
    if (
        lo_shape[:2] != (t, c)
        or c != len(channels)
        or snapshots.shape != (t,)
        or times.shape != (t,)
        or (keys is not None and len(keys) != t)
    ):
        raise EvalInputError(
            f"{path}: inconsistent shapes: samples {shape}, input {lo_shape}, snapshot "
            f"{snapshots.shape}, time {times.shape}, {len(channels)} channels"
        )
    if t < 1 or e < 1:
        raise EvalInputError(f"{path}: holds no samples (shape {shape})")
    for i, key in enumerate(keys or []):  # the key "s<seed>_n<snapshot>" repeats the snapshot
        m = re.fullmatch(r"s\d+_n(\d+)", key)
        if m and int(m.group(1)) != int(snapshots[i]):
            raise EvalInputError(
                f"{path}: row {i}: dataset 'snapshot' says {int(snapshots[i])} but its key "
                f"{key!r} names snapshot {int(m.group(1))}; the file was altered"
            )
    if h != w or lo_shape[2] != lo_shape[3] or h % lo_shape[3] or h == lo_shape[3]:
        raise EvalInputError(
            f"{path}: grids must be square with hi = k * lo, k >= 2; got hi {h}x{w}, lo "
            f"{lo_shape[2]}x{lo_shape[3]}"
        )
    if lo_kind not in LO_KINDS:
        raise EvalInputError(
            f"{path}: attribute lo_kind must be one of {LO_KINDS}, got {lo_kind!r}"
        )
    temps = attrs["sampler"].get("temperature") or [1.0]
    # a source temperature other than 1 (sampler.temperature) is another method: "+T"
    tagged = any(float(v) != 1.0 for v in temps) if isinstance(temps, list) else False
    base = f"{attrs['weights']}/{name}-{steps}" + ("+T" if tagged else "")
    return SampleFile(
        path=path,
        rel=str(path.relative_to(root)),
        base_method=base,
        sim=str(attrs["sim"]),
        channels=channels,
        shape=shape,  # type: ignore[arg-type]
        lo_shape=lo_shape,  # type: ignore[arg-type]
        lo_kind=lo_kind,
        snapshots=snapshots,
        times=times,
        keys=keys,
        attrs=attrs,
    )


def discover(samples_dir: str | Path) -> list[SampleFile]:
    """Headers of every ``*.h5`` below ``samples_dir`` (recursively, sorted by path, hidden
    names skipped), labelled.

    Raises:
        EvalInputError: the folder does not exist, holds no ``.h5`` file, a file is malformed,
            the files disagree on channels or grid sizes, or one (method, sim) pair occurs twice
            in one folder.
    """
    root = Path(samples_dir)
    if not root.is_dir():
        raise EvalInputError(
            f"samples folder {str(root)!r} does not exist (run `mhdsr sample` first, or set "
            "samples=PATH)"
        )
    # hidden names are temporary files of a sample run still writing (written, then renamed)
    paths = sorted(p for p in root.rglob("*.h5") if p.is_file() and not p.name.startswith("."))
    if not paths:
        raise EvalInputError(
            f"samples folder {str(root)!r} holds no .h5 file (searched recursively)"
        )
    files = [read_header(p, root) for p in paths]
    first = files[0]
    for f in files[1:]:
        if f.channels != first.channels:
            raise EvalInputError(
                f"sample files disagree on channels: {first.rel} has {list(first.channels)}, "
                f"{f.rel} has {list(f.channels)} (evaluate one channel set at a time)"
            )
        if (f.n_hi, f.n_lo) != (first.n_hi, first.n_lo):
            raise EvalInputError(
                f"sample files disagree on grids: {first.rel} is {first.n_lo}->{first.n_hi}, "
                f"{f.rel} is {f.n_lo}->{f.n_hi}"
            )
    label_methods(files)
    return files


def label_methods(files: Sequence[SampleFile]) -> None:
    """Set ``method`` of each file: ``base_method``, plus ``[folder]`` when needed to keep
    (method, sim) pairs unique (the same sampler run with, e.g., two checkpoints in two folders).

    Raises:
        EvalInputError: two files in the same folder have the same method and sim.
    """
    by_base: dict[str, list[SampleFile]] = defaultdict(list)
    for f in files:
        by_base[f.base_method].append(f)
    for base, group in by_base.items():
        seen: dict[tuple[str, str], SampleFile] = {}
        for f in group:
            folder = str(Path(f.rel).parent)
            if (folder, f.sim) in seen:
                raise EvalInputError(
                    f"{seen[(folder, f.sim)].rel} and {f.rel}: same method {base!r} and sim "
                    f"{f.sim!r} in one folder"
                )
            seen[(folder, f.sim)] = f
        sims = [f.sim for f in group]
        clash = len(set(sims)) < len(sims)
        for f in group:
            f.method = f"{base} [{Path(f.rel).parent}]" if clash else base


def read_samples(path: Path, t: int) -> np.ndarray:
    """``samples[t]`` ``(E, C, H, W)`` float32 of an inference file."""
    import h5py

    with h5py.File(path, "r") as f:
        return np.asarray(f[H.SAMPLES][t], dtype=np.float32)


def read_inputs(path: Path) -> np.ndarray:
    """The whole ``input`` dataset ``(T, C, h, w)`` float32 (small: lo grid, no members)."""
    import h5py

    with h5py.File(path, "r") as f:
        return np.asarray(f[H.INPUT][()], dtype=np.float32)


@dataclass
class ShardTruth:
    """Random access to the ``hi.npy`` fields of a shard folder, by split and key.

    Args:
        root: the shard folder (holding ``manifest.json``).
        manifest: its manifest (:func:`mhdsr.dataset.manifest.read_manifest`).
    """

    root: Path
    manifest: dict[str, Any]
    _index: dict[str, dict[str, dict[str, MemberRef]]] = field(default_factory=dict)

    @property
    def channels(self) -> list[str]:
        return list(self.manifest["channels"])

    @property
    def hi_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest["shapes"]["hi"])

    def splits_with_sim(self, sim: str) -> list[str]:
        """Splits whose hi fields include ``sim`` (manifest ``splits.<s>.sims``), in order."""
        return [
            s
            for s, rec in self.manifest["splits"].items()
            if rec.get("source") == "hi" and sim in rec.get("sims", [])
        ]

    def has_split(self, split: str) -> bool:
        rec = self.manifest["splits"].get(split)
        return rec is not None and rec.get("source") == "hi" and rec.get("samples", 0) > 0

    def index(self, split: str) -> dict[str, dict[str, MemberRef]]:
        """``key -> {member extension -> location}`` of one split (built once, from tar headers
        and json members: :func:`mhdsr.dataset.shards.index_shard`).

        Raises:
            EvalInputError: the split is unknown or a shard cannot be read.
        """
        if split in self._index:
            return self._index[split]
        from mhdsr.dataset.manifest import shard_paths

        try:
            paths = shard_paths(self.root, self.manifest, split)
        except MhdsrError as e:
            raise EvalInputError(str(e)) from None
        out: dict[str, dict[str, MemberRef]] = {}
        for p in paths:
            try:
                for smp in index_shard(p):
                    out.setdefault(smp.key, {}).update(smp.members)
            except MhdsrError as e:
                raise EvalInputError(str(e)) from None
        self._index[split] = out
        return out

    def _read(self, m: MemberRef) -> bytes:
        try:
            return read_ref(m)  # checked against the builder's checksum
        except MhdsrError as e:
            raise EvalInputError(str(e)) from None

    def record(self, split: str, key: str) -> dict[str, Any]:
        """The ``json`` member of a sample (``{}`` if absent)."""
        members = self.index(split)[key]
        return json.loads(self._read(members[JSON])) if JSON in members else {}

    def hi(self, split: str, key: str) -> np.ndarray:
        """``hi.npy`` of one sample, float32 ``(C_all, H, W)`` in manifest channel order.

        Raises:
            EvalInputError: the key or its hi member is missing, or the array has a wrong shape.
        """
        members = self.index(split).get(key)
        if members is None or HI not in members:
            raise EvalInputError(
                f"shards {self.root}: split {split!r} has no hi field for key {key!r}"
            )
        arr = np.load(io.BytesIO(self._read(members[HI])), allow_pickle=False)
        if arr.shape != self.hi_shape:
            raise EvalInputError(
                f"shards {self.root}: {key} hi.npy has shape {arr.shape}, manifest says "
                f"{self.hi_shape}"
            )
        return arr.astype(np.float32, copy=False)

    def iter_hi(self, split: str) -> Iterator[tuple[str, np.ndarray]]:
        """Every ``(key, hi)`` of a split, in sorted key order."""
        for key in sorted(self.index(split)):
            if HI in self.index(split)[key]:
                yield key, self.hi(split, key)
