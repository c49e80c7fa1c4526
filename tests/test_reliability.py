"""The bad-input suite: every stage ends with one clear error (never a hang), writes no partial or
poisoned output, keeps every path a file names inside its folder, and ``athenak info`` judges
each file by its own header.

Each class of the README's "Reliability" section has tests here; the multi-rank ones (a failing
rank must not leave its peer waiting in a collective) are in ``test_reliability_dist.py``.
Processes that could hang run as real processes in their own session under a timeout, and must
leave no process behind (:func:`reliability_helpers.run_session`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mhdsr.cli import main
from mhdsr.errors import CheckpointError, NonFiniteError, ShardError
from mhdsr.io_utils import folder_lock, path_inside
from reliability_helpers import PY, copy_shards, edit_manifest, python_env, run_session
from train_helpers import TINY

REPO = Path(__file__).resolve().parents[1]
CPU_SMALL = str(REPO / "configs" / "train" / "cpu-small.yaml")
LO128 = REPO / "data" / "athenak" / "mri128_nu3e-5"

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def _train(shards: Path, run_dir: Path, *overrides: str) -> list[str]:
    return [PY, "-m", "mhdsr", "train", "--config", CPU_SMALL, f"shards={shards}",
            f"run_dir={run_dir}", *TINY, *overrides]  # fmt: skip


# ============================================================ 1. no hang with loader workers


@pytest.mark.timeout(240)
def test_corrupt_train_shards_end_the_run_with_workers_alive(demo_shards, tmp_path) -> None:
    """Every train shard overwritten with 5000 random bytes, one loader worker: the worker
    gives up, the run exits 2 with the worker's message (not its traceback) and leaves no
    worker behind. Before the fix the worker ignored SIGTERM and the exit waited forever."""
    bad = copy_shards(demo_shards, tmp_path / "shards")
    rng = np.random.default_rng(0)
    for p in bad.glob("train-*.tar"):
        p.write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    # the interpolant formulation: the residual one estimates s_r from train samples at
    # start-up and, with every train shard corrupt, stops there; this test is about the worker
    cmd = _train(bad, tmp_path / "run", "max_steps=2", "data.workers=1",
                 "method.formulation=interpolant")  # fmt: skip
    p, wall = run_session(cmd, timeout=200, env=python_env())
    assert p.returncode == 2, p.stderr[-3000:]
    (line,) = [x for x in p.stderr.splitlines() if x.startswith("error:")]
    # the whole-pass guard (no readable sample from any shard) names the split and the shards
    assert "split 'train'" in line and "gave no readable sample" in line, line
    assert "train-000000.tar" in line and "Traceback" not in p.stderr
    assert "DataLoader worker process 0" in line


@pytest.mark.timeout(240)
def test_exception_in_the_loop_ends_the_run_with_workers_alive(demo_shards, tmp_path) -> None:
    """An exception raised in the training loop at step 4 while the loader worker streams:
    exit 1 (a bug shows its traceback) within the timeout, no worker left. Before the fix:
    a hang at exit, as above."""
    cmd = _train(demo_shards, tmp_path / "run", "max_steps=8", "data.workers=2",
                 "debug.raise_at_step=4")  # fmt: skip
    p, wall = run_session(cmd, timeout=200, env=python_env())
    assert p.returncode == 1, p.stderr[-3000:]
    assert "RuntimeError: debug.raise_at_step=4: injected failure on rank 0" in p.stderr


@pytest.mark.timeout(120)
def test_shard_build_error_in_a_worker_exits_promptly(tmp_path) -> None:
    """A truncated .bin file found by a build worker (2 workers): exit 2 naming the file, no
    worker left, no lock file and no half-written shard."""
    hi = tmp_path / "mri256_nu3e-5"
    for s in ("seed_0002", "seed_0003"):
        shutil.copytree(REPO / "data" / "athenak" / "mri256_nu3e-5" / s, hi / s)
    victim = hi / "seed_0003" / "bin" / "rank_00000001" / "mri2d.mhd_w.00010.bin"
    victim.write_bytes(victim.read_bytes()[:300_000])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"hi_runs: ['{hi}/seed_*']\noutput_dir: {tmp_path / 'out'}\n"
        "split: {seeds: {train: [2], test: [3]}}\nshard: {max_samples: 1}\nworkers: 2\n"
        "progress: false\n"
    )
    p, _ = run_session([PY, "-m", "mhdsr", "shard", "build", "--config", str(cfg)],
                       timeout=100, env=python_env())  # fmt: skip
    assert p.returncode == 2 and f"{victim}: truncated" in p.stderr, p.stderr[-2000:]
    out = tmp_path / "out"
    assert not (out / ".build.lock").exists() and not (out / "manifest.json").exists()
    assert not [q for q in out.rglob(".*tmp*")]


def test_loader_workers_ignore_foreign_sigterm_and_stop_with_their_loader() -> None:
    """The worker set-up: SIGTERM from another process (SLURM signalling the job step) is
    ignored; from the parent it ends the worker at once; leaving an iteration stops every
    worker without garbage collection."""
    import signal
    import subprocess
    import time

    from torch.utils.data import IterableDataset

    from mhdsr.dataset.stream import Loader, _worker_init

    class Count(IterableDataset):
        def __iter__(self):
            i = 0
            while True:
                time.sleep(0.01)
                i += 1
                yield torch.tensor([i])

    import functools

    dl = torch.utils.data.DataLoader(
        Count(), batch_size=None, num_workers=1, prefetch_factor=2,
        worker_init_fn=functools.partial(_worker_init, os.getpid()),
    )  # fmt: skip
    it = iter(dl)
    assert int(next(it)) == 1
    w = it._workers[0]
    subprocess.run(["kill", "-TERM", str(w.pid)], check=True)  # a foreign sender
    time.sleep(0.5)
    assert w.is_alive()
    # as DataLoader's shutdown does before its terminate(): stop watching the worker's exit
    torch.utils.data._utils.signal_handling._remove_worker_pids(id(it))
    it._worker_pids_set = False
    t0 = time.monotonic()
    w.terminate()  # the parent: SIGTERM
    w.join(5)
    assert not w.is_alive() and w.exitcode == 128 + signal.SIGTERM
    assert time.monotonic() - t0 < 2
    it._shutdown_workers()

    gen = iter(Loader(dl))
    assert int(next(gen)) == 1
    workers = list(gen.gi_frame.f_locals["it"]._workers)
    gen.close()  # what fit() does at a checkpoint and when an error leaves the loop
    assert workers and not any(w.is_alive() for w in workers)


@pytest.mark.timeout(120)
def test_loader_workers_die_with_a_killed_parent(tmp_path) -> None:
    """SIGKILL of the training process (no cleanup runs): its loader workers die with it at
    once (PR_SET_PDEATHSIG), not after DataLoader's 5-second watchdog period."""
    import signal
    import subprocess
    import time

    code = textwrap.dedent(
        """
        import functools, os, time, torch
        from torch.utils.data import DataLoader, IterableDataset
        from mhdsr.dataset.stream import Loader, _worker_init

        class Count(IterableDataset):
            def __iter__(self):
                while True:
                    time.sleep(0.01)
                    yield torch.zeros(1)

        dl = DataLoader(Count(), batch_size=None, num_workers=2,
                        worker_init_fn=functools.partial(_worker_init, os.getpid()))
        gen = iter(Loader(dl))
        next(gen)
        print(*[w.pid for w in gen.gi_frame.f_locals["it"]._workers], flush=True)
        time.sleep(120)
        """
    )
    p = subprocess.Popen([PY, "-c", code], env=python_env(), stdout=subprocess.PIPE, text=True)
    try:
        workers = [int(x) for x in p.stdout.readline().split()]
        assert len(workers) == 2
        p.send_signal(signal.SIGKILL)
        p.wait()
        t0 = time.monotonic()
        alive = workers
        while alive and time.monotonic() - t0 < 10:
            alive = [w for w in alive if _running(w)]
            time.sleep(0.05)
        assert not alive and time.monotonic() - t0 < 2.0
    finally:
        if p.poll() is None:
            p.kill()


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ============================================================ 2. the manifest is validated once


