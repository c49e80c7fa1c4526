"""One AthenaK ``.bin`` file: header, embedded deck, meshblock records (zero-copy views).

Format (AthenaK ``src/outputs/binary.cpp``; verified on real files, see data/athenak/README.md):

1. ASCII lines: ``Athena binary output version=1.1``; ``size of preheader=P``; P ``key=value``
   lines (``time``, ``cycle``, ``size of location``, ``size of variable``, ``number of
   variables``); ``variables:  v1  v2 ...``; ``header offset=L`` where L is the LENGTH of the
   embedded deck text that follows (not an offset).
2. L bytes of deck text (``PAR_DUMP``).
3. Fixed-size meshblock records until end of file: 10 int32 ``ois oie ojs oje oks oke lx1 lx2
   lx3 level``; 6 floats of ``size of location`` bytes ``x1min x1max x2min x2max x3min x3max``;
   ``nvar`` arrays of ``n3*n2*n1`` floats of ``size of variable`` bytes, C order ``[n3][n2][n1]``
   (x1 fastest). Native byte order; detected here from the plausibility of the first record.

:func:`read_bin` reads the whole file with one ``readinto`` and exposes the records through a
numpy structured dtype over that buffer: no per-cell Python, no copy until assembly.
"""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mhdsr.athenak.deck import Deck, parse_deck
from mhdsr.errors import AthenaKFormatError

MAGIC = b"Athena binary output version="
_HEADER_SCAN = 1 << 12  # the fixed header lines fit in the first 4 KiB


@dataclass(frozen=True)
class BinHeader:
    """Parsed header of one ``.bin`` file.

    Attributes:
        path: the file.
        version: format version string, e.g. ``"1.1"``.
        time: simulation time of the snapshot (code units; orbit = 2 pi / omega0).
        cycle: integration cycle number.
        location_size: bytes per coordinate value (8 = float64 build, 4 = float32 build).
        variable_size: bytes per data value (4 = float32, 8 = float64).
        variables: variable names in record order.
        deck_span: ``(start, end)`` byte offsets of the embedded deck text.
        data_offset: byte offset of the first meshblock record.
        deck_text: the embedded input deck (``PAR_DUMP``) text (decoded on first access).
    """

    path: Path
    version: str
    time: float
    cycle: int
    location_size: int
    variable_size: int
    variables: tuple[str, ...]
    deck_span: tuple[int, int]
    data_offset: int
    _deck_bytes: bytes = field(repr=False, compare=False)

    @property
    def deck_text(self) -> str:
        return self._deck_bytes.decode("ascii", errors="replace")


def _fail(path: Path | str, msg: str) -> AthenaKFormatError:
    return AthenaKFormatError(f"{path}: {msg}")


