"""Tests of mhdsr.method.grid and the interpolant of mhdsr.method.flow: grids, the interpolant, the loss, the score identity and the
exact Gaussian velocity (docs/design.md, "The method")."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mhdsr.errors import ConfigError
from mhdsr.method.flow import (
    flow_matching_loss,
    gaussian_flow_map,
    gaussian_velocity,
    interpolate,
    make_x0,
    sample_time,
    score_from_velocity,
    target_velocity,
)
from mhdsr.method.grid import avgpool2, upsample


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ---------------------------------------------------------------------------------- avgpool2


def test_avgpool2_hand_example() -> None:
    hi = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    # blocks: [[0,1],[4,5]] -> 2.5, [[2,3],[6,7]] -> 4.5, [[8,9],[12,13]] -> 10.5, ... -> 12.5
    expected = torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]])
    assert torch.equal(avgpool2(hi), expected)


def test_avgpool2_shapes_and_errors() -> None:
    hi = torch.randn(2, 3, 4, 6)
    lo = avgpool2(hi)
    assert lo.shape == (2, 3, 2, 3)
    torch.testing.assert_close(lo[1, 2, 1, 2], hi[1, 2, 2:4, 4:6].mean())
    assert avgpool2(torch.ones(6, 8)).shape == (3, 4)
    with pytest.raises(ValueError, match="even"):
        avgpool2(torch.zeros(1, 1, 5, 4))
    with pytest.raises(ValueError, match="even"):
        avgpool2(torch.zeros(4, 3))


# ---------------------------------------------------------------------------------- upsample


def _keys_cubic(x: np.ndarray, a: float = -0.75) -> np.ndarray:
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _periodic_resample_1d(f: np.ndarray, factor: int, kernel) -> np.ndarray:
    """Independent reference: fine cell j at coarse coordinate (j + 0.5)/factor - 0.5,
    value sum_k W(p - k) f[k mod n] over the 4 nearest coarse cells (periodic)."""
    n = f.shape[-1]
    out = np.zeros((*f.shape[:-1], n * factor))
    for j in range(n * factor):
        p = (j + 0.5) / factor - 0.5
        for k in range(math.floor(p) - 1, math.floor(p) + 3):
            out[..., j] += kernel(np.array(p - k)) * f[..., k % n]
    return out


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_upsample_matches_periodic_reference(mode: str) -> None:
    kernel = (lambda x: np.maximum(0.0, 1 - np.abs(x))) if mode == "bilinear" else _keys_cubic
    lo = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    got = upsample(lo, 2, mode).numpy()
    ref = _periodic_resample_1d(lo.numpy(), 2, kernel)  # along x
    ref = _periodic_resample_1d(ref.swapaxes(-1, -2), 2, kernel).swapaxes(-1, -2)  # along y
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_upsample_bilinear_hand_example_wraps() -> None:
    lo = torch.tensor([4.0, 0.0, 0.0, 0.0]).expand(1, 1, 4, 4)
    # fine x at coarse coords -0.25, 0.25, 0.75, ..., 3.25; cell -1 wraps to cell 3
    expected_row = torch.tensor([3.0, 3.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    out = upsample(lo, 2, "bilinear")
    assert out.shape == (1, 1, 8, 8)
    torch.testing.assert_close(out[0, 0], expected_row.expand(8, 8), rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_upsample_translation_equivariant(mode: str) -> None:
    lo = torch.randn(2, 3, 8, 10)
    out = upsample(lo, 2, mode)
    assert out.shape == (2, 3, 16, 20)
    rolled = upsample(torch.roll(lo, shifts=(1, -3), dims=(-2, -1)), 2, mode)
    torch.testing.assert_close(rolled, torch.roll(out, shifts=(2, -6), dims=(-2, -1)))
    # the global mean is kept (periodic interpolation weights sum to one for every input cell)
    torch.testing.assert_close(out.mean(dim=(-2, -1)), lo.mean(dim=(-2, -1)), atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("factor", [2, 4])
def test_upsample_preserves_constants(mode: str, factor: int) -> None:
    lo = torch.full((1, 2, 6, 6), 2.75)
    out = upsample(lo, factor, mode)
    assert out.shape == (1, 2, 6 * factor, 6 * factor)
    torch.testing.assert_close(out, torch.full_like(out, 2.75), rtol=0, atol=1e-6)


def test_upsample_unbatched_and_errors() -> None:
    lo = torch.randn(3, 4, 4)
    out = upsample(lo)
    assert out.shape == (3, 8, 8)
    torch.testing.assert_close(out, upsample(lo[None])[0])
    with pytest.raises(ConfigError, match="mode"):
        upsample(lo, 2, "nearest")
    with pytest.raises(ConfigError, match="factor"):
        upsample(lo, 0)
    with pytest.raises(ValueError):
        upsample(torch.zeros(4, 4))


# ------------------------------------------------------------------------------- sample_time


def test_sample_time_uniform_bounds_and_mean() -> None:
    g = torch.Generator().manual_seed(1)
    t = sample_time(20000, generator=g)
    assert t.shape == (20000,) and t.dtype == torch.float32
    assert float(t.min()) >= 1e-4 and float(t.max()) <= 1 - 1e-4
    assert abs(float(t.mean()) - 0.5) < 0.01  # sd of the mean: 0.29 / sqrt(2e4) = 0.002


def test_sample_time_logit_normal_distribution() -> None:
    g = torch.Generator().manual_seed(2)
    t = sample_time(20000, kind="logit_normal", generator=g)
    assert float(t.min()) >= 1e-4 and float(t.max()) <= 1 - 1e-4
    # logit-normal(0, 1): P(t < 0.5) = 0.5, P(t < sigmoid(1)) = Phi(1) = 0.8413
    assert abs(float((t < 0.5).float().mean()) - 0.5) < 0.015
    assert abs(float((t < 1 / (1 + math.exp(-1))).float().mean()) - 0.8413) < 0.015
    narrow = sample_time(1000, kind="logit_normal", t_min=0.2, t_max=0.3, logit_std=3.0)
    assert float(narrow.min()) >= 0.2 and float(narrow.max()) <= 0.3


def test_sample_time_reproducible_and_errors() -> None:
    a = sample_time(8, generator=torch.Generator().manual_seed(5))
    b = sample_time(8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="kind"):
        sample_time(4, kind="beta")
    with pytest.raises(ConfigError, match="t_min"):
        sample_time(4, t_min=0.5, t_max=0.5)


# ------------------------------------------------------------------------- interpolant, loss


def test_interpolate_endpoints_and_per_sample_t() -> None:
    x0, x1 = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    xt = interpolate(x0, x1, torch.tensor([0.0, 0.25, 1.0]))
    torch.testing.assert_close(xt[0], x0[0])
    torch.testing.assert_close(xt[1], 0.75 * x0[1] + 0.25 * x1[1])
    torch.testing.assert_close(xt[2], x1[2])
    torch.testing.assert_close(target_velocity(x0, x1), x1 - x0)
    with pytest.raises(ValueError, match="shape"):
        interpolate(x0, x1, torch.tensor([0.5, 0.5]))


def test_flow_matching_loss_hand_example() -> None:
    u = torch.zeros(2, 1, 1, 2)
    eps = torch.tensor([[[[1.0, -1.0]]], [[[0.0, 2.0]]]])
    x1 = torch.tensor([[[[0.5, 0.5]]], [[[1.0, 0.0]]]])
    t = torch.tensor([0.5, 0.25])
    # sigma = 0.5: x0 = [[0.5, -0.5]], [[0, 1]]; v* = x1 - x0 = [[0, 1]], [[1, -1]]
    seen = {}

    def zero_bf16(xt, tt, uu):
        seen.update(xt=xt, t=tt)
        return torch.zeros_like(xt, dtype=torch.bfloat16)

    loss, per_sample = flow_matching_loss(zero_bf16, x1, u, eps, t, sigma=0.5, loss_scale=100.0)
    # per sample: 100 * mean([0, 1]) = 50 and 100 * mean([1, 1]) = 100
    assert loss.dtype == torch.float32 and per_sample.dtype == torch.float32
    torch.testing.assert_close(per_sample, torch.tensor([50.0, 100.0]))
    torch.testing.assert_close(loss, torch.tensor(75.0))
    # the model saw x_t = (1-t) x0 + t x1
    expected_xt = torch.tensor([[[[0.5, 0.0]]], [[[0.25, 0.75]]]])
    torch.testing.assert_close(seen["xt"], expected_xt)
    assert torch.equal(seen["t"], t)


def test_flow_matching_loss_zero_at_target_and_differentiable() -> None:
    u, eps, x1 = torch.randn(4, 2, 4, 4), torch.randn(4, 2, 4, 4), torch.randn(4, 2, 4, 4)
    t = torch.rand(4)
    oracle = lambda xt, tt, uu: x1 - make_x0(u, eps, 0.1)  # noqa: E731
    loss, _ = flow_matching_loss(oracle, x1, u, eps, t, sigma=0.1, loss_scale=100.0)
    assert float(loss) < 1e-10
    w = torch.zeros((), requires_grad=True)
    loss, per_sample = flow_matching_loss(
        lambda xt, tt, uu: w * xt, x1, u, eps, t, sigma=0.1, loss_scale=1.0
    )
    loss.backward()
    assert w.grad is not None and not per_sample.requires_grad
    # d/dw mean((w x_t - v*)^2) at w = 0 is -2 mean(x_t v*)
    xt = interpolate(make_x0(u, eps, 0.1), x1, t)
    v_star = x1 - make_x0(u, eps, 0.1)
    torch.testing.assert_close(w.grad, -2 * (xt * v_star).mean())


# ------------------------------------------------------------------------ score and Gaussian


def test_score_identity_with_conditional_velocity() -> None:
    sigma = 0.1
    u, x1, eps = (torch.randn(3, 2, 4, 4, dtype=torch.float64) for _ in range(3))
    t = torch.tensor([0.1, 0.5, 0.97], dtype=torch.float64)
    x0 = make_x0(u, eps, sigma)
    xt = interpolate(x0, x1, t)
    score = score_from_velocity(xt, t, target_velocity(x0, x1), u, sigma)
    expected = -eps / ((1 - t).view(-1, 1, 1, 1) * sigma)
    torch.testing.assert_close(score, expected, rtol=1e-10, atol=1e-8)


def test_gaussian_velocity_is_the_flow_of_the_exact_map() -> None:
    sigma, s = 0.1, 0.3
    u = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    m = u + 0.5
    x0 = u + sigma * torch.randn_like(u)
    # at t = 0 the posterior mean of x1 - x0 given x0 is m - x0
    torch.testing.assert_close(gaussian_velocity(x0, 0.0, u, m, s, sigma), m - x0)
    for t in (0.05, 0.5, 0.9):
        x = gaussian_flow_map(x0, 0.0, t, u, m, s, sigma)
        h = 1e-6
        dxdt = (
            gaussian_flow_map(x0, 0.0, t + h, u, m, s, sigma)
            - gaussian_flow_map(x0, 0.0, t - h, u, m, s, sigma)
        ) / (2 * h)
        torch.testing.assert_close(gaussian_velocity(x, t, u, m, s, sigma), dxdt, atol=1e-8, rtol=0)
    # the map sends u + sigma z at t = 0 to m + s z at t = 1
    z = (x0 - u) / sigma
    torch.testing.assert_close(gaussian_flow_map(x0, 0.0, 1.0, u, m, s, sigma), m + s * z)


def test_score_from_gaussian_velocity_is_the_gaussian_score() -> None:
    # p_t = N((1-t) u + t m, S^2 I), S^2 = (1-t)^2 sigma^2 + t^2 s^2: score = -(x - mean) / S^2
    sigma, s = 0.1, 0.3
    u = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    m = u - 0.2
    x = torch.randn_like(u)
    t = torch.tensor([0.2, 0.6, 0.99], dtype=torch.float64)
    tb = t.view(-1, 1, 1, 1)
    v = gaussian_velocity(x, t, u, m, s, sigma)
    var = (1 - tb) ** 2 * sigma**2 + tb**2 * s**2
    expected = -(x - (1 - tb) * u - tb * m) / var
    torch.testing.assert_close(score_from_velocity(x, t, v, u, sigma), expected)
