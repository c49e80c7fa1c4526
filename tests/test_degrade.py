"""Degradation matching (``method.degrade``): the fit of the transfer function, its application,
the config refusals, the export round trip, and a tiny train -> sample run."""

from __future__ import annotations

import math

import pytest
import torch

from mhdsr.errors import ConfigError
from mhdsr.method.config import MethodConfig
from mhdsr.method.degrade import T_MIN, default_kref, degrade, fit_transfer

N_LO = 64
K = N_LO // 2 + 1


def _pool_spectrum(c: int = 3) -> torch.Tensor:
    """A turbulent-looking ``(C, K)`` spectrum ``k^-2`` (shell 0: the mean)."""
    k = torch.arange(K, dtype=torch.float64)
    e = torch.where(k > 0, k.clamp_min(1) ** -2.0, torch.tensor(0.3, dtype=torch.float64))
    return torch.stack([e * (1 + i) for i in range(c)])


# ---------------------------------------------------------------------------- the fit


def test_identical_spectra_give_one() -> None:
    e = _pool_spectrum()
    t = fit_transfer(e, e.clone())
    assert t.shape == (3, K) and t.dtype == torch.float64
    assert torch.equal(t, torch.ones_like(t))


def test_gaussian_damping_is_recovered() -> None:
    """native = pool * exp(-(k/k0)^2) in power -> T = exp(-(k/k0)^2 / 2), up to the low-k
    normalization (the mean of log T over 1 <= k < kref is 0), clipped at 1 and T_MIN."""
    pool = _pool_spectrum()
    k = torch.arange(K, dtype=torch.float64)
    k0 = 12.0
    native = pool * torch.exp(-((k / k0) ** 2))
    kref = default_kref(N_LO)
    assert kref == 4
    t = fit_transfer(native, pool)
    c = float(((k[1:kref] / k0) ** 2 / 2).mean())  # the normalization's shift of log T
    want = torch.exp(c - (k / k0) ** 2 / 2).clamp(T_MIN, 1.0)
    want[:kref] = 1.0  # the reference band is pinned
    torch.testing.assert_close(t, want.expand(3, K), rtol=1e-12, atol=1e-15)
    assert t[0, -1] < 0.1  # the top shells are damped
    # an explicit kref moves the normalization band
    t8 = fit_transfer(native, pool, kref=8)
    c8 = float(((k[1:8] / k0) ** 2 / 2).mean())
    torch.testing.assert_close(
        t8[0, 20], torch.tensor(math.exp(c8 - (20 / k0) ** 2 / 2), dtype=torch.float64)
    )


def test_level_factor_is_not_a_resolution_effect() -> None:
    pool = _pool_spectrum()
    t = fit_transfer(0.5 * pool, pool)
    torch.testing.assert_close(t, torch.ones_like(t), rtol=0, atol=1e-15)


def test_fit_only_damps_and_is_monotone() -> None:
    g = torch.Generator().manual_seed(0)
    pool = _pool_spectrum(2)
    native = pool * torch.exp(torch.randn(2, K, generator=g, dtype=torch.float64))  # noisy ratio
    native[:, 5] = pool[:, 5] * 100  # a bump: never amplified
    native[:, -3:] = pool[:, -3:] * 1e-12  # beyond the clip
    t = fit_transfer(native, pool)
    assert (t <= 1).all() and (t >= T_MIN).all() and (t[:, 0] == 1).all()
    assert (t[:, 1:] <= t[:, :-1]).all()  # non-increasing
    assert torch.equal(t[:, -3:], torch.full((2, 3), T_MIN, dtype=torch.float64))
    assert (t[:, : default_kref(N_LO)] == 1).all()  # the reference band is pinned to 1


@pytest.mark.parametrize(
    ("native", "pool", "kref", "match"),
    [
        (torch.ones(2, K), torch.ones(3, K), 0, "one shape"),
        (torch.ones(2, 2), torch.ones(2, 2), 0, "K >= 3"),
        (torch.ones(2, K), torch.ones(2, K), 1, "kref"),
        (torch.ones(2, K), torch.ones(2, K), K, "kref"),
        (torch.zeros(2, K), torch.ones(2, K), 0, "native spectrum"),
        (torch.ones(2, K), torch.full((2, K), float("nan")), 0, "avgpool2 spectrum"),
    ],
)
def test_fit_refuses_bad_spectra(native, pool, kref, match) -> None:
    with pytest.raises(ValueError, match=match):
        fit_transfer(native, pool, kref)


# ---------------------------------------------------------------------------- the filter


