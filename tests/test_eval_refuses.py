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

import numpy as np
import pytest
import yaml

from eval_helpers import pool, shared_demo_shards, truth_of_sim, write_samples
from mhdsr.channels import CHANNELS
from mhdsr.cli import main

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
        with tarfile.open(path, "w") as tf:
            for ti, data in members:
                if ti.name.endswith(".hi.npy"):
                    data = his.pop(0)
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
