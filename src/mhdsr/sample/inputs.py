"""Inputs of bulk inference: the low-resolution fields of each sim, in physical units.

Two sources (``inputs.kind``), both grouped by sim (one output file per sim):

* ``shards``: a split of a shard folder (docs/design.md "Formats"). A sample holding ``lo.npy``
  (the ``heldout`` split: native 128^2 runs) gives ``lo`` directly (``lo_kind = "native"``); a
  sample holding only ``hi.npy`` (train/val/test) gives ``lo = avgpool2(hi)``
  (``lo_kind = "derived_avgpool2"``), exactly as in training. The split is indexed from the
  tar headers and the small ``json`` members only; arrays are read later by byte offset, so a
  process reads just the samples of its own sims.
* ``runs``: AthenaK run folders (the held-out native-128 seeds), ``lo`` = the snapshot itself
  (``lo_kind = "native"``), read with :mod:`mhdsr.athenak`.
* ``forecast``: rollout files of ``mhdsr forecast rollout`` (the forecast -> super-resolve
  chain, docs/design.md "Forecast stage"): every lead ``k`` of every initial state ``i`` is one
  input, ``lo`` = ``forecast[i, k]`` (``lo_kind = "forecast"``), in the file's order (initial
  state major). Its noise is keyed by ``(initial snapshot, lead)`` instead of the snapshot, the
  output file gains ``init_index`` and ``lead`` datasets and the rollout file's name and sha256.
  An ensemble rollout (a ``members`` dataset ``(N, E, L, C, h, w)``, ``forecast`` its mean) gives
  one input per ``(i, member e, k)`` instead (initial state major, then member, then lead),
  ``lo`` = ``members[i, e, k]``, noise keyed by ``(initial snapshot, lead, member)`` (members get
  independent super-resolution noise) and a ``member`` dataset; ``inputs.max_members`` keeps
  the first members.

The sim name is ``"<resolution folder>/<run folder>"`` (e.g. ``"mri128_nu3e-5/seed_0002"``),
the same as the shard builder's ``json.sim``; the sim seed is the deck's ``problem/rseed`` (else
the ``seed_NNNN`` folder name). The snapshot window (``snap_start``/``snap_end``, inclusive
file numbers) and ``stride`` apply per sim to its sorted snapshots, for both kinds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mhdsr.channels import CHANNELS
from mhdsr.config import require_folder
from mhdsr.dataset import h5layout as H
from mhdsr.dataset.shards import HI, LO, MemberRef, index_shard, read_ref
from mhdsr.errors import ConfigError, ShardError
from mhdsr.sample.config import SampleConfig

SEED_DIR_RE = re.compile(r"^seed_(\d+)$")

LO_NATIVE = "native"
LO_DERIVED = "derived_avgpool2"
LO_FORECAST = "forecast"


@dataclass(frozen=True)
class Snap:
    """One input snapshot of a sim.

    Attributes:
        snapshot: AthenaK file number.
        time: simulation time (code units; runs: NaN until read, see :meth:`SimInput.load_lo`).
        cycle: AthenaK cycle (runs: -1 until read).
        key: shard sample key ``s{seed:04d}_n{snapshot:05d}`` (shards only, else ``None``).
        member: where the ``lo.npy``/``hi.npy`` member lies, with its checksum (shards).
        noise: the words of the noise key that replace ``(snapshot,)`` (forecast inputs:
            ``(initial snapshot, lead)``, ensemble rollouts ``(initial snapshot, lead,
            member)``); ``None`` = the snapshot.
        index: forecast inputs: ``(initial state, lead index)`` in the rollout file.
        ens_member: ensemble rollouts: the member ``e`` (input ``members[i, e, k]``); ``None``:
            the input is ``forecast[i, k]``.
    """

    snapshot: int
    time: float
    cycle: int
    key: str | None = None
    member: MemberRef | None = None
    noise: tuple[int, ...] | None = None
    index: tuple[int, int] | None = None
    ens_member: int | None = None

    @property
    def noise_key(self) -> tuple[int, ...]:
        """The words of this input's noise key after the sim's (``(snapshot,)`` by default)."""
        return self.noise if self.noise is not None else (self.snapshot,)


@dataclass
class SimInput:
    """All selected snapshots of one sim, sorted by snapshot number.

    Attributes:
        name: sim name, e.g. ``"mri128_nu3e-5/seed_0002"``.
        seed: sim seed (first word of the noise key).
        source: ``"shards:<split>"`` or ``"runs"``.
        lo_kind: ``"native"`` or ``"derived_avgpool2"``.
        snaps: the snapshots.
        lo_shape: ``(h, w)`` of the lo field fed to the model.
        run_dir: the run folder (``runs`` only).
        stored_channels: channel names of the stored arrays (shards: manifest order).
        stored_shape: ``(C, H, W)`` of the stored member (shards only).
        forecast_file: the rollout file (``forecast`` only).
        extra_attrs: attributes (and settings) the output file adds (``forecast``: kind,
            forecast_file, forecast_sha256, dt_orbits).
        datasets: extra ``(T,)`` datasets of the output file (``forecast``: init_index, lead;
            ensemble rollouts also member).
    """

    name: str
    seed: int
    source: str
    lo_kind: str
    snaps: list[Snap]
    lo_shape: tuple[int, int]
    run_dir: str | None = None
    stored_channels: tuple[str, ...] = CHANNELS
    stored_shape: tuple[int, ...] | None = None
    forecast_file: str | None = None
    extra_attrs: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, np.ndarray] = field(default_factory=dict)
    _run: Any = field(default=None, repr=False, compare=False)

    def load_lo(self, i: int, channels: Sequence[str]) -> tuple[np.ndarray, float, int]:
        """The lo field of snapshot ``i`` in physical units, with its time and cycle.

        Args:
            i: index into :attr:`snaps`.
            channels: channel names to return, in this order.

        Returns:
            ``(lo, time, cycle)``: ``lo`` ``(len(channels), h, w)`` float32 C-contiguous.

        Raises:
            ShardError: unreadable/malformed shard member (names the shard and key).
            AthenaKFormatError: unreadable snapshot (names the run folder).
        """
        s = self.snaps[i]
        if self.source == "forecast":
            import h5py

            assert s.index is not None and self.forecast_file is not None
            idx = [self.stored_channels.index(c) for c in channels]
            with h5py.File(self.forecast_file, "r") as f:
                if s.ens_member is None:
                    src = f[H.FORECAST][s.index[0], s.index[1]]
                else:
                    src = f[H.MEMBERS][s.index[0], s.ens_member, s.index[1]]
                arr = np.asarray(src, dtype=np.float32)[idx]
            return np.ascontiguousarray(arr), s.time, s.cycle
        if self.source == "runs":
            if self._run is None:
                from mhdsr.athenak import open_run

                self._run = open_run(self.run_dir)
            snap = self._run.read_snapshot(s.snapshot, list(channels))
            return np.ascontiguousarray(snap.data), float(snap.time), int(snap.cycle)
        idx = [self.stored_channels.index(c) for c in channels]
        member = HI if self.lo_kind == LO_DERIVED else LO
        arr = _read_member(s, self.stored_shape, member)[idx]
        if self.lo_kind == LO_DERIVED:
            import torch

            from mhdsr.method.grid import avgpool2

            arr = avgpool2(torch.from_numpy(np.ascontiguousarray(arr))).numpy()
        return np.ascontiguousarray(arr, dtype=np.float32), s.time, s.cycle


def _read_member(s: Snap, shape: tuple[int, ...] | None, member: str) -> np.ndarray:
    from mhdsr.dataset.npy import decode_npy

    assert s.member is not None
    path = s.member.path
    raw = read_ref(s.member)  # checked against the builder's checksum
    arr = decode_npy(raw, f"{s.key} in {path}", member, shape)
    if not np.isfinite(arr.sum()):  # the builder never writes NaN/inf: the shard is corrupt
        raise ShardError(
            f"{path}: sample {s.key} member {member} holds NaN/inf (corrupt shard? `mhdsr shard inspect --verify`)"
        )
    return arr


def _window(snaps: list[Snap], cfg: SampleConfig) -> list[Snap]:
    w = cfg.inputs
    kept = [
        s
        for s in sorted(snaps, key=lambda s: s.snapshot)
        if (w.snap_start is None or s.snapshot >= w.snap_start)
        and (w.snap_end is None or s.snapshot <= w.snap_end)
    ]
    return kept[:: w.stride]


# ----------------------------------------------------------------------------------------------
# Shards


def index_shards(cfg: SampleConfig) -> list[SimInput]:
    """Sims of split ``cfg.inputs.split`` of the shard folder ``cfg.shards``.

    Raises:
        ConfigError: ``shards`` is not a folder (names the key).
        ShardError: no manifest, unknown or empty split, missing shard, malformed sample.
    """
    from mhdsr.dataset.manifest import read_manifest, shard_paths

    root = require_folder(cfg.shards, "shards")
    manifest = read_manifest(root)
    split = cfg.inputs.split
    if split not in manifest["splits"]:
        raise ConfigError(
            f"config key 'inputs.split': {root} has no split {split!r} "
            f"(has {sorted(manifest['splits'])})"
        )
    paths = shard_paths(root, manifest, split)
    if not paths:
        raise ShardError(f"{root}: split {split!r} has no shards")
    stored = tuple(manifest["channels"])
    by_sim: dict[str, list[tuple[dict[str, Any], str, dict[str, Any]]]] = {}
    for p in paths:
        if not Path(p).is_file():
            raise ShardError(f"{root}: shard {p} of split {split!r} is missing")
        for smp in index_shard(p):
            meta = smp.meta
            if "json" not in smp.members or "sim" not in meta or "snapshot" not in meta:
                raise ShardError(f"{p}: sample {smp.key} has no json member with sim and snapshot")
            by_sim.setdefault(str(meta["sim"]), []).append(
                (meta, p, {**smp.members, "key": smp.key})
            )
    sims = []
    for name in sorted(by_sim):
        recs = by_sim[name]
        kinds = {LO in r for _, _, r in recs}
        if len(kinds) != 1:
            raise ShardError(f"{root}: sim {name} mixes native lo and hi-only samples")
        native = kinds.pop()
        ext = LO if native else HI
        shape = tuple(int(n) for n in manifest["shapes"]["lo" if native else "hi"])
        snaps, seen = [], set()
        for meta, p, r in recs:
            if ext not in r:
                raise ShardError(f"{p}: sample {r['key']} has no {ext} member")
            n = meta["snapshot"]
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ShardError(
                    f"{p}: sample {r['key']}: json key 'snapshot' is {n!r}, expected an integer >= 0"
                )
            if n in seen:
                raise ShardError(f"{root}: sim {name} snapshot {n} appears twice in split {split}")
            seen.add(n)
            snaps.append(
                Snap(
                    n,
                    float(meta.get("time", np.nan)),
                    int(meta.get("cycle", -1)),
                    r["key"],
                    r[ext],
                )
            )
        seeds = {m["seed"] for m, _, _ in recs if "seed" in m}
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in seeds):
            raise ShardError(
                f"{root}: sim {name}: json key 'seed' is {sorted(seeds, key=repr)}, expected one integer >= 0"
            )
        if len(seeds) != 1:
            raise ShardError(f"{root}: sim {name} has seed(s) {sorted(seeds)}, expected one")
        lo_shape = (shape[1], shape[2]) if native else (shape[1] // 2, shape[2] // 2)
        sims.append(
            SimInput(
                name=name,
                seed=seeds.pop(),
                source=f"shards:{split}",
                lo_kind=LO_NATIVE if native else LO_DERIVED,
                snaps=_window(snaps, cfg),
                lo_shape=lo_shape,
                stored_channels=stored,
                stored_shape=shape,
            )
        )
    return sims


# ----------------------------------------------------------------------------------------------
# AthenaK run folders


def index_runs(cfg: SampleConfig, channels: Sequence[str] | None = None) -> list[SimInput]:
    """Sims of the AthenaK run folders matched by ``cfg.inputs.runs``.

    Args:
        cfg: the sample config.
        channels: channels that must be present in a usable snapshot (default all 8).

    Raises:
        ConfigError: a glob matches no folder, two folders share a sim name, or a run's seed is
            unknown.
        AthenaKFormatError: a folder is not a readable 2D AthenaK run.
    """
    from mhdsr.athenak import open_run
    from mhdsr.dataset.sims import resolve_globs, sim_name

    sims: dict[str, SimInput] = {}
    for path in resolve_globs(list(cfg.inputs.runs), "inputs.runs"):
        run = open_run(path)
        nx1, nx2, nx3 = run.resolution
        if nx3 != 1:
            raise ConfigError(f"config key 'inputs.runs': {path} is a 3D run ({nx1}x{nx2}x{nx3})")
        name = sim_name(path)
        if name in sims:
            raise ConfigError(
                f"config key 'inputs.runs': {path} and {sims[name].run_dir} share the sim name {name!r}"
            )
        seed = run.params.get("seed")
        if not (isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0):
            m = SEED_DIR_RE.match(path.name)
            if not m:
                raise ConfigError(
                    f"config key 'inputs.runs': cannot tell the seed of {path} (no problem/rseed in "
                    "its deck and the folder is not named seed_NNNN)"
                )
            seed = int(m.group(1))
        # times are read with the data (no header read per snapshot while indexing)
        snaps = [Snap(n, float("nan"), -1) for n in run.snapshots(channels)]
        sims[name] = SimInput(
            name=name,
            seed=int(seed),
            source="runs",
            lo_kind=LO_NATIVE,
            snaps=_window(snaps, cfg),
            lo_shape=(nx2, nx1),
            run_dir=str(path),
            _run=run,
        )
    return [sims[k] for k in sorted(sims)]


# ----------------------------------------------------------------------------------------------
# Forecast rollout files (the chain)


def _forecast_files(patterns: list[str]) -> list[Path]:
    """Rollout files matched by ``patterns`` (a folder means its ``*.h5``), sorted, unique.

    Raises:
        ConfigError: a pattern matches no file.
    """
    import glob

    out: dict[str, Path] = {}
    for pat in patterns:
        hits = []
        for h in sorted(glob.glob(str(Path(pat).expanduser()))):
            p = Path(h)
            hits += sorted(p.glob("*.h5")) if p.is_dir() else [p] if p.suffix == ".h5" else []
        if not hits:
            raise ConfigError(
                f"config key 'inputs.forecasts': {pat!r} matches no rollout file (cwd {Path.cwd()})"
            )
        for h in hits:
            out.setdefault(str(h.resolve()), h.resolve())
    return [out[k] for k in sorted(out)]


def _members_shape(f: Any, path: Path, shape: tuple[int, ...]) -> int | None:
    """The ensemble size E of the ``members`` dataset of rollout file ``f`` (``None``: none).

    Raises:
        ConfigError: ``members`` is not ``(N, E, L, C, h, w)`` with ``forecast``'s ``(N, L, C,
            h, w)`` and ``E >= 1``, or E disagrees with the ``ensemble`` attribute (names the
            file).
    """
    if H.MEMBERS not in f:
        return None
    ms = tuple(int(n) for n in f[H.MEMBERS].shape)
    want = f"(N, E, L, C, h, w) = ({shape[0]}, E, {', '.join(str(n) for n in shape[1:])})"
    if len(ms) != 6 or ms[0] != shape[0] or ms[2:] != shape[1:] or ms[1] < 1:
        raise ConfigError(
            f"config key 'inputs.forecasts': {path}: dataset {H.MEMBERS!r} has shape {ms}, "
            f"expected {want} to match {H.FORECAST!r} {shape}"
        )
    ens = f.attrs.get(H.ENSEMBLE)
    if ens is not None and int(ens) != ms[1]:
        raise ConfigError(
            f"config key 'inputs.forecasts': {path}: dataset {H.MEMBERS!r} has {ms[1]} member(s) "
            f"but attribute {H.ENSEMBLE!r} = {int(ens)}"
        )
    return ms[1]


def index_forecasts(cfg: SampleConfig) -> list[SimInput]:
    """One sim per rollout file of ``cfg.inputs.forecasts``: every initial state ``i`` and lead
    ``k <= max_lead`` is one input (snapshot = the truth snapshot at ``t0 + k dt``, -1 where the
    run has none; time = ``t0 + k dt``).

    A file with a ``members`` dataset ``(N, E, L, C, h, w)`` (an ensemble rollout) gives one
    input per ``(i, e, k)`` for members ``e < max_members`` (0: all), in the order ``i`` major,
    then ``e``, then ``k``: input ``members[i, e, k]``, noise words ``(initial snapshot, k + 1,
    e)`` and the output dataset ``member`` ``(T,)`` int64. Without ``members`` the inputs, noise
    words ``(initial snapshot, k + 1)`` and datasets are exactly those of a deterministic
    rollout.

    Raises:
        ConfigError: a file is not a complete rollout file, holds non-finite forecasts, has a
            ``members`` dataset whose shape disagrees with ``forecast`` or the ``ensemble``
            attribute, or two files share a sim name (names the file and the key).
    """
    import h5py

    from mhdsr.io_utils import sha256_file

    sims: dict[str, SimInput] = {}
    for path in _forecast_files(list(cfg.inputs.forecasts)):
        try:
            with h5py.File(path, "r") as f:
                a = dict(f.attrs)
                if H.file_kind(a) != H.KIND_FORECAST or not bool(a.get(H.COMPLETE, False)):
                    raise ConfigError(
                        f"config key 'inputs.forecasts': {path} is not a complete rollout file of "
                        "`mhdsr forecast rollout`"
                    )
                shape = tuple(int(n) for n in f[H.FORECAST].shape)
                ens = _members_shape(f, path, shape)
                inits = np.asarray(f[H.INIT_SNAPSHOT][()], dtype=np.int64)
                truth = np.asarray(f[H.TRUTH_SNAPSHOT][()], dtype=np.int64)
                times = np.asarray(f[H.TIME][()], dtype=np.float64)
                finite = bool(a.get(H.FINITE, True))
        except (OSError, KeyError) as e:
            raise ConfigError(f"config key 'inputs.forecasts': {path}: cannot read ({e})") from None
        if not finite:
            raise ConfigError(
                f"config key 'inputs.forecasts': {path} holds non-finite forecasts (the rollout "
                "diverged); nothing to super-resolve"
            )
        n, steps = shape[:2]
        leads = steps if not cfg.inputs.max_lead else min(steps, cfg.inputs.max_lead)
        name = str(a["sim"])
        if name in sims:
            raise ConfigError(
                f"config key 'inputs.forecasts': {path} and {sims[name].forecast_file} both hold "
                f"sim {name}"
            )
        extra: dict[str, Any] = {}
        if ens is None:
            snaps = [
                Snap(
                    int(truth[i, k]),
                    float(times[i, k]),
                    -1,
                    noise=(int(inits[i]), k + 1),
                    index=(i, k),
                )
                for i in range(n)
                for k in range(leads)
                if not cfg.inputs.truth_only or truth[i, k] >= 0
            ]
        else:
            used = ens if not cfg.inputs.max_members else min(ens, cfg.inputs.max_members)
            snaps = [
                Snap(
                    int(truth[i, k]),
                    float(times[i, k]),
                    -1,
                    noise=(int(inits[i]), k + 1, e),
                    index=(i, k),
                    ens_member=e,
                )
                for i in range(n)
                for e in range(used)
                for k in range(leads)
                if not cfg.inputs.truth_only or truth[i, k] >= 0
            ]
            extra = {"forecast_members": used, "forecast_ensemble": ens}
        channels = tuple(str(c) for c in np.atleast_1d(a["channels"]))
        datasets = {
            H.INIT_INDEX: np.array([s.index[0] for s in snaps], dtype=np.int64),
            H.LEAD: np.array([s.index[1] + 1 for s in snaps], dtype=np.int64),
        }
        if ens is not None:
            datasets[H.MEMBER] = np.array([s.ens_member for s in snaps], dtype=np.int64)
        sims[name] = SimInput(
            name=name,
            seed=int(a["sim_seed"]),
            source="forecast",
            lo_kind=LO_FORECAST,
            snaps=snaps,
            lo_shape=(shape[3], shape[4]),
            stored_channels=channels,
            forecast_file=str(path),
            extra_attrs={
                H.KIND: H.KIND_CHAIN,
                "forecast_file": str(path),
                "forecast_sha256": sha256_file(path),
                "dt_orbits": float(a["dt_orbits"]),
                "forecast_lo_kind": str(a["lo_kind"]),
                **extra,
            },
            datasets=datasets,
        )
    return [sims[k] for k in sorted(sims)]


def index_inputs(cfg: SampleConfig, channels: Sequence[str] | None = None) -> list[SimInput]:
    """All sims selected by ``cfg.inputs``, sorted by name; sims whose window is empty are
    dropped.

    Raises:
        ConfigError: nothing selected (names the keys), or errors of :func:`index_shards` /
            :func:`index_runs`.
    """
    if cfg.inputs.kind == "shards":
        sims = index_shards(cfg)
        where = f"split {cfg.inputs.split!r} of {cfg.shards}"
    elif cfg.inputs.kind == "forecast":
        sims = index_forecasts(cfg)
        where = f"forecasts {list(cfg.inputs.forecasts)}"
    else:
        sims = index_runs(cfg, channels)
        where = f"runs {list(cfg.inputs.runs)}"
    kept = [s for s in sims if s.snaps]
    if not kept:
        w = cfg.inputs
        raise ConfigError(
            f"config keys 'inputs.snap_start/snap_end/stride' = ({w.snap_start}, {w.snap_end}, "
            f"{w.stride}) select no snapshot of {where} ({len(sims)} sim(s) found)"
        )
    return kept
