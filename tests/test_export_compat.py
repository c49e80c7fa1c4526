"""Exports written by earlier versions still load and mean what they meant (issue 18).

``tests/data/old_export_v1.pt`` is a real export of ``mhdsr train`` written at commit 54ca124,
before the method became one object (:mod:`mhdsr.method.flow`) and before ``MethodConfig``'s
defaults became the shipped recipe: a tiny UNet (width 4, mults [1, 2], channels Bx, By, jz,
160 KB) trained 2 steps with configs/train/cpu-small.yaml and ``method.residual_samples=8``. The
expected values below are what that commit's code loaded and sampled from it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from mhdsr.method.config import ORIGINAL_RECIPE, MethodConfig
from mhdsr.method.flow import derive_current
from mhdsr.method.noise import PerSampleNoise
from mhdsr.model.inference import load_model, method_of_export

OLD = Path(__file__).resolve().parent / "data" / "old_export_v1.pt"

#: what commit 54ca124 read from the export
OLD_METHOD = {
    "sigma": 1.0, "loss_scale": 1.0, "t_dist": "uniform", "t_min": 0.0001, "t_max": 0.9999,
    "logit_mean": 0.0, "logit_std": 1.0, "upsample": "spline", "formulation": "residual",
    "residual_samples": 8, "scale": "instance", "scale_floor": 0.0001, "scale_kmin": 0,
    "project": True, "derive_jz": True,
    # fields the export predates, filled from ORIGINAL_RECIPE (what the old code did)
    "residual_kmin": 0, "residual_estimator": "pooled",
}  # fmt: skip
OLD_RESIDUAL_STD = [0.05467642843723297, 0.047694072127342224, 0.11240560561418533]
#: the old code's Heun sample (2 steps) of the fixed input below, physical units, jz derived:
#: its mean, mean |x| and every 97th value of the flattened (1, 3, 16, 16) field
OLD_MEAN, OLD_ABSMEAN = 0.0013894854518573159, 0.18843914739270437
OLD_VALUES = [
    -0.06209021061658859, 0.021781301125884056, 0.027878927066922188, -0.004516834393143654,
    -0.011330097913742065, 0.04505065083503723, 0.37114542722702026, 0.09252797812223434,
]  # fmt: skip


def test_old_export_loads_with_its_method() -> None:
    lm = load_model(str(OLD))
    assert lm.channels == ["Bx", "By", "jz"] and lm.step == 2
    got = dataclasses.asdict(lm.form.method)
    assert {k: got[k] for k in OLD_METHOD} == OLD_METHOD
    # fields added after that commit take their original-recipe value (residual_kmin, ...)
    assert {k: v for k, v in got.items() if k not in OLD_METHOD} == {
        k: v for k, v in ORIGINAL_RECIPE.items() if k not in OLD_METHOD
    }
    torch.testing.assert_close(lm.form.residual_std, torch.tensor(OLD_RESIDUAL_STD), rtol=0, atol=0)


def test_old_export_samples_as_the_old_code_did() -> None:
    lm = load_model(str(OLD))
    lo = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = PerSampleNoise.from_keys(0, [(1, 2, 3)], device="cpu", dtype=torch.float32)
    x = lm.form.sample("heun", lm.model, lo, noise, n_steps=2)
    phys = derive_current(lm.denormalize(x), lm.channels)
    assert phys.shape == (1, 3, 16, 16)
    # float32 network on another CPU may round differently: ulp-level tolerances
    assert float(phys.double().mean()) == pytest.approx(OLD_MEAN, rel=1e-4, abs=1e-7)
    assert float(phys.double().abs().mean()) == pytest.approx(OLD_ABSMEAN, rel=1e-5)
    torch.testing.assert_close(phys.flatten()[::97], torch.tensor(OLD_VALUES), rtol=1e-5, atol=1e-6)


def test_fields_an_export_lacks_take_the_original_recipe(tmp_path: Path) -> None:
    """An export written before a field existed meant the original recipe for it, not today's
    default: the first exports stored only sigma, loss_scale, t range and upsample."""
    payload = torch.load(OLD, weights_only=True)
    first = ("sigma", "loss_scale", "t_min", "t_max", "upsample")
    payload["method"] = {k: payload["method"][k] for k in first}
    torch.save(payload, tmp_path / "weights_step_00000002.pt")
    lm = load_model(str(tmp_path / "weights_step_00000002.pt"))
    want = MethodConfig(**{**ORIGINAL_RECIPE, **payload["method"]})  # type: ignore[arg-type]
    assert lm.form.method == want
    assert (lm.form.kind, lm.form.scale, lm.form.project) == ("interpolant", "global", False)
    assert lm.form.method.derive_jz is False


def test_method_of_export() -> None:
    assert method_of_export({}) == MethodConfig(**ORIGINAL_RECIPE)  # type: ignore[arg-type]
    full = dataclasses.asdict(MethodConfig())
    assert method_of_export(full) == MethodConfig()
    assert MethodConfig() != MethodConfig(**ORIGINAL_RECIPE)  # type: ignore[arg-type]


def test_degrade_export_loads_with_its_transfer_function(tmp_path: Path) -> None:
    """An export of a method.degrade model restores its transfer function into the
    Formulation; one that lacks it is refused, naming the method."""
    from mhdsr.errors import CheckpointError

    payload = torch.load(OLD, weights_only=True)
    t = torch.ones(3, 5, dtype=torch.float64)
    t[:, 2:] = torch.tensor([0.9, 0.5, 0.2], dtype=torch.float64)
    payload["method"] = {**payload["method"], "degrade": True, "project": False,
                         "degrade_runs": ["data/athenak/mri128_nu3e-5/seed_0005"]}  # fmt: skip
    payload["normalization"] = {**payload["normalization"], "degrade_transfer": t.tolist()}
    torch.save(payload, tmp_path / "weights_step_00000002.pt")
    lm = load_model(str(tmp_path))
    assert lm.form.method.degrade and lm.form.transfer is not None
    assert torch.equal(lm.form.transfer, t)
    hi = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    pooled = hi.reshape(2, 3, 8, 2, 8, 2).mean(dim=(-3, -1))
    lo = lm.form.lo_of(hi)
    assert (lo - pooled).abs().max() > 1e-3  # filtered...
    torch.testing.assert_close(lo.mean(dim=(-2, -1)), pooled.mean(dim=(-2, -1)))  # ...mean kept
    del payload["normalization"]["degrade_transfer"]
    torch.save(payload, tmp_path / "weights_step_00000002.pt")
    with pytest.raises(CheckpointError, match="method.degrade"):
        load_model(str(tmp_path))
    # an old export (no degrade field) samples without one
    assert load_model(str(OLD)).form.transfer is None
