"""The reader on synthetic files written by tests/athenak_writer.py: known contents, both
layouts, scrambled meshblock order, several ranks, 3D, and every documented error."""

from __future__ import annotations

import numpy as np
import pytest

from athenak_writer import all_locs, bin_bytes, make_deck, smooth_fields, write_run
from mhdsr.athenak import open_run, read_bin
from mhdsr.errors import AthenaKFormatError

NX2D, MB2D = (32, 16, 1), (8, 4, 1)


@pytest.fixture
def fields2d():
    return smooth_fields(NX2D)


def test_scrambled_single_file(tmp_path, fields2d):
    write_run(tmp_path, fields2d, nx=NX2D, mb=MB2D, snapshots=(0, 3))
    run = open_run(tmp_path)
    assert run.snapshots() == [0, 3]
    s = run.read_snapshot(3)
    assert s.data.shape == (8, 16, 32)
    np.testing.assert_array_equal(s.data, fields2d[:, 0] * 4)
    f = read_bin(run.paths("mhd_w", 0)[0])
    assert f.locs.tolist() != [list(loc) for loc in all_locs(NX2D, MB2D)]  # really scrambled


@pytest.mark.parametrize("n_ranks", [1, 3])
def test_per_rank_layout_equals_single(tmp_path, fields2d, n_ranks):
    write_run(tmp_path / "single", fields2d, nx=NX2D, mb=MB2D)
    write_run(
        tmp_path / "ranks",
        fields2d,
        nx=NX2D,
        mb=MB2D,
        n_ranks=n_ranks,
        per_rank_layout=True,
        rng_seed=5,
    )
    a, b = open_run(tmp_path / "single"), open_run(tmp_path / "ranks")
    assert b.layout == "per_rank" and b.n_ranks == n_ranks
    np.testing.assert_array_equal(a.read_snapshot(0).data, b.read_snapshot(0).data)


def test_3d_blocks(tmp_path):
    nx, mb = (8, 8, 4), (4, 4, 2)
    f = smooth_fields(nx)
    write_run(tmp_path, f, nx=nx, mb=mb, n_ranks=2, per_rank_layout=True)
    run = open_run(tmp_path)
    s = run.read_snapshot(0)
    assert s.data.shape == (8, 4, 8, 8) and s.z is not None and len(s.z) == 4
    np.testing.assert_array_equal(s.data, f)
    assert run.info()["resolution"] == [8, 8, 4]


def test_big_endian_and_float64_files(tmp_path, fields2d):
    locs = all_locs(NX2D, MB2D)[::-1]
    d = tmp_path / "bin"
    d.mkdir()
    for group, names, start in (
        ("mhd_w", ["dens", "velx", "vely", "velz"], 0),
        ("mhd_bcc", ["bcc1", "bcc2", "bcc3"], 4),
    ):
        (d / f"mri2d.{group}.00000.bin").write_bytes(
            bin_bytes(names, fields2d[start : start + len(names)], locs, NX2D, MB2D, order=">")
        )
    (d / "mri2d.mhd_jz.00000.bin").write_bytes(
        bin_bytes(["jz"], fields2d[7:8], locs, NX2D, MB2D, var_size=8)
    )
    s = open_run(tmp_path).read_snapshot(0)
    assert s.data.dtype == np.float32
    np.testing.assert_array_equal(s.data, fields2d[:, 0])


@pytest.mark.parametrize(
    "keys,expected",
    [
        (
            dict(nu_key="viscosity", eta_key="ohmic_resistivity", seed_key="rand_seed"),
            ("mhd/viscosity", "mhd/ohmic_resistivity", "problem/rand_seed"),
        ),
        (dict(), ("mhd/nu_iso", "mhd/eta_ohm", "problem/rseed")),
    ],
)
def test_deck_spellings(tmp_path, fields2d, keys, expected):
    write_run(tmp_path, fields2d, nx=NX2D, mb=MB2D, deck=make_deck(NX2D, MB2D, seed=42, **keys))
    run = open_run(tmp_path)
    assert run.params["nu"] == 3e-5 and run.params["eta"] == 3e-5 and run.params["seed"] == 42
    assert (
        run.param_sources["nu"],
        run.param_sources["eta"],
        run.param_sources["seed"],
    ) == expected