def _mode(n: int, ky: int, kx: int, dtype: torch.dtype) -> torch.Tensor:
    i = torch.arange(n, dtype=dtype)
    return torch.cos(2 * math.pi * (ky * i[:, None] + kx * i[None, :]) / n)


def test_unit_transfer_is_the_identity() -> None:
    lo = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    out = degrade(lo, torch.ones(3, 17, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.shape == lo.shape
    torch.testing.assert_close(out, lo, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_single_mode_is_multiplied_by_its_shell_value(dtype) -> None:
    n = 32
    t = torch.linspace(1.0, 0.2, 17, dtype=torch.float64).repeat(2, 1)
    t[1] = t[1] ** 2  # another channel, another filter
    for ky, kx in [(0, 3), (5, 0), (3, 4), (7, 13), (16, 16), (-9, 2)]:
        f = _mode(n, ky, kx, dtype)
        lo = torch.stack([f, 2 * f])[None]  # (1, 2, n, n)
        out = degrade(lo, t)
        assert out.dtype == dtype
        s = min(round(math.hypot(ky, kx)), 16)  # beyond N/2: the last shell's value
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        torch.testing.assert_close(out[0, 0], float(t[0, s]) * f, rtol=0, atol=tol)
        torch.testing.assert_close(out[0, 1], 2 * float(t[1, s]) * f, rtol=0, atol=2 * tol)


def test_mean_is_preserved_and_batch_shapes() -> None:
    g = torch.Generator().manual_seed(2)
    lo = 3.0 + torch.randn(4, 2, 3, 16, 16, generator=g, dtype=torch.float64)
    t = torch.linspace(1.0, 0.1, 9, dtype=torch.float64).repeat(3, 1)
    out = degrade(lo, t)
    assert out.shape == lo.shape
    torch.testing.assert_close(out.mean(dim=(-2, -1)), lo.mean(dim=(-2, -1)), rtol=0, atol=1e-12)
    # linear and per channel: normalizing first or after gives the same
    m = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)[:, None, None]
    s = torch.tensor([2.0, 0.5, 3.0], dtype=torch.float64)[:, None, None]
    torch.testing.assert_close(degrade((lo - m) / s, t), (out - m) / s, rtol=0, atol=1e-12)


def test_degrade_refuses_mismatched_channels() -> None:
    with pytest.raises(ValueError, match="does not fit 2 channels"):
        degrade(torch.zeros(1, 2, 8, 8), torch.ones(3, 5))


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"degrade": True, "project": False}, "method.degrade_runs"),
        ({"degrade": True, "degrade_runs": ["data/x/seed_*"]}, "method.degrade"),
        ({"degrade_samples": 0}, "method.degrade_samples"),
        ({"degrade_kref": -1}, "method.degrade_kref"),
    ],
)
def test_config_refusals(changes, match) -> None:
    with pytest.raises(ConfigError, match=match) as e:
        MethodConfig(**changes).validate()  # type: ignore[arg-type]
    if "project" not in changes and changes.get("degrade"):
        assert "method.project=false" in str(e.value)


@pytest.mark.parametrize("formulation", ["residual", "interpolant"])
def test_config_accepts_degrade_without_projection(formulation) -> None:
    MethodConfig(
        degrade=True, degrade_runs=["a/seed_*"], project=False, formulation=formulation
    ).validate()
    assert MethodConfig().degrade is False and MethodConfig().degrade_runs == []


