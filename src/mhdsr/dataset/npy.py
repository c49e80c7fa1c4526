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
    raw: bytes, key: str, member: str, expected: tuple[int, ...] | None = None
) -> np.ndarray:
    """Decode an ``.npy`` member (no pickles) and check dtype and shape.

    Returns:
        The array as native float32.

    Raises:
        ShardError: not an npy, not float32, or not of the expected shape (names key and member).
    """
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception as e:
        raise ShardError(f"sample {key}: member {member} is not a valid .npy ({e})") from None
    if arr.dtype.kind != "f" or arr.dtype.itemsize != 4:
        raise ShardError(f"sample {key}: member {member} has dtype {arr.dtype}, expected float32")
    if expected is not None and tuple(arr.shape) != tuple(expected):
        raise ShardError(
            f"sample {key}: member {member} has shape {arr.shape}, expected {expected}"
        )
    return arr.astype(np.float32, copy=False)