# ----------------------------------------------------------------------------- errors
def _one_file(tmp_path, fields2d, **kw) -> Path:  # noqa: F821
    write_run(tmp_path, fields2d, nx=NX2D, mb=MB2D)
    return tmp_path / "bin" / "mri2d.mhd_w.00000.bin"


def _expect(tmp_path, match):
    with pytest.raises(AthenaKFormatError, match=match) as e:
        open_run(tmp_path).read_snapshot(0)
    return str(e.value)


def test_truncated_file(tmp_path, fields2d):
    p = _one_file(tmp_path, fields2d)
    p.write_bytes(p.read_bytes()[:-100])
    msg = _expect(tmp_path, "not a whole number")
    assert str(p) in msg


def test_truncated_header(tmp_path, fields2d):
    p = _one_file(tmp_path, fields2d)
    p.write_bytes(p.read_bytes()[:150])
    assert str(p) in _expect(tmp_path, "truncated|garbled")


@pytest.mark.parametrize(
    "old,new,match",
    [
        (b"Athena binary output", b"Athena binery output", "not an AthenaK binary"),
        (b"  cycle=0", b"  cycle=x", "garbled header"),
        (b"size of location=8", b"size of location=2", "unsupported 'size of location=2'"),
        (b"  variables:  dens", b"  varables:  dens", "expected 'variables:'"),
    ],
)
def test_garbled_header(tmp_path, fields2d, old, new, match):
    p = _one_file(tmp_path, fields2d)
    raw = p.read_bytes()
    assert old in raw
    p.write_bytes(raw.replace(old, new, 1))
    assert str(p) in _expect(tmp_path, match)


def test_variable_count_mismatch(tmp_path, fields2d):
    p = _one_file(tmp_path, fields2d)
    p.write_bytes(
        bin_bytes(
            ["dens", "velx", "vely", "velz"],
            fields2d[:4],
            all_locs(NX2D, MB2D),
            NX2D,
            MB2D,
            nvar_header=3,
        )
    )
    _expect(tmp_path, "variable count mismatch")


def test_variable_size_mismatch(tmp_path, fields2d):
    """header says 3 variables but the records hold 4: not a whole number of records."""
    p = _one_file(tmp_path, fields2d)
    raw = bin_bytes(
        ["dens", "velx", "vely", "velz"], fields2d[:4], all_locs(NX2D, MB2D), NX2D, MB2D
    )
    raw = raw.replace(b"number of variables=4", b"number of variables=3").replace(
        b"dens  velx  vely  velz", b"dens  velx  vely"
    )
    p.write_bytes(raw)
    with pytest.raises(AthenaKFormatError, match="not a whole number of"):
        read_bin(p)


def test_overlapping_meshblocks(tmp_path, fields2d):
    p = _one_file(tmp_path, fields2d)
    locs = all_locs(NX2D, MB2D)
    p.write_bytes(
        bin_bytes(["dens", "velx", "vely", "velz"], fields2d[:4], locs[:-1] + [locs[0]], NX2D, MB2D)
    )
    _expect(tmp_path, "overlap")


def test_uncovered_cells(tmp_path, fields2d):
    p = _one_file(tmp_path, fields2d)
    locs = all_locs(NX2D, MB2D)
    p.write_bytes(bin_bytes(["dens", "velx", "vely", "velz"], fields2d[:4], locs[:-1], NX2D, MB2D))
    _expect(tmp_path, "missing.*not covered")


def test_missing_rank_file(tmp_path, fields2d):
    write_run(tmp_path, fields2d, nx=NX2D, mb=MB2D, n_ranks=2, per_rank_layout=True)
    (tmp_path / "bin" / "rank_00000001" / "mri2d.mhd_bcc.00000.bin").unlink()
    run = open_run(tmp_path)
    assert run.snapshots() == []  # not usable: a group lacks a rank file
    with pytest.raises(AthenaKFormatError, match="missing from rank folder.*rank_00000001"):
        run.read_snapshot(0)