def _bad_std(m):
    m["stats"]["hi"]["density"]["std"] = -1


def _nan_string_mean(m):
    m["stats"]["hi"]["velx"]["mean"] = "NaN"


def _nan_mean(m):
    m["stats"]["lo"]["Bx"]["mean"] = math.nan


def _string_max(m):
    m["stats"]["hi"]["jz"]["max"] = "big"


def _bad_count(m):
    m["stats"]["hi"]["By"]["count"] = -4


def _float_count(m):
    m["splits"]["train"]["shards"][0]["samples"] = 2.5


def _std_above_range(m):
    s = m["stats"]["hi"]["vely"]
    s["std"] = s["max"] - s["min"]


def _mean_outside(m):
    s = m["stats"]["hi"]["Bz"]
    s["mean"] = s["max"] + 1.0


def _bad_shape(m):
    m["shapes"]["hi"] = [7, 256, 256]


def _bad_channel(m):
    m["channels"][3] = "pressure"


def _dup_shard(m):
    m["splits"]["val"]["shards"][0]["name"] = m["splits"]["train"]["shards"][0]["name"]


def _escape_name(m):
    m["splits"]["train"]["shards"][0]["name"] = "../../../etc/passwd"


def _absolute_name(m):
    m["splits"]["test"]["shards"][0]["name"] = "/etc/passwd"


