"""``mhdsr athenak info`` and ``to-npy`` through the real entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import HI, LO, REPO
from mhdsr.athenak import open_run
from mhdsr.channels import CHANNELS
from mhdsr.cli import main


def test_info_json_keys_subprocess():
    """The installed console entry (python -m mhdsr) prints the contract's JSON keys."""
    out = subprocess.run(
        [sys.executable, "-m", "mhdsr", "athenak", "info", str(HI / "seed_0002"), "--json"],
        capture_output=True, text=True, check=True, cwd=REPO,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    info = json.loads(out.stdout)
    for key in ("resolution", "n_meshblocks", "n_ranks", "basename", "groups", "snapshots",
                "time_first", "time_last", "channels", "params"):  # fmt: skip
        assert key in info, key
    assert info["resolution"] == [256, 256]
    assert info["n_meshblocks"] == 16 and info["n_ranks"] == 2 and info["basename"] == "mri2d"
    assert info["groups"] == ["mhd_bcc", "mhd_jz", "mhd_w"]
    assert info["snapshots"] == [10, 15, 17]
    assert info["time_first"] == pytest.approx(6.2840113) and info["time_last"] == pytest.approx(
        10.1311630
    )
    assert info["channels"] == list(CHANNELS)
    p = info["params"]
    assert (p["nu"], p["eta"], p["seed"], p["qshear"], p["omega0"], p["beta"]) == (
        3e-5,
        3e-5,
        2,
        1.5,
        1.0,
        4000,
    )


def test_info_human(capsys):
    assert main(["athenak", "info", str(LO / "seed_0002")]) == 0
    out = capsys.readouterr().out
    assert "128x128, 4 meshblocks" in out and "nu=3e-05 (mhd/nu_iso)" in out


def test_info_bad_folder_exit_code(tmp_path, capsys):
    assert main(["athenak", "info", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_info_checks_a_broken_run(tmp_path, capsys):
    """A missing rank folder or one rank folder alone fails the read check (exit 2, naming the
    files); a truncated file elsewhere in the run is reported by size."""
    import shutil

    run = tmp_path / "seed_0002"
    shutil.copytree(HI / "seed_0002", run)
    ok = main(["athenak", "info", str(run), "--json"])
    info = json.loads(capsys.readouterr().out)
    assert ok == 0 and info["read_check"] == [10, 17] and info["size_mismatch"] == {}

    victim = run / "bin" / "rank_00000001" / "mri2d.mhd_bcc.00015.bin"
    victim.write_bytes(victim.read_bytes()[:20_000])
    assert main(["athenak", "info", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"SIZE         {victim}: 20000 bytes" in out

    for target in (run / "bin" / "rank_00000000", None):
        if target is None:
            shutil.rmtree(run / "bin" / "rank_00000001")
            target = run
        assert main(["athenak", "info", str(target)]) == 2
        err = capsys.readouterr().err
        assert "8 of 16 meshblocks missing" in err and "rank_00000000" in err, err


def test_info_human_single_layout_has_no_rank_folders(capsys):
    assert main(["athenak", "info", str(HI / "seed_0000")]) == 0
    out = capsys.readouterr().out
    assert "layout       single, basename mri2d" in out and "rank folder" not in out


def test_to_npy_native(tmp_path):
    out = tmp_path / "o"
    assert main(["athenak", "to-npy", "--bindir", str(LO / "seed_0003"), "--outdir", str(out),
                 "--snap-start", "7", "--snap-end", "11", "--snap-stride", "2", "--no-progress"]) == 0  # fmt: skip
    arr = np.load(out / "all_fields_128x128.npy")
    assert arr.shape == (3, 128, 128, 8) and arr.dtype == np.float32
    run = open_run(LO / "seed_0003")
    for t, idx in enumerate([7, 9, 11]):
        np.testing.assert_array_equal(arr[t], np.moveaxis(run.read_snapshot(idx).data, 0, -1))
    meta = np.load(out / "metadata.npz", allow_pickle=False)
    assert list(meta["field_names"]) == list(CHANNELS)
    assert meta["snapshots"].tolist() == [7, 9, 11]
    np.testing.assert_allclose(meta["times"], [run.snapshot_time(i)[0] for i in (7, 9, 11)])
    assert meta["x_coords"].shape == (128,) and meta["x_coords"][0] == pytest.approx(
        -0.5 + 0.5 / 128
    )
    assert json.loads(str(meta["sim_params"]))["seed"] == 3
    assert not list(out.glob(".*tmp*"))


def test_to_npy_resolution_block_average_and_fields(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["athenak", "to-npy", "--bindir", str(HI / "seed_0000"), "--outdir", str(out),
                 "--snap-start", "20", "--resolution", "128", "--fields", "By,jz,dens", "--no-progress"]) == 0  # fmt: skip
    assert "block-average x2" in capsys.readouterr().out
    arr = np.load(out / "all_fields_128x128.npy")
    assert arr.shape == (3, 128, 128, 3)
    hi = open_run(HI / "seed_0000").read_snapshot(22).data[[5, 7, 0]].astype(np.float64)
    ref = hi.reshape(3, 128, 2, 128, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(np.moveaxis(arr[1], -1, 0), ref, rtol=1e-6, atol=1e-7)
    meta = np.load(out / "metadata.npz")
    assert list(meta["field_names"]) == ["By", "jz", "density"]
    assert meta["x_coords"][1] - meta["x_coords"][0] == pytest.approx(1 / 128)


def test_to_npy_non_integer_factor_is_conservative(tmp_path):
    from mhdsr.athenak.convert import remap_matrix, resample

    w = remap_matrix(128, 96)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    f = np.random.default_rng(0).standard_normal((2, 128, 128)).astype(np.float32)
    g, method = resample(f, (96, 96))
    assert method == "conservative area-weighted" and g.shape == (2, 96, 96)
    np.testing.assert_allclose(g.mean(axis=(1, 2)), f.mean(axis=(1, 2)), atol=1e-6)


@pytest.mark.parametrize("args,match", [
    (["--resolution", "512"], "no upsampling"),
    (["--snap-start", "99"], "no snapshots"),
    (["--fields", "density,nope"], "unknown channel 'nope'"),
    (["--snap-stride", "0"], "stride must be >= 1"),
])  # fmt: skip
def test_to_npy_errors(tmp_path, capsys, args, match):
    out = tmp_path / "o"
    rc = main(
        [
            "athenak",
            "to-npy",
            "--bindir",
            str(LO / "seed_0003"),
            "--outdir",
            str(out),
            "--no-progress",
            *args,
        ]
    )
    assert rc == 2
    import re

    assert re.search(match, capsys.readouterr().err)
    assert not (out / "metadata.npz").exists()