def test_missing_rank_folder_detected_by_coverage(tmp_path, fields2d):
    write_run(tmp_path, fields2d, nx=NX2D, mb=MB2D, n_ranks=2, per_rank_layout=True)
    import shutil

    shutil.rmtree(tmp_path / "bin" / "rank_00000001")
    _expect(tmp_path, "not covered.*rank file missing")


def test_group_times_differ(tmp_path, fields2d):
    write_run(tmp_path, fields2d, nx=NX2D, mb=MB2D)
    p = tmp_path / "bin" / "mri2d.mhd_jz.00000.bin"
    p.write_bytes(bin_bytes(["jz"], fields2d[7:8], all_locs(NX2D, MB2D), NX2D, MB2D, time=0.25))
    _expect(tmp_path, "must agree")


def test_channel_without_group(tmp_path, fields2d):
    write_run(tmp_path, fields2d, nx=NX2D, mb=MB2D)
    (tmp_path / "bin" / "mri2d.mhd_jz.00000.bin").unlink()
    run = open_run(tmp_path)
    with pytest.raises(AthenaKFormatError, match="channel 'jz'.*no output group"):
        run.read_snapshot(0)
    assert run.read_snapshot(0, ["density", "By"]).data.shape == (2, 16, 32)


def test_nonfinite_values(tmp_path, fields2d):
    bad = fields2d.copy()
    bad[1, 0, 3, 5] = np.nan
    bad[1, 0, 4, 5] = np.inf
    bad[6, 0, 0, 0] = -np.inf
    write_run(tmp_path, bad, nx=NX2D, mb=MB2D)
    msg = _expect(tmp_path, "non-finite")
    assert "velx: 2" in msg and "Bz: 1" in msg
    s = open_run(tmp_path).read_snapshot(0, allow_nonfinite=True)
    assert np.isnan(s.data[1, 3, 5])


def test_ghost_zones_refused(tmp_path, fields2d):
    p = _one_file(tmp_path, fields2d)
    p.write_bytes(
        bin_bytes(
            ["dens", "velx", "vely", "velz"],
            fields2d[:4],
            all_locs(NX2D, MB2D),
            NX2D,
            MB2D,
            ghost=3,
        )
    )
    _expect(tmp_path, "ghost zones")


def test_refinement_refused(tmp_path, fields2d):
    p = _one_file(tmp_path, fields2d)
    p.write_bytes(
        bin_bytes(
            ["dens", "velx", "vely", "velz"],
            fields2d[:4],
            all_locs(NX2D, MB2D),
            NX2D,
            MB2D,
            level=1,
        )
    )
    _expect(tmp_path, "refinement")


def test_swapped_block_bounds_detected(tmp_path, fields2d):
    """A record whose stored bounds disagree with its logical location is refused."""
    p = _one_file(tmp_path, fields2d)
    raw = bytearray(p.read_bytes())
    off = raw.index(b"<par_end>\n") + len(b"<par_end>\n")
    raw[off + 24 : off + 28] = (99).to_bytes(4, "little")  # lx1 of the first record -> out of grid
    p.write_bytes(bytes(raw))
    _expect(tmp_path, "outside the root grid|garbled")


def test_no_bin_files(tmp_path):
    (tmp_path / "bin").mkdir()
    with pytest.raises(AthenaKFormatError, match="no AthenaK .bin files"):
        open_run(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(AthenaKFormatError, match="does not exist"):
        open_run(tmp_path / "nope")


def test_block_bounds_mismatch_detected(tmp_path, fields2d):
    """A record whose stored x1 bounds disagree with its logical location (e.g. a writer that
    swapped axes) is refused, not placed silently."""
    import struct

    p = _one_file(tmp_path, fields2d)
    raw = bytearray(p.read_bytes())
    off = raw.index(b"<par_end>\n") + len(b"<par_end>\n")
    x1min = struct.unpack("<d", raw[off + 40 : off + 48])[0]
    raw[off + 40 : off + 48] = struct.pack("<d", x1min + 0.125)
    p.write_bytes(bytes(raw))
    _expect(tmp_path, "x1 bounds")