def test_train_config_refusal_exits_2(tmp_path, capsys) -> None:
    """`mhdsr train` with method.degrade=true and the shipped projection: exit 2, the key named."""
    from conftest import REPO
    from mhdsr.cli import main

    argv = ["train", "--config", str(REPO / "configs/train/cpu-small.yaml"),
            f"run_dir={tmp_path / 'run'}", "method.degrade=true",
            "method.degrade_runs=[data/athenak/mri128_nu3e-5/seed_0005]", "--print-config"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "method.degrade" in err and "method.project=false" in err


def test_forecast_refuses_degrade() -> None:
    from conftest import REPO
    from mhdsr.config import load_config
    from mhdsr.forecast.config import FlowForecastTrainConfig

    over = ["method.degrade=true", 'method.degrade_runs=["x/seed_*"]']
    with pytest.raises(ConfigError, match="method.degrade"):
        load_config(FlowForecastTrainConfig, REPO / "configs/forecast/flow-cpu-small.yaml", over)


# ---------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_train_export_resume_sample_with_degrade(demo_shards, tmp_path) -> None:
    """2 steps with degrade on (fitted on the native run seed_0005, not a held-out sim of the
    demo shards), the export holds T and load_model restores it, a resume refits the same T,
    `mhdsr sample` on the test split degrades its avgpool2 inputs (degrade = true, finite
    samples) and the stored input is what eval's consistency check expects."""
    import json

    import h5py
    import numpy as np

    from mhdsr.cli import main
    from mhdsr.config import load_config
    from mhdsr.dataset.manifest import read_manifest
    from mhdsr.dataset.shards import HI
    from mhdsr.eval.consistency import check_input, expected_input, file_transfer
    from mhdsr.eval.inputs import EvalInputError
    from mhdsr.method.grid import avgpool2_np
    from mhdsr.model.inference import load_model
    from mhdsr.sample.config import SampleConfig
    from mhdsr.sample.inputs import _read_member, index_shards
    from train_helpers import REPO, run_train

    native = REPO / "data/athenak/mri128_nu3e-5/seed_0005"
    run = tmp_path / "train"
    over = [
        "method.degrade=true", "method.project=false", f"method.degrade_runs=[{native}]",
        "method.degrade_samples=4", "method.residual_samples=4", "checkpoint.every=2",
    ]  # fmt: skip
    p = run_train(demo_shards, run, "max_steps=2", *over)
    assert "method.degrade: T fitted on" in p.stdout + p.stderr
    assert "heldout split" not in p.stdout + p.stderr  # seed_0005 is not a held-out sim
    meta = json.loads((run / "checkpoints/step_00000002/meta.json").read_text())
    t_ckpt = np.asarray(meta["normalization"]["degrade_transfer"])
    assert t_ckpt.shape == (8, 65) and (t_ckpt[:, 0] == 1).all()
    assert (np.diff(t_ckpt, axis=1) <= 0).all() and t_ckpt.min() >= 1e-3

    lm = load_model(str(run))
    assert lm.form.method.degrade and not lm.form.project
    assert lm.form.transfer is not None
    np.testing.assert_array_equal(lm.form.transfer.numpy(), t_ckpt)

    run_train(demo_shards, run, "max_steps=3", *over)  # resume: the refit T is accepted
    assert (run / "export/latest").read_text().strip() == "weights_step_00000003.pt"
    np.testing.assert_array_equal(load_model(str(run)).form.transfer.numpy(), t_ckpt)

    out = tmp_path / "samples"
    argv = ["sample", "--config", str(REPO / "configs/sample/demo.yaml"), f"checkpoint={run}",
            f"shards={demo_shards}", f"output_dir={out}", "progress=false", "ensemble=1",
            "sampler.steps=1", "inputs.snap_end=13"]  # fmt: skip
    assert main(argv) == 0
    assert main([*argv, "project=true"]) == 2  # projection would undo the de-filtering
    (f5,) = sorted(out.glob("*.h5"))
    with h5py.File(f5) as f:
        attrs = {k: f.attrs[k] for k in f.attrs}
        lo, samples = f["input"][:], f["samples"][:]
        keys = [k.decode() if isinstance(k, bytes) else str(k) for k in f["key"][:]]
    assert bool(attrs["degrade"]) and json.loads(attrs["settings"])["degrade"] is True
    assert np.isfinite(samples).all() and samples.shape[-2:] == (256, 256)
    t_file = file_transfer(attrs, f5.name, 8)
    np.testing.assert_array_equal(t_file, t_ckpt)

    # the stored input is degrade(avgpool2(truth)), not avgpool2(truth)
    cfg = load_config(
        SampleConfig,
        REPO / "configs/sample/demo.yaml",
        [f"shards={demo_shards}", f"checkpoint={run}", f"output_dir={out}", "inputs.snap_end=13"],
    )
    (sim,) = index_shards(cfg)
    snap = sim.snaps[0]
    assert snap.key == keys[0]
    hi = _read_member(snap, sim.stored_shape, HI)
    pooled = avgpool2_np(hi)
    chans = list(read_manifest(demo_shards)["channels"])
    check_input(f5.name, snap.snapshot, lo[0], expected_input(pooled, t_file), chans, chans)
    with pytest.raises(EvalInputError, match="not avgpool2 of the truth"):
        check_input(f5.name, snap.snapshot, lo[0], pooled, chans, chans)

    # mhdsr eval scores it (its input and baselines from the stored, degraded lo)
    ev = tmp_path / "eval"
    assert main(["eval", "--config", str(REPO / "configs/eval/demo.yaml"), f"samples={out}",
                 f"shards={demo_shards}", f"output_dir={ev}", "progress=false", "max_panels=0",
                 "baselines=[spline]"]) == 0  # fmt: skip
    test = json.loads((ev / "metrics.json").read_text())["summary"]["test"]
    assert "spline" in test and any(k.startswith("ema/heun") for k in test)
