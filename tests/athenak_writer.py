"""Test helper: write AthenaK ``.bin`` files exactly as documented (data/athenak/README.md).

Independent of the reader (it shares no code with mhdsr.athenak), so tests can check the reader
against files with known contents: scrambled meshblock order, several ranks, 3D blocks, and
deliberately broken files.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DECK_TEMPLATE = """#------------------------- PAR_DUMP -------------------------
<comment>
problem   = synthetic
<job>
basename = {basename} # problem ID
<mesh>
nghost = 3
nx1    = {nx1}
x1min  = -0.5
x1max  = 0.5
nx2    = {nx2}
x2min  = -0.5
x2max  = 0.5
nx3    = {nx3}
x3min  = -0.5
x3max  = 0.5
<meshblock>
nx1 = {mb1}
nx2 = {mb2}
nx3 = {mb3}
<shearing_box>
qshear = 1.5
omega0 = 1.0
<mhd>
iso_sound_speed = 1.0
{mhd_extra}
<problem>
beta = 4000
{problem_extra}
#------------------------- PAR_DUMP -------------------------
<par_end>
"""

GROUP_VARS = {
    "mhd_w": ["dens", "velx", "vely", "velz"],
    "mhd_bcc": ["bcc1", "bcc2", "bcc3"],
    "mhd_jz": ["jz"],
}


def make_deck(
    nx: Sequence[int],
    mb: Sequence[int],
    *,
    basename: str = "mri2d",
    nu_key: str = "nu_iso",
    eta_key: str = "eta_ohm",
    seed_key: str = "rseed",
    seed: int = 7,
) -> str:
    """Deck text with the given mesh/meshblock and parameter spellings."""
    return DECK_TEMPLATE.format(
        basename=basename,
        nx1=nx[0], nx2=nx[1], nx3=nx[2], mb1=mb[0], mb2=mb[1], mb3=mb[2],
        mhd_extra=f"{nu_key} = 3.0e-5 # visc\n{eta_key} = 3.0e-5",
        problem_extra=f"{seed_key} = {seed} # seed",
    )  # fmt: skip


def block_record(
    data: np.ndarray,
    loc: Sequence[int],
    nx: Sequence[int],
    mb: Sequence[int],
    *,
    level: int = 0,
    ghost: int = 0,
    order: str = "<",
    var_dtype: str = "f4",
    index_override: Sequence[int] | None = None,
) -> bytes:
    """One meshblock record. ``data`` is the global (nvar, nz, ny, nx) array; the block at
    logical location ``loc`` = (lx1, lx2, lx3) is cut from it (with ``ghost`` extra cells of
    garbage on each side in x1/x2 if ghost > 0, as AthenaK's ghost_zones option would)."""
    n1, n2, n3 = mb
    lx1, lx2, lx3 = loc
    blk = data[:, lx3 * n3 : (lx3 + 1) * n3, lx2 * n2 : (lx2 + 1) * n2, lx1 * n1 : (lx1 + 1) * n1]
    if ghost:
        blk = np.pad(blk, ((0, 0), (0, 0), (ghost, ghost), (ghost, ghost)), constant_values=-999.0)
    g = 3  # nghost of the deck
    if index_override is not None:
        idx = list(index_override)
    elif ghost:
        idx = [0, n1 + 2 * ghost - 1, 0, n2 + 2 * ghost - 1, 0, n3 - 1]
    else:
        idx = [
            g,
            g + n1 - 1,
            g if n2 > 1 else 0,
            (g if n2 > 1 else 0) + n2 - 1,
            g if n3 > 1 else 0,
            (g if n3 > 1 else 0) + n3 - 1,
        ]
    head = struct.pack(f"{order}10i", *idx, lx1, lx2, lx3, level)
    dx = [1.0 / nx[0], 1.0 / nx[1], 1.0 / nx[2]]
    bounds = []
    for ax, lx in enumerate((lx1, lx2, lx3)):
        lo = -0.5 + lx * mb[ax] * dx[ax]
        bounds += [lo, lo + mb[ax] * dx[ax]]
    head += struct.pack(f"{order}6d", *bounds)
    return head + np.ascontiguousarray(blk, dtype=f"{order}{var_dtype}").tobytes()


def bin_bytes(
    variables: Sequence[str],
    data: np.ndarray,
    locs: Sequence[Sequence[int]],
    nx: Sequence[int],
    mb: Sequence[int],
    *,
    time: float = 1.0,
    cycle: int = 10,
    deck: str | None = None,
    nvar_header: int | None = None,
    order: str = "<",
    var_size: int = 4,
    **rec_kw,
) -> bytes:
    """A whole ``.bin`` file holding the blocks at ``locs`` (in that order)."""
    deck = deck if deck is not None else make_deck(nx, mb)
    hdr = (
        "Athena binary output version=1.1\n"
        "  size of preheader=5\n"
        f"  time={time:.16e}\n"
        f"  cycle={cycle}\n"
        "  size of location=8\n"
        f"  size of variable={var_size}\n"
        f"  number of variables={nvar_header if nvar_header is not None else len(variables)}\n"
        "  variables:  " + "  ".join(variables) + "  \n"
        f"  header offset={len(deck)}\n"
    )
    vd = "f4" if var_size == 4 else "f8"
    recs = b"".join(
        block_record(data, loc, nx, mb, order=order, var_dtype=vd, **rec_kw) for loc in locs
    )
    return hdr.encode() + deck.encode() + recs


def all_locs(nx: Sequence[int], mb: Sequence[int]) -> list[tuple[int, int, int]]:
    """Every logical location, in row-major (lx3, lx2, lx1) order."""
    nb = [n // m for n, m in zip(nx, mb)]
    return [(i, j, k) for k in range(nb[2]) for j in range(nb[1]) for i in range(nb[0])]


def write_run(
    root: Path,
    fields: np.ndarray,
    *,
    nx: Sequence[int],
    mb: Sequence[int],
    snapshots: Sequence[int] = (0,),
    n_ranks: int = 1,
    per_rank_layout: bool = False,
    rng_seed: int = 0,
    times: Sequence[float] | None = None,
    deck: str | None = None,
    basename: str = "mri2d",
) -> Path:
    """Write a run folder ``root/bin/...`` holding ``fields`` (8, nz, ny, nx) in the three groups
    for each snapshot (the same fields every snapshot, scaled by (1 + index)). Meshblocks are
    stored in a scrambled order and split over ``n_ranks`` rank files when ``per_rank_layout``."""
    rng = np.random.default_rng(rng_seed)
    locs = all_locs(nx, mb)
    order = [locs[i] for i in rng.permutation(len(locs))]
    chunks = (
        np.array_split(np.arange(len(order)), n_ranks)
        if per_rank_layout
        else [np.arange(len(order))]
    )
    start = 0
    for s_i, snap in enumerate(snapshots):
        t = times[s_i] if times is not None else 0.5 * snap
        for group, names in GROUP_VARS.items():
            start = {"mhd_w": 0, "mhd_bcc": 4, "mhd_jz": 7}[group]
            data = fields[start : start + len(names)] * (1 + snap)
            for r, chunk in enumerate(chunks):
                folder = root / "bin" / (f"rank_{r:08d}" if per_rank_layout else "")
                folder.mkdir(parents=True, exist_ok=True)
                payload = bin_bytes(
                    names,
                    data,
                    [order[i] for i in chunk],
                    nx,
                    mb,
                    time=t,
                    cycle=100 * snap,
                    deck=deck if deck is not None else make_deck(nx, mb, basename=basename),
                )
                (folder / f"{basename}.{group}.{snap:05d}.bin").write_bytes(payload)
    return root


def smooth_fields(nx: Sequence[int], seed: int = 0) -> np.ndarray:
    """(8, nz, ny, nx) float32 distinct smooth-ish fields (channel c has offset 10*c)."""
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((8, nx[2], nx[1], nx[0])) + 10.0 * np.arange(8)[:, None, None, None]
    ).astype(np.float32)
