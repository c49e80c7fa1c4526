"""Hostile and broken input on disk (issue 19 items 6 and 7): each gets one clear error that
names the file or key and what was expected, a non-zero exit within seconds (never a hang, a
traceback or a signal death), and leaves nothing half-written.

Command-line paths run as ``python -m mhdsr ...`` subprocesses with a ``timeout`` (so a hang
fails the test instead of stalling the suite); disk full is simulated with ``RLIMIT_FSIZE``
(SIGXFSZ ignored, so writes fail with EFBIG as they would with ENOSPC) and, when running as
root, with a real 256 KiB tmpfs.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from athenak_writer import GROUP_VARS, all_locs, bin_bytes, make_deck, smooth_fields, write_run
from mhdsr.athenak.run import AthenaKRun
from mhdsr.errors import AthenaKFormatError, CheckpointError, OutputWriteError, ShardError

REPO = Path(__file__).resolve().parents[1]
NX, MB = (16, 16, 1), (8, 8, 1)
TIMEOUT = 60  # seconds: every case here answers in about one; a hang fails instead of stalling


def _env() -> dict[str, str]:
    src = str(REPO / "src")
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": f"{src}{os.pathsep}{path}" if path else src,
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": "1",
    }


def mhdsr(*argv: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mhdsr ARGV`` (or ``python -c CODE ARGV``) with a timeout."""
    cmd = [sys.executable, "-c", code, *argv] if code else [sys.executable, "-m", "mhdsr", *argv]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)


def assert_clear(p: subprocess.CompletedProcess[str], *names: str) -> str:
    """Exit 2 (a user error), one ``error:`` line naming every one of ``names``, no traceback."""
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    err = p.stderr.strip().splitlines()[-1]
    assert err.startswith("error: "), err
    for n in names:
        assert n in err, (n, err)
    return err


def _run(root: Path, **kw) -> Path:
    return write_run(root, smooth_fields(NX), nx=NX, mb=MB, **kw)


def _first(root: Path, group: str = "mhd_w", snap: int = 0) -> Path:
    return root / "bin" / f"mri2d.{group}.{snap:05d}.bin"


# ---------------------------------------------------------------- item 6: crashes, hangs


@pytest.mark.parametrize(
    ("mesh", "meshblock", "want"),
    [
        (
            (1 << 20, 1 << 20),
            (8, 8),
            r"claims a mesh of 1048576x1048576x1 = \d+ cells.*only \d+ bytes",
        ),
        ((1 << 31, 16), (8, 8), r"claims a mesh of 2147483648x16x1"),
        ((-64, 16), (8, 8), r"<mesh>/nx1 = -64, expected a positive integer"),
        (("abc", 16), (8, 8), r"<mesh>/nx1 = 'abc', expected a positive integer"),
        ((16, 16), (0, 8), r"<meshblock>/nx1 = 0, expected a positive integer"),
        ((16, 16), (7, 8), r"<mesh> 16x16x1 is not a multiple of <meshblock> 7x8x1"),
    ],
)
def test_hostile_deck_sizes_are_refused_before_allocating(
    tmp_path: Path, mesh: tuple, meshblock: tuple, want: str
) -> None:
    deck = make_deck(NX, MB)
    deck = re.sub(r"(<mesh>\n(?:.*\n)*?)nx1 *= *\d+", rf"\g<1>nx1    = {mesh[0]}", deck, count=1)
    deck = re.sub(r"(<mesh>\n(?:.*\n)*?)nx2 *= *\d+", rf"\g<1>nx2    = {mesh[1]}", deck, count=1)
    deck = deck.replace(f"<meshblock>\nnx1 = {MB[0]}", f"<meshblock>\nnx1 = {meshblock[0]}")
    root = _run(tmp_path / "run", snapshots=(0,), deck=deck)
    with pytest.raises(AthenaKFormatError, match=want) as e:
        AthenaKRun(root).info()
    assert "mri2d." in str(e.value)  # names the file whose deck it is
    if mesh[0] == 1 << 20:  # the CLI paths that allocated terabytes first (MemoryError traceback)
        assert_clear(mhdsr("athenak", "info", str(root)), "mri2d.", "1048576x1048576")
        out = tmp_path / "out"
        p = mhdsr("athenak", "to-npy", "--no-progress", "--bindir", str(root), "--outdir", str(out))
        assert_clear(p, "mri2d.", "1048576x1048576")
        assert not out.exists()


