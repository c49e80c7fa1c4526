"""Shard safety (issue 19): a stream over shards that hold no sample stops with an error instead
of hanging, corrupt bytes are caught by the per-sample checksums before they reach a statistic
or a gradient, and shards built before checksums still read (with one warning)."""

from __future__ import annotations

import io
import json
import logging
import random
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from mhdsr.dataset import shards as S
from mhdsr.dataset.normalize import Normalizer
from mhdsr.dataset.stream import ShardStream, keyed_shuffle, make_loader, read_samples
from mhdsr.errors import ShardError

SR = ("hi.npy", (2, 4, 4))
FORECAST = ("seq.npy", (3, 2, 4, 4))


def _write_shard(path: Path, member: str, shape, first: int, n: int, sums: bool = True) -> None:
    """A shard as the builder writes it: per key ``member`` then ``json`` (with ``sum64``)."""
    with tarfile.open(path, "w") as tar:
        for i in range(first, first + n):
            buf = io.BytesIO()
            np.save(buf, np.full(shape, float(i), np.float32))
            members = {member: buf.getvalue()}
            meta = {"seed": 0, "snapshot": i, "sim": "synth/seed_0000"}
            if sums:
                meta[S.CHECKSUM_FIELD] = S.checksums(members)
            members["json"] = json.dumps(meta).encode()
            for ext in sorted(members):
                info = tarfile.TarInfo(f"s{i:04d}.{ext}")
                info.size = len(members[ext])
                tar.addfile(info, io.BytesIO(members[ext]))


def _stream(urls, member, shape, micro_batch=2) -> ShardStream:
    c = shape[-3]
    norm = Normalizer(np.zeros(c, np.float32), np.ones(c, np.float32))
    return ShardStream(urls, member, shape, list(range(c)), norm, micro_batch,
                       seed=0, rank=0, segment=0, shuffle_buffer=4)  # fmt: skip


def test_keyed_shuffle_gives_webdataset_order() -> None:
    from webdataset.filters import _shuffle  # the reference only: src never imports it

    for bufsize, initial, n in [(4, 4, 50), (1, 1, 7), (32, 4, 100), (8, 2, 3)]:
        want = list(_shuffle(iter(range(n)), bufsize, initial, random.Random(7)))
        got = list(keyed_shuffle(iter(range(n)), bufsize, initial, random.Random(7)))
        assert got == want


# ------------------------------------------------------------------------------ empty shards


@pytest.fixture
def empty_urls(tmp_path: Path) -> list[str]:
    """A valid tar without members, a zero-filled file (a crash), a tar of non-sample members."""
    urls = [str(tmp_path / f"train-{k:06d}.tar") for k in range(3)]
    with tarfile.open(urls[0], "w"):
        pass
    Path(urls[1]).write_bytes(b"\0" * 20480)
    with tarfile.open(urls[2], "w") as tar:
        info = tarfile.TarInfo("__meta__")
        tar.addfile(info, io.BytesIO(b""))
    return urls


@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.parametrize(("member", "shape"), [SR, FORECAST], ids=["sr", "forecast"])
def test_empty_shards_stop_with_an_error_naming_split_and_shards(
    empty_urls, member, shape, workers
) -> None:
    batches = make_loader(_stream(empty_urls, member, shape), workers, 2, pin_memory=False)
    it = batches.segment(0)
    t0 = time.monotonic()
    try:
        with pytest.raises(ShardError) as e:
            next(it)
    finally:
        it.shutdown()
    assert time.monotonic() - t0 < 30
    msg = str(e.value)
    assert "split 'train'" in msg and "no readable sample" in msg, msg
    assert all(Path(u).name in msg for u in empty_urls), msg
    assert "Traceback" not in msg  # the worker's error, re-raised with its own message


def test_a_stream_with_one_good_shard_among_empty_ones_runs(tmp_path, empty_urls) -> None:
    good = tmp_path / "train-000009.tar"
    _write_shard(good, *SR, 0, 3)
    it = iter(_stream([*empty_urls, str(good)], *SR))
    keys = [k for _ in range(10) for k in next(it)["keys"]]
    assert set(keys) == {"s0000", "s0001", "s0002"}


