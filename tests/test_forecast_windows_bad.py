"""Bad input of 0.1-orbit forecast window builds (docs/design.md "Forecast stage"): gaps split a
chain, a cadence change ends a chain, a cadence the run does not have is refused naming the run,
a window build needs no hi run, and super-resolution shards are no forecast training set."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from athenak_writer import make_deck, smooth_fields, write_run
from mhdsr.errors import ConfigError, ShardError
from mhdsr.forecast.task import forecast_manifest
from mhdsr.shard_builder.build import build
from mhdsr.shard_builder.plan import make_plan
from shard_helpers import load, write_config

ORBIT = 2 * math.pi
N = 16


def _run(root: Path, seed: int, snaps: list[int], orbits: list[float], n: int = N) -> Path:
    """A synthetic AthenaK run (single file per snapshot) with the given header times."""
    path = root / f"syn{n}" / f"seed_{seed:04d}"
    write_run(path, smooth_fields((n, n, 1), seed), nx=(n, n, 1), mb=(8, 8, 1),
              snapshots=snaps, times=[o * ORBIT for o in orbits],
              deck=make_deck((n, n, 1), (8, 8, 1), seed=seed))  # fmt: skip
    return path


def _cfg(tmp: Path, lo: list[Path], hi: list[Path] = (), **fc) -> Path:
    forecast = {"length": 2, "dt_orbits": 0.1, "lo_seeds": {"train": [5]}, **fc}
    return write_config(
        tmp / "fc.yaml",
        task="forecast",
        hi_runs=[str(p) for p in hi],
        lo_runs=[str(p) for p in lo],
        output_dir=str(tmp / "out"),
        forecast=forecast,
        workers=1,
    )


def _windows(plan) -> list[list[int]]:
    return sorted(it["snapshots"] for sp in plan.shards for it in sp.items)


def _spacings_ok(plan, run: Path, dt_orbits: float) -> None:
    """Every spacing of every window is dt (the run's files are numbered at 0.1 orbit)."""
    for w in _windows(plan):
        for a, b in zip(w, w[1:], strict=False):
            assert (b - a) * 0.1 == pytest.approx(dt_orbits), (w, run)


def test_missing_file_splits_a_0p1_orbit_chain(tmp_path: Path) -> None:
    # files numbered every 0.1 orbit (file k at k/10 orbits), file 28 missing
    snaps = [25, 26, 27, 29, 30, 31]
    run = _run(tmp_path, 5, snaps, [s / 10 for s in snaps])
    plan = make_plan(load(_cfg(tmp_path, [run])))
    rec = plan.windows["syn16/seed_0005"]
    assert rec["chains"] == [[25, 26, 27], [29, 30, 31]]
    assert "00027 -> 00029: 0.2 orbits" in rec["gaps"]
    assert _windows(plan) == [[25, 26], [26, 27], [29, 30], [30, 31]]
    plan3 = make_plan(load(_cfg(tmp_path, [run], length=3)))
    assert _windows(plan3) == [[25, 26, 27], [29, 30, 31]]  # never [26, 27, 29]
    # a chain shorter than the window is no window: length 4 has none -> refused, naming the run
    with pytest.raises(ShardError, match=r"syn16/seed_0005.*no window of 4 snapshots 0.1 orbits"):
        make_plan(load(_cfg(tmp_path, [run], length=4)))


def test_cadence_change_gives_windows_within_each_stretch(tmp_path: Path) -> None:
    # 0.1 orbit for files 25-30, then every 0.2 orbit: 32, 34, 36
    snaps = [25, 26, 27, 28, 29, 30, 32, 34, 36]
    run = _run(tmp_path, 5, snaps, [s / 10 for s in snaps])
    plan = make_plan(load(_cfg(tmp_path, [run])))
    assert _windows(plan) == [[25, 26], [26, 27], [27, 28], [28, 29], [29, 30]]
    assert plan.windows["syn16/seed_0005"]["chains"][0] == [25, 26, 27, 28, 29, 30]
    # at 0.2 orbit: the 0.2 stretch, and the 0.1 stretch on the 0.2 grid (interleaved chains);
    # every spacing of every window is 0.2 orbit, none mixes 0.1 and 0.2
    plan2 = make_plan(load(_cfg(tmp_path, [run], dt_orbits=0.2, length=3)))
    assert _windows(plan2) == [
        [25, 27, 29], [26, 28, 30], [28, 30, 32], [30, 32, 34], [32, 34, 36]
    ]  # fmt: skip
    _spacings_ok(plan2, run, 0.2)


def test_dt_matching_no_spacing_is_refused_naming_the_run(tmp_path: Path) -> None:
    snaps = [25, 26, 27, 28, 29, 30, 32, 34, 36]
    run = _run(tmp_path, 5, snaps, [s / 10 for s in snaps])
    other = _run(tmp_path, 6, [30, 31, 32], [3.0, 3.1, 3.2])
    with pytest.raises(
        ShardError,
        match=r"syn16/seed_0005.*no window of 2 snapshots 0.15 orbits apart.*"
        r"00025 -> 00026: 0.1 orbits",
    ):
        make_plan(load(_cfg(tmp_path, [run], dt_orbits=0.15)))
    # on_bad=skip: the run is recorded as skipped (with the reason) and the others still build
    plan = make_plan(load(_cfg(tmp_path, [run, other], dt_orbits=0.1, length=4), "on_bad=skip"))
    assert [s["sim"] for s in plan.skipped] == ["syn16/seed_0006"]
    assert "no window of 4 snapshots 0.1 orbits apart" in plan.skipped[0]["reason"]
    assert _windows(plan) == [[25, 26, 27, 28], [26, 27, 28, 29], [27, 28, 29, 30]]


def test_lo_only_build_and_split_seeds_without_hi_runs(tmp_path: Path) -> None:
    train = _run(tmp_path, 5, [25, 26, 27], [2.5, 2.6, 2.7])
    held = _run(tmp_path, 6, [30, 31, 32], [3.0, 3.1, 3.2])
    res = build(load(_cfg(tmp_path, [train, held])), log=lambda m: None)
    assert res["samples"] == {"train": 2, "val": 0, "test": 0, "heldout": 2}
    with pytest.raises(ConfigError, match=r"'split.seeds'.*'hi_runs' is empty"):
        make_plan(load(_cfg(tmp_path, [train, held]), "split.seeds.train=[0]"))


def test_sr_shards_are_refused_as_forecast_shards(tmp_path: Path) -> None:
    hi = _run(tmp_path, 1, [0, 1], [3.0, 3.5], n=2 * N)
    cfg = write_config(tmp_path / "sr.yaml", task="sr", hi_runs=[str(hi)],
                       output_dir=str(tmp_path / "sr"), workers=1)  # fmt: skip
    build(load(cfg), log=lambda m: None)
    with pytest.raises(ShardError, match=r"config key 'shards'.*super-resolution shards"):
        forecast_manifest(str(tmp_path / "sr"))
    # a window folder is accepted
    lo = _run(tmp_path, 5, [25, 26], [2.5, 2.6])
    build(load(_cfg(tmp_path, [lo])), log=lambda m: None)
    assert forecast_manifest(str(tmp_path / "out"))["task"] == "forecast"
