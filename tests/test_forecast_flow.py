"""The generative forecaster (``forecaster: flow``): trained by the shared loop on window
shards, exported with its embedded operator, rolled out as an ensemble whose members draw keyed
noise; the step's decoding, checked against a known answer; refusals of a mismatched operator."""

from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from forecast_helpers import run_forecast, window_shards
from mhdsr.cli import main
from mhdsr.dataset.normalize import Normalizer
from mhdsr.forecast.models import FlowForecaster, load_forecaster
from mhdsr.method.config import MethodConfig, SamplerConfig
from mhdsr.method.flow import Formulation
from mhdsr.method.noise import PerSampleNoise
from train_helpers import REPO, env

pytestmark = pytest.mark.dist

#: a tiny UNet on the 32^2 synthetic windows (a few seconds per step)
TINY_UNET = [
    "model.width=8", "model.mults=[1,2]", "model.attn_levels=[]", "model.groups=4",
    "model.blocks_per_level=1", "data.micro_batch=2", "data.workers=1", "data.shuffle_buffer=2",
    "data.val_samples=2", "log.every=1", "log.val_every=2", "optim.warmup_steps=1",
    "ema.start_step=1", "method.residual_samples=4", "checkpoint.every=2",
]  # fmt: skip


def flow_cmd(shards, run_dir, *overrides):
    return [
        sys.executable, "-m", "mhdsr", "forecast", "train",
        "--config", str(REPO / "configs/forecast/flow-cpu-small.yaml"),
        f"shards={shards}", f"run_dir={run_dir}", *TINY_UNET, *overrides,
    ]  # fmt: skip


def run_flow(shards, run_dir, *overrides, check=True):
    p = subprocess.run(flow_cmd(shards, run_dir, *overrides), capture_output=True, text=True,
                       timeout=900, env=env(), cwd=REPO)  # fmt: skip
    if check:
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("fflow")
    shards = window_shards(root)
    run_forecast(shards, root / "fno", "max_steps=2", "model.history=1")
    run_flow(shards, root / "flow", "max_steps=2", f"forecast.operator={root / 'fno'}")
    return root, shards


def _rollout(root, out, *extra):
    args = ["forecast", "rollout", "--config", str(REPO / "configs/forecast/rollout-demo.yaml"),
            f"checkpoint={root / 'flow'}", f"output_dir={out}",
            f"inputs.runs=[{root / 'syn' / 'seed_0002'}]", "inputs.orbit_start=0.5",
            "inputs.orbit_end=1.0", "inputs.stride=1", "steps=2", "device=cpu", "sampler.name=heun",
            "sampler.steps=2", *extra]  # fmt: skip
    assert main(args) == 0
    with h5py.File(out / "syn__seed_0002.h5") as f:
        return {k: f[k][()] for k in f}, dict(f.attrs)


