"""read_samples: deterministic first-n reads, and the corrupt-shard policy of the train stream."""

from __future__ import annotations

import io
import logging
import tarfile
from pathlib import Path

import numpy as np
import pytest

from mhdsr.dataset.stream import read_samples
from mhdsr.errors import ShardError


def _shard(path: Path, first: int, n: int) -> None:
    with tarfile.open(path, "w") as tar:
        for i in range(first, first + n):
            buf = io.BytesIO()
            np.save(buf, np.full((2, 4, 4), float(i), np.float32))
            data = buf.getvalue()
            info = tarfile.TarInfo(f"s{i:04d}.hi.npy")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_read_samples_skips_a_truncated_shard_only_when_asked(tmp_path, caplog):
    urls = [str(tmp_path / f"train-{k}.tar") for k in range(3)]
    for k, u in enumerate(urls):
        _shard(Path(u), 10 * k, 3)
    good = read_samples(urls, 7, "hi.npy", (2, 4, 4))
    assert good[0] == ["s0000", "s0001", "s0002", "s0010", "s0011", "s0012", "s0020"]
    assert [float(a[0, 0, 0]) for a in good[1]] == [0, 1, 2, 10, 11, 12, 20]

    bad = Path(urls[1])
    bad.write_bytes(bad.read_bytes()[:700])  # the second shard cut inside its first member
    with pytest.raises(ShardError, match="train-1.tar"):
        read_samples(urls, 7, "hi.npy", (2, 4, 4))
    with caplog.at_level(logging.WARNING, logger="mhdsr.dataset"):
        keys, arrays, _ = read_samples(urls, 7, "hi.npy", (2, 4, 4), skip_unreadable=True)
    assert keys == ["s0000", "s0001", "s0002", "s0020", "s0021", "s0022"]
    assert [float(a[0, 0, 0]) for a in arrays] == [0, 1, 2, 20, 21, 22]
    assert any("train-1.tar" in r.getMessage() for r in caplog.records)

    for u in urls:
        Path(u).write_bytes(b"\0" * 10)
    with pytest.raises(ShardError, match="no readable sample"):
        read_samples(urls, 7, "hi.npy", (2, 4, 4), skip_unreadable=True)