def _bad_dtype(m):
    m["dtype"] = "float64"


BAD_MANIFESTS = [
    (_bad_std, "stats.hi.density.std", "a standard deviation >= 0"),
    (_nan_string_mean, "stats.hi.velx.mean", "a finite number"),
    (_nan_mean, "stats.lo.Bx.mean", "a finite number"),
    (_string_max, "stats.hi.jz.max", "a finite number"),
    (_bad_count, "stats.hi.By.count", "an integer >= 0"),
    (_float_count, "splits.train.shards[0].samples", "an integer >= 0"),
    (_std_above_range, "stats.hi.vely.std", "Popoviciu"),
    (_mean_outside, "stats.hi.Bz.mean", "within [min, max]"),
    (_bad_shape, "shapes.hi", "C = 8"),
    (_bad_channel, "channels", "distinct names"),
    (_dup_shard, "splits.val.shards[0].name", "a name not used before"),
    (_escape_name, "splits.train.shards[0].name", "no '..'"),
    (_absolute_name, "splits.test.shards[0].name", "no '/'"),
    (_bad_dtype, "dtype", "'float32'"),
]


@pytest.mark.parametrize(
    "edit, key, expected", BAD_MANIFESTS, ids=[e.__name__ for e, _, _ in BAD_MANIFESTS]
)
def test_a_bad_manifest_is_refused_on_load_naming_the_key(
    demo_shards, tmp_path, capsys, edit, key, expected
) -> None:
    """Hand-edited manifests: one ``error:`` line naming the key (exit 2), from `shard inspect`
    and from the reader every consumer shares. Before: std = -1 trained with exit 0, a string
    stat made `inspect` print a traceback, "../../../etc/passwd" was opened and hashed."""
    from mhdsr.dataset.manifest import read_manifest

    bad = copy_shards(demo_shards, tmp_path / "shards")
    edit_manifest(bad, edit)
    with pytest.raises(ShardError) as e:
        read_manifest(bad)
    assert f"manifest key {key!r}" in str(e.value) and expected in str(e.value)
    assert str(bad / "manifest.json") in str(e.value)
    for args in (["shard", "inspect", str(bad)], ["shard", "inspect", str(bad), "--verify"]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and f"'{key}'" in err and "Traceback" not in err


def test_training_refuses_a_bad_manifest_before_deepspeed(demo_shards, tmp_path) -> None:
    """std = -1: exit 2 naming the key, before torch.distributed and DeepSpeed start (the
    train command checks `shards` and `run_dir` first). Before: it trained, exit 0, loss 9e5."""
    bad = copy_shards(demo_shards, tmp_path / "shards")
    edit_manifest(bad, _bad_std)
    code = (
        "import sys; from mhdsr.cli import main; rc = main(sys.argv[1:]); "
        "print('deepspeed imported:', 'deepspeed' in sys.modules); sys.exit(rc)"
    )
    cmd = [PY, "-c", code, *_train(bad, tmp_path / "run", "max_steps=2")[3:]]
    p, _ = run_session(cmd, timeout=120, env=python_env())
    assert p.returncode == 2, p.stderr[-2000:]
    assert "config key 'shards'" in p.stderr and "'stats.hi.density.std' = -1" in p.stderr
    assert "deepspeed imported: False" in p.stdout
    assert not (tmp_path / "run").exists()
    # and a run_dir that cannot be a folder
    (tmp_path / "file").write_text("x")
    cmd = [PY, "-c", code, *_train(demo_shards, tmp_path / "file" / "run", "max_steps=2")[3:]]
    p, _ = run_session(cmd, timeout=120, env=python_env())
    assert p.returncode == 2 and "config key 'run_dir'" in p.stderr, p.stderr[-2000:]
    assert "deepspeed imported: False" in p.stdout


def test_an_empty_train_split_has_no_statistics_to_normalize_with(tmp_path) -> None:
    from mhdsr.dataset.manifest import normalization, validate_manifest

    m = {
        "schema_version": 1, "channels": ["density"], "dtype": "float32", "byte_order": "little",
        "shapes": {"hi": [1, 4, 4], "lo": [1, 2, 2]},
        "splits": {"train": {"seeds": [], "samples": 0, "source": "hi", "shards": []}},
        "stats": {"hi": {"density": {"count": 0, "mean": math.nan, "std": math.nan,
                                     "min": math.inf, "max": -math.inf}}},
        "std_floor": {"relative": 1e-6, "absolute": 1e-12}, "provenance": {}, "config": {},
    }  # fmt: skip
    validate_manifest(m)  # what the builder writes for an empty train split
    with pytest.raises(ShardError, match=r"stats.hi.density: count 0 \(the train split is empty\)"):
        normalization(m, "hi")


# ============================================================ 2b. no poisoned output


def _payload(value: float, where: str) -> dict:
    raw = {"w": torch.ones(3, 2), "n": torch.tensor(5)}
    norm = {"mean": [0.0, 1.0], "std": [1.0, 2.0]}
    if where == "raw":
        raw["w"][1, 0] = value
    else:
        norm["mean"][1] = value
    return {"format": "mhdsr-export-v1", "step": 3, "raw": raw, "ema": {"w": torch.ones(3, 2)},
            "model": {}, "channels": ["density", "velx"], "normalization": norm, "method": {},
            "config": {}}  # fmt: skip


@pytest.mark.parametrize("value, where", [(math.nan, "raw"), (math.inf, "normalization")])
def test_an_export_with_nonfinite_values_is_refused(tmp_path, value, where) -> None:
    """Before: a NaN manifest mean was exported, and sampling wrote an all-NaN file marked
    complete. Now the export is refused (nothing written, `latest` unmoved) and loading such a
    file is refused too."""
    from mhdsr.model.export import load_export, publish_export, write_export

    good = write_export(tmp_path, 2, _payload(1.0, where))
    publish_export(tmp_path, 2, keep=3)
    with pytest.raises(NonFiniteError, match=r"refusing to export step 3") as e:
        write_export(tmp_path, 3, _payload(value, where))
    assert ("raw.w: 1 of 6 values" if where == "raw" else "normalization.mean[1]: inf") in str(
        e.value
    )
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["latest", good.name]
    assert (tmp_path / "export" / "latest").read_text().strip() == good.name
    torch.save(_payload(value, where), tmp_path / "export" / "weights_step_00000003.pt")
    with pytest.raises(NonFiniteError, match="non-finite values in"):
        load_export(tmp_path / "export" / "weights_step_00000003.pt")


def test_a_sample_file_with_nonfinite_values_is_not_written(tmp_path, capsys) -> None:
    """A model whose output overflows (finite weights of 3e38): the sim fails naming the
    snapshot, members and channels, exit 1, and neither the file nor a temporary remains.
    Before: the file was written and marked complete."""
    from athenak_writer import smooth_fields, write_run
    from mhdsr.config import to_dict
    from mhdsr.method.config import original_recipe
    from mhdsr.model import ModelConfig, UNet

    nx = (16, 16, 1)
    write_run(tmp_path / "runs" / "seed_0005", smooth_fields(nx, seed=5), nx=nx, mb=(8, 8, 1),
              snapshots=(0, 1))  # fmt: skip
    mcfg = ModelConfig(channels=8, width=8, mults=[1, 2], blocks_per_level=1, attn_levels=[],
                       groups=4)  # fmt: skip
    net = UNet(mcfg)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(3e38)
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    exp = tmp_path / "weights_step_00000042.pt"
    torch.save({"format": "mhdsr-export-v1", "step": 42, "samples_seen": 0, "raw": sd, "ema": sd,
                "ema_updates": 0, "model": to_dict(mcfg), "channels": [
                    "density", "velx", "vely", "velz", "Bx", "By", "Bz", "jz"],
                "normalization": {"mean": [10.0 * c for c in range(8)], "std": [1.0] * 8},
                "method": to_dict(original_recipe()), "config": {}}, exp)  # fmt: skip
    cfg = tmp_path / "s.yaml"
    out = tmp_path / "out"
    cfg.write_text(
        f"checkpoint: {exp}\noutput_dir: {out}\nallow_other_resolution: true\n"
        f"inputs:\n  kind: runs\n  runs: ['{tmp_path / 'runs'}/seed_0005']\n"
        "sampler: {name: euler, steps: 1}\nensemble: 2\nbatch_size: 2\nprogress: false\n"
        "device: cpu\n"
    )
    assert main(["sample", "--config", str(cfg)]) == 1
    text = capsys.readouterr().out
    assert "0 sim(s) written" in text and "1 failed" in text
    (failed,) = [x for x in text.splitlines() if "FAILED" in x]
    assert "non-finite values for snapshot 0 (index 0), member(s) [0, 1] (density:" in failed
    # nothing written but the config (the hidden per-sim lock file of the writer aside)
    kept = sorted(p.name for p in out.iterdir() if not p.name.endswith(".h5.lock"))
    assert kept == ["sample_config.yaml"]


def test_a_no_op_sample_run_says_so() -> None:
    from mhdsr.sample.bulk import format_summary

    class S:
        name, steps = "heun", 4

    class C:
        sampler, ensemble, batch_size = S, 2, 1

    res = {"task_index": 0, "num_tasks": 1, "device": "cpu", "done": [], "skipped": ["a"],
           "failed": [], "errors": {}, "samples": 0, "seconds": 0.0, "samples_per_s": 0.0,
           "nfe_per_sample": 8, "output_dir": "o"}  # fmt: skip
    text = format_summary(res, C)
    assert "nothing to sample: every sim of this task is complete" in text
    assert "samples/s" not in text


# ============================================================ 3. paths stay inside their folder


def test_path_inside_refuses_dotdot_absolute_and_symlinks_out(tmp_path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "outside.tar").write_text("secret")
    (root / "in.tar").write_text("ok")
    (root / "link_in.tar").symlink_to(root / "in.tar")
    (root / "link_out.tar").symlink_to(tmp_path / "outside.tar")
    (root / "sub_out").symlink_to(tmp_path)
    assert path_inside(root, "in.tar", "k") == (root / "in.tar").resolve()
    assert path_inside(root, "sub/x.tar", "k") == (root / "sub" / "x.tar").resolve()
    assert path_inside(root, "link_in.tar", "k") == (root / "in.tar").resolve()
    for name, why in [("../outside.tar", "'..'"), ("sub/../../outside.tar", "'..'"),
                      (str(tmp_path / "outside.tar"), "absolute"), ("link_out.tar", "symbolic"),
                      ("sub_out/outside.tar", "symbolic"), ("", "expected a file name")]:  # fmt: skip
        with pytest.raises(ValueError, match=why):
            path_inside(root, name, "manifest key 'x'")


def test_a_shard_symlinked_out_of_the_folder_is_refused(demo_shards, tmp_path, capsys) -> None:
    """A shard that is a symbolic link to a file outside the folder: every reader refuses it
    (`inspect --verify` would otherwise hash the target), naming the manifest key."""
    from mhdsr.dataset.manifest import read_manifest, shard_paths

    bad = copy_shards(demo_shards, tmp_path / "shards")
    target = tmp_path / "elsewhere.tar"
    shutil.move(bad / "test-000000.tar", target)
    (bad / "test-000000.tar").symlink_to(target)
    m = read_manifest(bad)
    assert len(shard_paths(bad, m, "train")) == len(m["splits"]["train"]["shards"])
    with pytest.raises(ShardError, match=r"splits.test.shards\[0\].name'.*outside the folder"):
        shard_paths(bad, m, "test")
    assert main(["shard", "inspect", str(bad), "--verify"]) == 2
    assert "outside the folder" in capsys.readouterr().err
    os.unlink(bad / "test-000000.tar")  # a link inside the folder is fine
    shutil.move(target, bad / "real.tar")
    (bad / "test-000000.tar").symlink_to("real.tar")
    assert shard_paths(bad, m, "test") == [str((bad / "real.tar").resolve())]


def test_export_pointers_stay_inside_the_export_folder(tmp_path) -> None:
    """`export/latest` naming a file elsewhere, or a weights file linked out of the folder: the
    checkpoint is refused (sampling, eval and resume all resolve exports this way)."""
    from mhdsr.model.export import resolve_export

    exp = tmp_path / "run" / "export"
    exp.mkdir(parents=True)
    (tmp_path / "other.pt").write_bytes(b"x")
    for name in ("../../other.pt", str(tmp_path / "other.pt")):
        (exp / "latest").write_text(name + "\n")
        with pytest.raises(CheckpointError, match="leaves the folder"):
            resolve_export(tmp_path / "run")
    (exp / "latest").unlink()
    (exp / "weights_step_00000001.pt").symlink_to(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="outside the folder"):
        resolve_export(tmp_path / "run")


def test_sample_output_names_stay_in_the_output_folder(tmp_path) -> None:
    from mhdsr.sample.h5out import output_path

    for sim in ("../../etc/passwd", "/abs/seed_0001", "..", "mri256/seed_0001"):
        p = output_path(tmp_path, sim)
        assert p.parent == tmp_path and p.name.endswith(".h5")


# ============================================================ 4. athenak info judges each file by its header


def test_info_finds_no_size_problem_in_valid_runs(capsys) -> None:
    """The bundled native 128^2 seeds: every file is valid, but the header text length varies
    with the cycle number. Before: 12 files of seed_0002 (and 9 of seed_0003) were reported as
    "truncated or foreign"."""
    for seed in ("seed_0002", "seed_0003"):
        assert main(["athenak", "info", str(LO128 / seed), "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["size_mismatch"] == {}, info["size_mismatch"]


def test_info_names_only_the_bad_file_among_three(tmp_path, capsys) -> None:
    """Three snapshots, the middle mhd_w file emptied: only it is named (before: the 0-byte
    size counted as normal and the two good files, of different sizes, were named)."""
    run = tmp_path / "seed_0003"
    (run / "bin").mkdir(parents=True)
    src = LO128 / "seed_0003" / "bin"
    for n in (6, 8, 9):
        for g in ("mhd_w", "mhd_bcc", "mhd_jz"):
            shutil.copy(src / f"mri2d.{g}.{n:05d}.bin", run / "bin")
    sizes = {(run / "bin" / f"mri2d.mhd_w.{n:05d}.bin").stat().st_size for n in (6, 9)}
    assert len(sizes) == 2  # the two good files differ in size (header text)
    victim = run / "bin" / "mri2d.mhd_w.00008.bin"
    victim.write_bytes(b"")
    assert main(["athenak", "info", str(run), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert list(info["size_mismatch"]) == [str(victim)]
    assert info["size_mismatch"][str(victim)].startswith("0 bytes, not an AthenaK binary output")
    good = run / "bin" / "mri2d.mhd_bcc.00009.bin"
    good.write_bytes(good.read_bytes() + b"\0" * 16)  # a foreign tail
    assert main(["athenak", "info", str(run), "--json"]) == 2  # the last snapshot is read


def test_info_on_a_folder_of_runs_lists_them(capsys) -> None:
    assert main(["athenak", "info", str(LO128)]) == 2
    err = capsys.readouterr().err
    assert "not a run folder, but it holds" in err and "one level down" in err
    assert "seed_0002, seed_0003" in err and f"e.g. {LO128 / 'seed_0002'}" in err


# ============================================================ 5. smaller items


def test_to_npy_refuses_a_folder_holding_another_runs_conversion(tmp_path, capsys) -> None:
    """Before: converting seed 3 into seed 2's folder deleted seed 2's all_fields_*.npy."""
    out = tmp_path / "out"

    def to_npy(seed: str, res: int, *extra: str) -> int:
        return main(["athenak", "to-npy", "--bindir", str(LO128 / seed), "--outdir", str(out),
                     "--snap-start", "6", "--snap-end", "6", "--resolution", str(res),
                     "--fields", "density", "--no-progress", *extra])  # fmt: skip

    assert to_npy("seed_0002", 32) == 0
    capsys.readouterr()
    kept = (out / "all_fields_32x32.npy").read_bytes()
    assert to_npy("seed_0003", 16) == 2
    err = capsys.readouterr().err
    assert "holds the conversion of another run" in err and "--overwrite" in err
    assert sorted(p.name for p in out.glob("*.npy")) == ["all_fields_32x32.npy"]
    assert (out / "all_fields_32x32.npy").read_bytes() == kept
    # the same run at another resolution replaces its own conversion, as before
    assert to_npy("seed_0002", 16) == 0
    assert sorted(p.name for p in out.glob("*.npy")) == ["all_fields_16x16.npy"]
    assert to_npy("seed_0003", 16, "--overwrite") == 0
    with np.load(out / "metadata.npz") as z:
        assert str(z["source"]) == str(LO128 / "seed_0003")


def test_a_finished_build_leaves_no_lock_and_the_lock_still_excludes(demo_shards, tmp_path) -> None:
    assert not (demo_shards / ".build.lock").exists()
    lock = tmp_path / ".build.lock"
    with folder_lock(lock, "busy", ShardError):
        assert lock.exists()
        with pytest.raises(ShardError, match="busy"), folder_lock(lock, "busy", ShardError):
            pass
    assert not lock.exists()


@pytest.mark.timeout(300)
def test_export_latest_moves_only_with_a_complete_checkpoint(demo_shards, tmp_path) -> None:
    """The checkpoint of step 4 fails (disk full) after its export was written: `export/latest`
    still names step 2, like `checkpoints/latest` (a rerun resumes from there). Before:
    `export/latest` already named step 4."""
    run = tmp_path / "run"
    args = _train(demo_shards, run, "max_steps=4", "checkpoint.every=2", "data.workers=1")[3:]
    code = (
        "import sys\nimport mhdsr.runtime.checkpoint as c\norig = c.write_checkpoint\n"
        "def save(engine, run_dir, step, *a, **k):\n"
        "    if step == 4:\n        raise OSError(28, 'No space left on device')\n"
        "    return orig(engine, run_dir, step, *a, **k)\n"
        "c.write_checkpoint = save\nfrom mhdsr.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    p, _ = run_session([PY, "-c", code, *args], timeout=200, env=python_env())
    assert p.returncode == 2 and "No space left on device" in p.stderr, p.stderr[-2000:]
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000002"
    assert (run / "export" / "latest").read_text().strip() == "weights_step_00000002.pt"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