def test_export_embeds_the_operator(setup):
    root, _ = setup
    fm = load_forecaster(str(root / "flow"))
    assert isinstance(fm, FlowForecaster) and fm.source == "operator"
    assert fm.operator is not None and fm.operator.history == 1
    ref = load_forecaster(str(root / "fno"))
    for a, b in zip(fm.operator.model.state_dict().values(), ref.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert fm.form.residual_std is not None and fm.form.residual_std.shape == (8,)
    assert fm.net.cfg.cond_width == 16  # the operator's mean and x(t)


def test_members_are_keyed_trajectories(setup, tmp_path):
    root, _ = setup
    d, a = _rollout(root, tmp_path / "a", "ensemble=2", "batch_size=2")
    assert a["forecaster"] == "flow" and a["ensemble"] == 2 and a["nfe_per_step"] == 4
    assert d["members"].shape == (2, 2, 2, 8, 32, 32)
    np.testing.assert_allclose(d["forecast"], d["members"].mean(axis=1), rtol=1e-5, atol=1e-6)
    assert np.isfinite(d["members"]).all()
    # the members differ (own noise), and member e of initial state i is the same trajectory
    # whatever the batch and the ensemble size
    assert np.abs(d["members"][:, 0] - d["members"][:, 1]).max() > 0
    d3, _ = _rollout(root, tmp_path / "b", "ensemble=3", "batch_size=1")
    np.testing.assert_allclose(d3["members"][:, :2], d["members"], rtol=1e-4, atol=1e-5)
    d4, _ = _rollout(root, tmp_path / "c", "ensemble=2", "batch_size=2", "seed=1")
    assert np.abs(d4["members"] - d["members"]).max() > 0


def test_mismatched_operator_is_refused(setup, tmp_path):
    root, shards = setup
    run_forecast(shards, tmp_path / "fno2", "max_steps=1", "model.history=2")
    p = run_flow(shards, tmp_path / "flow2", "max_steps=1",
                 f"forecast.operator={tmp_path / 'fno2'}", check=False)  # fmt: skip
    assert p.returncode == 2, p.stderr[-2000:]
    assert "forecast.operator" in p.stderr and "history is 2" in p.stderr
    p = run_flow(shards, tmp_path / "flow3", "max_steps=1",
                 f"forecast.operator={root / 'flow'}", check=False)  # fmt: skip
    assert p.returncode == 2 and "generative forecaster, not the" in p.stderr
    p = run_flow(shards, tmp_path / "flow4", "max_steps=1", "method.project=true", check=False)
    assert p.returncode == 2 and "method.project" in p.stderr


class _Zero(torch.nn.Module):
    def forward(self, x, t, u):
        return torch.zeros_like(x)


def test_step_decodes_residual_and_derives_jz():
    """With a zero velocity the flow stays at its source ``x0 = sigma eps``, so one step gives
    ``u + a s_r eps`` (persistence: ``u = x(t)``, ``a`` = std of x(t)) exactly, with jz then
    replaced by the curl of the drawn (Bx, By)."""
    channels = ["density", "velx", "vely", "velz", "Bx", "By", "Bz", "jz"]
    r = torch.linspace(0.5, 1.2, 8)
    form = Formulation(MethodConfig(project=False, residual_kmin=0, derive_jz=False), r)
    norm = Normalizer(np.zeros(8, np.float32), np.ones(8, np.float32))
    fm = FlowForecaster(
        net=_Zero(), form=form, channels=channels, norm=norm, dt_orbits=0.1, grid=(32, 32),
        source="persistence", path="-", sha256="-", step=0, weights="ema",
    )  # fmt: skip
    x = torch.randn(3, 8, 32, 32, generator=torch.Generator().manual_seed(0)) * 3 + 1
    keys = [(i,) for i in range(3)]
    y = fm.step_once(x, PerSampleNoise.from_keys(5, keys), SamplerConfig(name="heun", steps=3))
    eps = PerSampleNoise.from_keys(5, keys).draw((8, 32, 32))
    a = x.std(dim=(-2, -1), keepdim=True, unbiased=False)
    torch.testing.assert_close(y, x + a * r[:, None, None] * eps, rtol=1e-5, atol=1e-5)
    fm.form = Formulation(MethodConfig(project=False, residual_kmin=0, derive_jz=True), r)
    y2 = fm.step_once(x, PerSampleNoise.from_keys(5, keys), SamplerConfig(name="heun", steps=3))
    from mhdsr.method.grid import curl_z

    torch.testing.assert_close(y2[:, 7], curl_z(y2[:, 4], y2[:, 5], 1.0, 1.0))
    torch.testing.assert_close(y2[:, :7], y[:, :7])


def _export(run, step):
    return torch.load(run / "export" / f"weights_step_{step:08d}.pt", weights_only=True)


def test_persistence_source_resumes_bit_exactly(setup, tmp_path):
    """4 steps in one go == 2 steps, stop, rerun to 4 (persistence source: no operator)."""
    _, shards = setup
    common = ["forecast.source=persistence", "checkpoint.every=2"]
    a, b = tmp_path / "a", tmp_path / "b"
    run_flow(shards, a, "max_steps=4", *common)
    run_flow(shards, b, "max_steps=2", *common)
    p = run_flow(shards, b, "max_steps=4", *common)
    assert "resume from step_00000002" in p.stdout
    ea, eb = _export(a, 4), _export(b, 4)
    for k in ea["raw"]:
        torch.testing.assert_close(ea["raw"][k], eb["raw"][k], rtol=0, atol=0)
        torch.testing.assert_close(ea["ema"][k], eb["ema"][k], rtol=0, atol=0)
    assert ea["forecaster"] == "flow" and ea["forecast"]["source"] == "persistence"
    assert ea["operator"] == {} and ea["model"]["cond_channels"] == 8
    assert "val/loss_ema" in p.stdout
