"""An AthenaK run folder: discover groups, snapshots and rank files; read assembled snapshots.

A run folder (``SIM_DIR``) holds ``bin/`` (or the ``.bin`` files directly). Two layouts:

* single file per snapshot: ``bin/<basename>.<group>.<NNNNN>.bin`` holds every meshblock;
* one file per rank (deck ``single_file_per_rank = true``):
  ``bin/rank_XXXXXXXX/<basename>.<group>.<NNNNN>.bin``, each with the full header and deck and
  only that rank's meshblocks. A snapshot is the union over all rank folders.

Meshblocks are placed by their logical location ``(lx1, lx2, lx3)`` (records come in Z-order,
not row-major): cell ``(i, j, k)`` of a block goes to global ``(lx1*n1 + i, lx2*n2 + j, lx3*n3 + k)``.
The assembled snapshot is ``(C, ny, nx)`` float32 for 2D (``(C, nz, ny, nx)`` for 3D) with
rows = x2 and columns = x1, channels in :data:`mhdsr.channels.CHANNELS` order.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mhdsr.athenak.binfile import (
    BinFile,
    check_regular,
    parse_header,
    read_bin,
    read_bytes,
    read_header,
    record_dtype,
)
from mhdsr.athenak.deck import Deck, parse_deck, sim_params
from mhdsr.channels import ATHENAK_SOURCE, CHANNELS
from mhdsr.errors import AthenaKFormatError

FILE_RE = re.compile(r"^(?P<basename>.+)\.(?P<group>[A-Za-z0-9_]+)\.(?P<index>\d+)\.bin$")
RANK_RE = re.compile(r"^rank_\d{8}$")

#: alternative AthenaK names accepted for canonical channels (``--fields`` etc.)
ALIASES: dict[str, str] = {
    **{var: ch for ch, (_, var) in ATHENAK_SOURCE.items()},
    "rho": "density",
    "dens": "density",
}


def canonical_channel(name: str) -> str:
    """Map a channel or AthenaK variable name (``dens``, ``bcc2``, ``By``...) to the canonical name.

    Raises:
        AthenaKFormatError: unknown name.
    """
    if name in CHANNELS:
        return name
    if name in ALIASES:
        return ALIASES[name]
    raise AthenaKFormatError(
        f"unknown channel {name!r}: expected one of {list(CHANNELS)} or AthenaK names {sorted(ALIASES)}"
    )


@dataclass
class Snapshot:
    """One assembled snapshot.

    Attributes:
        data: (C, ny, nx) float32 (3D runs: (C, nz, ny, nx)), physical code units, channels in
            the order of ``channels``; rows = x2 (vertical), columns = x1 (radial).
        channels: channel names.
        index: snapshot (file) number NNNNN.
        time: simulation time (code units; one orbit = 2 pi / omega0).
        cycle: integration cycle.
        x, y, z: cell-centre coordinates, float64, computed from the domain bounds:
            ``x[i] = x1min + (i + 0.5) (x1max - x1min) / nx1`` (``z`` is None for 2D).
        params: physical parameters from the embedded deck (see :func:`deck.sim_params`).
        run: the run folder.
    """

    data: np.ndarray
    channels: tuple[str, ...]
    index: int
    time: float
    cycle: int
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray | None
    params: dict[str, Any] = field(repr=False)
    run: Path | None = None


def cell_centres(xmin: float, xmax: float, n: int) -> np.ndarray:
    """``n`` cell centres of a uniform grid on ``[xmin, xmax]`` (float64)."""
    return xmin + (np.arange(n, dtype=np.float64) + 0.5) * ((xmax - xmin) / n)


class AthenaKRun:
    """A run folder of AthenaK ``.bin`` output (either layout).

    Args:
        sim_dir: the run folder (holding ``bin/``), or the ``bin`` folder itself.
        basename: which basename to use when the folder holds several (default: the only one).

    Raises:
        AthenaKFormatError: no ``.bin`` files, several basenames without a choice, or a
            folder mixing both layouts.
    """

    def __init__(self, sim_dir: str | Path, basename: str | None = None) -> None:
        self.root = Path(sim_dir)
        if self.root.is_file():
            raise AthenaKFormatError(
                f"{self.root}: is a file; expected a run folder (holding bin/ or the .bin files)"
            )
        if not self.root.is_dir():
            raise AthenaKFormatError(f"{self.root}: run folder does not exist")
        self.bindir = self.root / "bin" if (self.root / "bin").is_dir() else self.root
        rank_dirs = sorted(p for p in self.bindir.iterdir() if p.is_dir() and RANK_RE.match(p.name))
        flat = sorted(p for p in self.bindir.glob("*.bin") if p.is_file())
        if rank_dirs and flat:
            raise AthenaKFormatError(
                f"{self.bindir}: mixes single-file .bin files and rank_XXXXXXXX/ folders; "
                "expected one layout"
            )
        self.layout = "per_rank" if rank_dirs else "single"
        self.rank_dirs: list[Path] = rank_dirs if rank_dirs else [self.bindir]
        # files[group][index] -> one path per rank folder that has it
        found: dict[str, dict[str, dict[int, list[Path]]]] = {}
        for rd in self.rank_dirs:
            for p in rd.glob("*.bin"):
                m = FILE_RE.match(p.name)
                if not m:
                    continue
                check_regular(p)  # a FIFO named like a snapshot: refused, never opened
                g = found.setdefault(m["basename"], {}).setdefault(m["group"], {})
                g.setdefault(int(m["index"]), []).append(p)
        if not found:
            runs = _runs_below(self.root)
            if runs:
                shown = ", ".join(r.name for r in runs[:12]) + (" ..." if len(runs) > 12 else "")
                raise AthenaKFormatError(
                    f"{self.root}: not a run folder, but it holds {len(runs)} run folder(s) one "
                    f"level down: {shown}; pass one of them, e.g. {runs[0]}"
                )
            raise AthenaKFormatError(
                f"{self.bindir}: no AthenaK .bin files (<basename>.<group>.<NNNNN>.bin)"
            )
        if basename is None:
            if len(found) > 1:
                raise AthenaKFormatError(
                    f"{self.bindir}: several basenames {sorted(found)}; choose one (--basename)"
                )
            basename = next(iter(found))
        if basename not in found:
            raise AthenaKFormatError(
                f"{self.bindir}: no files with basename {basename!r} (have {sorted(found)})"
            )
        self.basename = basename
        self._files = found[basename]
        for by_index in self._files.values():
            for paths in by_index.values():
                paths.sort()

    # ----------------------------------------------------------------- discovery
    @property
    def groups(self) -> list[str]:
        """Output variable groups present (e.g. ``["mhd_bcc", "mhd_jz", "mhd_w"]``)."""
        return sorted(self._files)

    @property
    def n_ranks(self) -> int:
        """Number of rank folders (1 for the single-file layout, which does not record it)."""
        return len(self.rank_dirs)

    def group_snapshots(self, group: str) -> list[int]:
        """Indices of ``group`` present in every rank folder."""
        by_index = self._files.get(group, {})
        return sorted(i for i, paths in by_index.items() if len(paths) == self.n_ranks)

    def paths(self, group: str, index: int) -> list[Path]:
        """The file(s) of one group and snapshot (one per rank folder).

        Raises:
            AthenaKFormatError: the group or snapshot is missing, or a rank folder lacks it.
        """
        if group not in self._files:
            raise AthenaKFormatError(
                f"{self.root}: no output group {group!r} (groups: {self.groups})"
            )
        paths = self._files[group].get(index)
        if not paths:
            raise AthenaKFormatError(
                f"{self.root}: snapshot {index:05d} of group {group!r} is missing"
            )
        if len(paths) != self.n_ranks:
            have = {p.parent.name for p in paths}
            missing = [d.name for d in self.rank_dirs if d.name not in have]
            raise AthenaKFormatError(
                f"{self.root}: snapshot {index:05d} of group {group!r} is missing from rank folder(s) {missing}"
            )
        return paths

    @functools.cached_property
    def _first_path(self) -> Path:
        g = self.groups[0]
        return self._files[g][min(self._files[g])][0]

    @functools.cached_property
    def deck(self) -> Deck:
        """Input deck embedded in the run's first file (identical across files but for
        the outputs' ``file_number``/``last_time`` bookkeeping)."""
        p = self._first_path
        hdr = parse_header(read_bytes(p)[: 1 << 20], p)
        try:
            return parse_deck(hdr.deck_text)
        except ValueError as e:
            raise AthenaKFormatError(f"{p}: embedded input deck: {e}") from None

    @functools.cached_property
    def _params(self) -> tuple[dict[str, Any], dict[str, str]]:
        return sim_params(self.deck)

    @property
    def params(self) -> dict[str, Any]:
        """Physical parameters (nu, eta, seed, qshear, omega0, beta, nx1, nx2, domain...)."""
        return dict(self._params[0])

    @property
    def param_sources(self) -> dict[str, str]:
        """Which deck spelling (``block/key``) each parameter was read from."""
        return dict(self._params[1])

    def _mesh_int(self, key: str, default: int | None = None) -> int:
        p = self._params[0]
        block = "meshblock" if key.startswith("meshblock_") else "mesh"
        name = f"<{block}>/{key.removeprefix('meshblock_')}"
        if key not in p and default is None:
            raise AthenaKFormatError(f"{self._first_path}: embedded deck lacks {name}")
        v = p.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise AthenaKFormatError(
                f"{self._first_path}: embedded deck {name} = {v!r}, expected a positive integer"
            )
        return v

    @functools.cached_property
    def _grid(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """``(mesh, meshblock)`` cells from the deck, validated BEFORE anything is allocated
        from them: positive integers, blocks dividing the mesh, and a mesh that the run's first
        snapshot files can hold (a deck claiming 2^20 x 2^20 cells would otherwise make numpy
        try to allocate terabytes)."""
        mesh = (self._mesh_int("nx1"), self._mesh_int("nx2"), self._mesh_int("nx3", 1))
        block = tuple(self._mesh_int(f"meshblock_nx{a}", mesh[a - 1]) for a in (1, 2, 3))
        if any(m % b for m, b in zip(mesh, block)):
            raise AthenaKFormatError(
                f"{self._first_path}: embedded deck <mesh> {mesh[0]}x{mesh[1]}x{mesh[2]} is not a "
                f"multiple of <meshblock> {block[0]}x{block[1]}x{block[2]}"
            )
        cells = mesh[0] * mesh[1] * mesh[2]
        g = self.groups[0]
        by_index = self._files[g]  # a snapshot present in every rank folder, else the fullest
        full = [i for i in sorted(by_index) if len(by_index[i]) == self.n_ranks]
        first = by_index[full[0]] if full else max(by_index.values(), key=len)
        held = sum(check_regular(p) for p in first)
        if cells * 4 > held:  # at least one float32 value per cell (more with more variables)
            names = ", ".join(map(str, first))
            raise AthenaKFormatError(
                f"{self._first_path}: embedded deck claims a mesh of {mesh[0]}x{mesh[1]}x{mesh[2]} "
                f"= {cells} cells, but {names} hold(s) only {held} bytes (at least 4 per cell): "
                "garbled deck or truncated files"
            )
        return mesh, block  # type: ignore[return-value]

    @property
    def resolution(self) -> tuple[int, int, int]:
        """Mesh cells ``(nx1, nx2, nx3)``.

        Raises:
            AthenaKFormatError: the deck's sizes are missing, not positive integers, or more
                than the files can hold (see ``_grid``).
        """
        return self._grid[0]

    @property
    def meshblock_shape(self) -> tuple[int, int, int]:
        """Cells per meshblock ``(n1, n2, n3)`` from the deck (defaults to the whole mesh)."""
        return self._grid[1]

    @property
    def n_meshblocks(self) -> int:
        r, b = self.resolution, self.meshblock_shape
        return (r[0] // b[0]) * (r[1] // b[1]) * (r[2] // b[2])

    @property
    def domain(self) -> tuple[float, float, float, float, float, float]:
        """``(x1min, x1max, x2min, x2max, x3min, x3max)`` from the deck."""
        p = self._params[0]
        try:
            return tuple(
                float(p[k]) for k in ("x1min", "x1max", "x2min", "x2max", "x3min", "x3max")
            )  # type: ignore[return-value]
        except KeyError as e:
            raise AthenaKFormatError(
                f"{self._first_path}: embedded deck lacks <mesh>/{e.args[0]}"
            ) from None

    def coordinates(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Cell centres ``(x, y, z)`` (float64; ``z`` None for 2D)."""
        (nx, ny, nz), d = self.resolution, self.domain
        z = cell_centres(d[4], d[5], nz) if nz > 1 else None
        return cell_centres(d[0], d[1], nx), cell_centres(d[2], d[3], ny), z

    @functools.cached_property
    def _channel_sources(self) -> dict[str, tuple[str, int]]:
        """channel -> (group, variable position), from the headers of each group's first file.
        The canonical group is preferred; any group that carries the variable is accepted."""
        group_vars: dict[str, tuple[str, ...]] = {}
        for g in self.groups:
            p = self._files[g][min(self._files[g])][0]
            group_vars[g] = parse_header(read_bytes(p)[: 1 << 20], p).variables
        out: dict[str, tuple[str, int]] = {}
        for ch, (pref_group, var) in ATHENAK_SOURCE.items():
            order = [pref_group] + [g for g in self.groups if g != pref_group]
            for g in order:
                if g in group_vars and var in group_vars[g]:
                    out[ch] = (g, group_vars[g].index(var))
                    break
        return out

    def channel_source(self, channel: str) -> tuple[str, int]:
        """``(group, variable index)`` providing ``channel``.

        Raises:
            AthenaKFormatError: no group of this run provides it.
        """
        ch = canonical_channel(channel)
        src = self._channel_sources.get(ch)
        if src is None:
            var = ATHENAK_SOURCE[ch][1]
            raise AthenaKFormatError(
                f"{self.root}: channel {ch!r} (AthenaK variable {var!r}) is provided by no output group "
                f"(groups: {self.groups})"
            )
        return src

    def snapshots(self, channels: Sequence[str] | None = None) -> list[int]:
        """Sorted snapshot indices usable for ``channels`` (default all 8): every needed group
        present, in every rank folder."""
        chans = [canonical_channel(c) for c in (channels or CHANNELS)]
        groups = {self.channel_source(c)[0] for c in chans}
        sets = [set(self.group_snapshots(g)) for g in groups]
        return sorted(set.intersection(*sets)) if sets else []

    def incomplete_snapshots(self, channels: Sequence[str] | None = None) -> dict[int, str]:
        """Snapshots that some needed group or rank folder has and another lacks, with the reason.

        A complete run has none: its snapshot numbering may have gaps (AthenaK outputs thinned on
        purpose), but every group and rank folder has the same numbers. An index listed here is
        left out of :meth:`snapshots`; callers must not drop it silently (``info`` reports it,
        ``to-npy`` and the shard builder refuse it or record it as skipped).
        """
        chans = [canonical_channel(c) for c in (channels or CHANNELS)]
        groups = sorted({self.channel_source(c)[0] for c in chans})
        seen = set().union(*(self._files.get(g, {}).keys() for g in groups)) if groups else set()
        complete = set(self.snapshots(chans))
        out: dict[int, str] = {}
        for idx in sorted(seen - complete):
            missing = []
            for g in groups:
                paths = self._files.get(g, {}).get(idx, [])
                if not paths:
                    missing.append(f"group {g}")
                elif len(paths) != self.n_ranks:
                    have = {p.parent.name for p in paths}
                    missing += [f"{g} in {d.name}" for d in self.rank_dirs if d.name not in have]
            out[idx] = "missing " + ", ".join(missing)
        return out

    def snapshot_time(self, index: int) -> tuple[float, int]:
        """``(time, cycle)`` of a snapshot from one file's first header lines (no data read)."""
        p = self.paths(self._group_of(index), index)[0]
        check_regular(p)
        with open(p, "rb") as f:
            head = f.read(1 << 12)
        return _parse_time_only(head, p)

    def _group_of(self, index: int) -> str:
        for g in self.groups:
            if index in self._files[g]:
                return g
        raise AthenaKFormatError(f"{self.root}: no snapshot {index:05d}")

    def size_mismatches(self, reference: int | None = None) -> dict[str, str]:
        """Files whose byte size is not the size their own header requires (header and deck
        read, no data): ``data offset + n x record``, with the record size from the file's
        variables and value sizes and the deck's meshblock shape (:func:`record_dtype`), and n
        the run's meshblock count (single-file layout) or, per rank folder and group, the
        record count of that folder's file of snapshot ``reference`` (default: the first
        usable snapshot; :meth:`info` has read it completely). The header's length varies with
        the cycle and time text, so sizes are never compared between files. A file whose
        header does not parse (an empty file, say) is reported with the reason.

        Returns:
            ``{path: reason}`` for each file that does not have its size.
        """
        usable = self.snapshots([c for c in CHANNELS if c in self._channel_sources] or None)
        ref = reference if reference is not None else (usable[0] if usable else None)
        n1, n2, n3 = self.meshblock_shape
        out: dict[str, str] = {}
        for g in self.groups:
            for rd in self.rank_dirs:
                files = sorted(
                    (i, p) for i, paths in self._files[g].items() for p in paths if p.parent == rd
                )
                counts: dict[Path, tuple[int, int, float]] = {}  # path -> (size, offset, record)
                for _, p in files:
                    size = p.stat().st_size
                    try:
                        h = read_header(p)
                    except AthenaKFormatError as e:
                        out[str(p)] = f"{size} bytes, {str(e).removeprefix(f'{p}: ')}"
                        continue
                    rec = record_dtype(
                        len(h.variables), (n1, n2, n3), h.location_size, h.variable_size, "<"
                    ).itemsize
                    counts[p] = (size, h.data_offset, rec)
                if self.layout == "single":
                    n_rec = self.n_meshblocks
                else:
                    ref_path = next((p for i, p in files if i == ref and p in counts), None)
                    if ref_path is None:  # the folder lacks the reference: its commonest count
                        whole = [
                            (s - o) // r
                            for s, o, r in counts.values()
                            if s > o and (s - o) % r == 0
                        ]
                        if not whole:
                            continue
                        n_rec = max(set(whole), key=whole.count)
                    else:
                        s, o, r = counts[ref_path]
                        n_rec = (s - o) // r
                for p, (size, off, rec) in counts.items():
                    need = off + n_rec * rec
                    if size != need:
                        out[str(p)] = (
                            f"{size} bytes, its header requires {need} ({off} bytes of header "
                            f"and deck + {n_rec} meshblock records of {rec} bytes)"
                        )
        return out

    def info(self, check: bool = True) -> dict[str, Any]:
        """The ``mhdsr athenak info --json`` record (docs/design.md command-line contract).

        Args:
            check: also read the first and last usable snapshots completely (meshblock coverage
                across rank files, block bounds, finite values) and compare file sizes
                (:meth:`size_mismatches`); other snapshots are checked when they are read.

        Raises:
            AthenaKFormatError: the first or last snapshot does not read (names the file).
        """
        chans = [c for c in CHANNELS if c in self._channel_sources]
        snaps = self.snapshots(chans or None)
        t_first = t_last = None
        checked: list[int] = []
        if check and snaps:
            checked = sorted({snaps[0], snaps[-1]})
            for i in checked:
                self.read_snapshot(i, chans)
        if snaps:
            t_first = self.snapshot_time(snaps[0])[0]
            t_last = self.snapshot_time(snaps[-1])[0]
        nx1, nx2, nx3 = self.resolution
        params = self.params
        return {
            "path": str(self.root),
            "resolution": [nx1, nx2] if nx3 == 1 else [nx1, nx2, nx3],
            "n_meshblocks": self.n_meshblocks,
            "meshblock": list(self.meshblock_shape[: 2 if nx3 == 1 else 3]),
            "n_ranks": self.n_ranks,
            "layout": self.layout,
            "basename": self.basename,
            "groups": self.groups,
            "snapshots": snaps,
            "n_snapshots": len(snaps),
            "incomplete_snapshots": {
                f"{i:05d}": why for i, why in self.incomplete_snapshots(chans or None).items()
            },
            "time_first": t_first,
            "time_last": t_last,
            "channels": chans,
            "read_check": checked,  # snapshots read completely without error
            "size_mismatch": self.size_mismatches(checked[0] if checked else None) if check else {},
            "params": params,
            "param_sources": self.param_sources,
        }

    # ----------------------------------------------------------------- reading
    def read_snapshot(
        self,
        index: int,
        channels: Sequence[str] | None = None,
        *,
        allow_nonfinite: bool = False,
        out: np.ndarray | None = None,
    ) -> Snapshot:
        """Read and assemble one snapshot.

        Args:
            index: snapshot number (``NNNNN`` of the file names).
            channels: channel names (canonical or AthenaK), default all 8 in canonical order.
            allow_nonfinite: accept NaN/inf values instead of raising.
            out: optional preallocated float32 array of the output shape to fill.

        Returns:
            A :class:`Snapshot` with ``data`` (C, ny, nx) float32 (3D: (C, nz, ny, nx)).

        Raises:
            AthenaKFormatError: missing group/rank file, malformed file, block sizes that do not
                match the deck (e.g. ghost zones written), meshblocks that overlap or leave cells
                uncovered, groups whose time/cycle differ, non-finite values.
        """
        chans = tuple(canonical_channel(c) for c in (channels or CHANNELS))
        nx1, nx2, nx3 = self.resolution
        shape = (len(chans), nx2, nx1) if nx3 == 1 else (len(chans), nx3, nx2, nx1)
        if out is None:
            out = np.empty(shape, dtype=np.float32)
        elif out.shape != shape or out.dtype != np.float32:
            raise ValueError(f"out must be float32 {shape}, got {out.dtype} {out.shape}")
        # which variables of which group go to which output channel
        plan: dict[str, list[tuple[int, int]]] = {}
        for c_out, ch in enumerate(chans):
            g, v = self.channel_source(ch)
            plan.setdefault(g, []).append((v, c_out))
        ref: tuple[float, int, Path] | None = None
        for g, pairs in plan.items():
            paths = self.paths(g, index)
            locs = []
            for p in paths:
                # One reusable buffer per run: the records are copied out before the next read.
                f = read_bin(p, read_bytes(p, self._scratch_for))
                t, cyc = f.header.time, f.header.cycle
                if ref is None:
                    ref = (t, cyc, f.path)
                elif t != ref[0] or cyc != ref[1]:
                    raise AthenaKFormatError(
                        f"snapshot {index:05d}: {f.path} has time={t!r} cycle={cyc} but "
                        f"{ref[2]} has time={ref[0]!r} cycle={ref[1]}: groups/ranks of one snapshot must agree"
                    )
                self._check_file(f, pairs)
                locs.append(f.locs)
                self._copy_blocks(f, pairs, out)
            self._check_coverage(np.concatenate(locs), paths)
        assert ref is not None
        if not allow_nonfinite:
            _check_finite(out, chans, f"{self.root} snapshot {index:05d}")
        x, y, z = self.coordinates()
        return Snapshot(
            data=out, channels=chans, index=index, time=ref[0], cycle=ref[1],
            x=x, y=y, z=z, params=self.params, run=self.root,
        )  # fmt: skip

    def _scratch_for(self, size: int) -> np.ndarray:
        """A per-thread reusable read buffer of at least ``size`` bytes."""
        buf = getattr(self._tls, "buf", None)
        if buf is None or buf.nbytes < size:
            buf = np.empty(max(size, 1 << 20), dtype=np.uint8)
            self._tls.buf = buf
        return buf

    @functools.cached_property
    def _tls(self) -> threading.local:
        return threading.local()

    def _check_file(self, f: BinFile, pairs: list[tuple[int, int]]) -> None:
        """Block size must match the deck's <meshblock> (else ghost zones or a foreign run);
        stored block bounds must match the logical locations (catches swapped axes)."""
        block = self.meshblock_shape
        if f.block_shape != block:
            ng = int(self._params[0].get("nghost", 0))
            ghost = tuple(b + 2 * ng for b in block[:2])
            hint = (
                " (the file holds ghost zones: output option ghost_zones=true is not supported)"
                if f.block_shape[:2] == ghost
                else ""
            )
            raise AthenaKFormatError(
                f"{f.path}: meshblock records are {f.block_shape[0]}x{f.block_shape[1]}x{f.block_shape[2]} "
                f"cells but the deck's <meshblock> is {block[0]}x{block[1]}x{block[2]}{hint}"
                f"{self._foreign_resolution(f)}"
            )
        nvar = len(f.header.variables)
        for v, _ in pairs:
            if v >= nvar:
                raise AthenaKFormatError(
                    f"{f.path}: has {nvar} variables {list(f.header.variables)}, expected at least {v + 1}"
                )
        # Snapshots of a run share one meshblock layout: validate each distinct layout once.
        key = f.records["loc"].tobytes() + f.records["bounds"].tobytes()
        if key in self._valid_layouts:
            return
        mesh, d = self.resolution, self.domain
        if any(m % b for m, b in zip(mesh, block)):
            raise AthenaKFormatError(
                f"{f.path}: mesh {mesh} is not a multiple of meshblock {block}"
            )
        nb = np.array([m // b for m, b in zip(mesh, block)])
        locs = f.locs
        if (locs < 0).any() or (locs >= nb).any():
            bad = locs[((locs < 0) | (locs >= nb)).any(axis=1)][0].tolist()
            raise AthenaKFormatError(
                f"{f.path}: meshblock location {bad} lies outside the root grid {nb.tolist()}"
                f"{self._foreign_resolution(f)}"
            )
        bounds = f.records["bounds"].astype(np.float64)
        for ax in range(2 if mesh[2] == 1 else 3):
            lo, hi = d[2 * ax], d[2 * ax + 1]
            width = (hi - lo) * block[ax] / mesh[ax]
            expect = lo + locs[:, ax] * width
            err = np.maximum(
                np.abs(bounds[:, 2 * ax] - expect), np.abs(bounds[:, 2 * ax + 1] - expect - width)
            )
            if (err > 1e-6 * abs(hi - lo)).any():
                b = int(np.argmax(err))
                raise AthenaKFormatError(
                    f"{f.path}: meshblock {b} at location {locs[b].tolist()} has x{ax + 1} bounds "
                    f"[{bounds[b, 2 * ax]}, {bounds[b, 2 * ax + 1]}], expected [{expect[b]}, {expect[b] + width}]"
                )
        self._valid_layouts.add(key)

    def _foreign_resolution(self, f: BinFile) -> str:
        """``"; the file's ... differs from the run's"`` when the file's own embedded deck gives
        another mesh than the run's (a file of another resolution dropped into this run), else ''."""
        try:
            theirs = tuple(f.deck.get("mesh", {}).get(k, 1) for k in ("nx1", "nx2", "nx3"))
        except AthenaKFormatError:
            return ""
        mine = self.resolution
        if theirs == mine:
            return ""
        fmt = "x".join
        return (
            f"; the file's embedded deck says its mesh is {fmt(map(str, theirs))} cells but this run "
            f"({self._first_path}) is {fmt(map(str, mine))}: a file of another resolution in this run"
        )

    @functools.cached_property
    def _valid_layouts(self) -> set[bytes]:
        return set()

    def _check_coverage(self, locs: np.ndarray, paths: Sequence[Path]) -> None:
        """Every root-grid block exactly once across all rank files of one group/snapshot."""
        key = locs.tobytes()
        if key in self._valid_layouts:
            return
        mesh, block = self.resolution, self.meshblock_shape
        nb = tuple(m // b for m, b in zip(mesh, block))
        names = ", ".join(str(p) for p in paths)
        flat = (locs[:, 2] * nb[1] + locs[:, 1]) * nb[0] + locs[:, 0]
        counts = np.bincount(flat, minlength=nb[0] * nb[1] * nb[2])
        if (counts > 1).any():
            dup = np.unravel_index(int(np.argmax(counts > 1)), (nb[2], nb[1], nb[0]))[::-1]
            raise AthenaKFormatError(
                f"{names}: meshblocks overlap: location (lx1, lx2, lx3) = {tuple(map(int, dup))} "
                f"appears {counts.max()} times"
            )
        if (counts == 0).any():
            miss = [
                tuple(map(int, np.unravel_index(i, (nb[2], nb[1], nb[0]))[::-1]))
                for i in np.flatnonzero(counts == 0)
            ]
            n1, n2, _ = block
            lx1, lx2, _ = miss[0]
            raise AthenaKFormatError(
                f"{names}: {len(miss)} of {counts.size} meshblocks missing, e.g. (lx1, lx2, lx3) = {miss[0]} "
                f"covering cells x1 [{lx1 * n1}, {(lx1 + 1) * n1}) x2 [{lx2 * n2}, {(lx2 + 1) * n2}): "
                "domain not covered (is a rank file missing?)"
            )
        self._valid_layouts.add(key)

    @staticmethod
    def _copy_blocks(f: BinFile, pairs: list[tuple[int, int]], out: np.ndarray) -> None:
        """Copy the selected variables of every meshblock of ``f`` into ``out`` (in place),
        converting to float32 native order; one strided copy per block (no per-cell Python)."""
        n1, n2, n3 = f.block_shape
        vidx = [v for v, _ in pairs]
        cidx = [c for _, c in pairs]
        v0, c0, nv = vidx[0], cidx[0], len(pairs)
        run = vidx == list(range(v0, v0 + nv)) and cidx == list(range(c0, c0 + nv))
        data = f.data
        two_d = out.ndim == 3
        for b, (lx1, lx2, lx3) in enumerate(f.locs.tolist()):
            i0, j0, k0 = lx1 * n1, lx2 * n2, lx3 * n3
            if run:  # the usual case: a group's variables map to consecutive channels
                if two_d:
                    out[c0 : c0 + nv, j0 : j0 + n2, i0 : i0 + n1] = data[b, v0 : v0 + nv, 0]
                else:
                    out[c0 : c0 + nv, k0 : k0 + n3, j0 : j0 + n2, i0 : i0 + n1] = data[
                        b, v0 : v0 + nv
                    ]
            else:
                for v, c in pairs:
                    if two_d:
                        out[c, j0 : j0 + n2, i0 : i0 + n1] = data[b, v, 0]
                    else:
                        out[c, k0 : k0 + n3, j0 : j0 + n2, i0 : i0 + n1] = data[b, v]


def _runs_below(folder: Path) -> list[Path]:
    """Sub-folders of ``folder`` that look like AthenaK run folders (``.bin`` files in them, in
    their ``bin/``, or in rank folders there), sorted by name."""

    def has_bins(d: Path) -> bool:
        return any(p.is_file() for p in d.glob("*.bin")) or any(
            r.is_dir() and RANK_RE.match(r.name) and any(r.glob("*.bin")) for r in d.iterdir()
        )

    runs = []
    try:
        subs = sorted(p for p in folder.iterdir() if p.is_dir())
    except OSError:
        return runs
    for d in subs:
        with contextlib.suppress(OSError):
            if has_bins(d) or ((d / "bin").is_dir() and has_bins(d / "bin")):
                runs.append(d)
    return runs


def _parse_time_only(head: bytes, path: Path) -> tuple[float, int]:
    """(time, cycle) from the first header lines, without reading the deck or data."""
    if not head.startswith(b"Athena binary output version="):
        raise AthenaKFormatError(f"{path}: not an AthenaK binary output")
    t = c = None
    for line in head.split(b"\n")[:12]:
        k, _, v = line.partition(b"=")
        k = k.strip()
        if k == b"time":
            t = float(v)
        elif k == b"cycle":
            c = int(v)
    if t is None or c is None:
        raise AthenaKFormatError(f"{path}: garbled header: no time/cycle lines")
    return t, c


def _check_finite(data: np.ndarray, channels: Sequence[str], where: str) -> None:
    """Raise naming each channel with NaN/inf values and their count."""
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(data.sum()):  # a finite sum proves every value finite (fast path)
            return
    bad = []
    for c, ch in enumerate(channels):
        n = int(data[c].size - np.count_nonzero(np.isfinite(data[c])))
        if n:
            bad.append(f"{ch}: {n}")
    if bad:
        raise AthenaKFormatError(
            f"{where}: non-finite values ({'; '.join(bad)} cells); `to-npy --allow-nonfinite` accepts them"
        )


def open_run(sim_dir: str | Path, basename: str | None = None) -> AthenaKRun:
    """Open a run folder (see :class:`AthenaKRun`)."""
    return AthenaKRun(sim_dir, basename=basename)
