"""The super-resolution formulations (mhdsr.method.flow.Formulation), the hard consistency projection
and the periodic cubic-spline interpolation (docs/design.md, "The method")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mhdsr.errors import ConfigError
from mhdsr.method.config import MethodConfig, original_recipe
from mhdsr.method.flow import Formulation, gaussian_velocity, residual_std
from mhdsr.method.grid import avgpool2, project_block_means, spline_upsample, upsample
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


@pytest.mark.parametrize("scale", ["global", "instance"])
def test_target_decode_roundtrip_and_source_mean(scale: str) -> None:
    r = torch.tensor([0.05, 0.3])
    form = Formulation(original_recipe(formulation="residual", upsample="spline", scale=scale), r)
    hi = torch.randn(2, 2, 8, 8) * torch.tensor([0.1, 5.0])[:, None, None]
    lo = avgpool2(hi)
    u, st = form.up(lo), form.lo_stats(lo)
    x1 = form.target(hi, u, st)
    torch.testing.assert_close(form.decode(x1, u, st), hi, rtol=1e-5, atol=1e-6)
    assert torch.equal(form.source_mean(u, st), torch.zeros_like(u))
    plain = Formulation(original_recipe(scale=scale))
    torch.testing.assert_close(
        plain.decode(plain.target(hi, u, st), u, st), hi, rtol=1e-5, atol=1e-7
    )
    assert torch.equal(plain.source_mean(u, st), plain.cond(u, st))
    if scale == "instance":  # the level of each input is divided out: both channels O(1)
        c = form.cond(u, st)
        assert 0.5 < float(c[:, 0].std()) < 2 and 0.5 < float(c[:, 1].std()) < 2
        # a quiet copy of the same field gets the same target: instance scale is scale-free
        q = 1e-2 * hi
        lq = avgpool2(q)
        sq = form.lo_stats(lq)
        torch.testing.assert_close(form.target(q, form.up(lq), sq), x1, rtol=1e-4, atol=1e-5)
    else:
        assert torch.equal(plain.target(hi, u, st), hi) and torch.equal(plain.cond(u, st), u)
    with pytest.raises(ConfigError, match="residual std"):
        Formulation(MethodConfig(formulation="residual"))


@pytest.mark.parametrize("scale", ["global", "instance"])
def test_residual_std_of_known_fields(scale: str) -> None:
    hi = torch.randn(4, 2, 16, 16, dtype=torch.float64)
    method = MethodConfig(
        upsample="bilinear", scale=scale, residual_kmin=0, residual_estimator="pooled"
    )
    r = residual_std(hi, method)
    lo = avgpool2(hi)
    res = hi - upsample(lo, 2, "bilinear")
    if scale == "instance":
        res = res / lo.std(dim=(-2, -1), keepdim=True, unbiased=False)
    torch.testing.assert_close(r, res.transpose(0, 1).reshape(2, -1).std(1, unbiased=False))


@pytest.mark.parametrize("scale", ["global", "instance"])
@pytest.mark.parametrize("kind", ["interpolant", "residual"])
@pytest.mark.parametrize("sampler", ["heun", "euler_maruyama"])
def test_exact_gaussian_case_through_super_resolve(kind: str, sampler: str, scale: str) -> None:
    """If hi | lo ~ N(u + 0.3 a, (s a)^2) per pixel (a = the input level), the exact velocity in
    the formulation's space must give decoded samples with (hi - u) / a of mean 0.3 and std s."""
    sigma, s, n = 0.5, 0.2, 3000
    r = torch.tensor([0.5])
    method = original_recipe(sigma=sigma, formulation=kind, upsample="spline", scale=scale)
    form = Formulation(method, r if kind == "residual" else None)
    g = torch.Generator().manual_seed(4)
    lo = torch.randn(n, 1, 2, 2, generator=g) * torch.rand(n, 1, 1, 1, generator=g) * 3
    u, st = form.up(lo), form.lo_stats(lo)
    a = st[1]
    mean_hi, std_hi = u + 0.3 * a, s * a
    # the law of x1 in flow space (affine in hi): mean and std
    mean_x1 = form.target(mean_hi, u, st)
    std_x1 = form.target(u + std_hi, u, st) - form.target(u, u, st)
    base = form.source_mean(u, st)

    def net(x, t, cond):
        torch.testing.assert_close(cond, form.cond(u, st))  # the network sees u'
        return gaussian_velocity(x, t, base, mean_x1, std_x1, sigma)

    noise = PerSampleNoise.from_keys(0, [(i,) for i in range(n)])
    hi = form.sample(sampler, net, lo, noise, n_steps=32)
    z = (hi - u) / a
    assert float(z.mean()) == pytest.approx(0.3, abs=0.01)
    assert float(z.std()) == pytest.approx(s, rel=0.05)


def test_derived_current_is_curl_b() -> None:
    from mhdsr.analysis.physics import curl_z
    from mhdsr.channels import CHANNELS
    from mhdsr.method.flow import derive_current

    x = torch.randn(2, 8, 16, 16, dtype=torch.float64)
    y = derive_current(x, CHANNELS)
    ib, iy, ij = CHANNELS.index("Bx"), CHANNELS.index("By"), CHANNELS.index("jz")
    np.testing.assert_allclose(
        y[:, ij].numpy(), curl_z(x[:, ib].numpy(), x[:, iy].numpy()), atol=1e-12
    )
    keep = [i for i in range(8) if i != ij]
    assert torch.equal(y[:, keep], x[:, keep])
    with pytest.raises(ConfigError, match="derive_jz"):
        derive_current(x[:, :3], CHANNELS[:3])


