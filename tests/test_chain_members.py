"""The forecast -> super-resolve chain over the members of an ensemble rollout (the generative
forecaster's ``members`` dataset, docs/forecast.md): one input row per (initial state, member,
lead), inputs equal to the members, a ``member`` dataset, independent noise per member; files
without ``members`` keep the deterministic rollout's rows and noise keys exactly."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mhdsr.channels import CHANNELS
from mhdsr.config import load_config
from mhdsr.dataset import h5layout as H
from mhdsr.errors import ConfigError
from mhdsr.sample.bulk import run_sample
from mhdsr.sample.config import SampleConfig
from mhdsr.sample.inputs import index_forecasts
from test_sample_bulk import write_export

N, E, L, C, R = 2, 3, 3, len(CHANNELS), 16
INITS = [30, 31]


def _rollout(
    path: Path, *, members: bool = True, ens_attr: int | None = None, bad: str = ""
) -> Path:
    """A complete rollout file of a native lo run: ``members`` ``(N, E, L, C, 16, 16)`` (when
    ``members``) and ``forecast`` their mean; ``bad``: ``"shape"`` = members of the wrong L."""
    rng = np.random.default_rng(0)
    mem = (10.0 * np.arange(C)[:, None, None] + rng.standard_normal((N, E, L, C, R, R))).astype(
        np.float32
    )
    tsnap = np.array([[i + k + 1 for k in range(L)] for i in INITS])
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f[H.FORECAST] = mem.mean(axis=1)
        f[H.TRUTH] = np.zeros((N, L, C, R, R), np.float32)
        f[H.TRUTH_SNAPSHOT], f[H.INIT_SNAPSHOT] = tsnap, np.array(INITS)
        f[H.TIME] = 0.1 * 2 * np.pi * tsnap
        f[H.INIT] = mem[:, 0, 0]
        f[H.PREV] = np.zeros((N, C, R, R), np.float32)
        f[H.PREV_SNAPSHOT] = np.array([-1, -1])
        f[H.LEAD], f[H.LEAD_ORBITS] = np.arange(1, L + 1), 0.1 * np.arange(1, L + 1)
        if members:
            f[H.MEMBERS] = mem[:, :, :2] if bad == "shape" else mem
            f.attrs[H.ENSEMBLE] = E if ens_attr is None else ens_attr
            f.attrs[H.FORECASTER] = H.FORECASTER_FLOW
        f.attrs.update({"kind": "forecast", "channels": list(CHANNELS), "sim": "syn/seed_0006",
                        "sim_seed": 6, "lo_kind": "native_lo", "run_dir": str(path.parent),
                        "dt_orbits": 0.1, "complete": True, "finite": True})  # fmt: skip
    return path


def _cfg(files: list[Path], out: Path, *over: str, export: Path | None = None) -> SampleConfig:
    return load_config(
        SampleConfig,
        None,
        [
            f"checkpoint={export or out / 'none.pt'}",
            f"output_dir={out}",
            "inputs.kind=forecast",
            f"inputs.forecasts=[{','.join(map(str, files))}]",
            "allow_other_resolution=true",
            "sampler.name=euler",
            "sampler.steps=2",
            "ensemble=1",
            "progress=false",
            *over,
        ],
    )


def test_members_give_one_row_per_initial_state_member_and_lead(tmp_path: Path) -> None:
    path = _rollout(tmp_path / "r" / "m.h5")
    (sim,) = index_forecasts(_cfg([path], tmp_path / "o", "inputs.max_lead=2"))
    rows = [(i, e, k) for i in range(N) for e in range(E) for k in range(2)]
    assert len(sim.snaps) == len(rows) == N * E * 2
    np.testing.assert_array_equal(sim.datasets[H.INIT_INDEX], [i for i, _, _ in rows])
    np.testing.assert_array_equal(sim.datasets[H.MEMBER], [e for _, e, _ in rows])
    np.testing.assert_array_equal(sim.datasets[H.LEAD], [k + 1 for _, _, k in rows])
    assert all(a.dtype == np.int64 for a in sim.datasets.values())
    keys = [s.noise_key for s in sim.snaps]
    assert keys == [(INITS[i], k + 1, e) for i, e, k in rows] and len(set(keys)) == len(keys)
    assert [s.snapshot for s in sim.snaps] == [INITS[i] + k + 1 for i, _, k in rows]
    assert sim.extra_attrs["forecast_members"] == E and sim.extra_attrs["forecast_ensemble"] == E
    with h5py.File(path) as f:
        mem = f[H.MEMBERS][()]
    for t, (i, e, k) in enumerate(rows):
        lo, _, _ = sim.load_lo(t, CHANNELS)
        np.testing.assert_array_equal(lo, mem[i, e, k])
    lo, _, _ = sim.load_lo(3, ["By", "density"])  # a channel subset, by name
    np.testing.assert_array_equal(lo, mem[0, 1, 1][[5, 0]])
    # max_members keeps the first members
    (sim2,) = index_forecasts(_cfg([path], tmp_path / "o", "inputs.max_members=2"))
    assert len(sim2.snaps) == N * 2 * L and set(sim2.datasets[H.MEMBER]) == {0, 1}
    assert sim2.extra_attrs["forecast_members"] == 2


def test_no_members_keeps_the_deterministic_rows_and_keys(tmp_path: Path) -> None:
    path = _rollout(tmp_path / "r" / "d.h5", members=False)
    (sim,) = index_forecasts(_cfg([path], tmp_path / "o", "inputs.max_members=2"))
    assert [s.noise_key for s in sim.snaps] == [
        (INITS[i], k + 1) for i in range(N) for k in range(L)
    ]
    assert set(sim.datasets) == {H.INIT_INDEX, H.LEAD}
    assert "forecast_members" not in sim.extra_attrs and all(
        s.ens_member is None for s in sim.snaps
    )
    with h5py.File(path) as f:
        fc = f[H.FORECAST][()]
    np.testing.assert_array_equal(sim.load_lo(4, CHANNELS)[0], fc[1, 1])


def test_bad_members_and_max_members_are_refused(tmp_path: Path) -> None:
    bad = _rollout(tmp_path / "a" / "shape.h5", bad="shape")
    with pytest.raises(ConfigError, match=r"inputs.forecasts.*shape.h5.*'members' has shape"):
        index_forecasts(_cfg([bad], tmp_path / "o"))
    attr = _rollout(tmp_path / "b" / "attr.h5", ens_attr=5)
    with pytest.raises(ConfigError, match=r"attr.h5.*3 member\(s\) but attribute 'ensemble' = 5"):
        index_forecasts(_cfg([attr], tmp_path / "o"))
    with pytest.raises(ConfigError, match="inputs.max_members"):
        _cfg([attr], tmp_path / "o", "inputs.max_members=-1")


def test_chain_file_of_an_ensemble_rollout(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    exp = write_export(tmp_path / "w.pt", channels=list(CHANNELS),
                       mean=[10.0 * c for c in range(C)], std=[1.0] * C)  # fmt: skip
    path = _rollout(tmp_path / "r" / "m.h5")
    out = tmp_path / "chain"
    run_sample(_cfg([path], out, "inputs.max_lead=1", "inputs.max_members=2", export=exp))
    with h5py.File(out / "syn__seed_0006.h5") as f, h5py.File(path) as r:
        assert f.attrs["kind"] == "chain" and int(f.attrs["forecast_members"]) == 2
        np.testing.assert_array_equal(f[H.MEMBER][()], [0, 1, 0, 1])
        np.testing.assert_array_equal(f[H.INIT_INDEX][()], [0, 0, 1, 1])
        np.testing.assert_array_equal(f[H.LEAD][()], [1, 1, 1, 1])
        np.testing.assert_array_equal(f[H.SNAPSHOT][()], [31, 31, 32, 32])
        mem = r[H.MEMBERS][()]
        np.testing.assert_array_equal(f[H.INPUT][()], mem[[0, 0, 1, 1], [0, 1, 0, 1], 0])
        s = f[H.SAMPLES][()]
    assert s.shape == (4, 1, C, 2 * R, 2 * R) and np.isfinite(s).all()
    # members 0 and 1 of one initial state: different inputs and independent noise
    assert not np.allclose(s[0], s[1])
    # the same member super-resolved from a copy of the file: bit-identical (keys, not order)
    out2 = tmp_path / "chain2"
    run_sample(_cfg([path], out2, "inputs.max_lead=1", "inputs.max_members=1", export=exp))
    with h5py.File(out2 / "syn__seed_0006.h5") as f:
        np.testing.assert_array_equal(f[H.SAMPLES][()], s[[0, 2]])
