"""The shard tar format's one home: member names, sample grouping, index, reads, checksums.

A shard is a plain (uncompressed) tar written by webdataset's ``TarWriter`` (docs/design.md
"Formats"). A member ``dir/s0001_n00002.hi.npy`` belongs to sample key ``dir/s0001_n00002``
with extension ``hi.npy`` (webdataset's rule: the key ends at the first dot of the base name;
extensions are lower-cased; names starting with ``__`` are not sample data). Consecutive
members sharing a key form one sample.

Every reader of shard tars goes through this module: the training stream and
:func:`mhdsr.dataset.stream.read_samples` (:func:`tar_samples`), bulk sampling inputs and the
evaluation truth (:func:`index_shard` + :func:`read_ref`: random access by byte offset), and
``mhdsr shard inspect`` (:func:`iter_members`, streaming).

Sample keys are ``s{seed:04d}_n{snapshot:05d}`` (:func:`~mhdsr.dataset.npy.sample_key`, with
the ``.npy`` encoding in :mod:`mhdsr.dataset.npy`).

Checksums: the builder records a digest of each array member's bytes in the sample's ``json``
(``"sum64": {"hi.npy": "<32 hex digits>", ...}``, :func:`checksums`, :func:`digest`). Readers
check the bytes of an array member against it before decoding (:func:`check_member`), so
corrupt bytes never reach a statistic or a gradient; the error names the shard and the sample
key. Shards built before
checksums existed still read, with one warning per shard folder (per process).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tarfile
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np

from mhdsr.dataset.npy import decode_npy
from mhdsr.dataset.npy import sample_key as sample_key  # re-exported with the format
from mhdsr.errors import ShardError

log = logging.getLogger("mhdsr.dataset.shards")

#: member extensions of a sample (docs/design.md "Formats")
HI, LO, SEQ, JSON = "hi.npy", "lo.npy", "seq.npy", "json"
#: the array members (checked against the json's checksums)
ARRAY_MEMBERS = (HI, LO, SEQ)
#: json field holding ``{array member: digest of its bytes}`` (:func:`digest`)
CHECKSUM_FIELD = "sum64"
#: 8-byte words per block of :func:`digest`
DIGEST_BLOCK = 4096

#: webdataset's split of a member name into sample key and member (extension)
_MEMBER_NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


def split_member(name: str) -> tuple[str, str] | None:
    """``"dir/s0001_n00002.hi.npy"`` -> ``("dir/s0001_n00002", "hi.npy")``; None for a name
    that is not sample data (no dot in the base name, or starting with ``__``)."""
    if name.startswith("__"):
        return None
    m = _MEMBER_NAME.match(name)
    if m is None:
        return None
    return m.group(1), m.group(2).lower()


def digest(data: bytes | memoryview) -> str:
    """Checksum of a member's bytes: 32 hex digits, two sums modulo 2^64 of its little-endian
    8-byte words ``w`` (a last partial word zero-padded) taken in blocks of
    :data:`DIGEST_BLOCK` words: ``s1 = sum(w)`` and ``s2 = sum_j (j + 1) * block_sum_j + n``
    (``j`` the block index, ``n`` the byte count).

    Integer sums are exact and order-free, so numpy computes them in one vectorized pass
    (about the cost of the loader's finite check; CRC-32 or SHA-256 cost 4-10x that, several
    percent of the loader's rate). Any change of one word, random bytes (missed with
    probability ~2^-64), a zero-filled range and swapped blocks change the digest. It guards
    against corruption, not tampering: the manifest's per-shard sha256 (``mhdsr shard inspect
    --verify``) covers every byte.
    """
    mv = memoryview(data).cast("B")
    n = len(mv)
    k = n // 8
    w = np.frombuffer(mv[: 8 * k], dtype="<u8")
    nb = k // DIGEST_BLOCK
    blocks = w[: nb * DIGEST_BLOCK].reshape(nb, DIGEST_BLOCK).sum(axis=1, dtype=np.uint64)
    tail = int(w[nb * DIGEST_BLOCK :].sum(dtype=np.uint64))
    tail += int.from_bytes(bytes(mv[8 * k :]), "little")
    weights = np.arange(1, nb + 1, dtype=np.uint64)
    s1 = (int(blocks.sum(dtype=np.uint64)) + tail) % 2**64
    s2 = (int((blocks * weights).sum(dtype=np.uint64)) + (nb + 1) * tail + n) % 2**64
    return f"{s1:016x}{s2:016x}"


def checksums(members: dict[str, Any]) -> dict[str, str]:
    """The json ``sum64`` field of a sample being written: the :func:`digest` of each array
    member."""
    return {ext: digest(members[ext]) for ext in sorted(members) if ext in ARRAY_MEMBERS}


# ----------------------------------------------------------------------------------------------
# Checksums


_UNVERIFIED: set[str] = set()


def _warn_unverified(url: str) -> None:
    folder = os.path.dirname(os.path.abspath(url))
    if folder not in _UNVERIFIED:
        _UNVERIFIED.add(folder)
        log.warning(
            "shards in %s carry no checksums (built before per-sample checksums, e.g. %s): "
            "their bytes are read unverified; rebuild them with `mhdsr shard build`",
            folder,
            os.path.basename(url),
        )


def expected_digests(meta: dict[str, Any] | None, url: str) -> dict[str, str] | None:
    """The ``sum64`` field of a sample's json record (None, with one warning per shard folder,
    for a shard built without checksums)."""
    sums = None if meta is None else meta.get(CHECKSUM_FIELD)
    if not isinstance(sums, dict):
        _warn_unverified(url)
        return None
    return sums


def check_member(
    data: bytes | memoryview, expect: str | None, url: str, key: str, ext: str
) -> None:
    """Raise unless ``data`` has the :func:`digest` ``expect`` (None: nothing to check).

    Raises:
        ShardError: a mismatch (names the shard, the sample key and the member).
    """
    if expect is None:
        return
    got = digest(data)
    if got != expect:
        raise ShardError(
            f"{url}: sample {key} member {ext} fails its checksum (sum64 {got}, recorded "
            f"{expect}): the shard is corrupt; rebuild it (`mhdsr shard build`) or "
            "check it with `mhdsr shard inspect --verify`"
        )


def check_sample(sample: dict[str, Any]) -> bool:
    """Check every array member read into a sample dict (from :func:`tar_samples`) against the
    checksums of its ``json`` member (which must have been read too).

    Returns:
        Whether the members were verified (False: a shard built without checksums).

    Raises:
        ShardError: a mismatch, or an unparsable json record.
    """
    url, key = sample.get("__url__", "?"), sample.get("__key__", "?")
    meta = None
    if JSON in sample:
        try:
            meta = json.loads(sample[JSON])
        except ValueError:
            raise ShardError(f"{url}: sample {key}: json member does not parse") from None
    sums = expected_digests(meta if isinstance(meta, dict) else None, url)
    if sums is None:
        return False
    for ext in ARRAY_MEMBERS:
        if ext in sample:
            if ext not in sums:
                raise ShardError(f"{url}: sample {key}: no checksum recorded for {ext}")
            check_member(sample[ext], sums[ext], url, key, ext)
    return True


# ----------------------------------------------------------------------------------------------
# Reading members in file order


def iter_members(
    f: BinaryIO, url: str, want: Collection[str] | None = None, *, stream: bool = False
) -> Iterator[tuple[tarfile.TarInfo, str | None, str | None, bytes | None]]:
    """Every member of a tar in file order: ``(info, key, ext, data)``.

    ``key``/``ext`` are None for a member that is not sample data (see :func:`split_member`);
    ``data`` is read only for regular sample members whose ``ext`` is in ``want`` (None = all).

    Args:
        f: the shard, opened for random access (``stream=False``: headers parsed by ``tarfile``
            in mode ``r:``, each wanted member read with one ``read`` at its offset, the others
            not read at all) or any readable stream (``stream=True``: mode ``r|``, every byte
            read once, in order).
        url: named in errors.

    Raises:
        ShardError: a member is cut short.
        tarfile.ReadError: a corrupt or truncated header.
    """
    with tarfile.open(fileobj=f, mode="r|" if stream else "r:") as tf:
        for ti in tf:
            parts = split_member(ti.name) if ti.isreg() else None
            key, ext = parts if parts is not None else (None, None)
            data = None
            if ext is not None and (want is None or ext in want):
                if stream:
                    fh = tf.extractfile(ti)
                    assert fh is not None
                    data = fh.read()
                else:
                    f.seek(ti.offset_data)
                    data = f.read(ti.size)
                if len(data) != ti.size:
                    raise ShardError(
                        f"{url}: member {ti.name} cut short ({len(data)} of {ti.size} bytes)"
                    )
            yield ti, key, ext, data


def tar_samples(
    f: BinaryIO, url: str, members: Collection[str] | None = None, *, verify: bool = True
) -> Iterator[dict[str, Any]]:
    """The samples of one tar shard, grouped like webdataset's ``tarfile_to_samples``.

    Consecutive regular members sharing a key form a sample
    ``{"__key__": key, "__url__": url, ext: bytes, ...}`` (see :func:`iter_members` for how
    members are read).

    Args:
        f: the shard opened for random access (a file or ``io.BytesIO``).
        url: named in samples and errors.
        members: member extensions to read (None = all); the others are skipped, their keys
            still form samples. With ``verify`` the ``json`` member is read too.
        verify: check the array members read against the json's checksums
            (:func:`check_sample`) before the sample is yielded.

    Raises:
        ShardError: a member is cut short, appears twice in one sample, or fails its checksum.
        tarfile.ReadError: a corrupt or truncated header.
    """
    want = None if members is None else (set(members) | ({JSON} if verify else set()))
    cur: dict[str, Any] | None = None
    for ti, key, ext, data in iter_members(f, url, want):
        if key is None:
            continue
        if cur is None or key != cur["__key__"]:
            if cur is not None:
                yield _finish(cur, members, verify)
            cur = {"__key__": key, "__url__": url}
        if ext in cur:
            raise ShardError(f"{url}: member {ti.name} appears twice in sample {key}")
        if data is not None:
            cur[ext] = data
    if cur is not None:
        yield _finish(cur, members, verify)


def _finish(
    sample: dict[str, Any], members: Collection[str] | None, verify: bool
) -> dict[str, Any]:
    if verify:
        check_sample(sample)
        if members is not None and JSON not in members:
            sample.pop(JSON, None)
    return sample


# ----------------------------------------------------------------------------------------------
# Index and random access


@dataclass(frozen=True)
class MemberRef:
    """Where one member of a sample lies: its shard, byte offset and size, and its recorded
    digest (None: not known, a shard built without checksums or an unchecked member)."""

    path: str
    key: str
    ext: str
    offset: int
    size: int
    digest: str | None = None


@dataclass
class IndexedSample:
    """One sample of a shard index: its key, members (by extension) and parsed json record
    (``{}`` without one)."""

    key: str
    members: dict[str, MemberRef] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


def index_shard(path: str) -> list[IndexedSample]:
    """The samples of one shard in file order, from its tar headers and small ``json`` members
    only (arrays are read later with :func:`read_ref`); the array members carry the json's
    checksums.

    Raises:
        ShardError: the shard cannot be read, a json member does not parse, or a member
            appears twice in a sample.
    """
    out: list[IndexedSample] = []
    try:
        with open(path, "rb") as f:
            for ti, key, ext, data in iter_members(f, path, (JSON,)):
                if key is None:
                    continue
                if not out or out[-1].key != key:
                    out.append(IndexedSample(key))
                s = out[-1]
                if ext in s.members:
                    raise ShardError(f"{path}: member {ti.name} appears twice in sample {key}")
                s.members[ext] = MemberRef(path, key, ext, ti.offset_data, ti.size)
                if ext == JSON:
                    meta = json.loads(data)
                    s.meta = meta if isinstance(meta, dict) else {}
    except ShardError:
        raise
    except (OSError, tarfile.TarError, ValueError) as e:
        raise ShardError(f"{path}: cannot index shard: {e}") from None
    for s in out:
        sums = expected_digests(s.meta, path) if JSON in s.members else None
        if sums:
            for ext, ref in s.members.items():
                if ext in sums:
                    s.members[ext] = MemberRef(
                        ref.path, ref.key, ext, ref.offset, ref.size, str(sums[ext])
                    )
    return out


def read_ref(ref: MemberRef) -> bytes:
    """The bytes of one indexed member, checked against its checksum.

    Raises:
        ShardError: unreadable, truncated, or failing its checksum (names shard and key).
    """
    try:
        with open(ref.path, "rb") as f:
            f.seek(ref.offset)
            raw = f.read(ref.size)
    except OSError as e:
        raise ShardError(f"{ref.path}: cannot read sample {ref.key}: {e}") from None
    if len(raw) != ref.size:
        raise ShardError(
            f"{ref.path}: sample {ref.key} is truncated ({len(raw)} of {ref.size} bytes)"
        )
    check_member(raw, ref.digest, ref.path, ref.key, ref.ext)
    return raw


def first_sample(path: str) -> dict[str, Any] | None:
    """The first sample of a shard with every member read (None for a tar without samples);
    streamed, so only the first sample's bytes are read."""
    cur: dict[str, Any] | None = None
    with open(path, "rb") as f:
        for _ti, key, ext, data in iter_members(f, path, stream=True):
            if key is None:
                continue
            if cur is None:
                cur = {"__key__": key, "__url__": path}
            elif key != cur["__key__"]:
                break
            cur[ext] = data
    return cur


# ----------------------------------------------------------------------------------------------
# Decoding


def read_member(
    sample: dict[str, Any],
    member: str,
    shape: Sequence[int],
    *,
    copy: bool = True,
    verified: bool = False,
) -> np.ndarray:
    """Decode and check one member of a sample dict from :func:`tar_samples` (``copy=False``:
    a read-only view of the member's bytes, see :func:`~mhdsr.dataset.npy.decode_npy`).

    ``verified``: the member passed its checksum (:func:`check_sample`), so its bytes are the
    builder's, which are finite (the AthenaK reader refuses non-finite snapshots): the finite
    check, a pass over the data, is skipped.

    Raises:
        ShardError: the member is missing, malformed (see
            :func:`~mhdsr.dataset.npy.decode_npy`) or holds NaN/inf (the builder never writes
            them: the shard is corrupt).
    """
    key, url = sample.get("__key__", "?"), sample.get("__url__")
    if member not in sample:
        raise ShardError(f"sample {key} in {url}: no {member} member")
    x = decode_npy(sample[member], key, member, tuple(shape), copy=copy)
    if not verified and not np.isfinite(x.sum()):
        raise ShardError(f"sample {key} in {url}: {member} holds NaN/inf (corrupt shard?)")
    return x
