"""One HDF5 file per input sim (docs/design.md "Formats", inference output): the writer. The
names (file, datasets, attributes) are :mod:`mhdsr.dataset.h5layout`'s.

Layout of ``<output_dir>/<sim with "/" -> "__">.h5``::

    samples   (T, E, C, H, W) float32  physical units (denormalized); chunks of one member
    input     (T, C, h, w)    float32  physical lo fed to the model (degraded for a method.degrade
                                       model on avgpool2(hi) inputs: attrs degrade = True)
    time      (T,)            float64  simulation time of each snapshot
    snapshot  (T,)            int64    AthenaK file number
    cycle     (T,)            int64    AthenaK cycle (-1 if unknown)
    key       (T,)            str      sample keys s{seed:04d}_n{snapshot:05d} (AthenaK runs: same form)
    attrs: channels, sampler (JSON), checkpoint, checkpoint_sha256, checkpoint_step, weights,
           sigma, seed, ensemble, code_version, sim, sim_seed, source, lo_kind, upsample,
           formulation (interpolant | residual), scale, project, derive_jz, norm_mean, norm_std (the model's
           per-channel normalization), residual_std (residual formulation), degrade (the
           input was filtered by the export's transfer function), degrade_transfer (JSON
           (C, K) table, method.degrade models only), t_min, t_max,
           settings (JSON of everything that determines the numbers), complete

A file is written under a temporary name in the same folder (``.<name>.tmp-<host>-<pid>``) and
renamed once complete (``complete = True`` is set before the rename), so a reader never sees a
partial file and a killed run leaves only a temporary file, which the next run deletes. The
file's full size is reserved (``posix_fallocate``) when it is created, so a disk too small is
refused before any sampling; any write error later (disk filled by another job) becomes one
:class:`~mhdsr.errors.OutputWriteError` naming the file, with the temporary file removed.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mhdsr.dataset import h5layout as H
from mhdsr.dataset.h5layout import output_path, read_settings, stale_tmps
from mhdsr.errors import NonFiniteError
from mhdsr.io_utils import write_failed

__all__ = ["SimWriter", "output_path", "read_settings", "settings_diff", "stale_tmps"]


def settings_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable ``key: old -> new`` lines for the entries that differ."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


class SimWriter:
    """Write one sim's output file atomically (context manager).

    Args:
        path: final file path.
        n_snap, ensemble: T and E.
        channels: channel names (C = len).
        hi_shape, lo_shape: ``(H, W)`` and ``(h, w)``.
        with_keys: create the ``key`` dataset (inputs from shards).
        attrs: file attributes (``complete`` is added by :meth:`commit`).

    Use::

        with SimWriter(...) as w:
            w.write_input(t, lo, time=..., snapshot=..., cycle=..., key=...)
            w.write_samples(t, m0, x)       # x (k, C, H, W): members m0 .. m0 + k - 1
            w.commit()                       # marks complete, renames
    """

    def __init__(
        self,
        path: Path,
        *,
        n_snap: int,
        ensemble: int,
        channels: list[str],
        hi_shape: tuple[int, int],
        lo_shape: tuple[int, int],
        with_keys: bool,
        attrs: dict[str, Any],
    ) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(
            f".{self.path.name}.tmp-{socket.gethostname()}-{os.getpid()}"
        )
        c = len(channels)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for old in stale_tmps(self.path):
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
        self.committed = False
        self.f = h5py.File(self.tmp, "w")
        with self._failing():
            self._create(n_snap, ensemble, c, hi_shape, lo_shape, with_keys, attrs)
            # reserve the whole file now: HDF5 writes its chunks later, and a full disk would
            # then surface at close as a cascade of HDF5 errors
            need = (
                4 * n_snap * c * (ensemble * hi_shape[0] * hi_shape[1] + lo_shape[0] * lo_shape[1])
            )
            fd = os.open(self.tmp, os.O_WRONLY)
            try:
                os.posix_fallocate(fd, 0, need)  # the data; HDF5 metadata adds a little
            finally:
                os.close(fd)
        self.channels = list(channels)
        self.snapshots: dict[int, int] = {}

    @contextlib.contextmanager
    def _failing(self):  # type: ignore[no-untyped-def]
        """Turn an OS/HDF5 write error into one OutputWriteError naming the file (temporary
        file closed and removed first)."""
        try:
            yield
        except (OSError, RuntimeError) as e:
            self._discard()
            raise write_failed(self.path, e, "samples") from None

    def _discard(self) -> None:
        with contextlib.suppress(Exception):
            self.f.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()

    def _create(self, n_snap, ensemble, c, hi_shape, lo_shape, with_keys, attrs) -> None:  # type: ignore[no-untyped-def]
        f = self.f
        f.create_dataset(
            H.SAMPLES, (n_snap, ensemble, c, *hi_shape), dtype="f4", chunks=(1, 1, c, *hi_shape)
        )
        f.create_dataset(H.INPUT, (n_snap, c, *lo_shape), dtype="f4", chunks=(1, c, *lo_shape))
        f.create_dataset(H.TIME, (n_snap,), dtype="f8")
        f.create_dataset(H.SNAPSHOT, (n_snap,), dtype="i8")
        f.create_dataset(H.CYCLE, (n_snap,), dtype="i8")
        if with_keys:
            f.create_dataset(H.KEY, (n_snap,), dtype=h5py.string_dtype())
        for k, v in attrs.items():
            f.attrs[k] = v
        f.attrs[H.COMPLETE] = False

    def __enter__(self) -> SimWriter:
        return self

    def write_input(
        self, t: int, lo: np.ndarray, *, time: float, snapshot: int, cycle: int, key: str | None
    ) -> None:
        """Store snapshot ``t``'s lo field ``(C, h, w)`` and its coordinates."""
        self.snapshots[t] = int(snapshot)
        with self._failing():
            self.f[H.INPUT][t] = lo
            self.f[H.TIME][t] = time
            self.f[H.SNAPSHOT][t] = snapshot
            self.f[H.CYCLE][t] = cycle
            if key is not None and H.KEY in self.f:
                self.f[H.KEY][t] = key

    def write_samples(self, t: int, m0: int, x: np.ndarray) -> None:
        """Store members ``m0 .. m0 + len(x) - 1`` of snapshot ``t``; ``x`` ``(k, C, H, W)``.

        Raises:
            NonFiniteError: ``x`` holds NaN/inf; the message names the file, the snapshot, the
                members and the count per channel. Nothing is stored, so the file never
                becomes complete (the temporary file is removed when the writer is left).
        """
        finite = np.isfinite(x)
        if not finite.all():
            per_ch = (~finite).sum(axis=(0, 2, 3))
            members = sorted({m0 + i for i in range(len(x)) if not finite[i].all()})
            where = ", ".join(f"{c}: {int(n)}" for c, n in zip(self.channels, per_ch) if n)
            raise NonFiniteError(
                f"{self.path}: the model produced non-finite values for snapshot "
                f"{self.snapshots.get(t, t)} (index {t}), member(s) {members} ({where} values); "
                "the file is not written"
            )
        with self._failing():
            self.f[H.SAMPLES][t, m0 : m0 + len(x)] = x

    def commit(self) -> None:
        """Mark complete, flush, close and rename to the final name.

        Raises:
            OutputWriteError: the file could not be written (names it; nothing is kept).
        """
        with self._failing():
            self.f.attrs[H.COMPLETE] = True
            self.f.flush()
            self.f.close()
            os.replace(self.tmp, self.path)
        self.committed = True

    def __exit__(self, *exc: object) -> None:
        if not self.committed:
            self._discard()
