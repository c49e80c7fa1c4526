"""Bulk inference (``mhdsr sample``): HDF5 layout and units for both input kinds, restart,
batch-size / task-split independence, and the errors raised before any work.

Speed: a tiny UNet export (width 8, two levels, random weights) written here. Real data: the
demo shards (built once per session) and the native-128 run seed_0002 restricted to 1-2
snapshots, at 256^2 with one network evaluation per sample. Everything else runs on small
synthetic AthenaK runs (16^2 lo -> 32^2) with ``allow_other_resolution=true``.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from athenak_writer import make_deck, smooth_fields, write_run
from mhdsr.channels import CHANNELS
from mhdsr.config import load_config, to_dict
from mhdsr.errors import CheckpointError, ConfigError
from mhdsr.method.config import original_recipe
from mhdsr.method.grid import avgpool2, upsample
from mhdsr.method.noise import PerSampleNoise, name_word
from mhdsr.model import ModelConfig, UNet
from mhdsr.model.inference import batch_invariant_linears, load_model
from mhdsr.sample.bulk import check_resolution, list_work, run_sample, status
from mhdsr.sample.config import SampleConfig
from mhdsr.sample.h5out import output_path

REPO = Path(__file__).resolve().parents[1]
LO128 = REPO / "data" / "athenak" / "mri128_nu3e-5"
TINY = {"width": 8, "mults": [1, 2], "blocks_per_level": 1, "attn_levels": [], "groups": 4}


# ----------------------------------------------------------------------------------------------
# Fixtures: exports, shards, synthetic runs


def write_export(
    path: Path,
    *,
    channels: list[str],
    mean: list[float],
    std: list[float],
    shards: str = "",
    zero: bool = False,
    seed: int = 0,
) -> Path:
    """A tiny export in the trainer's format. ``zero``: the UNet as initialised, raw = EMA (its
    output convolution is zero, so v = 0 exactly); else every weight is perturbed (v != 0)."""
    cfg = ModelConfig(channels=len(channels), **TINY)
    torch.manual_seed(seed)
    net = UNet(cfg)
    if not zero:
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
    raw = {k: v.clone() for k, v in net.state_dict().items()}
    # EMA differs from raw (so weights=ema|raw matters), except for the zero-velocity model
    ema = {
        k: v + (0.0 if zero else 0.01) if v.is_floating_point() else v.clone()
        for k, v in raw.items()
    }
    torch.save(
        {
            "format": "mhdsr-export-v1",
            "step": 42,
            "samples_seen": 0,
            "raw": raw,
            "ema": ema,
            "ema_updates": 0,
            "model": to_dict(cfg),
            "channels": list(channels),
            "normalization": {"mean": list(mean), "std": list(std)},
            "method": to_dict(original_recipe()),
            "config": {"shards": shards},
        },
        path,
    )
    return path


@pytest.fixture(scope="session")
def demo_norm(demo_shards: Path) -> tuple[list[float], list[float]]:
    from mhdsr.dataset.manifest import normalization, read_manifest

    mean, std = normalization(read_manifest(demo_shards), "hi", list(CHANNELS))
    return mean.tolist(), std.tolist()


@pytest.fixture(scope="session")
def zero_export(tmp_path_factory, demo_shards, demo_norm) -> Path:
    p = tmp_path_factory.mktemp("exp") / "zero.pt"
    return write_export(
        p,
        channels=list(CHANNELS),
        mean=demo_norm[0],
        std=demo_norm[1],
        shards=str(demo_shards),
        zero=True,
    )


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these small convolutions are ~20x slower with two OpenMP threads on
    a loaded 2-core machine (measured), and the results tested here do not depend on it."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three synthetic 16^2 runs (seeds 5, 6, 7; snapshots 0-2), one 64^2 run (seed 9,
    snapshots 0-1) and a matching export with random weights (normalization 10 c +- 1, like
    the synthetic fields)."""
    root = tmp_path_factory.mktemp("synth")
    runs = [(root / "synth" / f"seed_{s:04d}", s, 16, (0, 1, 2)) for s in (5, 6, 7)]
    runs.append((root / "synth64" / "seed_0009", 9, 64, (0, 1)))
    for path, s, n, snaps in runs:
        nx, mb = (n, n, 1), (n // 2, n // 2, 1)
        write_run(
            path,
            smooth_fields(nx, seed=s),
            nx=nx,
            mb=mb,
            snapshots=snaps,
            deck=make_deck(nx, mb, seed=s),
        )
    exp = write_export(
        root / "w.pt",
        channels=list(CHANNELS),
        mean=[10.0 * c for c in range(8)],
        std=[1.0 + 0.5 * c for c in range(8)],
    )
    return {"runs": root / "synth", "runs64": root / "synth64", "export": exp}


def synth_cfg(synth: dict[str, Path], out: Path, *overrides: str) -> SampleConfig:
    return load_config(
        SampleConfig,
        None,
        [
            f"checkpoint={synth['export']}",
            f"output_dir={out}",
            "inputs.kind=runs",
            f"inputs.runs=[{synth['runs']}/seed_*]",
            "allow_other_resolution=true",
            "sampler.name=heun",
            "sampler.steps=2",
            "ensemble=3",
            "batch_size=4",
            "progress=false",
            *overrides,
        ],
    )


def read_h5(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}


# ----------------------------------------------------------------------------------------------
# Format and units


def _shard_hi(shards: Path, key: str) -> np.ndarray:
    for tar in sorted(shards.glob("test-*.tar")):
        with tarfile.open(tar) as tf:
            for ti in tf:
                if ti.name == f"{key}.hi.npy":
                    return np.load(io.BytesIO(tf.extractfile(ti).read()))
    raise AssertionError(key)


def test_shards_test_split_layout_units_and_noise_keys(
    tmp_path, demo_shards, zero_export, demo_norm
):
    cfg = load_config(
        SampleConfig,
        REPO / "configs" / "sample" / "demo.yaml",
        [
            f"checkpoint={zero_export}",
            f"shards={demo_shards}",
            f"output_dir={tmp_path}",
            "inputs.snap_start=13",
            "inputs.snap_end=16",
            "sampler.name=euler",
            "sampler.steps=1",
            "seed=11",
            "progress=false",
        ],
    )
    res = run_sample(cfg)
    assert res["done"] == ["mri256_nu3e-5/seed_0001"] and not res["failed"]
    path = tmp_path / "mri256_nu3e-5__seed_0001.h5"
    assert path.is_file() and not list(tmp_path.glob(".*tmp*"))
    assert (tmp_path / "sample_config.yaml").is_file()
    with h5py.File(path, "r") as f:
        a = dict(f.attrs)
        s, lo = f["samples"][()], f["input"][()]
        assert f["samples"].dtype == np.float32 and s.shape == (2, 2, 8, 256, 256)
        assert f["input"].dtype == np.float32 and lo.shape == (2, 8, 128, 128)
        assert f["time"].dtype == np.float64 and f["snapshot"].dtype == np.int64
        assert f["snapshot"][()].tolist() == [13, 16]
        keys = f["key"].asstr()[()].tolist()
        times = f["time"][()]
    assert keys == ["s0001_n00013", "s0001_n00016"]
    assert times[0] == pytest.approx(20.4203850708237, abs=1e-9)  # the shard's json time
    assert list(a["channels"]) == list(CHANNELS)
    assert json.loads(a["sampler"]) == {
        "name": "euler", "steps": 1, "grid": "linear", "rho": 7.0, "options": {}, "nfe": 1,
        "t_min": 1e-4, "t_max": 1 - 1e-4, "temperature": [1.0],
    }  # fmt: skip
    assert not a["degrade"] and "degrade_transfer" not in a  # no degradation matching
    assert "degrade" not in json.loads(a["settings"])  # settings as before degrade existed
    assert a["checkpoint"] == str(zero_export) and a["checkpoint_step"] == 42
    assert len(a["checkpoint_sha256"]) == 64 and a["weights"] == "ema" and a["sigma"] == 0.1
    assert a["seed"] == 11 and a["sim"] == "mri256_nu3e-5/seed_0001" and a["sim_seed"] == 1
    assert a["source"] == "shards:test" and a["lo_kind"] == "derived_avgpool2"
    assert a["upsample"] == "bilinear" and a["complete"] and a["code_version"]

    # the input is avgpool2 of the stored hi field, in physical units
    hi = _shard_hi(demo_shards, "s0001_n00016")
    np.testing.assert_array_equal(lo[1], avgpool2(torch.from_numpy(hi)).numpy())
    # v = 0 and one Euler step: x = u + sigma * eps with eps from the key (seed, crc32(sim), s,
    # n, m), and
    # the output is denormalized: samples = (Up(norm(lo)) + sigma eps) * std + mean
    mean = torch.tensor(demo_norm[0], dtype=torch.float32)[:, None, None]
    std = torch.tensor(demo_norm[1], dtype=torch.float32)[:, None, None]
    u = upsample((torch.from_numpy(lo) - mean) / std, 2, "bilinear")
    for t, n in enumerate([13, 16]):
        w = name_word("mri256_nu3e-5/seed_0001")
        eps = PerSampleNoise.from_keys(11, [(w, 1, n, 0), (w, 1, n, 1)]).draw((8, 256, 256))
        want = (u[t] + 0.1 * eps) * std + mean
        np.testing.assert_allclose(s[t], want.numpy(), rtol=1e-6, atol=1e-6 * float(std.max()))
    # physical units: per-channel means of samples close to the input's (density ~ 1)
    d = s.mean(axis=(0, 1, 3, 4)) - lo.mean(axis=(0, 2, 3))
    assert np.all(np.abs(d) < 0.01 * np.asarray(demo_norm[1]))
    assert abs(s[:, :, 0].mean() - 1.0) < 0.01


def test_shards_heldout_split_uses_native_lo(tmp_path, demo_shards, zero_export):
    cfg = load_config(
        SampleConfig,
        None,
        [
            f"checkpoint={zero_export}",
            f"shards={demo_shards}",
            f"output_dir={tmp_path}",
            "inputs.split=heldout",
            "inputs.snap_start=12",
            "inputs.snap_end=12",
            "sampler.name=euler",
            "sampler.steps=1",
            "ensemble=1",
            "progress=false",
        ],
    )
    assert list_work(cfg) == ["mri128_nu3e-5/seed_0002", "mri128_nu3e-5/seed_0003"]
    run_sample(cfg, task_index=1, num_tasks=2)  # only seed_0003
    from mhdsr.athenak import open_run

    with h5py.File(tmp_path / "mri128_nu3e-5__seed_0003.h5", "r") as f:
        assert f.attrs["lo_kind"] == "native" and f.attrs["source"] == "shards:heldout"
        assert f["key"].asstr()[()].tolist() == ["s0003_n00012"] and f["samples"].shape == (
            1,
            1,
            8,
            256,
            256,
        )
        # the shard's lo.npy is the AthenaK snapshot, byte for byte
        np.testing.assert_array_equal(
            f["input"][0], open_run(LO128 / "seed_0003").read_snapshot(12).data
        )
    assert status(cfg) == {
        "done": ["mri128_nu3e-5/seed_0003"],
        "pending": ["mri128_nu3e-5/seed_0002"],
    }


def test_native_run_folder_layout(tmp_path, demo_shards, zero_export):
    cfg = load_config(
        SampleConfig,
        None,
        [
            f"checkpoint={zero_export}",
            f"output_dir={tmp_path}",
            "inputs.kind=runs",
            f"inputs.runs=[{LO128}/seed_0002]",
            "inputs.snap_start=7",
            "inputs.snap_end=8",
            "sampler.name=euler",
            "sampler.steps=1",
            "ensemble=1",
            "weights=raw",
            "progress=false",
        ],
    )
    assert list_work(cfg) == ["mri128_nu3e-5/seed_0002"]
    run_sample(cfg)
    from mhdsr.athenak import open_run

    run = open_run(LO128 / "seed_0002")
    with h5py.File(tmp_path / "mri128_nu3e-5__seed_0002.h5", "r") as f:
        assert f["samples"].shape == (2, 1, 8, 256, 256) and f["input"].shape == (2, 8, 128, 128)
        seed = int(f.attrs["sim_seed"])  # runs get shard-style keys too (every output has `key`)
        assert f["key"].asstr()[()].tolist() == [f"s{seed:04d}_n00007", f"s{seed:04d}_n00008"]
        assert f["snapshot"][()].tolist() == [7, 8]
        np.testing.assert_array_equal(f["input"][1], run.read_snapshot(8).data)
        assert f["time"][0] == run.snapshot_time(7)[0] and f["cycle"][0] == run.snapshot_time(7)[1]
        a = dict(f.attrs)
    assert a["source"] == "runs" and a["lo_kind"] == "native" and a["weights"] == "raw"
    assert a["sim"] == "mri128_nu3e-5/seed_0002" and a["sim_seed"] == 2


def test_channel_subset_selected_by_name(tmp_path, synth):
    exp = write_export(
        tmp_path / "w2.pt", channels=["velx", "By"], mean=[10.0, 50.0], std=[1.0, 1.0]
    )
    cfg = synth_cfg(synth, tmp_path / "o", f"checkpoint={exp}", "inputs.snap_end=0", "ensemble=1")
    run_sample(cfg)
    from mhdsr.athenak import open_run

    full = open_run(synth["runs"] / "seed_0005").read_snapshot(0).data
    with h5py.File(tmp_path / "o" / "synth__seed_0005.h5", "r") as f:
        np.testing.assert_array_equal(f["input"][0], full[[1, 5]])
        assert f["samples"].shape == (1, 1, 2, 32, 32) and list(f.attrs["channels"]) == [
            "velx",
            "By",
        ]
        # physical units: channel means follow the input (10 and 50), not the normalized ~0
        np.testing.assert_allclose(f["samples"][0, 0].mean(axis=(1, 2)), [10.0, 50.0], atol=1.5)


# ----------------------------------------------------------------------------------------------
# Reproducibility and restart


def test_batch_size_does_not_change_samples(tmp_path, synth):
    """ODE and SDE samples are bit-identical for every batch size (64^2 lo -> 128^2 output; the
    tolerance at tiny fields is in test_task_split_does_not_change_samples)."""
    samplers = {
        "heun": ["sampler.name=heun", "sampler.steps=1"],
        "em": ["sampler.name=euler_maruyama", "sampler.steps=2", "sampler.options.delta=0.5"],
    }
    for tag, sampler in samplers.items():
        got = {}
        for b in (1, 4, 64):
            out = tmp_path / f"{tag}_{b}"
            run_sample(
                synth_cfg(
                    synth,
                    out,
                    f"inputs.runs=[{synth['runs64']}/seed_*]",
                    f"batch_size={b}",
                    *sampler,
                )
            )
            got[b] = read_h5(output_path(out, "synth64/seed_0009"))["samples"]
        assert got[1].shape == (2, 3, 8, 128, 128) and np.isfinite(got[1]).all()
        assert not np.array_equal(got[1][0, 0], got[1][0, 1])  # members get distinct noise
        np.testing.assert_array_equal(got[4], got[1])
        np.testing.assert_array_equal(got[64], got[1])


def test_task_split_does_not_change_samples(tmp_path, synth):
    ref = synth_cfg(synth, tmp_path / "ref", "batch_size=2")
    run_sample(ref)
    names = list_work(ref)
    assert names == ["synth/seed_0005", "synth/seed_0006", "synth/seed_0007"]
    split = synth_cfg(synth, tmp_path / "split", "batch_size=2")
    r0 = run_sample(split, task_index=0, num_tasks=2)
    r1 = run_sample(split, task_index=1, num_tasks=2)
    assert r0["done"] == ["synth/seed_0005", "synth/seed_0007"] and r1["done"] == [
        "synth/seed_0006"
    ]
    run_sample(synth_cfg(synth, tmp_path / "b5", "batch_size=5"))
    for name in names:
        want = read_h5(output_path(tmp_path / "ref", name))["samples"]
        assert np.isfinite(want).all() and want.std() > 0
        np.testing.assert_array_equal(
            read_h5(output_path(tmp_path / "split", name))["samples"], want
        )
        # at 16^2 oneDNN picks batch-size-dependent convolution kernels (ulp-level differences;
        # none at the 128^2 fields of the test above, nor at 256^2)
        got = read_h5(output_path(tmp_path / "b5", name))["samples"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_rank_from_environment(tmp_path, synth, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_PORT", raising=False)
    res = run_sample(synth_cfg(synth, tmp_path, "inputs.snap_end=0", "ensemble=1"))
    assert res["done"] == ["synth/seed_0006"] and (res["task_index"], res["num_tasks"]) == (1, 2)
    import os

    assert "MASTER_PORT" not in os.environ  # detect_launch's exports were undone


def test_rerun_skips_and_kill_resume_is_identical(tmp_path, synth):
    cfg = synth_cfg(synth, tmp_path)
    first = run_sample(cfg)
    assert len(first["done"]) == 3
    ref = {n: read_h5(output_path(tmp_path, n)) for n in first["done"]}
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.h5")}

    again = run_sample(cfg)  # idempotent: nothing recomputed
    assert again["done"] == [] and again["skipped"] == first["done"]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.h5")} == mtimes

    # a killed run: one file missing, a half-written temporary file of another left behind
    output_path(tmp_path, "synth/seed_0006").unlink()
    output_path(tmp_path, "synth/seed_0007").unlink()
    tmp = tmp_path / ".synth__seed_0007.h5.tmp-host-99999"
    tmp.write_bytes(b"\x89HDF garbage")
    assert status(cfg) == {
        "done": ["synth/seed_0005"],
        "pending": ["synth/seed_0006", "synth/seed_0007"],
    }
    res = run_sample(cfg)
    assert res["done"] == ["synth/seed_0006", "synth/seed_0007"] and res["skipped"] == [
        "synth/seed_0005"
    ]
    assert not tmp.exists()
    for n, want in ref.items():
        got = read_h5(output_path(tmp_path, n))
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


def test_incomplete_file_is_recomputed_and_other_settings_refused(tmp_path, synth):
    cfg = synth_cfg(synth, tmp_path, "inputs.snap_end=0", "ensemble=1")
    run_sample(cfg)
    p = output_path(tmp_path, "synth/seed_0005")
    with h5py.File(p, "a") as f:
        f.attrs["complete"] = False
    assert run_sample(cfg)["done"] == ["synth/seed_0005"]
    with pytest.raises(ConfigError, match=r"other settings .*sampler"):
        run_sample(synth_cfg(synth, tmp_path, "inputs.snap_end=0", "ensemble=1", "sampler.steps=3"))


def test_batch_invariant_linears():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.SiLU(), torch.nn.Linear(64, 32))
    x = torch.randn(1, 16).expand(6, 16).contiguous()
    y_diff = torch.randn(6, 16)
    ref_diff = net(y_diff)
    one = net(x[:1])
    handles = batch_invariant_linears(net)
    assert torch.equal(net(x), one.expand(6, 32))  # identical rows: exactly batch-of-one
    assert torch.equal(net(y_diff), ref_diff)  # different rows: unchanged
    for h in handles:
        h.remove()


# ----------------------------------------------------------------------------------------------
# Errors before any work


def test_missing_checkpoint_and_bad_key(tmp_path, synth):
    with pytest.raises(CheckpointError, match=r"'checkpoint'.*nope"):
        run_sample(synth_cfg(synth, tmp_path, f"checkpoint={tmp_path / 'nope'}"))
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(CheckpointError, match="checkpoint.*no exported weights"):
        run_sample(synth_cfg(synth, tmp_path, f"checkpoint={tmp_path / 'empty_run'}"))
    with pytest.raises(ConfigError, match="sampler.stepz"):
        synth_cfg(synth, tmp_path, "sampler.stepz=3")
    with pytest.raises(ConfigError, match="sampler.options"):
        synth_cfg(synth, tmp_path, "sampler.options.delta=1.0")  # heun takes no options
    with pytest.raises(ConfigError, match="sampler"):
        run_sample(
            synth_cfg(synth, tmp_path, "sampler.name=euler_maruyama", "sampler.options.delta=-1")
        )
    assert not list(tmp_path.glob("*.h5"))


def test_channel_mismatch(tmp_path, synth):
    exp = write_export(tmp_path / "bad.pt", channels=["velx", "pressure"], mean=[0, 0], std=[1, 1])
    with pytest.raises(CheckpointError, match="pressure"):
        run_sample(synth_cfg(synth, tmp_path, f"checkpoint={exp}"))


def test_resolution_checks(tmp_path, synth, demo_shards, demo_norm):
    exp = write_export(
        tmp_path / "w.pt",
        channels=list(CHANNELS),
        mean=demo_norm[0],
        std=demo_norm[1],
        shards=str(demo_shards),
    )
    cfg = synth_cfg(synth, tmp_path / "o", f"checkpoint={exp}", "allow_other_resolution=false")
    with pytest.raises(ConfigError, match=r"16x16 -> 32x32.*256x256.*allow_other_resolution"):
        run_sample(cfg)
    assert not (tmp_path / "o").exists()
    # fully-convolutional mode: the 32^2 output of a 16^2 input
    res = run_sample(
        synth_cfg(synth, tmp_path / "o", f"checkpoint={exp}", "inputs.snap_end=0", "ensemble=1")
    )
    assert len(res["done"]) == 3
    with h5py.File(output_path(tmp_path / "o", "synth/seed_0005"), "r") as f:
        assert f["samples"].shape == (1, 1, 8, 32, 32)
    # sizes must still be multiples of the model's size_multiple
    lm = load_model(str(exp))
    assert check_resolution((128, 128), lm, allow_other=False, sim="x") == (256, 256)
    with pytest.raises(ConfigError, match="multiple of 4"):
        check_resolution(
            (15, 15), dataclasses.replace(lm, size_multiple=4), allow_other=True, sim="x"
        )
    # unknown trained resolution (training shards not readable) needs allow_other_resolution
    lm_unknown = dataclasses.replace(lm, trained_hi_shape=None)
    with pytest.raises(CheckpointError, match="allow_other_resolution"):
        check_resolution((128, 128), lm_unknown, allow_other=False, sim="x")


def test_empty_selection_and_missing_inputs(tmp_path, synth, demo_shards, zero_export):
    with pytest.raises(ConfigError, match="inputs.snap_start"):
        run_sample(synth_cfg(synth, tmp_path, "inputs.snap_start=100"))
    with pytest.raises(ConfigError, match="inputs.runs"):
        run_sample(synth_cfg(synth, tmp_path, f"inputs.runs=[{tmp_path}/nothing_*]"))
    base = [f"checkpoint={zero_export}", f"output_dir={tmp_path}", "progress=false"]
    with pytest.raises(ConfigError, match="'shards'"):
        load_config(SampleConfig, None, [*base, "shards="])
    with pytest.raises(ConfigError, match="'shards'.*missing"):
        run_sample(load_config(SampleConfig, None, [*base, f"shards={tmp_path / 'missing'}"]))
    with pytest.raises(ConfigError, match="inputs.split.*nosuch"):
        run_sample(
            load_config(SampleConfig, None, [*base, f"shards={demo_shards}", "inputs.split=nosuch"])
        )
    assert not list(tmp_path.glob("*.h5"))


# ----------------------------------------------------------------------------------------------
# CLI and the shipped config


def test_cli_runs_and_reports(tmp_path, synth, capsys):
    from mhdsr.cli import main

    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        f"checkpoint: {synth['export']}\noutput_dir: {tmp_path / 'out'}\nallow_other_resolution: true\n"
        f"inputs:\n  kind: runs\n  runs: ['{synth['runs']}/seed_0006']\n  snap_end: 1\n"
        "sampler: {name: euler, steps: 1}\nensemble: 2\nprogress: false\n"
    )
    assert main(["sample", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "1 sim(s) written" in out and "4 samples" in out and "samples/s" in out
    assert main(["sample", "--config", str(cfg), "--status"]) == 0
    assert "1/1 sim(s) complete" in capsys.readouterr().out
    assert main(["sample", "--config", str(cfg), "--status", "ensemble=3"]) == 2
    assert "was made with other settings (ensemble: 2 -> 3)" in capsys.readouterr().err
    assert main(["sample", "--config", str(cfg), f"checkpoint={tmp_path}/none.pt"]) == 2
    assert "checkpoint" in capsys.readouterr().err
    saved = (tmp_path / "out" / "sample_config.yaml").read_text()
    assert "checkpoint sha256" in saved and "kind: runs" in saved


def test_demo_config_and_documented_overrides():
    path = REPO / "configs" / "sample" / "demo.yaml"
    cfg = load_config(SampleConfig, path)
    assert (cfg.checkpoint, cfg.shards, cfg.output_dir) == (
        "runs/demo/train",
        "runs/demo/shards",
        "runs/demo/samples/ode-test",
    )
    assert cfg.inputs.kind == "shards" and cfg.inputs.split == "test"
    assert cfg.sampler.name == "heun" and cfg.ensemble == 2
    # every override line documented in the file's comments loads and validates
    lines = [
        ln.split("demo.yaml", 1)[1].split()
        for ln in path.read_text().splitlines()
        if ln.startswith("#") and "mhdsr sample --config configs/sample/demo.yaml" in ln
    ]
    assert len(lines) >= 3
    for over in lines:
        load_config(SampleConfig, path, [o.strip("'") for o in over])
