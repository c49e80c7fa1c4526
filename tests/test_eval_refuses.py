"""``mhdsr eval`` refuses to score a sample file against truth it does not come from (issue 19,
item 5): a permuted ``channels`` attribute, truth shards replaced under the same keys, samples
swapped between snapshots. Each exits 2 with an error naming the file and the snapshot."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from eval_helpers import pool, shared_demo_shards, truth_of_sim, write_samples
from mhdsr.channels import CHANNELS
from mhdsr.cli import main
from mhdsr.dataset.shards import digest

SIM = "mri256_nu3e-5/seed_0001"
CHS = ("density", "velx", "Bx", "By", "jz")
IDX = [CHANNELS.index(c) for c in CHS]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return shared_demo_shards(tmp_path_factory)


def _write(path: Path, shards: Path, *, channels=CHS, swap: bool = False) -> np.ndarray:
    """A good sample file of SIM (2 snapshots; samples = truth + noise), optionally with the
    channels attribute permuted or the samples of the two snapshots swapped."""
    keys, hi, snaps, times, seed = truth_of_sim(shards, "test", SIM, 2)
    hi = hi[:, IDX]
    rng = np.random.default_rng(0)
    ens = hi[:, None] + 0.05 * hi.std(axis=(0, 2, 3))[:, None, None] * rng.standard_normal(
        (2, 2, *hi.shape[1:])
    ).astype(np.float32)
    if swap:
        ens = ens[::-1]
    write_samples(path, ens, pool(hi), snapshots=snaps, times=times, sim=SIM, sim_seed=seed,
                  keys=keys, channels=channels)  # fmt: skip
    return snaps


def _eval(tmp: Path, samples: Path, shards: Path, capsys) -> str:
    cfg = {"samples": str(samples), "shards": str(shards), "output_dir": str(tmp / "eval"),
           "max_panels": 0, "progress": False, "baselines": ["bicubic"]}  # fmt: skip
    p = tmp / "eval.yaml"
    p.write_text(yaml.safe_dump(cfg))
    assert main(["eval", "--config", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: "), err
    return err


def test_a_good_file_is_scored(shards, tmp_path, capsys) -> None:
    _write(tmp_path / "s" / "a.h5", shards)
    cfg = {"samples": str(tmp_path / "s"), "shards": str(shards), "progress": False,
           "output_dir": str(tmp_path / "eval"), "max_panels": 0, "baselines": ["bicubic"]}  # fmt: skip
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["eval", "--config", str(tmp_path / "eval.yaml")]) == 0


def test_permuted_channels_attribute_is_refused(shards, tmp_path, capsys) -> None:
    perm = ("velx", "density", "Bx", "By", "jz")
    snaps = _write(tmp_path / "s" / "perm.h5", shards, channels=perm)
    err = _eval(tmp_path, tmp_path / "s", shards, capsys)
    assert "perm.h5" in err and f"snapshot {snaps[0]}" in err, err
    assert "channels attribute" in err and str(list(CHS)) in err, err


def test_truth_replaced_under_the_same_keys_is_refused(shards, tmp_path, capsys) -> None:
    fake = tmp_path / "shards"
    shutil.copytree(shards, fake)
    manifest = json.loads((fake / "manifest.json").read_text())
    for sh in manifest["splits"]["test"]["shards"]:
        path = fake / sh["name"]
        with tarfile.open(path) as tf:
            members = [(ti, tf.extractfile(ti).read()) for ti in tf]
        his = [data for ti, data in members if ti.name.endswith(".hi.npy")]
        his = his[1:] + his[:1]  # every key gets another snapshot's field
        new_hi: dict[str, bytes] = {}
        with tarfile.open(path, "w") as tf:
            for ti, data in members:
                if ti.name.endswith(".hi.npy"):
                    data = new_hi[ti.name.removesuffix(".hi.npy")] = his.pop(0)
                tf.addfile(ti, io.BytesIO(data))
        # a consistent replacement: the sample json's member digests describe the new bytes
        with tarfile.open(path) as tf:
            members = [(ti, tf.extractfile(ti).read()) for ti in tf]
        with tarfile.open(path, "w") as tf:
            for ti, data in members:
                if ti.name.endswith(".json"):
                    meta = json.loads(data)
                    if "sum64" in meta:
                        meta["sum64"]["hi.npy"] = digest(new_hi[ti.name.removesuffix(".json")])
                    data = json.dumps(meta).encode()
                    ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
        sh["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        sh["bytes"] = path.stat().st_size
    (fake / "manifest.json").write_text(json.dumps(manifest))
    snaps = _write(tmp_path / "s" / "a.h5", shards)
    err = _eval(tmp_path, tmp_path / "s", fake, capsys)
    assert "a.h5" in err and f"snapshot {snaps[0]}" in err, err
    assert "not avgpool2 of the truth" in err and "> 0.0001" in err, err


def test_samples_swapped_between_snapshots_are_refused(shards, tmp_path, capsys) -> None:
    snaps = _write(tmp_path / "s" / "swap.h5", shards, swap=True)
    err = _eval(tmp_path, tmp_path / "s", shards, capsys)
    assert "swap.h5" in err and f"snapshot {snaps[0]}" in err, err
    assert f"belong to the input of snapshot {snaps[1]}" in err, err


def _rollout(path: Path, *, swap_truth: bool) -> None:
    """A small rollout file of one run (the same snapshot holds the same field everywhere);
    ``swap_truth``: the truths of leads 1 and 2 of the first initial state exchanged."""
    rng = np.random.default_rng(0)
    snaps = {s: rng.standard_normal((8, 16, 16)).astype(np.float32) for s in range(5)}
    for x in snaps.values():
        x[0] = 1.0 + 0.01 * x[0]
    init_s, tsnap = [0, 1], np.array([[1, 2, 3], [2, 3, 4]])
    truth = np.stack([[snaps[s] for s in row] for row in tsnap])
    if swap_truth:
        truth[0, [0, 1]] = truth[0, [1, 0]]
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["forecast"], f["truth"] = truth + 0.01, truth
        f["init"] = np.stack([snaps[s] for s in init_s])
        f["prev"] = np.zeros((2, 8, 16, 16), np.float32)
        f["truth_snapshot"], f["init_snapshot"] = tsnap, np.array(init_s)
        f["prev_snapshot"] = np.array([-1, -1])
        f["lead"], f["lead_orbits"] = np.arange(1, 4), 0.5 * np.arange(1, 4)
        f["time"] = np.zeros((2, 3))
        f.attrs.update({"kind": "forecast", "channels": list(CHANNELS), "sim": "syn/seed_0001",
                        "sim_seed": 1, "lo_kind": "native_lo", "run_dir": str(path.parent),
                        "dt_orbits": 0.5, "complete": True, "finite": True})  # fmt: skip


@pytest.mark.parametrize("swap", [False, True])
def test_rollout_whose_truths_disagree_is_refused(tmp_path, capsys, monkeypatch, repo, swap):
    monkeypatch.chdir(repo)
    _rollout(tmp_path / "samples" / "r.h5", swap_truth=swap)
    args = ["eval", "--config", "configs/eval/forecast-demo.yaml", f"samples={tmp_path / 'samples'}",
            f"output_dir={tmp_path / 'eval'}", "forecast.hst_check=false", "forecast.field_leads=[1]",
            "forecast.operator_rollouts=''", "forecast.climatology.runs=[]"]  # fmt: skip
    rc = main(args)
    err = capsys.readouterr().err
    if not swap:
        assert rc == 0, err
        return
    assert rc == 2 and err.startswith("error: "), err
    assert "r.h5" in err and "snapshot 1:" in err and "the initial state 1" in err, err
