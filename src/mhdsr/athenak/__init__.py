"""Strict, fast reader of AthenaK binary (``.bin``) output, and the ``mhdsr athenak`` command.

* :mod:`~mhdsr.athenak.binfile`: one file (header, deck, meshblock records as numpy views);
* :mod:`~mhdsr.athenak.deck`: the embedded input deck and parameter spellings;
* :mod:`~mhdsr.athenak.run`: a run folder (single-file or per-rank layout) -> snapshots
  ``(C, ny, nx)`` float32 in canonical channel order;
* :mod:`~mhdsr.athenak.convert`: ``to-npy`` conversion with exact block-average resampling;
* :mod:`~mhdsr.athenak.history`: the history file (``.mhd.hst`` energies);
* :mod:`~mhdsr.athenak.cli`: ``mhdsr athenak {info,to-npy}``.
"""

from mhdsr.athenak.binfile import BinFile, BinHeader, read_bin
from mhdsr.athenak.deck import parse_deck, sim_params
from mhdsr.athenak.run import AthenaKRun, Snapshot, canonical_channel, open_run

__all__ = [
    "AthenaKRun",
    "BinFile",
    "BinHeader",
    "Snapshot",
    "canonical_channel",
    "open_run",
    "parse_deck",
    "read_bin",
    "sim_params",
]