def test_size_check_uses_a_complete_snapshot(tmp_path: Path) -> None:
    """Control: an incomplete first snapshot (one rank file of four) does not trip the deck-size
    check; the run reads and the gap is reported."""
    root = _run(tmp_path / "run", snapshots=(0, 1), n_ranks=4, per_rank_layout=True)
    for r in (1, 2, 3):
        for g in GROUP_VARS:
            (root / "bin" / f"rank_{r:08d}" / f"mri2d.{g}.00000.bin").unlink()
    info = AthenaKRun(root).info()
    assert info["snapshots"] == [1] and "00000" in info["incomplete_snapshots"]


def test_block_indices_claiming_65001_squared_cells(tmp_path: Path) -> None:
    root = _run(tmp_path / "run", snapshots=(0,))
    f = _first(root)
    fields = smooth_fields(NX)[0:4]
    f.write_bytes(
        bin_bytes(
            GROUP_VARS["mhd_w"],
            fields,
            all_locs(NX, MB),
            NX,
            MB,
            index_override=[0, 65000] * 2 + [0, 0],
        )
    )
    err = assert_clear(mhdsr("athenak", "info", str(root)), str(f), "65001x65001x1 cells")
    assert "holds only" in err
    out = tmp_path / "out"
    p = mhdsr("athenak", "to-npy", "--no-progress", "--bindir", str(root), "--outdir", str(out))
    assert_clear(p, str(f), "65001x65001x1")


