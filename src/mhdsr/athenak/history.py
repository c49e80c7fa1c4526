"""AthenaK's history file (``<basename>.mhd.hst``): volume integrals written every history step.

The file (AthenaK ``src/outputs/history.cpp``) starts with ``# Athena++ history data`` and a
header line naming the columns, ``#  [1]=time [2]=dt [3]=mass [4]=1-mom ... [7]=1-KE ...
[10]=1-ME ...``, then one row of numbers per output. For MHD the energies are volume integrals
over the box (volume 1 in the MRI runs, so also means):

    i-KE = integral of 0.5 * m_i^2 / rho          (conserved momenta)
    i-ME = integral of 0.25 * (B_i,face(-)^2 + B_i,face(+)^2)   (the two faces along axis i)

so the history's magnetic energy is the mean of the squared FACE fields, while the cell-centred
``bcc`` of the ``.bin`` output is the mean of the two faces: ``0.5 * bcc_i^2`` is smaller by
``(B_face(+) - B_face(-))^2 / 8`` per cell, a truncation-level difference that grows with
small-scale structure (docs/design.md "Forecast stage", the energy cross-check).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from mhdsr.errors import AthenaKFormatError

COLUMN_RE = re.compile(r"\[(\d+)\]=(\S+)")


def read_history(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a history file by name (``time``, ``dt``, ``mass``, ``1-KE``, ...), float64.

    Rows whose time does not increase (a restart appends from an earlier time) keep the last
    value written for each time.

    Raises:
        AthenaKFormatError: missing file, no ``[n]=name`` header, or rows of the wrong length.
    """
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
    except OSError as e:
        raise AthenaKFormatError(f"{p}: cannot read the history file ({e.strerror or e})") from None
    names: list[str] = []
    rows = []
    for ln in lines:
        if ln.startswith("#"):
            found = COLUMN_RE.findall(ln)
            if found:
                names = [n for _, n in sorted(found, key=lambda x: int(x[0]))]
            continue
        if ln.strip():
            rows.append(ln.split())
    if not names:
        raise AthenaKFormatError(f"{p}: no '[1]=time ...' header line: not an AthenaK history file")
    bad = [i for i, r in enumerate(rows) if len(r) != len(names)]
    if bad:
        raise AthenaKFormatError(
            f"{p}: row {bad[0] + 1} of the data has {len(rows[bad[0]])} values, the header names "
            f"{len(names)} columns"
        )
    data = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(names))
    # keep the last row written for each time (restarts), sorted by time
    _, last = np.unique(data[::-1, 0], return_index=True)
    data = data[::-1][last]
    return {n: data[:, i] for i, n in enumerate(names)}


def energies_at(history: dict[str, np.ndarray], times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kinetic and magnetic energy of the history (sums of the three components), linearly
    interpolated to ``times``.

    Raises:
        AthenaKFormatError: the history lacks a KE/ME column or does not cover ``times``.
    """
    t = history["time"]
    need = [f"{i}-{k}" for k in ("KE", "ME") for i in (1, 2, 3)]
    missing = [n for n in need if n not in history]
    if missing:
        raise AthenaKFormatError(f"history file lacks column(s) {missing} (an MHD run writes them)")
    times = np.asarray(times, dtype=np.float64)
    if times.size and (times.min() < t[0] - 1e-12 or times.max() > t[-1] + 1e-12):
        raise AthenaKFormatError(
            f"history covers t = {t[0]} .. {t[-1]}, not {times.min()} .. {times.max()}"
        )
    ke = sum(history[f"{i}-KE"] for i in (1, 2, 3))
    me = sum(history[f"{i}-ME"] for i in (1, 2, 3))
    return np.interp(times, t, ke), np.interp(times, t, me)
