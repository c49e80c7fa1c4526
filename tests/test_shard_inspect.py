"""``mhdsr shard inspect [--verify] [--json]``: summary, and detection of broken shards."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from mhdsr.cli import main
from mhdsr.io_utils import sha256_file
from mhdsr.shard_builder.build import build
from mhdsr.shard_builder.inspect import verify
from shard_helpers import HI, LO, load, read_tar, write_config


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("shard_inspect")
    cfg = write_config(
        tmp / "c.yaml",
        hi_runs=[str(HI / "seed_0002"), str(HI / "seed_0003")],
        lo_runs=[str(LO / "seed_0003")],
        output_dir=str(tmp / "out"),
        split={"seeds": {"train": [2], "test": [3]}},
        window={"orbit_end": 6.0},  # 128^2 seed 3: files 6-12 (7 held-out samples)
        shard={"max_samples": 2},
        workers=1,
    )
    build(load(cfg), log=lambda m: None)
    return tmp / "out"


def _copy(built: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(built, out)
    return out


def _rewrite(out: Path, shard: str, members: list[tuple[str, bytes]]) -> None:
    """Replace a shard's members and fix its manifest record (so only the content is wrong)."""
    path = out / shard
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    m = json.loads((out / "manifest.json").read_text())
    for s in m["splits"].values():
        for sh in s["shards"]:
            if sh["name"] == shard:
                sh["bytes"], sh["sha256"] = path.stat().st_size, sha256_file(path)
    (out / "manifest.json").write_text(json.dumps(m))


def _members(out: Path, shard: str) -> list[tuple[str, bytes]]:
    return [(f"{k}.{e}", d) for k, e, d in read_tar(out / shard)]