def test_band_level_of_the_instance_scale() -> None:
    """scale_kmin = 1 is the plain std; a band level is invariant under the symmetry group and
    rolls, and a pure large-scale mode has no level above its wavenumber (only the floor)."""
    from mhdsr.channels import CHANNELS
    from mhdsr.method import symmetry
    from mhdsr.method.flow import level_stats

    x = torch.randn(2, 8, 32, 32, dtype=torch.float64)
    m1 = MethodConfig(scale="instance", scale_kmin=1)
    torch.testing.assert_close(
        level_stats(x, m1)[1][..., 0, 0], x.std(dim=(-2, -1), unbiased=False)
    )
    m8 = MethodConfig(scale="instance", scale_kmin=8)
    a = level_stats(x, m8)[1]
    for g in range(8):
        y = torch.roll(symmetry.apply(x, g, CHANNELS), (2, 5), (-2, -1))
        torch.testing.assert_close(level_stats(y, m8)[1], a)
    i = torch.arange(32, dtype=torch.float64)
    wave = torch.cos(2 * torch.pi * 3 * (i + 0.5) / 32)[None, None, None, :].expand(1, 1, 32, 32)
    assert float(level_stats(wave, m8)[1]) == pytest.approx(m8.scale_floor)
    assert float(level_stats(wave, m1)[1]) == pytest.approx(0.5**0.5)


def test_residual_level_follows_the_inputs_small_scales() -> None:
    """residual_kmin > 0: b is the rms of the input's shells |k| >= residual_kmin (known answer:
    two cosines), the conditioning stays in units of a, the target/decode pair round-trips with
    b, and an input with the same large scales but 10x weaker small scales gets a 10x smaller
    decoded residual from the same flow state (the fallback to the interpolant at the onset)."""
    from mhdsr.method.flow import level_stats

    i = torch.arange(32, dtype=torch.float64)
    big = torch.cos(2 * torch.pi * 2 * (i + 0.5) / 32)[None, :]  # |k| = 2, rms 0.5**0.5
    small = 0.3 * torch.cos(2 * torch.pi * 12 * (i + 0.5) / 32)[:, None]  # |k| = 12, rms 0.3/2**0.5
    lo = (big + small).expand(1, 1, 32, 32).clone()
    method = MethodConfig(residual_kmin=8)
    m, a, b = level_stats(lo, method)
    assert float(a) == pytest.approx((0.5 + 0.045) ** 0.5, rel=1e-9)
    assert float(b) == pytest.approx(0.3 / 2**0.5, rel=1e-9)
    b0 = MethodConfig(residual_kmin=0)
    assert torch.equal(level_stats(lo, b0)[2], level_stats(lo, b0)[1])

    r = torch.tensor([0.2])
    form = Formulation(method, r)
    hi = torch.randn(1, 1, 64, 64, dtype=torch.float64)
    lo2 = avgpool2(hi)
    u, st = form.up(lo2), form.lo_stats(lo2)
    x1 = form.target(hi, u, st)
    torch.testing.assert_close(form.decode(x1, u, st), hi)
    torch.testing.assert_close(form.cond(u, st), (u - st[0]) / st[1])
    # same large scales, small scales x0.1: b and the decoded residual scale by 0.1
    quiet_lo = lo.clone() - 0.9 * small
    _, _, bq = level_stats(quiet_lo, method)
    assert float(bq / b) == pytest.approx(0.1, rel=1e-9)
    x = torch.randn(1, 1, 64, 64, dtype=torch.float64)
    uq, sq = form.up(quiet_lo), form.lo_stats(quiet_lo)
    u0, s0 = form.up(lo), form.lo_stats(lo)
    dq = form.decode(x, uq, sq) - uq
    d0 = form.decode(x, u0, s0) - u0
    torch.testing.assert_close(dq, 0.1 * d0)
    assert level_stats(lo, MethodConfig(residual_kmin=8, scale="global"))[2] == 1.0  # unused
    with pytest.raises(ConfigError, match="residual_kmin"):
        MethodConfig(residual_kmin=-1).validate()


def test_median_residual_estimator_is_a_typical_samples_scale() -> None:
    """residual_estimator = median: the median over samples of each sample's residual rms, so
    one loud sample of another regime does not set s_r (the pooled std follows it)."""
    g = torch.Generator().manual_seed(0)
    hi = torch.randn(5, 2, 16, 16, dtype=torch.float64, generator=g)
    hi[0] *= 30.0  # one sample of a much louder residual (global scale: no level divides it out)
    pooled = residual_std(
        hi, MethodConfig(upsample="bilinear", scale="global", residual_estimator="pooled")
    )
    med = residual_std(
        hi, MethodConfig(upsample="bilinear", scale="global", residual_estimator="median")
    )
    res = hi - upsample(avgpool2(hi), 2, "bilinear")
    per = (res - res.mean(dim=(-2, -1), keepdim=True)).square().mean(dim=(-2, -1)).sqrt()
    torch.testing.assert_close(med, per.median(dim=0).values)
    assert bool((pooled > 5 * med).all())  # the pooled std is the loud sample's
    with pytest.raises(ConfigError, match="residual_estimator"):
        MethodConfig(residual_estimator="mean").validate()  # type: ignore[arg-type]
