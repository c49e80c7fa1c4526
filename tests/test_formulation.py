"""The super-resolution formulations (mhdsr.method.formulation), the hard consistency projection
and the periodic cubic-spline interpolation (docs/design.md, "The method")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mhdsr.errors import ConfigError
from mhdsr.method.config import MethodConfig
from mhdsr.method.formulation import Formulation, residual_std, super_resolve
from mhdsr.method.interpolant import (
    avgpool2,
    gaussian_velocity,
    project_block_means,
    spline_upsample,
    upsample,
)
from mhdsr.method.noise import PerSampleNoise


def test_projection_is_exact_orthogonal_and_idempotent() -> None:
    g = torch.Generator().manual_seed(0)
    truth = torch.randn(3, 2, 16, 16, generator=g, dtype=torch.float64)
    lo = avgpool2(truth)
    x = truth + torch.randn(truth.shape, generator=g, dtype=torch.float64)
    p = project_block_means(x, lo)
    torch.testing.assert_close(avgpool2(p), lo, rtol=0, atol=1e-13)
    torch.testing.assert_close(project_block_means(p, lo), p, rtol=0, atol=1e-13)
    for b in range(3):  # never farther from a truth that satisfies the constraint
        assert float((p[b] - truth[b]).norm()) <= float((x[b] - truth[b]).norm())
    # the removed part is block-constant, the kept correction is orthogonal to it
    d = x - p
    torch.testing.assert_close(
        d, d[..., ::2, ::2].repeat_interleave(2, -2).repeat_interleave(2, -1)
    )
    assert abs(float(((p - truth) * d).sum())) < 1e-9


def test_spline_matches_scipy_and_is_periodic() -> None:
    nd = pytest.importorskip("scipy.ndimage")
    g = torch.Generator().manual_seed(1)
    lo = torch.randn(2, 3, 12, 16, generator=g, dtype=torch.float64)
    for f in (2, 3):
        up = spline_upsample(lo, f)
        ref = np.stack(
            [
                [
                    nd.zoom(lo[b, c].numpy(), f, order=3, mode="grid-wrap", grid_mode=True)
                    for c in range(3)
                ]
                for b in range(2)
            ]
        )
        np.testing.assert_allclose(up.numpy(), ref, atol=1e-12)
    # rolling lo by one cell rolls the output by the factor; constants stay constant
    torch.testing.assert_close(
        spline_upsample(torch.roll(lo, 1, -1), 2), torch.roll(spline_upsample(lo, 2), 2, -1)
    )
    c = torch.full((1, 1, 8, 8), 3.5, dtype=torch.float64)
    torch.testing.assert_close(
        spline_upsample(c, 2), torch.full((1, 1, 16, 16), 3.5, dtype=torch.float64)
    )
    # odd factors pass through the coarse values
    torch.testing.assert_close(spline_upsample(lo, 3)[..., 1::3, 1::3], lo)


def test_spline_beats_bicubic_on_a_smooth_periodic_field() -> None:
    n = 64
    y, x = torch.meshgrid(torch.arange(2 * n), torch.arange(2 * n), indexing="ij")
    k = 2 * torch.pi / (2 * n)
    hi = (torch.sin(5 * k * (x + 0.5)) * torch.cos(9 * k * (y + 0.5)))[None, None].double()
    lo = avgpool2(hi)
    err = {
        m: float((upsample(lo, 2, m) - hi).square().mean().sqrt())
        for m in ("bilinear", "bicubic", "spline")
    }
    assert err["spline"] < err["bicubic"] < err["bilinear"]


def test_residual_target_decode_roundtrip_and_source_mean() -> None:
    r = torch.tensor([0.05, 0.3])
    form = Formulation(MethodConfig(formulation="residual", upsample="spline"), r)
    hi = torch.randn(2, 2, 8, 8)
    u = form.up(avgpool2(hi))
    x1 = form.target(hi, u)
    torch.testing.assert_close(form.decode(x1, u), hi, rtol=1e-5, atol=1e-6)
    assert torch.equal(form.source_mean(u), torch.zeros_like(u))
    plain = Formulation(MethodConfig())
    assert torch.equal(plain.target(hi, u), hi) and torch.equal(plain.source_mean(u), u)
    with pytest.raises(ConfigError, match="residual std"):
        Formulation(MethodConfig(formulation="residual"))


def test_residual_std_of_known_fields() -> None:
    hi = torch.randn(4, 2, 16, 16, dtype=torch.float64)
    r = residual_std(hi, "bilinear")
    res = hi - upsample(avgpool2(hi), 2, "bilinear")
    torch.testing.assert_close(r, res.transpose(0, 1).reshape(2, -1).std(1, unbiased=False))


@pytest.mark.parametrize("kind", ["interpolant", "residual"])
@pytest.mark.parametrize("sampler", ["heun", "euler_maruyama"])
def test_exact_gaussian_case_through_super_resolve(kind: str, sampler: str) -> None:
    """If hi | lo ~ N(m, s^2) per pixel, the exact velocity in the formulation's space (source
    mean u or 0, target hi or (hi - u)/r) must give decoded samples with mean m and std s."""
    sigma, s, n = 0.5, 0.2, 3000
    r = torch.tensor([0.5])
    form = Formulation(
        MethodConfig(sigma=sigma, formulation=kind), r if kind == "residual" else None
    )
    lo = torch.zeros(n, 1, 2, 2)
    m = torch.full((n, 1, 4, 4), 0.3)  # u = Up(0) = 0

    def net(x, t, u):
        base = form.source_mean(u)
        return gaussian_velocity(
            x, t, base, form.target(m, u), s / (r[0] if kind == "residual" else 1), sigma
        )

    noise = PerSampleNoise.from_keys(0, [(i,) for i in range(n)])
    hi = super_resolve(sampler, net, lo, form, noise, n_steps=32)
    assert float(hi.mean()) == pytest.approx(0.3, abs=0.01)
    assert float(hi.std()) == pytest.approx(s, rel=0.05)
