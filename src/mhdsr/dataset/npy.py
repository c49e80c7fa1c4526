"""The shard sample format: keys and ``.npy`` members (docs/design.md, "Formats").

A sample is a run of consecutive tar members sharing a key ``s{seed:04d}_n{snapshot:05d}``:
``hi.npy`` (C, H, W) float32, ``lo.npy`` (C, h, w) for native lo samples, ``seq.npy``
(K, C, h, w) for forecast windows, and a ``json`` record. Arrays are little-endian,
C-contiguous float32 ``.npy`` (format 1.0, no pickles). This module is the one place that
encodes and decodes them: the shard builder writes with :func:`encode_npy`, every reader
(training streams, sampling inputs, evaluation truth) decodes with :func:`decode_npy`.
"""

from __future__ import annotations

import io

import numpy as np

from mhdsr.errors import ShardError


def sample_key(seed: int, snapshot: int) -> str:
    """webdataset key of a sample, ``s{seed:04d}_n{snapshot:05d}`` (no dots: a dot splits keys)."""
    return f"s{seed:04d}_n{snapshot:05d}"


def encode_npy(x: np.ndarray) -> bytes:
    """``.npy`` bytes of ``x`` as little-endian C-contiguous float32.

    Args:
        x: float32 array of either byte order and any memory layout (views, slices, Fortran
            order); values are preserved exactly.

    Returns:
        The bytes ``np.save`` writes for ``np.ascontiguousarray(x, dtype='<f4')``.

    Raises:
        ValueError: ``x`` is not float32 (casting would change values).
    """
    if x.dtype.kind != "f" or x.dtype.itemsize != 4:
        raise ValueError(f"expected a float32 array (any byte order), got {x.dtype}")
    a = np.ascontiguousarray(x, dtype="<f4")
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        head, {"descr": "<f4", "fortran_order": False, "shape": a.shape}
    )
    # one copy of the data (np.save into a BytesIO makes three)
    return b"".join((head.getvalue(), memoryview(a).cast("B")))


def decode_npy(
    raw: bytes,
    key: str,
    member: str,
    expected: tuple[int, ...] | None = None,
    *,
    copy: bool = True,
) -> np.ndarray:
    """Decode an ``.npy`` member (no pickles) and check dtype and shape.

    The header is parsed with numpy's own reader (``np.lib.format``, format versions 1.0 and
    2.0) and the data viewed in place (``np.frombuffer``), so decoding costs at most one copy.

    Args:
        raw: the member's bytes.
        key, member: named in errors.
        expected: the required shape (None = any).
        copy: return a writable copy (default); False returns a read-only view of ``raw``
            (no copy: the training stream, which normalizes it into the batch buffer).

    Returns:
        The array as native float32.

    Raises:
        ShardError: not an npy, not float32, or not of the expected shape (names key and member).
    """
    try:
        f = io.BytesIO(raw)
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"npy format version {version} (expected 1.0 or 2.0)")
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(f)
        if dtype.hasobject:
            raise ValueError("object arrays (pickles) are not allowed")
        count = int(np.prod(shape, dtype=np.int64))
        if f.tell() + count * dtype.itemsize > len(raw):
            raise ValueError(f"{len(raw) - f.tell()} data bytes for shape {shape} of {dtype}")
        arr = np.frombuffer(raw, dtype=dtype, count=count, offset=f.tell())
        arr = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
    except Exception as e:
        raise ShardError(f"sample {key}: member {member} is not a valid .npy ({e})") from None
    if arr.dtype.kind != "f" or arr.dtype.itemsize != 4:
        raise ShardError(f"sample {key}: member {member} has dtype {arr.dtype}, expected float32")
    if expected is not None and tuple(arr.shape) != tuple(expected):
        raise ShardError(
            f"sample {key}: member {member} has shape {arr.shape}, expected {expected}"
        )
    if not arr.dtype.isnative:
        return arr.astype(np.float32)  # other byte order: converted (a copy)
    return np.array(arr, dtype=np.float32) if copy else arr