def test_fifo_named_like_a_snapshot_is_refused_not_opened(tmp_path: Path) -> None:
    root = _run(tmp_path / "run", snapshots=(0, 1))
    fifo = _first(root, "mhd_bcc", 1)
    fifo.unlink()
    os.mkfifo(fifo)  # opening it for reading would block for ever
    assert_clear(mhdsr("athenak", "info", str(root)), str(fifo), "FIFO", "regular")
    p = mhdsr(
        "athenak", "to-npy", "--no-progress", "--bindir", str(root), "--outdir", str(tmp_path / "o")
    )
    assert_clear(p, str(fifo), "FIFO")
    fifo.unlink()
    fifo.symlink_to("/dev/zero")  # a device behind a link: endless zeros
    assert_clear(mhdsr("athenak", "info", str(root)), str(fifo), "character device")


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small shard folder built from synthetic runs (train: seed 2, val: seed 3)."""
    from mhdsr.cli import main

    base = tmp_path_factory.mktemp("fuzz_shards")
    nx, mb = (32, 32, 1), (16, 16, 1)
    for seed in (2, 3):
        write_run(
            base / "mri32" / f"seed_{seed:04d}",
            smooth_fields(nx, seed),
            nx=nx,
            mb=mb,
            snapshots=(0, 1, 2),
            deck=make_deck(nx, mb, seed=seed),
        )
    cfg = base / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "hi_runs": [str(base / "mri32" / "seed_*")],
                "output_dir": str(base / "out"),
                "split": {"seeds": {"train": [2], "val": [3]}},
                "workers": 1,
                "progress": False,
            }
        )
    )
    assert main(["shard", "build", "--config", str(cfg)]) == 0
    return base / "out"


def _rewrite_json(tar: Path, change: dict) -> None:
    """Rewrite every json member of ``tar`` with ``change`` applied."""
    with tarfile.open(tar) as tf:
        members = [(ti, tf.extractfile(ti).read()) for ti in tf]
    with tarfile.open(tar, "w") as tf:
        for ti, data in members:
            if ti.name.endswith(".json"):
                data = json.dumps({**json.loads(data), **change}).encode()
                ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))


@pytest.mark.parametrize("bad", [-1, "7", 1.5])
def test_negative_or_non_integer_seed_in_a_sample_json(shards: Path, tmp_path: Path, bad) -> None:
    from mhdsr.sample.inputs import index_shards

    out = tmp_path / "shards"
    shutil.copytree(shards, out)
    _rewrite_json(out / "train-000000.tar", {"seed": bad})
    inputs = SimpleNamespace(split="train", snap_start=None, snap_end=None, stride=1)
    with pytest.raises(
        ShardError, match=r"mri32/seed_0002: json key 'seed' is .*expected one integer >= 0"
    ):
        index_shards(SimpleNamespace(shards=str(out), inputs=inputs))


RLIMIT = (
    "import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, ({n}, {n})); "
    "from mhdsr.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _big_run(root: Path, snaps: int) -> Path:
    nx, mb = (64, 64, 1), (16, 16, 1)
    return write_run(root, smooth_fields(nx), nx=nx, mb=mb, snapshots=tuple(range(snaps)))


def test_disk_full_in_to_npy_file_size_limit(tmp_path: Path) -> None:
    """A write that fails (EFBIG here, ENOSPC on a full disk) is one error naming the output,
    nothing left behind; before, a memory map onto the sparse file died of SIGBUS."""
    root = _big_run(tmp_path / "run", 6)  # 6 x 64 x 64 x 8 x 4 = 786 kB > the limit
    out = tmp_path / "out"
    p = mhdsr("athenak", "to-npy", "--no-progress", "--bindir", str(root), "--outdir", str(out),
              code=RLIMIT.format(n=150_000))  # fmt: skip
    assert_clear(p, str(out / "all_fields_64x64.npy"), "file too large", "nothing was kept")
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_disk_full_in_to_npy_real_tmpfs(tmp_path: Path) -> None:
    root = _big_run(tmp_path / "run", 12)
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True
    )
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode().strip()}")
    try:
        out = mnt / "out"
        p = mhdsr("athenak", "to-npy", "--no-progress", "--bindir", str(root), "--outdir", str(out))
        assert_clear(p, str(out / "all_fields_64x64.npy"), "no space left", "disk full")
        assert not out.exists() or not any(out.iterdir())
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


SAMPLE_WRITER = textwrap.dedent(
    """
    import resource, signal, sys
    import numpy as np
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (300000, 300000))
    from pathlib import Path
    from mhdsr.errors import MhdsrError
    from mhdsr.sample.h5out import SimWriter
    out = Path(sys.argv[1])
    try:
        with SimWriter(out / "sim.h5", n_snap=4, ensemble=4, channels=list("abcdefgh"),
                       hi_shape=(64, 64), lo_shape=(32, 32), with_keys=True, attrs={}) as w:
            for t in range(4):
                w.write_input(t, np.zeros((8, 32, 32), np.float32), time=1.0, snapshot=t,
                              cycle=1, key="k")
                w.write_samples(t, 0, np.ones((4, 8, 64, 64), np.float32))
            w.commit()
    except MhdsrError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    """
)


def test_disk_full_in_sample_output(tmp_path: Path) -> None:
    """The sample writer (HDF5) on a disk too small: one error naming the file, no temporary
    file left; before, HDF5 error spam then SIGSEGV."""
    p = mhdsr(str(tmp_path), code=SAMPLE_WRITER)
    assert_clear(p, str(tmp_path / "sim.h5"), "file too large")
    assert list(tmp_path.iterdir()) == []


def test_write_error_mid_sampling_names_the_file(tmp_path: Path) -> None:
    """A disk that fills after the file was reserved (another job): the write error becomes an
    OutputWriteError naming the final file, and the temporary file is removed."""
    from mhdsr.sample.h5out import SimWriter

    class Full:
        def __getitem__(self, key):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self) -> None:
            pass

    w = SimWriter(tmp_path / "sim.h5", n_snap=1, ensemble=1, channels=["a"], hi_shape=(8, 8),
                  lo_shape=(4, 4), with_keys=False, attrs={})  # fmt: skip
    real, w.f = w.f, Full()
    try:
        with pytest.raises(
            OutputWriteError, match=r"sim\.h5: cannot write the samples: no space left"
        ):
            w.write_samples(0, 0, np.zeros((1, 1, 8, 8), np.float32))
    finally:
        real.close()
    assert not w.tmp.exists() and not (tmp_path / "sim.h5").exists()


# ---------------------------------------------------------------- item 7: misleading messages


def test_config_that_is_a_folder(tmp_path: Path) -> None:
    err = assert_clear(
        mhdsr("shard", "build", "--config", str(tmp_path)), str(tmp_path), "is a folder"
    )
    assert "does not exist" not in err


def test_shards_pointing_at_a_tar_file(shards: Path) -> None:
    tar = shards / "train-000000.tar"
    err = assert_clear(
        mhdsr("shard", "inspect", str(tar)),
        str(tar),
        "expected a shard folder holding manifest.json, got a file",
    )
    assert "utf-8" not in err


def test_inspect_verify_names_the_sides_right(shards: Path, tmp_path: Path) -> None:
    from mhdsr.shard_builder.inspect import verify

    out = tmp_path / "shards"
    shutil.copytree(shards, out)
    m = json.loads((out / "manifest.json").read_text())
    m["splits"]["train"]["shards"][0]["samples"] = 99  # the tar holds 3
    (out / "manifest.json").write_text(json.dumps(m))
    probs = verify(out)["problems"]
    assert "shard train-000000.tar: 3 samples, manifest says 99" in probs
    assert (
        "split train: the manifest's split total says 3 samples, but its shard records add up to 99"
        in probs
    )


def test_file_of_another_resolution_names_both_resolutions(tmp_path: Path) -> None:
    root = _run(tmp_path / "run", snapshots=(0, 1))
    big = (32, 32, 1)
    f = _first(root, snap=1)
    f.write_bytes(
        bin_bytes(GROUP_VARS["mhd_w"], smooth_fields(big)[0:4], all_locs(big, MB), big, MB,
                  deck=make_deck(big, MB), time=0.5, cycle=100)
    )  # fmt: skip
    err = assert_clear(mhdsr("athenak", "info", str(root)), str(f))
    assert "its mesh is 32x32x1 cells" in err and "is 16x16x1" in err


def test_forecast_rollout_names_the_forecast_trainer(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from mhdsr.errors import CheckpointError
    from mhdsr.forecast.rollout import load_forecast_model

    f = tmp_path / "weights_step_00000001.pt"
    f.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="`mhdsr forecast train`") as e:
        load_forecast_model(str(f))
    assert "`mhdsr train`" not in str(e.value)


def test_on_bad_skip_lists_what_it_skipped(tmp_path: Path) -> None:
    nx, mb = (32, 32, 1), (16, 16, 1)
    for seed in (2, 3):
        write_run(tmp_path / "mri32" / f"seed_{seed:04d}", smooth_fields(nx, seed), nx=nx, mb=mb,
                  snapshots=(0, 1, 2), deck=make_deck(nx, mb, seed=seed))  # fmt: skip
    bad = tmp_path / "mri32" / "seed_0003" / "bin" / "mri2d.mhd_w.00001.bin"
    bad.write_bytes(bad.read_bytes()[:-100])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "hi_runs": [str(tmp_path / "mri32" / "seed_*")],
                "output_dir": str(tmp_path / "out"),
                "split": {"seeds": {"train": [2], "val": [3]}},
                "workers": 1,
                "progress": False,
                "on_bad": "skip",
            }
        )
    )
    p = mhdsr("shard", "build", "--config", str(cfg))
    assert p.returncode == 0, p.stderr[-2000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("skipped ")]
    assert len(lines) == 2, p.stderr
    assert (
        lines[0].startswith("skipped mri32/seed_0003 snapshot 1: ")
        and "mri2d.mhd_w.00001.bin" in lines[0]
    )
    assert lines[1].startswith("skipped 1 input(s) in total")


STAGED_FIGURES = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from mhdsr.io_utils import staging_dir
    tmp = staging_dir(Path(sys.argv[1]) / "figures")
    tmp.mkdir()
    (tmp / "panel_00.png").write_bytes(b"half")
    raise SystemExit(2)  # e.g. disk full while drawing: never published
    """
)


