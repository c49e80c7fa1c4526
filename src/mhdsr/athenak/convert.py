"""``mhdsr athenak to-npy``: one run -> ``all_fields_NxN.npy`` (T, N, N, C) + ``metadata.npz``.

This is the research workflow's per-seed conversion (channel-LAST output, as that workflow
uses). Memory stays bounded: snapshots are read one at a time into a reused buffer and appended
to an ``.npy`` file under a temporary name (its full size reserved up front with
``posix_fallocate``, so a disk too small fails at once), renamed when complete. Plain writes,
not a memory map: a memory map onto a full disk dies of SIGBUS instead of raising ENOSPC.

Resampling to a lower resolution is conservative (area-weighted) averaging over the periodic
grid, which is exact block averaging when the factor is an integer, e.g. 256 -> 128 is
``avgpool2`` (:func:`resample`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mhdsr.athenak.run import AthenaKRun, canonical_channel, cell_centres
from mhdsr.channels import CHANNELS
from mhdsr.errors import AthenaKFormatError
from mhdsr.io_utils import preallocate, tmp_name, write_failed


def remap_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Conservative 1D remap weights ``W`` (n_out, n_in), float64: ``g = W @ f``.

    ``W[I, i]`` is the overlap length of output cell I and input cell i divided by the output
    cell length, on the same interval; rows sum to 1 so means are preserved exactly. For an
    integer factor ``r = n_in / n_out`` every row holds r entries of 1/r (block averaging).

    Raises:
        AthenaKFormatError: ``n_out > n_in`` (upsampling is what the model is for) or < 1.
    """
    if not 1 <= n_out <= n_in:
        raise AthenaKFormatError(
            f"resolution {n_out} must be between 1 and the native {n_in} (no upsampling)"
        )
    edges_in = np.arange(n_in + 1, dtype=np.float64) / n_in
    edges_out = np.arange(n_out + 1, dtype=np.float64) / n_out
    lo = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    hi = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    return np.clip(hi - lo, 0.0, None) * n_out


def resample(field: np.ndarray, n_out: tuple[int, int]) -> tuple[np.ndarray, str]:
    """Average ``field`` (..., ny, nx) down to (..., ny_out, nx_out).

    Returns:
        ``(array float32, method)`` with method ``"none"``, ``"block-average xR"`` (integer
        factor: exact mean of R x R blocks) or ``"conservative area-weighted"``.
    """
    ny, nx = field.shape[-2:]
    if (ny, nx) == tuple(n_out):
        return field, "none"
    if ny % n_out[0] == 0 and nx % n_out[1] == 0 and ny // n_out[0] == nx // n_out[1]:
        r = ny // n_out[0]
        lead = field.shape[:-2]
        blocks = field.reshape(*lead, n_out[0], r, n_out[1], r).astype(np.float64)
        return blocks.mean(axis=(-3, -1)).astype(np.float32), f"block-average x{r}"
    wy = remap_matrix(ny, n_out[0])
    wx = remap_matrix(nx, n_out[1])
    out = np.einsum("Yy,...yx,Xx->...YX", wy, field.astype(np.float64), wx, optimize=True)
    return out.astype(np.float32), "conservative area-weighted"