def test_verify_passes_and_summary_reports_splits(built: Path, capsys) -> None:
    assert main(["shard", "inspect", str(built), "--verify", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["verify"] == {"ok": True, "problems": [], "shards_checked": 8, "samples_checked": 13}
    sp = rep["splits"]
    assert {k: (v["samples"], v["shards"], v["seeds"]) for k, v in sp.items()} == {
        "train": (3, 2, [2]),
        "val": (0, 0, []),
        "test": (3, 2, [3]),
        "heldout": (7, 4, [3]),
    }
    assert sp["train"]["bytes"] == sum(p.stat().st_size for p in built.glob("train-*.tar"))
    assert rep["sample"]["members"]["hi.npy"] == {"dtype": "<f4", "shape": [8, 256, 256]}
    assert rep["sample"]["members"]["json"]["source"] == "hi"
    assert set(rep["stats"]["hi"]) == {"density", "velx", "vely", "velz", "Bx", "By", "Bz", "jz"}
    assert main(["shard", "inspect", str(built)]) == 0
    text = capsys.readouterr().out
    assert "heldout  native_lo" in text and "hi.npy  <f4 (8, 256, 256)" in text
    assert "stats of the train split, lo" in text


def test_non_adjacent_members_are_reported(built: Path, tmp_path: Path, capsys) -> None:
    out = _copy(built, tmp_path)
    mem = _members(out, "train-000000.tar")  # a.hi.npy a.json b.hi.npy b.json
    assert len(mem) == 4
    _rewrite(out, "train-000000.tar", [mem[0], mem[2], mem[1], mem[3]])
    key = mem[0][0].split(".")[0]
    rep = verify(out)
    assert not rep["ok"]
    assert f"members of key {key} not adjacent in shard train-000000.tar" in rep["problems"]
    assert main(["shard", "inspect", str(out), "--verify"]) == 1
    assert "not adjacent" in capsys.readouterr().out


def test_wrong_dtype_shape_and_missing_members_are_reported(built: Path, tmp_path: Path) -> None:
    out = _copy(built, tmp_path)
    mem = _members(out, "train-000000.tar")
    (ka, _), (kb, _) = mem[0], mem[2]
    big = io.BytesIO()
    np.save(big, np.load(io.BytesIO(mem[0][1])).astype(">f4"))
    _rewrite(out, "train-000000.tar", [(ka, big.getvalue()), mem[1], mem[3]])  # b lacks hi.npy
    hmem = _members(out, "heldout-000000.tar")
    small = io.BytesIO()
    np.save(small, np.zeros((8, 64, 64), np.float32))
    (kh, _) = hmem[0]
    hmem = [
        (n, small.getvalue()) if n.endswith("lo.npy") and n.startswith(kh.split(".")[0]) else (n, d)
        for n, d in hmem
    ]
    _rewrite(out, "heldout-000000.tar", hmem)
    probs = verify(out)["problems"]
    a, b, h = ka.split(".")[0], kb.split(".")[0], kh.split(".")[0]
    assert sorted(probs) == sorted(
        [
            f"shard train-000000.tar key {a} hi.npy: dtype >f4, expected <f4 (float32 little-endian)",
            f"shard train-000000.tar key {b}: missing member hi.npy",
            f"shard heldout-000000.tar key {h} lo.npy: shape [8, 64, 64], expected [8, 128, 128]",
            # the rewritten members no longer match the digests the builder recorded
            f"shard train-000000.tar key {a} hi.npy: bytes fail the recorded checksum (sum64)",
            f"shard heldout-000000.tar key {h} lo.npy: bytes fail the recorded checksum (sum64)",
        ]
    )


def test_checksum_and_count_mismatches_are_reported(built: Path, tmp_path: Path) -> None:
    out = _copy(built, tmp_path)
    p = out / "test-000001.tar"
    b = bytearray(p.read_bytes())
    b[3000] ^= 0xFF  # inside the first hi.npy payload
    p.write_bytes(bytes(b))
    (out / "heldout-000001.tar").unlink()
    probs = verify(out)["problems"]
    assert any(q.startswith("shard test-000001.tar: sha256 ") for q in probs)
    assert "shard heldout-000001.tar: missing" in probs
    m = json.loads((out / "manifest.json").read_text())
    m["splits"]["train"]["shards"][0]["samples"] = 5
    (out / "manifest.json").write_text(json.dumps(m))
    probs = verify(out)["problems"]
    assert "shard train-000000.tar: 2 samples, manifest says 5" in probs
    assert (
        "split train: the manifest's split total says 3 samples, but its shard records add up to 6"
        in probs
    )


def test_inspect_without_manifest_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["shard", "inspect", str(tmp_path)]) == 2
    assert "no manifest" in capsys.readouterr().err


def test_inspect_of_a_folder_that_does_not_exist_says_so(tmp_path: Path, capsys) -> None:
    gone = tmp_path / "no_such_folder"
    assert main(["shard", "inspect", str(gone)]) == 2
    err = capsys.readouterr().err
    assert f"error: {gone} does not exist" in err and "no manifest" not in err


def test_inspect_without_verify_reports_missing_and_truncated_shards(
    built: Path, tmp_path: Path, capsys
) -> None:
    out = _copy(built, tmp_path)
    assert main(["shard", "inspect", str(out)]) == 0
    assert "files: OK (8 shards present with their sizes" in capsys.readouterr().out
    (out / "train-000000.tar").unlink()  # the first shard: the summary uses another one
    with open(out / "heldout-000001.tar", "r+b") as f:
        f.truncate(1024)
    assert main(["shard", "inspect", str(out)]) == 1
    text = capsys.readouterr().out
    assert "files: 2 problem(s)" in text
    assert "  shard train-000000.tar: missing" in text
    assert "  shard heldout-000001.tar: 1024 bytes, manifest says" in text
    assert "sample s0002_n" in text and "(train, train-000001.tar)" in text
    assert main(["shard", "inspect", str(out), "--json"]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["verify"] is None and rep["files"]["ok"] is False
    assert rep["files"]["problems"][0] == "shard train-000000.tar: missing"