def test_eval_figures_are_staged_then_published(tmp_path: Path) -> None:
    """eval draws into a staging folder and renames it to figures/ when complete: a failure
    part-way leaves the previous figures/ as it was and no staging folder behind."""
    from mhdsr.io_utils import publish_dir, staging_dir

    figs = tmp_path / "figures"
    figs.mkdir()
    (figs / "old.png").write_bytes(b"old")
    p = mhdsr(str(tmp_path), code=STAGED_FIGURES)
    assert p.returncode == 2, p.stderr
    assert sorted(q.name for q in tmp_path.iterdir()) == ["figures"]
    assert [q.name for q in figs.iterdir()] == ["old.png"]
    tmp = staging_dir(figs)
    tmp.mkdir()
    (tmp / "new.png").write_bytes(b"new")
    assert publish_dir(tmp, figs) == figs
    assert sorted(q.name for q in tmp_path.iterdir()) == ["figures"]
    assert [q.name for q in figs.iterdir()] == ["new.png"]


# ---- found by the second campaign: dangling pointers, altered records, torn result pickles


def test_export_latest_naming_a_missing_file_is_an_error(tmp_path: Path) -> None:
    from mhdsr.model.export import resolve_export

    exp = tmp_path / "run" / "export"
    exp.mkdir(parents=True)
    (exp / "weights_step_00000002.pt").write_bytes(b"x")
    (exp / "latest").write_text("weights_step_00000777.pt")
    with pytest.raises(CheckpointError, match="weights_step_00000777.pt, which is missing"):
        resolve_export(tmp_path / "run")