def _remove_dead_tmp(outdir: Path) -> None:
    """Remove temporary files of conversions killed by SIGKILL (their pid no longer runs)."""
    for p in outdir.glob(".*.tmp-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            p.unlink(missing_ok=True)


def _other_conversion(outdir: Path, root: Path) -> str | None:
    """What ``outdir`` holds from a conversion of a run other than ``root``, else None: the
    source its ``metadata.npz`` names when that is another folder, or the ``all_fields_*.npy``
    files themselves when no readable metadata says where they came from."""
    if not outdir.is_dir():
        return None
    arrays = sorted(p.name for p in outdir.glob("all_fields_*x*.npy"))
    meta = outdir / "metadata.npz"
    if meta.is_file():
        try:
            with np.load(meta, allow_pickle=False) as z:
                src = str(z["source"])
        except (OSError, KeyError, ValueError):
            src = None
        if src is not None:
            same = Path(src).resolve() == root.resolve()
            return None if same else f"source {src}: {', '.join(arrays) or 'metadata.npz'}"
    return f"{', '.join(arrays)} without a readable metadata.npz" if arrays else None


def select_snapshots(
    available: Sequence[int], start: int | None, end: int | None, stride: int
) -> list[int]:
    """Snapshot indices with ``start <= index <= end`` (inclusive, on file numbers), then every
    ``stride``-th of those present.

    Raises:
        AthenaKFormatError: stride < 1 or nothing selected.
    """
    if stride < 1:
        raise AthenaKFormatError(f"--snap-stride must be >= 1, got {stride}")
    sel = [i for i in available if (start is None or i >= start) and (end is None or i <= end)]
    sel = sel[::stride]
    if not sel:
        raise AthenaKFormatError(
            f"no snapshots in [{start}, {end}] (available: {list(available)[:10]}{'...' if len(available) > 10 else ''})"
        )
    return sel


def to_npy(
    bindir: str | Path,
    outdir: str | Path,
    *,
    snap_start: int | None = None,
    snap_end: int | None = None,
    snap_stride: int = 1,
    resolution: int | None = None,
    fields: Sequence[str] | None = None,
    allow_nonfinite: bool = False,
    progress: bool = True,
    basename: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Convert a run to ``outdir/all_fields_NxN.npy`` (T, N, N, C) float32 + ``metadata.npz``.

    Args:
        bindir: run folder (holding ``bin/``) or the ``bin`` folder itself.
        outdir: output folder (created).
        snap_start, snap_end: inclusive snapshot-number window; stride over the present ones.
        resolution: output N (<= native); integer factors use exact block averaging.
        fields: channels (canonical or AthenaK names), default all 8.
        allow_nonfinite: accept NaN/inf.
        progress: show a tqdm bar.
        basename: AthenaK basename when the folder holds several.
        overwrite: replace the conversion of ANOTHER run found in ``outdir`` (its
            ``metadata.npz`` names another source, or arrays lie there without one); without
            it that is refused. An earlier conversion of the same run is always replaced.

    Returns:
        Summary dict: paths, shape, snapshots, resample method.

    Raises:
        AthenaKFormatError: bad run, bad window, 3D run, upsampling request, or ``outdir``
            holding another run's conversion (without ``overwrite``), checked before any work.
    """
    run = AthenaKRun(bindir, basename=basename)
    nx1, nx2, nx3 = run.resolution
    if nx3 != 1:
        raise AthenaKFormatError(
            f"{run.root}: to-npy writes 2D fields but the run is 3D (nx3={nx3})"
        )
    chans = tuple(canonical_channel(f) for f in (fields or CHANNELS))
    if len(set(chans)) != len(chans):
        raise AthenaKFormatError(f"--fields lists a channel twice: {list(chans)}")
    if snap_start is not None and snap_end is not None and snap_start > snap_end:
        raise AthenaKFormatError(f"--snap-start {snap_start} is after --snap-end {snap_end}")
    if resolution is not None and resolution < 1:
        raise AthenaKFormatError(f"--resolution must be a positive grid size, got {resolution}")
    inside = {
        i: why
        for i, why in run.incomplete_snapshots(chans).items()
        if (snap_start is None or i >= snap_start) and (snap_end is None or i <= snap_end)
    }
    if inside:
        listed = "; ".join(f"{i:05d}: {why}" for i, why in inside.items())
        raise AthenaKFormatError(
            f"{run.root}: incomplete snapshot(s) in the window ({listed}); restore the files or "
            "exclude them with --snap-start/--snap-end"
        )
    snaps = select_snapshots(run.snapshots(chans), snap_start, snap_end, snap_stride)
    n_out = (resolution or nx2, resolution or nx1)
    if resolution is not None and resolution > min(nx1, nx2):
        raise AthenaKFormatError(
            f"--resolution {resolution} exceeds the native {nx1}x{nx2} (no upsampling)"
        )
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise AthenaKFormatError(f"{outdir}: --outdir is a file; expected an output folder")
    if not overwrite:
        other = _other_conversion(outdir, run.root)
        if other:
            raise AthenaKFormatError(
                f"{outdir}: holds the conversion of another run ({other}); converting "
                f"{run.root} there would replace it. Use another --outdir, or --overwrite"
            )
    created = not outdir.exists()
    outdir.mkdir(parents=True, exist_ok=True)
    _remove_dead_tmp(outdir)
    data_path = outdir / f"all_fields_{n_out[0]}x{n_out[1]}.npy"
    meta_path = outdir / "metadata.npz"
    tmp_data, tmp_meta = tmp_name(data_path), tmp_name(meta_path)
    ok = False
    buf = np.empty((len(chans), nx2, nx1), dtype=np.float32)
    times, cycles = np.empty(len(snaps)), np.empty(len(snaps), dtype=np.int64)
    method = "none"
    writing = tmp_data
    try:
        shape = (len(snaps), n_out[0], n_out[1], len(chans))
        with open(tmp_data, "wb") as fh:
            np.lib.format.write_array_header_1_0(
                fh, {"descr": "<f4", "fortran_order": False, "shape": shape}
            )
            preallocate(fh, fh.tell() + 4 * int(np.prod(shape)))
            bar = tqdm(snaps, desc=f"to-npy {run.root.name}", unit="snap", disable=not progress)
            for t, idx in enumerate(bar):
                snap = run.read_snapshot(idx, chans, allow_nonfinite=allow_nonfinite, out=buf)
                field, method = resample(snap.data, n_out)
                fh.write(np.ascontiguousarray(np.moveaxis(field, 0, -1), dtype="<f4").data)
                times[t], cycles[t] = snap.time, snap.cycle
            fh.flush()
            os.fsync(fh.fileno())
        writing = tmp_meta
        x1min, x1max, x2min, x2max = run.domain[:4]
        np.savez(
            tmp_meta,
            field_names=np.array(chans),
            times=times,
            cycles=cycles,
            snapshots=np.array(snaps, dtype=np.int64),
            x_coords=cell_centres(x1min, x1max, n_out[1]),
            y_coords=cell_centres(x2min, x2max, n_out[0]),
            sim_params=np.array(json.dumps(run.params)),
            resample=np.array(method),
            source=np.array(str(run.root)),
        )
        # np.savez appends .npz when missing
        tmp_meta_written = tmp_meta if tmp_meta.exists() else Path(str(tmp_meta) + ".npz")
        os.replace(tmp_data, data_path)
        os.replace(tmp_meta_written, meta_path)
        ok = True
    except OSError as e:
        final = data_path if writing == tmp_data else meta_path
        raise write_failed(final, e, f"conversion of {run.root}") from None
    finally:
        for p in (tmp_data, tmp_meta, Path(str(tmp_meta) + ".npz")):
            p.unlink(missing_ok=True)
        if not ok and created and not any(outdir.iterdir()):
            outdir.rmdir()  # nothing half-written: not even an empty folder
    # metadata.npz now describes this array only: drop arrays of earlier conversions
    stale = [p for p in outdir.glob("all_fields_*x*.npy") if p != data_path]
    for p in stale:
        p.unlink()
    return {
        "removed_stale": [str(p) for p in stale],
        "data": str(data_path),
        "metadata": str(meta_path),
        "shape": [len(snaps), n_out[0], n_out[1], len(chans)],
        "snapshots": snaps,
        "fields": list(chans),
        "resample": method,
    }
