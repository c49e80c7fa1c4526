"""Forecast window shards (``task: forecast``): the cadence of a run from its header times,
windows that never span a gap or mix cadences, thinned and finer-cadence runs, refusals, and the
build on the bundled real data (docs/design.md "Forecast stage")."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from athenak_writer import make_deck, smooth_fields, write_run
from mhdsr.athenak import open_run
from mhdsr.dataset.cadence import cadence, lo_of_hi
from mhdsr.dataset.manifest import normalization, read_manifest, shard_paths
from mhdsr.errors import ConfigError, ShardError
from mhdsr.shard_builder.build import build, config_diff
from mhdsr.shard_builder.inspect import verify
from mhdsr.shard_builder.plan import make_plan
from shard_helpers import HI, LO, load, read_tar, samples, write_config

ORBIT = 2 * math.pi


# ----------------------------------------------------------------------------------------------
# cadence(): chains from times


def test_even_run_is_one_chain_and_windows_overlap() -> None:
    t = [k * 0.5 * ORBIT + 0.001 * (k % 2) for k in range(6)]  # jitter of "one step"
    c = cadence(list(range(6)), t, 0.5 * ORBIT, 0.01)
    assert c.chain_snapshots() == [[0, 1, 2, 3, 4, 5]]
    assert c.windows(4) == [[0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5]]
    assert c.windows(4, start_stride=2) == [[0, 1, 2, 3], [2, 3, 4, 5]]
    assert c.windows(4, start_stride=3) == [[0, 1, 2, 3]]
    assert c.after(3, 4) == [4, 5, None, None] and c.before(3) == 2 and c.before(0) is None


def test_gap_and_off_cadence_last_file_split_chains() -> None:
    # numbered at 0.1 orbit and thinned: 0, 5, 10, 20 (15 lost), plus an off-cadence last file 23
    snaps = [0, 5, 10, 20, 23]
    t = [n * 0.1 * ORBIT for n in snaps[:-1]] + [22.6 * 0.1 * ORBIT]
    c = cadence(snaps, t, 0.5 * ORBIT, 0.01)
    assert c.chain_snapshots() == [[0, 5, 10], [20], [23]]
    assert c.windows(3) == [[0, 5, 10]] and c.windows(4) == []
    gaps = c.describe_gaps()
    assert "00010 -> 00020: 1 orbits" in gaps and "00020 -> 00023: 0.26 orbits" in gaps


def test_finer_cadence_gives_interleaved_chains() -> None:
    t = [k * 0.25 * ORBIT for k in range(7)]
    c = cadence(list(range(10, 17)), t, 0.5 * ORBIT, 0.01)
    assert c.chain_snapshots() == [[10, 12, 14, 16], [11, 13, 15]]
    assert c.windows(3) == [[10, 12, 14], [11, 13, 15], [12, 14, 16]]


def test_mixed_cadence_never_mixes() -> None:
    # spacings 0.5, 0.5, 0.75, 0.75: a window of 3 at 0.5 exists once, none at 0.75 spacing mixes
    orb = [3.0, 3.5, 4.0, 4.75, 5.5]
    c = cadence([12, 14, 16, 19, 22], [o * ORBIT for o in orb], 0.5 * ORBIT, 0.01)
    assert c.windows(3) == [[12, 14, 16]]
    assert cadence([12, 14, 16, 19, 22], [o * ORBIT for o in orb], 0.75 * ORBIT, 0.01).windows(
        3
    ) == [[16, 19, 22]]


def test_tolerance_is_applied_to_every_spacing() -> None:
    t = [0.0, 1.0, 2.0 + 0.02, 3.0]
    assert cadence([0, 1, 2, 3], t, 1.0, 0.03).chain_snapshots() == [[0, 1, 2, 3]]
    assert cadence([0, 1, 2, 3], t, 1.0, 0.01).chain_snapshots() == [[0, 1], [2], [3]]
    with pytest.raises(ValueError, match="dt > 0"):
        cadence([0, 1], [0.0, 1.0], 1.0, 0.6)


def test_lo_of_hi_is_the_float64_block_mean() -> None:
    x = np.random.default_rng(0).standard_normal((2, 4, 6)).astype(np.float32)
    want = x.astype(np.float64).reshape(2, 2, 2, 3, 2).mean(axis=(2, 4)).astype(np.float32)
    np.testing.assert_array_equal(lo_of_hi(x), want)
    with pytest.raises(ValueError, match="even"):
        lo_of_hi(x[:, :3])


# ----------------------------------------------------------------------------------------------
# Synthetic runs through the planner


def _run(root: Path, seed: int, snaps: list[int], orbits: list[float], n: int = 16) -> Path:
    path = root / f"syn{n}" / f"seed_{seed:04d}"
    write_run(path, smooth_fields((n, n, 1), seed), nx=(n, n, 1), mb=(8, 8, 1),
              snapshots=snaps, times=[o * ORBIT for o in orbits],
              deck=make_deck((n, n, 1), (8, 8, 1), seed=seed))  # fmt: skip
    return path


def _cfg(tmp: Path, lo: list[Path], hi: list[Path] = (), **fc) -> Path:
    forecast = {"length": 3, "dt_orbits": 0.5, **fc}
    return write_config(
        tmp / "fc.yaml",
        task="forecast",
        hi_runs=[str(p) for p in hi],
        lo_runs=[str(p) for p in lo],
        output_dir=str(tmp / "out"),
        forecast=forecast,
        workers=1,
    )


def test_thinned_run_gives_evenly_spaced_windows(tmp_path: Path) -> None:
    # a 0.1-orbit run thinned to every fifth file: numbers 0, 5, ..., 25 at 0.5-orbit spacing
    run = _run(tmp_path, 1, [0, 5, 10, 15, 20, 25], [0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    plan = make_plan(load(_cfg(tmp_path, [run], lo_seeds={"train": [1]})))
    wins = [it["snapshots"] for sp in plan.shards for it in sp.items]
    assert sorted(wins) == [[0, 5, 10], [5, 10, 15], [10, 15, 20], [15, 20, 25]]
    assert {sp.split for sp in plan.shards} == {"train"}


def test_gap_is_never_spanned_and_a_run_without_window_is_refused(tmp_path: Path) -> None:
    gap = _run(tmp_path, 1, [0, 1, 2, 4, 5], [0.0, 0.5, 1.0, 2.0, 2.5])  # file 3 missing
    plan = make_plan(load(_cfg(tmp_path, [gap])))
    assert [it["snapshots"] for sp in plan.shards for it in sp.items] == [[0, 1, 2]]
    assert plan.windows["syn16/seed_0001"]["chains"] == [[0, 1, 2], [4, 5]]
    # mixed cadence (0.75 orbit), as the bundled 256^2 seed 1: no window of 0.5 orbit at all
    mixed = _run(tmp_path, 2, [13, 16, 19, 22], [3.25, 4.0, 4.75, 5.5])
    with pytest.raises(
        ShardError,
        match=r"syn16/seed_0002.*no window of 3 snapshots 0.5 orbits apart.*00013 -> 00016: 0.75 orbits",
    ):
        make_plan(load(_cfg(tmp_path, [gap, mixed])))
    plan = make_plan(load(_cfg(tmp_path, [gap, mixed]), "on_bad=skip"))
    assert [s["sim"] for s in plan.skipped] == ["syn16/seed_0002"]
    assert "0.75 orbits" in plan.skipped[0]["reason"]


def test_splits_keys_and_refusals(tmp_path: Path) -> None:
    lo1 = _run(tmp_path, 1, [0, 1, 2], [0.0, 0.5, 1.0])
    lo2 = _run(tmp_path, 2, [0, 1, 2], [0.0, 0.5, 1.0])
    hi2 = _run(tmp_path, 2, [0, 1, 2], [0.0, 0.5, 1.0], n=32)
    plan = make_plan(load(_cfg(tmp_path, [lo1, lo2], [hi2], lo_seeds={"train": [1]}),
                          "split.seeds.train=[2]"))  # fmt: skip
    splits = {sp.split: [it["sim"] for it in sp.items] for sp in plan.shards}
    assert splits == {
        "train": ["syn16/seed_0001", "syn32/seed_0002"],
        "heldout": ["syn16/seed_0002"],
    }
    # the hi run (avgpool2) and the lo run of seed 2 in one split would share key s0002_n00000
    with pytest.raises(ShardError, match="share the key s0002_n00000"):
        make_plan(
            load(_cfg(tmp_path, [lo2], [hi2], lo_seeds={"train": [2]}), "split.seeds.train=[2]")
        )
    with pytest.raises(ConfigError, match="forecast.lo_seeds.val.*seed.*7"):
        make_plan(load(_cfg(tmp_path, [lo1], lo_seeds={"val": [7]})))
    with pytest.raises(ConfigError, match="forecast.dt_orbits"):
        load(_cfg(tmp_path, [lo1], dt_orbits=0.0))
    with pytest.raises(ConfigError, match="forecast.length"):
        load(_cfg(tmp_path, [lo1], length=1))


def test_synthetic_build_content_stats_and_resume(tmp_path: Path) -> None:
    lo = _run(tmp_path, 1, [0, 1, 2, 3], [0.0, 0.5, 1.0, 1.5])
    hi = _run(tmp_path, 3, [4, 6, 8], [1.0, 1.5, 2.0], n=32)  # numbered at 0.25 orbit
    cfg = load(_cfg(tmp_path, [lo], [hi], lo_seeds={"train": [1]}), "split.seeds.train=[3]")
    res = build(cfg, log=lambda m: None)
    assert res["samples"] == {"train": 3, "val": 0, "test": 0, "heldout": 0}
    m = read_manifest(tmp_path / "out")
    assert m["task"] == "forecast" and m["shapes"]["seq"] == [3, 8, 16, 16]
    got = {}
    for p in shard_paths(tmp_path / "out", m, "train"):
        for key, s in samples(Path(p)).items():
            meta = json.loads(s["json"])
            got[key] = (np.load(io.BytesIO(s["seq.npy"])), meta)
    assert sorted(got) == ["s0001_n00000", "s0001_n00001", "s0003_n00004"]
    seq, meta = got["s0003_n00004"]
    assert meta["snapshots"] == [4, 6, 8] and meta["source"] == "avgpool2_hi"
    assert meta["dt"] == pytest.approx(0.5 * ORBIT) and meta["resolution"] == [16, 16]
    run = open_run(hi)
    for k, n in enumerate([4, 6, 8]):
        np.testing.assert_array_equal(seq[k], lo_of_hi(run.read_snapshot(n).data))
    seq, meta = got["s0001_n00001"]
    assert meta["source"] == "native_lo" and meta["times"] == pytest.approx(
        [0.5 * ORBIT, ORBIT, 1.5 * ORBIT]
    )
    np.testing.assert_array_equal(seq[2], open_run(lo).read_snapshot(3).data)
    # statistics: every frame of every train window, float64
    frames = np.concatenate([v[0] for v in got.values()]).astype(np.float64)  # (9, 8, 16, 16)
    mean, std = normalization(m, "lo")
    np.testing.assert_allclose(mean, frames.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, frames.std(axis=(0, 2, 3)), rtol=1e-9)
    assert verify(tmp_path / "out")["ok"]
    again = build(cfg, log=lambda m: None)
    assert again["noop"]
    with pytest.raises(ShardError, match="forecast.length: 3 -> 2"):
        build(load(_cfg(tmp_path, [lo], [hi], length=2, lo_seeds={"train": [1]}),
                   "split.seeds.train=[3]"), log=lambda m: None)  # fmt: skip


def test_sr_builds_ignore_the_forecast_keys() -> None:
    """A super-resolution manifest written before `task`/`forecast` existed still matches."""
    old = {"hi_runs": ["a"], "output_dir": "x", "workers": 2}
    new = {**old, "task": "sr", "forecast": {"length": 4, "dt_orbits": 0.0}}
    assert config_diff(old, new) == []
    assert config_diff(old, {**new, "task": "forecast"}) != []


# ----------------------------------------------------------------------------------------------
# The bundled real data


@pytest.fixture(scope="module")
def demo_windows(tmp_path_factory, repo):
    out = tmp_path_factory.mktemp("fwin") / "shards"
    cfg = load(repo / "configs/shard/forecast-demo.yaml", f"output_dir={out}", "progress=false")
    return build(cfg, log=lambda m: None), read_manifest(out), out


def test_bundled_forecast_demo_windows(demo_windows) -> None:
    res, m, out = demo_windows
    # 128^2 seed 5: files 25-55 (0.1 orbit) -> 29 windows of 3; seed 6: files 30-68 -> 37
    assert res["samples"] == {"train": 29, "val": 0, "test": 0, "heldout": 37}
    assert m["shapes"]["seq"] == [3, 8, 128, 128]
    w = m["provenance"]["windows"]
    assert w["mri128_nu3e-5/seed_0005"]["chains"] == [list(range(25, 56))]
    assert w["mri128_nu3e-5/seed_0006"]["chains"] == [list(range(30, 69))]
    assert w["mri128_nu3e-5/seed_0006"]["split"] == "heldout"
    assert verify(out)["ok"]
    (key, meta), *_ = [
        (k, json.loads(s["json"]))
        for k, s in samples(Path(shard_paths(out, m, "train")[0])).items()
    ]
    assert key.startswith("s0005_n000") and meta["source"] == "native_lo"
    gaps = np.diff(meta["times"]) / ORBIT
    assert np.all(np.abs(gaps - 0.1) < 1e-3)


def test_bundled_mixed_cadence_seed_is_refused(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, [], [HI / "seed_0001"], length=3)
    with pytest.raises(ShardError, match=r"seed_0001.*00013 -> 00016: 0.75 orbits"):
        make_plan(load(cfg))


def test_tar_members_are_seq_and_json(demo_windows) -> None:
    _, m, out = demo_windows
    members = read_tar(Path(shard_paths(out, m, "train")[0]))
    exts = [ext for _, ext, _ in members]
    assert exts == ["json", "seq.npy"] * (len(exts) // 2) and exts
    assert LO.is_dir()  # the bundled data the config names