#: what :func:`check_regular` calls each kind of non-regular file
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def check_regular(path: Path | str) -> int:
    """Size in bytes of ``path`` if it is a regular file (links followed), checked with
    ``os.stat`` BEFORE any open: opening a FIFO named like a snapshot would block for ever.

    Raises:
        AthenaKFormatError: missing, unreadable, or not a regular file (names the file).
    """
    try:
        st = os.stat(path)
    except OSError as e:
        raise AthenaKFormatError(f"{path}: cannot read: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        raise _fail(path, f"is {kind}, expected a regular AthenaK .bin file")
    return st.st_size


def parse_header(buf: bytes | memoryview | np.ndarray, path: Path | str) -> BinHeader:
    """Parse the ASCII header and deck of a ``.bin`` file from its first bytes.

    Args:
        buf: the file's bytes (at least the header and the deck).
        path: file path, used in error messages.

    Raises:
        AthenaKFormatError: not an AthenaK binary, garbled or truncated header.
    """
    path = path if isinstance(path, Path) else Path(path)
    mv = memoryview(buf).cast("B") if not isinstance(buf, bytes) else memoryview(buf)
    head = bytes(mv[:_HEADER_SCAN])
    if not head.startswith(MAGIC):
        raise _fail(path, f"not an AthenaK binary output (expected it to start with {MAGIC!r})")
    k = head.find(b"header offset=")
    end = head.find(b"\n", k) if k >= 0 else -1
    if end < 0:
        raise _fail(path, "truncated or garbled header (no complete 'header offset=' line)")
    try:
        lines = head[:end].decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise _fail(path, "garbled header: non-ASCII bytes") from None
    pos = end + 1
    # lines: version, 'size of preheader=P', P key=value lines, 'variables: ...', 'header offset=L'
    version = lines[0][len(MAGIC) :].strip()
    try:
        kv = [line.partition("=") for line in lines[1:]]
        if kv[0][0].strip() != "size of preheader":
            raise _fail(path, f"garbled header: expected 'size of preheader=...', got {lines[1]!r}")
        npre = int(kv[0][2])
        if len(lines) != npre + 4:
            raise _fail(
                path,
                f"garbled header: 'size of preheader={npre}' but {len(lines) - 4} preheader lines found",
            )
        pre = {k.strip(): v.strip() for k, sep, v in kv[1 : 1 + npre] if sep}
        var_line = lines[npre + 2].strip()
        if not var_line.startswith("variables:"):
            raise _fail(path, f"garbled header: expected 'variables:' line, got {var_line!r}")
        variables = tuple(var_line[len("variables:") :].split())
        deck_len = int(kv[-1][2])
        time = float(pre["time"])
        cycle = int(pre["cycle"])
        loc_size = int(pre["size of location"])
        var_size = int(pre["size of variable"])
        nvar = int(pre["number of variables"])
    except KeyError as e:
        raise _fail(path, f"garbled header: preheader lacks {e.args[0]!r}") from None
    except ValueError as e:
        if isinstance(e, AthenaKFormatError):
            raise
        raise _fail(path, f"garbled header: {e}") from None
    if nvar != len(variables):
        raise _fail(
            path,
            f"variable count mismatch: 'number of variables={nvar}' but the variables line "
            f"names {len(variables)}: {list(variables)}",
        )
    if loc_size not in (4, 8):
        raise _fail(path, f"unsupported 'size of location={loc_size}' (expected 4 or 8)")
    if var_size not in (4, 8):
        raise _fail(path, f"unsupported 'size of variable={var_size}' (expected 4 or 8)")
    if deck_len < 0:
        raise _fail(path, f"negative deck length 'header offset={deck_len}'")
    if pos + deck_len > mv.nbytes:
        raise _fail(path, f"truncated: deck of {deck_len} bytes runs past the end of the file")
    return BinHeader(
        path=path,
        version=version,
        time=time,
        cycle=cycle,
        location_size=loc_size,
        variable_size=var_size,
        variables=variables,
        deck_span=(pos, pos + deck_len),
        data_offset=pos + deck_len,
        _deck_bytes=bytes(mv[pos : pos + deck_len]),
    )


def read_header(path: Path | str) -> BinHeader:
    """Parse the header and deck of a ``.bin`` file reading only those bytes (no records).

    Raises:
        AthenaKFormatError: unreadable file, not an AthenaK binary, garbled or truncated
            header (e.g. an empty file); the message names the file.
    """
    path = path if isinstance(path, Path) else Path(path)
    check_regular(path)
    try:
        with open(path, "rb") as f:
            head = f.read(_HEADER_SCAN)
            k = head.find(b"header offset=")
            end = head.find(b"\n", k) if k >= 0 else -1
            if end > 0:
                try:
                    deck_len = int(head[k + len(b"header offset=") : end])
                except ValueError:
                    deck_len = 0
                if end + 1 + deck_len > len(head):
                    head += f.read(end + 1 + deck_len - len(head))
    except OSError as e:
        raise AthenaKFormatError(f"{path}: cannot read: {e.strerror or e}") from None
    return parse_header(head, path)


def record_dtype(
    nvar: int, n: tuple[int, int, int], loc_size: int, var_size: int, order: str
) -> np.dtype:
    """numpy structured dtype of one meshblock record.

    Args:
        nvar: number of variables.
        n: ``(n1, n2, n3)`` cells written per block.
        loc_size: bytes per coordinate (4 or 8).
        var_size: bytes per value (4 or 8).
        order: ``"<"`` (little-endian) or ``">"``.
    """
    n1, n2, n3 = n
    return np.dtype(
        [
            ("index", f"{order}i4", (6,)),
            ("loc", f"{order}i4", (3,)),
            ("level", f"{order}i4"),
            ("bounds", f"{order}f{loc_size}", (6,)),
            ("data", f"{order}f{var_size}", (nvar, n3, n2, n1)),
        ]
    )


def _plausible(ints: np.ndarray) -> bool:
    ois, oie, ojs, oje, oks, oke, lx1, lx2, lx3, level = (int(v) for v in ints)
    spans = (oie - ois, oje - ojs, oke - oks)
    return (
        min(ois, ojs, oks) >= 0
        and all(0 <= s < (1 << 16) for s in spans)
        and min(lx1, lx2, lx3) >= 0
        and max(lx1, lx2, lx3) < (1 << 24)
        and 0 <= level < 64
    )


@dataclass
class BinFile:
    """A parsed ``.bin`` file. ``records`` is a structured view over the file's bytes.

    Attributes:
        header: the parsed header.
        records: structured array (nblocks,) with fields ``index`` (6,) int32, ``loc`` (3,)
            int32 (lx1, lx2, lx3), ``level`` int32, ``bounds`` (6,) float, ``data``
            (nvar, n3, n2, n1) float.
        block_shape: cells per block ``(n1, n2, n3)``.
        byte_order: ``"<"`` or ``">"``.
    """

    header: BinHeader
    records: np.ndarray
    block_shape: tuple[int, int, int]
    byte_order: str
    _buf: np.ndarray = field(repr=False)

    @property
    def path(self) -> Path:
        return self.header.path

    @property
    def nblocks(self) -> int:
        return len(self.records)

    @property
    def locs(self) -> np.ndarray:
        """(nblocks, 3) int64 logical locations (lx1, lx2, lx3)."""
        return self.records["loc"].astype(np.int64)

    @property
    def data(self) -> np.ndarray:
        """(nblocks, nvar, n3, n2, n1) view of the values (file dtype and byte order)."""
        return self.records["data"]

    @functools.cached_property
    def deck(self) -> Deck:
        """The embedded input deck, parsed (done on first access only)."""
        try:
            return parse_deck(self.header.deck_text)
        except ValueError as e:
            raise _fail(self.path, f"embedded input deck: {e}") from None


def read_bytes(
    path: Path | str, scratch: np.ndarray | None | Callable[[int], np.ndarray] = None
) -> np.ndarray:
    """The whole file as a uint8 array, read with ``readinto`` (one copy from the page cache).

    Args:
        path: the file.
        scratch: optional reusable uint8 buffer (or a function ``size -> buffer``); when large
            enough the bytes land in its first ``size`` bytes (returned as a view), which avoids
            page-faulting a fresh allocation per file. The caller must not keep views of a
            previous read.

    Raises:
        AthenaKFormatError: the file cannot be opened or read, or is not a regular file.
    """
    check_regular(path)
    try:
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            if callable(scratch):
                scratch = scratch(size)
            if scratch is not None and scratch.nbytes >= size:
                buf = scratch[:size]
            else:
                buf = np.empty(size, dtype=np.uint8)
            view = memoryview(buf)
            got = 0
            while got < size:
                n = f.readinto(view[got:])
                if not n:
                    break
                got += n
    except OSError as e:
        raise AthenaKFormatError(f"{path}: cannot read: {e.strerror or e}") from None
    if got != size:
        raise _fail(path, f"file shrank while reading ({got} of {size} bytes)")
    return buf


def read_bin(path: Path | str, buf: np.ndarray | None = None) -> BinFile:
    """Read one ``.bin`` file.

    Args:
        path: the file.
        buf: its bytes, if already read (:func:`read_bytes`); the result's records view them.

    Returns:
        A :class:`BinFile` whose ``records`` view the file's bytes.

    Raises:
        AthenaKFormatError: unreadable, truncated or garbled file, implausible records, a data
            section that is not a whole number of records, blocks of differing sizes, or mesh
            refinement levels other than 0 (unsupported). The message names the file.
    """
    path = path if isinstance(path, Path) else Path(path)
    if buf is None:
        buf = read_bytes(path)
    hdr = parse_header(buf, path)
    nbytes = buf.nbytes - hdr.data_offset
    if nbytes <= 0:
        raise _fail(path, "truncated: no meshblock records after the header")
    if nbytes < 40:
        raise _fail(path, f"truncated: {nbytes} bytes of meshblock data, less than one record")
    first = np.frombuffer(buf, dtype=np.uint8, count=40, offset=hdr.data_offset)
    order = ""
    for cand in ("<", ">"):
        if _plausible(first.view(f"{cand}i4")):
            order = cand
            break
    if not order:
        raise _fail(
            path,
            f"garbled first meshblock record: index/location ints {first.view('<i4').tolist()}",
        )
    ints = first.view(f"{order}i4")
    n = (int(ints[1] - ints[0] + 1), int(ints[3] - ints[2] + 1), int(ints[5] - ints[4] + 1))
    # checked before building the record dtype (numpy refuses records over 2 GiB with a bare
    # ValueError): one record of these cells must fit in the bytes the file holds
    one = 40 + 6 * hdr.location_size + len(hdr.variables) * n[0] * n[1] * n[2] * hdr.variable_size
    if one > nbytes:
        raise _fail(
            path,
            f"first meshblock record claims {n[0]}x{n[1]}x{n[2]} cells (index ranges "
            f"{ints[:6].tolist()}), {one} bytes with {len(hdr.variables)} variables, but the file "
            f"holds only {nbytes} bytes of meshblock data: garbled block indices or a truncated file",
        )
    dt = record_dtype(len(hdr.variables), n, hdr.location_size, hdr.variable_size, order)
    if nbytes % dt.itemsize:
        raise _fail(
            path,
            f"truncated or size mismatch: {nbytes} bytes of meshblock data is not a whole number "
            f"of {dt.itemsize}-byte records ({len(hdr.variables)} variables x {n[0]}x{n[1]}x{n[2]} "
            f"cells x {hdr.variable_size} bytes + 88-byte block header)",
        )
    recs = np.frombuffer(buf, dtype=dt, offset=hdr.data_offset)
    idx = recs["index"]
    if not (idx == idx[0]).all():
        raise _fail(
            path,
            "meshblocks of different index ranges in one file (mesh refinement?) are not supported",
        )
    lev = recs["level"]
    if (lev != 0).any():
        raise _fail(
            path,
            f"mesh refinement levels {sorted(set(lev.tolist()))} found: only uniform grids (level 0) are supported",
        )
    return BinFile(header=hdr, records=recs, block_shape=n, byte_order=order, _buf=buf)
