"""``mhdsr shard build`` on the bundled real AthenaK sample (data/athenak, see its README).

Bundled sample: 256^2 seeds 0 (7 snapshots), 1 (4), 2 (3), 3 (3), 4 (4); native 128^2 seeds 2
(16) and 3 (13). Demo split: train [0, 2], val [3, 4], test [1], heldout = the two 128 runs.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from mhdsr.athenak import open_run
from mhdsr.cli import main
from mhdsr.dataset.manifest import normalization, read_manifest, shard_paths
from mhdsr.dataset.sims import sim_name
from mhdsr.errors import ConfigError, ShardError
from mhdsr.io_utils import sha256_file
from mhdsr.shard_builder.build import build
from mhdsr.shard_builder.inspect import verify
from mhdsr.shard_builder.plan import make_plan
from shard_helpers import HI, LO, copy_run, load, npy, samples, write_config

DEMO_SPLIT = {"train": [0, 2], "val": [3, 4], "test": [1]}


def demo_cfg(tmp: Path, name: str = "demo.yaml", **over) -> Path:
    cfg = {
        "hi_runs": [str(HI / "seed_*")],
        "lo_runs": [str(LO / "seed_000[23]")],  # not 5, 6 (the 0.1-orbit forecast runs)
        "output_dir": str(tmp / "shards"),
        "split": {"seeds": DEMO_SPLIT},
        "shard": {"max_samples": 4},
        "workers": 2,
    }
    cfg.update(over)
    return write_config(tmp / name, **cfg)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shard_demo")
    cfg_path = demo_cfg(tmp)
    res = build(load(cfg_path), log=lambda m: None)
    return tmp, cfg_path, res, read_manifest(tmp / "shards")


def _expected_snapshots(seed_dir: Path) -> list[int]:
    return open_run(seed_dir).snapshots()


def test_counts_per_split_match_the_runs(demo) -> None:
    _, _, res, m = demo
    want = {
        "train": len(_expected_snapshots(HI / "seed_0000"))
        + len(_expected_snapshots(HI / "seed_0002")),
        "val": len(_expected_snapshots(HI / "seed_0003"))
        + len(_expected_snapshots(HI / "seed_0004")),
        "test": len(_expected_snapshots(HI / "seed_0001")),
        "heldout": sum(len(_expected_snapshots(LO / d)) for d in ("seed_0002", "seed_0003")),
    }
    assert want == {"train": 10, "val": 7, "test": 4, "heldout": 29}  # the bundled sample
    assert res["samples"] == want
    for k, n in want.items():
        s = m["splits"][k]
        assert s["samples"] == n == sum(sh["samples"] for sh in s["shards"])
        # max_samples 4: fewest shards, no empty one, sizes within one of each other
        sizes = [sh["samples"] for sh in s["shards"]]
        assert len(sizes) == -(-n // 4) and min(sizes) >= 1 and max(sizes) <= 4
        assert max(sizes) - min(sizes) <= 1
        assert [sh["name"] for sh in s["shards"]] == [f"{k}-{i:06d}.tar" for i in range(len(sizes))]
    assert (
        m["splits"]["heldout"]["source"] == "native_lo" and m["splits"]["heldout"]["paired_hi"] == 0
    )
    assert m["shapes"] == {"hi": [8, 256, 256], "lo": [8, 128, 128]}


def test_seeds_disjoint_and_as_configured(demo) -> None:
    _, _, _, m = demo
    got = {k: m["splits"][k]["seeds"] for k in ("train", "val", "test")}
    assert got == DEMO_SPLIT
    assert m["splits"]["heldout"]["seeds"] == [2, 3]
    assert m["splits"]["heldout"]["sims"] == ["mri128_nu3e-5/seed_0002", "mri128_nu3e-5/seed_0003"]
    all_hi = [s for k in got for s in got[k]]
    assert len(all_hi) == len(set(all_hi))


def test_every_sample_equals_the_reader_bit_for_bit(demo) -> None:
    tmp, _, _, m = demo
    runs = {sim_name(p): open_run(p) for p in [*HI.glob("seed_*"), *LO.glob("seed_*")]}
    seen_train_order = []
    for split in m["splits"]:
        for path in shard_paths(tmp / "shards", m, split):
            for key, mem in samples(Path(path)).items():
                meta = json.loads(mem["json"])
                assert key == f"s{meta['seed']:04d}_n{meta['snapshot']:05d}"
                assert meta["seed"] in m["splits"][split]["seeds"]
                ref = runs[meta["sim"]].read_snapshot(meta["snapshot"])
                assert (meta["time"], meta["cycle"]) == (ref.time, ref.cycle)
                if split == "heldout":
                    assert set(mem) == {"lo.npy", "json"} and meta["source"] == "native_lo"
                    arr, shape = npy(mem["lo.npy"]), [128, 128]
                else:
                    assert set(mem) == {"hi.npy", "json"} and meta["source"] == "hi"
                    arr, shape = npy(mem["hi.npy"]), [256, 256]
                    if split == "train":
                        seen_train_order.append(meta["seed"])
                assert meta["resolution"] == shape
                assert arr.dtype.str == "<f4" and arr.flags.c_contiguous
                np.testing.assert_array_equal(arr, ref.data)
                assert arr.tobytes() == ref.data.astype("<f4").tobytes()
    # shuffled across seeds: the train stream is not sorted by seed
    assert sorted(seen_train_order) != seen_train_order and len(seen_train_order) == 10


def test_stats_equal_direct_float64_computation_over_train(demo) -> None:
    _, _, _, m = demo
    fields = []
    for d in ("seed_0000", "seed_0002"):
        r = open_run(HI / d)
        fields += [r.read_snapshot(s).data for s in r.snapshots()]
    hi = np.stack(fields).astype(np.float64)  # (10, 8, 256, 256)
    lo = hi.reshape(10, 8, 128, 2, 128, 2).mean(axis=(3, 5))
    for kind, x in (("hi", hi), ("lo", lo)):
        table = m["stats"][kind]
        for c, ch in enumerate(m["channels"]):
            v = x[:, c]
            s = table[ch]
            assert s["count"] == v.size
            np.testing.assert_allclose(s["mean"], v.mean(), rtol=1e-10, atol=1e-300)
            np.testing.assert_allclose(s["std"], v.std(), rtol=1e-10)
            assert (s["min"], s["max"]) == (v.min(), v.max())
    # the loader's normalization: the true std here (every channel varies, far above the floor)
    mean, std = normalization(m, "hi")
    np.testing.assert_array_equal(std, [m["stats"]["hi"][ch]["std"] for ch in m["channels"]])
    np.testing.assert_array_equal(mean, [m["stats"]["hi"][ch]["mean"] for ch in m["channels"]])


def test_checksums_verify_and_manifest_is_complete(demo) -> None:
    tmp, _, _, m = demo
    for split in m["splits"]:
        for sh, path in zip(m["splits"][split]["shards"], shard_paths(tmp / "shards", m, split)):
            assert sha256_file(path) == sh["sha256"]
            assert os.path.getsize(path) == sh["bytes"]
    assert verify(tmp / "shards")["ok"]
    prov = m["provenance"]
    assert prov["sims"]["mri256_nu3e-5/seed_0000"]["params"]["nu"] == pytest.approx(3e-5)
    assert prov["sims"]["mri256_nu3e-5/seed_0000"]["seed"] == 0
    assert prov["builder"].startswith("mhdsr ")
    assert m["config"]["split"]["seeds"] == DEMO_SPLIT
    assert m["std_floor"]["relative"] == 1e-6
    assert not list((tmp / "shards").glob(".*tmp*"))


def _mtimes(d: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in d.rglob("*") if p.is_file()}


def test_second_run_is_a_noop(demo) -> None:
    tmp, cfg_path, _, _ = demo
    before = _mtimes(tmp / "shards")
    res = build(load(cfg_path, "workers=1"), log=lambda m: None)  # workers does not matter
    assert res["noop"] and res["built"] == []
    assert _mtimes(tmp / "shards") == before


def test_config_change_is_refused_with_the_differing_keys(demo) -> None:
    tmp, cfg_path, _, _ = demo
    with pytest.raises(
        ShardError, match=r"2 key\(s\) differ: shard.max_samples: 4 -> 3; shuffle_seed: 0 -> 1"
    ):
        build(load(cfg_path, "shuffle_seed=1", "shard.max_samples=3"), log=lambda m: None)


def test_killed_build_completes_on_rerun_with_identical_shards(demo, tmp_path: Path) -> None:
    tmp, cfg_path, _, m = demo
    out = tmp_path / "shards"
    shutil.copytree(tmp / "shards", out)
    # simulate a kill: no manifest, one shard gone, one half-written temporary, one shard
    # corrupted in place (same size, so only the checksum can tell)
    (out / "manifest.json").unlink()
    (out / "train-000001.tar").unlink()
    (out / ".val-000000.tar.tmp").write_bytes(b"partial")
    with open(out / "heldout-000002.tar", "r+b") as f:
        f.seek(5000)
        f.write(b"\xff\xfe")
    res = build(load(cfg_path, f"output_dir={out}", "workers=1"), log=lambda m: None)
    assert not res["noop"]
    assert res["built"] == ["heldout-000002.tar", "train-000001.tar"]
    assert ".val-000000.tar.tmp" in res["removed_tmp"]
    m2 = read_manifest(out)
    assert m2["splits"] == m["splits"]  # byte-identical shards (same sha256) and counts
    assert m2["stats"] == m["stats"]
    assert verify(out)["ok"]


def test_overwrite_rebuilds_with_the_new_config(tmp_path: Path) -> None:
    # small: the two multi-rank 256 seeds, no lo runs
    cfg = write_config(
        tmp_path / "c.yaml",
        hi_runs=[str(HI / "seed_0002"), str(HI / "seed_0003")],
        output_dir=str(tmp_path / "out"),
        split={"seeds": {"train": [2], "val": [3]}},
        workers=1,
    )
    assert main(["shard", "build", "--config", str(cfg)]) == 0
    m1 = read_manifest(tmp_path / "out")
    assert m1["splits"]["train"]["samples"] == 3 and m1["splits"]["test"]["samples"] == 0
    assert m1["splits"]["test"]["shards"] == [] and m1["splits"]["heldout"]["samples"] == 0
    assert main(["shard", "build", "--config", str(cfg), "shard.max_samples=1"]) == 2  # refused
    assert main(["shard", "build", "--config", str(cfg), "shard.max_samples=1", "--overwrite"]) == 0
    m2 = read_manifest(tmp_path / "out")
    assert [sh["samples"] for sh in m2["splits"]["train"]["shards"]] == [1, 1, 1]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tar")) == [
        "train-000000.tar", "train-000001.tar", "train-000002.tar",
        "val-000000.tar", "val-000001.tar", "val-000002.tar",
    ]  # fmt: skip
    # the shard-size bound: max_bytes below one sample still gives one sample per shard, and a
    # bound of 2.5 samples gives at most 2 (each shard within its target plus at most one sample)
    one = m2["splits"]["train"]["shards"][0]["bytes"]
    assert (
        main(
            [
                "shard",
                "build",
                "--config",
                str(cfg),
                f"shard.max_bytes={int(2.5 * one)}",
                "--overwrite",
            ]
        )
        == 0
    )
    m3 = read_manifest(tmp_path / "out")
    assert [sh["samples"] for sh in m3["splits"]["train"]["shards"]] == [2, 1]
    assert all(sh["bytes"] <= 2.5 * one for sh in m3["splits"]["train"]["shards"])


def test_heldout_pairs_only_with_a_hi_run_outside_the_splits(tmp_path: Path) -> None:
    # a lo run with seed id 0 (a copy of 128 seed 3 with rseed patched to 0) pairs with the 256
    # seed-0 run when that run is in none of train/val/test; times agree within one timestep
    lo = copy_run(
        LO / "seed_0003",
        tmp_path / "mri128_nu3e-5" / "seed_0000",
        (b"rseed     = 3 ", b"rseed     = 0 "),
    )
    cfg = write_config(
        tmp_path / "c.yaml",
        hi_runs=[str(HI / "seed_*")],
        lo_runs=[str(lo)],
        output_dir=str(tmp_path / "out"),
        split={"seeds": {"train": [1], "val": [2, 4], "test": [3]}},
        window={"orbit_end": 6.0},  # the 128^2 files with a 256^2 partner (<= 6 orbits)
        workers=1,
    )
    plan = make_plan(load(cfg))
    assert [r.sim for r in plan.unassigned] == ["mri256_nu3e-5/seed_0000"]
    assert plan.paired == 7
    build(load(cfg), log=lambda m: None)
    m = read_manifest(tmp_path / "out")
    assert m["splits"]["heldout"]["paired_hi"] == 7 and m["splits"]["heldout"]["seeds"] == [0]
    hi_run, lo_run = open_run(HI / "seed_0000"), open_run(lo)
    got = {}
    for path in shard_paths(tmp_path / "out", m, "heldout"):
        for _key, mem in samples(Path(path)).items():
            meta = json.loads(mem["json"])
            assert set(mem) == {"hi.npy", "lo.npy", "json"}
            assert meta["pixel_aligned"] is False and meta["hi_sim"] == "mri256_nu3e-5/seed_0000"
            assert abs(meta["hi_time"] - meta["time"]) < 4e-3  # < one 128^2 timestep (3.1e-3)
            np.testing.assert_array_equal(
                npy(mem["hi.npy"]), hi_run.read_snapshot(meta["hi_snapshot"]).data
            )
            np.testing.assert_array_equal(
                npy(mem["lo.npy"]), lo_run.read_snapshot(meta["snapshot"]).data
            )
            got[meta["snapshot"]] = meta["hi_snapshot"]
    # 0.5-orbit cadence at 128^2 (files 6..12) vs 0.25-orbit at 256^2 (even files 12..24)
    assert got == {s: 2 * s for s in range(6, 13)}
    assert verify(tmp_path / "out")["ok"]


# ---------------------------------------------------------------- bad input


def _small_cfg(tmp_path: Path, hi: list[Path], **over) -> Path:
    cfg = {
        "hi_runs": [str(p) for p in hi],
        "output_dir": str(tmp_path / "out"),
        "split": {"seeds": {"train": [2], "val": [3]}},
        "workers": 1,
    }
    cfg.update(over)
    return write_config(tmp_path / "c.yaml", **cfg)


def test_truncated_file_is_an_error_naming_it_and_skip_records_it(tmp_path: Path) -> None:
    run = copy_run(HI / "seed_0003", tmp_path / "mri256_nu3e-5" / "seed_0003")
    bad = run / "bin" / "rank_00000001" / "mri2d.mhd_w.00010.bin"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    cfg = _small_cfg(tmp_path, [HI / "seed_0002", run])
    with pytest.raises(
        ShardError, match=r"seed_0003 snapshot 00010.*mri2d\.mhd_w\.00010\.bin.*truncated"
    ):
        build(load(cfg), log=lambda m: None)
    assert not (tmp_path / "out" / "manifest.json").exists()
    build(load(cfg, "on_bad=skip"), log=lambda m: None)
    m = read_manifest(tmp_path / "out")
    assert m["splits"]["val"]["samples"] == 2  # snapshots 5 and 12 of seed 3
    (sk,) = m["skipped"]
    assert (sk["sim"], sk["snapshot"]) == ("mri256_nu3e-5/seed_0003", 10)
    assert "mri2d.mhd_w.00010.bin" in sk["reason"]
    assert verify(tmp_path / "out")["ok"]


def test_nonfinite_values_are_an_error_and_skip_records_them(tmp_path: Path) -> None:
    run = copy_run(HI / "seed_0002", tmp_path / "mri256_nu3e-5" / "seed_0002")
    f = run / "bin" / "rank_00000001" / "mri2d.mhd_jz.00015.bin"
    b = bytearray(f.read_bytes())
    b[-4:] = np.float32(np.nan).astype("<f4").tobytes()  # last jz cell of the last block
    f.write_bytes(bytes(b))
    cfg = _small_cfg(tmp_path, [run, HI / "seed_0003"])
    with pytest.raises(ShardError, match=r"seed_0002 snapshot 00015.*non-finite.*jz"):
        build(load(cfg), log=lambda m: None)
    build(load(cfg, "on_bad=skip"), log=lambda m: None)
    m = read_manifest(tmp_path / "out")
    assert m["splits"]["train"]["samples"] == 2
    assert [(s["sim"], s["snapshot"]) for s in m["skipped"]] == [("mri256_nu3e-5/seed_0002", 15)]
    # the statistics exclude the skipped snapshot
    r = open_run(HI / "seed_0002")
    x = np.stack([r.read_snapshot(s).data for s in (10, 17)]).astype(np.float64)
    np.testing.assert_allclose(m["stats"]["hi"]["jz"]["std"], x[:, 7].std(), rtol=1e-10)


def test_resolution_mismatch_and_empty_window_are_reported(tmp_path: Path) -> None:
    cfg = _small_cfg(tmp_path, [HI / "seed_0002", HI / "seed_0003", LO / "seed_0002"])
    with pytest.raises(
        ShardError, match=r"mri128_nu3e-5/seed_0002: hi resolution 128x128 differs.*256x256"
    ):
        make_plan(load(cfg))
    plan = make_plan(load(cfg, "on_bad=skip"))
    assert [s["sim"] for s in plan.skipped] == ["mri128_nu3e-5/seed_0002"]
    assert plan.hi_resolution == (256, 256)
    # seed 3 has snapshots 5, 10, 12: none in 13..20
    cfg = _small_cfg(
        tmp_path, [HI / "seed_0002", HI / "seed_0003"], window={"snap_start": 13, "snap_end": 20}
    )
    with pytest.raises(ShardError, match=r"seed_0003: no snapshot in the window"):
        make_plan(load(cfg))
    plan = make_plan(load(cfg, "on_bad=skip"))
    assert [(r.seed, r.snapshots) for r in plan.splits["train"]] == [(2, [15, 17])]
    assert plan.splits["val"] == [] and plan.skipped[0]["sim"] == "mri256_nu3e-5/seed_0003"


def test_orbit_window_and_stride(tmp_path: Path) -> None:
    # seed 0 snapshots 12..24 (even) are at 3.0, 3.5, ..., 6.0 orbits (t up to one step late)
    cfg = _small_cfg(
        tmp_path,
        [HI / "seed_0000"],
        split={"seeds": {"train": [0]}},
        window={"orbit_start": 3.5, "orbit_end": 5.0, "stride": 2},
    )
    plan = make_plan(load(cfg))
    assert plan.splits["train"][0].snapshots == [14, 18]  # 3.5, 4.0, 4.5, 5.0 -> every 2nd


def test_duplicate_seeds_and_bad_globs_are_config_errors(tmp_path: Path) -> None:
    dup = copy_run(HI / "seed_0003", tmp_path / "other" / "seed_0003")
    cfg = _small_cfg(tmp_path, [HI / "seed_0002", HI / "seed_0003", dup])
    with pytest.raises(ShardError, match=r"two hi runs have seed id 3") as e:
        make_plan(load(cfg))
    assert str(HI / "seed_0003") in str(e.value) and str(dup) in str(e.value)
    cfg = _small_cfg(tmp_path, [HI / "seed_0002", tmp_path / "nothing_*"])
    with pytest.raises(ConfigError, match=r"hi_runs.*nothing_\*.*matches no run folder"):
        make_plan(load(cfg))
    cfg = _small_cfg(
        tmp_path, [HI / "seed_0002", HI / "seed_0003"], split={"seeds": {"train": [2], "val": [7]}}
    )
    with pytest.raises(ConfigError, match=r"split.seeds.val.*\[7\] match no hi run"):
        make_plan(load(cfg))
    cfg = _small_cfg(tmp_path, [HI / "seed_0002"], lo_runs=[str(HI / "seed_0003")])
    with pytest.raises(ConfigError, match="lo resolution 256x256 is not half"):
        make_plan(load(cfg))


def test_concurrent_build_into_the_same_folder_is_refused(tmp_path: Path) -> None:
    import fcntl

    cfg = _small_cfg(tmp_path, [HI / "seed_0002", HI / "seed_0003"])
    (tmp_path / "out").mkdir()
    with open(tmp_path / "out" / ".build.lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        with pytest.raises(ShardError, match="another `mhdsr shard build` is writing here"):
            build(load(cfg), log=lambda m: None)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_incomplete_rank_snapshot_is_an_error_and_skip_records_it(tmp_path: Path) -> None:
    # per-rank layout: rank 1 lost its mhd_w file of snapshot 15 (the other groups and rank 0
    # still have it): the reader leaves 15 out of snapshots(); the builder must not drop it
    # silently
    run = copy_run(HI / "seed_0002", tmp_path / "mri256_nu3e-5" / "seed_0002")
    (run / "bin" / "rank_00000001" / "mri2d.mhd_w.00015.bin").unlink()
    cfg = _small_cfg(tmp_path, [run, HI / "seed_0003"])
    with pytest.raises(
        ShardError,
        match=r"mri256_nu3e-5/seed_0002 snapshot 00015: incomplete snapshot: "
        r"missing mhd_w in rank_00000001",
    ):
        build(load(cfg), log=lambda m: None)
    assert not (tmp_path / "out").exists()  # refused while planning: nothing written
    build(load(cfg, "on_bad=skip"), log=lambda m: None)
    m = read_manifest(tmp_path / "out")
    assert m["skipped"] == [
        {
            "sim": "mri256_nu3e-5/seed_0002",
            "snapshot": 15,
            "reason": "incomplete snapshot: missing mhd_w in rank_00000001",
        }
    ]
    assert m["splits"]["train"]["samples"] == 2 and m["splits"]["val"]["samples"] == 3
    assert m["provenance"]["sims"]["mri256_nu3e-5/seed_0002"]["snapshots"] == [10, 17]
    assert verify(tmp_path / "out")["ok"]


def test_incomplete_single_file_snapshot_counts_only_inside_the_window(tmp_path: Path) -> None:
    # single-file layout: the jz file of snapshot 16 is gone (bcc and w still have it)
    run = copy_run(HI / "seed_0000", tmp_path / "mri256_nu3e-5" / "seed_0000")
    (run / "bin" / "mri2d.mhd_jz.00016.bin").unlink()
    cfg = _small_cfg(tmp_path, [run], split={"seeds": {"train": [0]}})
    with pytest.raises(
        ShardError, match=r"seed_0000 snapshot 00016: incomplete snapshot: missing group mhd_jz"
    ):
        make_plan(load(cfg))
    plan = make_plan(load(cfg, "on_bad=skip"))
    assert [(s["snapshot"], s["reason"]) for s in plan.skipped] == [
        (16, "incomplete snapshot: missing group mhd_jz")
    ]
    assert plan.splits["train"][0].snapshots == [12, 14, 18, 20, 22, 24]
    # the stride counts the incomplete snapshot: 12, (16), 20, 24 -- losing a file does not
    # shift the selection, and 16 is reported because the window selects it
    plan = make_plan(load(cfg, "on_bad=skip", "window.stride=2"))
    assert plan.splits["train"][0].snapshots == [12, 20, 24]
    assert [s["snapshot"] for s in plan.skipped] == [16]
    # outside the window (snap_end 14, or orbits 4.5-6: files 18..24) it is not used: no error
    for over in ("window.snap_end=14", "window.orbit_start=4.5"):
        plan = make_plan(load(cfg, over))
        assert plan.skipped == [] and 16 not in plan.splits["train"][0].snapshots