# ------------------------------------------------------------------------------ checksums


def _corrupt(path: Path, key: str, member: str, n: int = 8) -> None:
    """Overwrite ``n`` bytes in the data of one member (same size)."""
    with tarfile.open(path) as tar:
        ti = tar.getmember(f"{key}.{member}")
    raw = bytearray(path.read_bytes())
    at = ti.offset_data + ti.size - 2 * n  # inside the array data, past the npy header
    raw[at : at + n] = bytes((b + 1) % 256 for b in raw[at : at + n])
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(("member", "shape"), [SR, FORECAST], ids=["sr", "forecast"])
def test_corrupt_bytes_are_caught_naming_shard_and_key(tmp_path, caplog, member, shape) -> None:
    urls = [tmp_path / "train-000000.tar", tmp_path / "train-000001.tar"]
    _write_shard(urls[0], member, shape, 0, 3)
    _write_shard(urls[1], member, shape, 3, 3)
    _corrupt(urls[0], "s0001", member)

    # first-n reads (the residual scale, validation): an error naming shard and key
    with pytest.raises(ShardError, match=r"train-000000\.tar.*s0001.*checksum"):
        read_samples([str(u) for u in urls], 6, member, shape)
    with caplog.at_level(logging.WARNING, logger="mhdsr.dataset"):
        keys, _, _ = read_samples([str(u) for u in urls], 6, member, shape, skip_unreadable=True)
    assert keys == ["s0000", "s0002", "s0003", "s0004", "s0005"]  # the corrupt one alone skipped
    assert any("train-000000.tar" in r.getMessage() and "s0001" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    caplog.clear()

    # the training stream: the sample is skipped with a warning naming shard and key
    with caplog.at_level(logging.WARNING, logger="mhdsr.dataset"):
        it = iter(_stream([str(u) for u in urls], member, shape, micro_batch=1))
        seen = {next(it)["keys"][0] for _ in range(40)}
    assert "s0001" not in seen and {"s0000", "s0002", "s0003"} <= seen
    warned = [r.getMessage() for r in caplog.records if "checksum" in r.getMessage()]
    assert warned and all("train-000000.tar" in m and "s0001" in m for m in warned)

    # random access by offset (bulk sampling inputs, evaluation truth)
    (smp,) = [s for s in S.index_shard(str(urls[0])) if s.key == "s0001"]
    assert smp.members[member].digest is not None
    with pytest.raises(ShardError, match=r"train-000000\.tar: sample s0001 member .* checksum"):
        S.read_ref(smp.members[member])
    ok = [s for s in S.index_shard(str(urls[0])) if s.key == "s0002"][0]
    assert len(S.read_ref(ok.members[member])) == ok.members[member].size


def test_shards_without_checksums_read_with_one_warning(tmp_path, caplog) -> None:
    urls = [tmp_path / "train-000000.tar", tmp_path / "train-000001.tar"]
    _write_shard(urls[0], *SR, 0, 3, sums=False)
    _write_shard(urls[1], *SR, 3, 3, sums=False)
    with caplog.at_level(logging.WARNING, logger="mhdsr.dataset"):
        keys, arrays, _ = read_samples([str(u) for u in urls], 6, *SR)
        it = iter(_stream([str(u) for u in urls], *SR))
        [next(it) for _ in range(3)]
        index = S.index_shard(str(urls[1]))
    assert keys == [f"s{i:04d}" for i in range(6)]
    assert [float(a[0, 0, 0]) for a in arrays] == [0, 1, 2, 3, 4, 5]
    assert all(r.digest is None for s in index for r in s.members.values())
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "no checksums" in warned[0] and str(tmp_path) in warned[0]


def test_the_builder_records_checksums(demo_shards) -> None:
    """Every array member of a built shard carries its digest in the json, and it matches."""
    path = sorted(demo_shards.glob("train-*.tar"))[0]
    with open(path, "rb") as f:
        samples = list(S.tar_samples(f, str(path)))
    assert samples
    for s in samples:
        recorded = json.loads(s["json"])[S.CHECKSUM_FIELD]
        assert recorded == {"hi.npy": S.digest(s["hi.npy"])}
