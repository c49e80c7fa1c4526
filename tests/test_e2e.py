"""End to end on the bundled real data: shard -> train -> sample (ODE + SDE) -> eval, with a
tiny model so it fits a CI budget; checks every artefact the pipeline promises."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest

from mhdsr.channels import CHANNELS
from mhdsr.cli import main
from mhdsr.dataset.manifest import read_manifest
from train_helpers import REPO, run_train

pytestmark = pytest.mark.slow


def _finite_or_null(obj, path="$"):
    """Every number in metrics.json is finite (nulls are allowed: they carry a reason)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            _finite_or_null(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _finite_or_null(v, f"{path}[{i}]")
    elif isinstance(obj, float):
        assert math.isfinite(obj), path


def test_shard_train_sample_eval(demo_shards, tmp_path, capsys):
    m = read_manifest(demo_shards)
    assert m["channels"] == list(CHANNELS) and m["splits"]["test"]["samples"] == 4
    assert set(m["stats"]["hi"]) == set(CHANNELS)

    run = tmp_path / "train"
    run_train(demo_shards, run, "max_steps=4", "checkpoint.every=2", nproc=2)
    assert (run / "checkpoints/latest").read_text().strip() == "step_00000004"
    assert (run / "export/latest").read_text().strip() == "weights_step_00000004.pt"
    assert list((run / "tb").glob("events.out.tfevents.*"))

    samples = tmp_path / "samples"
    common = [
        "--config",
        str(REPO / "configs/sample/demo.yaml"),
        f"checkpoint={run}",
        f"shards={demo_shards}",
        "progress=false",
    ]
    assert (
        main(["sample", *common, f"output_dir={samples / 'ode-test'}", "inputs.snap_end=16"]) == 0
    )
    held = [
        "inputs.kind=runs",
        f'inputs.runs=["{REPO}/data/athenak/mri128_nu3e-5/seed_000[23]"]',
        "inputs.snap_start=12",
        "inputs.snap_end=12",
    ]
    assert (
        main(
            [
                "sample",
                *common,
                *held,
                "sampler.name=euler_maruyama",
                "sampler.steps=3",
                f"output_dir={samples / 'sde-heldout'}",
            ]
        )
        == 0
    )

    test_file = samples / "ode-test" / "mri256_nu3e-5__seed_0001.h5"
    with h5py.File(test_file) as f:
        assert (
            f["samples"].shape == (2, 2, 8, 256, 256) and f["samples"].dtype == np.float32
        )  # snapshots 13, 16
        assert f["input"].shape == (2, 8, 128, 128)
        assert f["snapshot"][:].tolist() == [13, 16] and f["time"].shape == (2,)
        a = dict(f.attrs)
        assert list(a["channels"]) == list(CHANNELS) and a["weights"] == "ema" and a["complete"]
        assert json.loads(a["sampler"])["name"] == "heun" and a["checkpoint_step"] == 4
        assert len(a["checkpoint_sha256"]) == 64 and a["lo_kind"] == "derived_avgpool2"
        assert 0.9 < float(f["samples"][:, :, 0].mean()) < 1.1  # density in physical units
    held_files = sorted((samples / "sde-heldout").glob("*.h5"))
    assert [p.name for p in held_files] == [
        "mri128_nu3e-5__seed_0002.h5",
        "mri128_nu3e-5__seed_0003.h5",
    ]
    with h5py.File(held_files[0]) as f:
        assert f["samples"].shape == (1, 2, 8, 256, 256) and f.attrs["lo_kind"] == "native"

    out = tmp_path / "eval"
    assert main(["eval", "--config", str(REPO / "configs/eval/demo.yaml"), f"samples={samples}", f"shards={demo_shards}",
                 f"output_dir={out}", "progress=false"]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("methods", "summary", "physics", "spectra", "domain_gap"):
        assert key in metrics, key
    _finite_or_null(metrics)
    test = metrics["summary"]["test"]
    assert {"bilinear", "bicubic"} <= set(test) and any(k.startswith("ema/heun") for k in test)
    for method in test.values():
        for ch in CHANNELS:
            assert math.isfinite(method[ch]["rmse"]) and math.isfinite(
                method[ch]["spectral_error"]["generated"]
            )
    figs = list((out / "figures").glob("*.png"))
    assert len(figs) >= 5 and all(p.stat().st_size > 10_000 for p in figs)
    assert "generated [64, 128]" in (out / "report.md").read_text()
    assert "| channel |" in capsys.readouterr().out
