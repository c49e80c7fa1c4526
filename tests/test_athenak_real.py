"""The reader on the bundled REAL AthenaK output (both file layouts)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from conftest import HI, LO
from mhdsr.analysis.physics import curl_z, ddx, div_b, rms
from mhdsr.athenak import open_run, read_bin
from mhdsr.channels import CHANNELS


def _hand_assemble(paths, nvar, n=256, nb=64):
    """Independent reference: parse records with struct and place by (lx1, lx2)."""
    out = np.full((nvar, n, n), np.nan, dtype=np.float32)
    for p in paths:
        raw = p.read_bytes()
        k = raw.index(b"header offset=")
        e = raw.index(b"\n", k)
        off = e + 1 + int(raw[k + 14 : e])
        rec = 88 + 4 * nvar * nb * nb
        assert (len(raw) - off) % rec == 0
        for r in range((len(raw) - off) // rec):
            base = off + r * rec
            ints = struct.unpack("<10i", raw[base : base + 40])
            lx1, lx2 = ints[6], ints[7]
            vals = np.frombuffer(raw, "<f4", count=nvar * nb * nb, offset=base + 88).reshape(
                nvar, nb, nb
            )
            out[:, lx2 * nb : (lx2 + 1) * nb, lx1 * nb : (lx1 + 1) * nb] = vals
    return out


def test_single_file_layout_shapes_and_header():
    run = open_run(HI / "seed_0000")
    assert run.layout == "single" and run.n_ranks == 1
    assert run.groups == ["mhd_bcc", "mhd_jz", "mhd_w"]
    assert run.resolution == (256, 256, 1) and run.n_meshblocks == 16
    snap = run.read_snapshot(24)
    assert snap.data.shape == (8, 256, 256) and snap.data.dtype == np.float32
    assert snap.channels == CHANNELS
    hdr = read_bin(run.paths("mhd_w", 24)[0]).header
    assert snap.time == hdr.time == pytest.approx(37.699112, abs=1e-5)
    assert snap.cycle == hdr.cycle == 27768
    # cell centres from the domain bounds [-0.5, 0.5]
    assert snap.x[0] == pytest.approx(-0.5 + 0.5 / 256) and snap.x[-1] == pytest.approx(
        0.5 - 0.5 / 256
    )
    np.testing.assert_allclose(np.diff(snap.y), 1 / 256, rtol=1e-12)


@pytest.mark.parametrize(
    "sim,snap",
    [
        (HI / "seed_0000", 16),
        (HI / "seed_0001", 19),
        (HI / "seed_0002", 17),
        (LO / "seed_0003", 10),
    ],
)
def test_physical_sanity_and_orientation(sim, snap):
    """density ~ 1 within a few percent; stored jz equals the centred curl of (Bx, By) with
    periodic wrap to float32 round-off — which pins the x/y orientation and block placement."""
    s = open_run(sim).read_snapshot(snap)
    d = s.data.astype(np.float64)
    assert 0.9 < d[0].min() <= d[0].max() < 1.1
    assert abs(d[0].mean() - 1.0) < 1e-4  # mass conservation
    jz_resid = rms(d[7] - curl_z(d[4], d[5])) / rms(d[7])
    assert jz_resid < 1e-5
    # swapping the axes breaks it: proves rows = x2 and columns = x1
    assert rms(d[7] - curl_z(d[4].T, d[5].T)) / rms(d[7]) > 0.5
    assert rms(div_b(d[4], d[5])) / rms(d[7]) < 0.1


def test_initial_condition_t0():
    """t = 0: By = B0 sin(2 pi x), B0 = sqrt(2 p0 / beta), Bx = Bz = 0, rho = 1, and jz equals the
    centred x-derivative of By, i.e. B0 sin(2 pi dx)/dx cos(2 pi x)."""
    s = open_run(LO / "seed_0002").read_snapshot(0)
    assert s.time == 0.0 and s.cycle == 0
    b0 = np.sqrt(2.0 / 4000.0)
    by_expected = b0 * np.sin(2 * np.pi * s.x)[None, :] * np.ones((128, 1))
    np.testing.assert_allclose(s.data[5], by_expected, atol=2e-8)
    assert np.all(s.data[0] == 1.0)
    assert np.all(s.data[4] == 0.0) and np.all(s.data[6] == 0.0)
    dx = 1 / 128
    jz_expected = (
        b0 * np.sin(2 * np.pi * dx) / dx * np.cos(2 * np.pi * s.x)[None, :] * np.ones((128, 1))
    )
    np.testing.assert_allclose(s.data[7], jz_expected, atol=2e-6)
    # and to discretization accuracy the analytic derivative 2 pi B0 cos(2 pi x)
    np.testing.assert_allclose(s.data[7], ddx(by_expected), atol=1e-5)
    assert rms(s.data[7] - 2 * np.pi * b0 * np.cos(2 * np.pi * s.x)) / rms(s.data[7]) < 1e-3


@pytest.mark.parametrize("sim,snap", [(HI / "seed_0002", 15), (HI / "seed_0001", 13)])
def test_per_rank_layout_equals_hand_assembly(sim, snap):
    run = open_run(sim)
    assert run.layout == "per_rank"
    s = run.read_snapshot(snap)
    ref = np.concatenate([
        _hand_assemble(run.paths("mhd_w", snap), 4),
        _hand_assemble(run.paths("mhd_bcc", snap), 3),
        _hand_assemble(run.paths("mhd_jz", snap), 1),
    ])  # fmt: skip
    assert not np.isnan(ref).any()
    np.testing.assert_array_equal(s.data, ref)


def test_two_rank_files_share_header():
    run = open_run(HI / "seed_0003")
    assert run.n_ranks == 2
    a, b = (read_bin(p) for p in run.paths("mhd_bcc", 12))
    assert a.header.time == b.header.time and a.header.deck_text == b.header.deck_text
    assert a.nblocks == b.nblocks == 8
    # rank 0 holds the lower half (lx2 = 0, 1), rank 1 the upper half
    assert set(a.locs[:, 1].tolist()) == {0, 1} and set(b.locs[:, 1].tolist()) == {2, 3}


def test_channel_subset_and_aliases():
    run = open_run(LO / "seed_0003")
    full = run.read_snapshot(8)
    sub = run.read_snapshot(8, ["jz", "bcc2", "dens"])
    assert sub.channels == ("jz", "By", "density")
    np.testing.assert_array_equal(sub.data, full.data[[7, 5, 0]])


def test_params_and_sources():
    run = open_run(HI / "seed_0001")
    p, src = run.params, run.param_sources
    assert p["nu"] == 3e-5 and p["eta"] == 3e-5 and p["seed"] == 1
    assert p["qshear"] == 1.5 and p["omega0"] == 1.0 and p["beta"] == 4000
    assert (
        src["nu"] == "mhd/nu_iso"
        and src["seed"] == "problem/rseed"
        and src["qshear"] == "shearing_box/qshear"
    )