def test_checkpoint_meta_whose_step_is_not_the_folders_is_refused(tmp_path: Path) -> None:
    import json

    from mhdsr.runtime.checkpoint import find_latest

    d = tmp_path / "run" / "checkpoints" / "step_00000002"
    d.mkdir(parents=True)
    meta = {"step": -7, "world_size": 1, "zero_stage": 1, "precision": "fp32"}
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"meta.json.*not the folder's step 2"):
        find_latest(tmp_path / "run")


def test_a_torn_result_pickle_is_reported_not_read_as_no_result(tmp_path: Path) -> None:
    from mhdsr.launch.status import _result

    (tmp_path / "123_0_result.pkl").write_bytes(os.urandom(64))
    refused: list[dict[str, str]] = []
    assert _result(tmp_path, "123", 0, refused=refused) is None
    assert len(refused) == 1 and "123_0_result.pkl" in refused[0]["record"]
    assert "unreadable result pickle" in refused[0]["error"]


def test_a_full_disk_in_any_atomic_write_names_the_file(tmp_path: Path, monkeypatch) -> None:
    """Every atomic writer (metrics.json, report.md, figures, shard records) says which file and
    why: a bare ``[Errno 28]`` named neither."""
    import errno

    from mhdsr import io_utils

    def full(src, dst):  # noqa: ANN001, ARG001
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io_utils.os, "replace", full)
    target = tmp_path / "eval" / "metrics.json"
    with pytest.raises(OutputWriteError, match=r"metrics.json: cannot write .*disk full"):
        io_utils.write_json_atomic(target, {"a": 1})
    assert not target.exists() and list(target.parent.iterdir()) == []
    with pytest.raises(PermissionError):  # other OS errors pass unchanged
        monkeypatch.setattr(
            io_utils.os, "replace", lambda s, d: (_ for _ in ()).throw(PermissionError(13, "no"))
        )
        io_utils.write_text_atomic(tmp_path / "x.md", "x")
