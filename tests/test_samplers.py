"""Tests of mhdsr.sample.{timegrid, noise, samplers} against the exact Gaussian case of
docs/design.md: if x1 | u ~ N(m, s^2 I), the ODE maps u + sigma z to m + s z."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from mhdsr.errors import ConfigError
from mhdsr.method.flow import gaussian_flow_map, gaussian_velocity
from mhdsr.method.noise import PerSampleNoise, generator_for, seed_for
from mhdsr.method.samplers import (
    SAMPLERS,
    count_nfe,
    euler,
    euler_maruyama,
    expected_nfe,
    get_sampler,
    heun,
    register_sampler,
    sample,
    sampler_names,
)
from mhdsr.method.timegrid import time_grid

SIGMA, S, SHIFT = 0.1, 0.3, 0.5  # source noise, std of x1 | u, mean offset m - u
T_MIN, T_MAX = 1e-4, 1 - 1e-4


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


class FixedNoise:
    """NoiseSource returning a fixed tensor on every draw (deterministic ODE tests)."""

    def __init__(self, eps: torch.Tensor) -> None:
        self.eps = eps

    def draw(self, shape_per_sample: Sequence[int]) -> torch.Tensor:
        assert tuple(shape_per_sample) == tuple(self.eps.shape[1:])
        return self.eps


class BatchNoise:
    """NoiseSource drawing a whole batch from one generator (fast Monte-Carlo tests)."""

    def __init__(self, batch: int, seed: int, dtype: torch.dtype = torch.float64) -> None:
        self.batch, self.dtype = batch, dtype
        self.gen = torch.Generator().manual_seed(seed)
        self.shapes: list[tuple[int, ...]] = []  # one entry per draw

    def draw(self, shape_per_sample: Sequence[int]) -> torch.Tensor:
        self.shapes.append(tuple(shape_per_sample))
        return torch.randn((self.batch, *shape_per_sample), generator=self.gen, dtype=self.dtype)


def gaussian_model(m: torch.Tensor | float, s: float = S, sigma: float = SIGMA):
    return lambda x, t, u: gaussian_velocity(x, t, u, m, s, sigma)


# ---------------------------------------------------------------------------------- time grid


@pytest.mark.parametrize("kind", ["linear", "quadratic", "edm"])
@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_time_grid_endpoints_and_monotone(kind: str, n: int) -> None:
    ts = time_grid(n, kind)
    assert ts.shape == (n + 1,) and ts.dtype == torch.float64
    assert float(ts[0]) == T_MIN and float(ts[-1]) == T_MAX
    assert bool((ts[1:] > ts[:-1]).all())


def test_time_grid_formulas() -> None:
    kw = {"t_min": 0.0, "t_max": 1.0}
    torch.testing.assert_close(
        time_grid(4, "linear", **kw), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    )
    # quadratic: t_i = 1 - (1 - i/n)^2
    torch.testing.assert_close(
        time_grid(4, "quadratic", **kw),
        torch.tensor([0.0, 7 / 16, 12 / 16, 15 / 16, 1.0], dtype=torch.float64),
    )
    # edm, rho = 2, r from 1 to 0: r_i = (1 - i/n)^2, t_i = 1 - r_i (same as quadratic here)
    torch.testing.assert_close(time_grid(4, "edm", rho=2.0, **kw), time_grid(4, "quadratic", **kw))
    # default edm (rho = 7): r_1 = (1 + (1e-4^(1/7) - 1) / 2)^7 with r_max = 1 - 1e-4 ~ 1
    ts = time_grid(2, "edm")
    r1 = ((1 - T_MIN) ** (1 / 7) + 0.5 * ((1 - T_MAX) ** (1 / 7) - (1 - T_MIN) ** (1 / 7))) ** 7
    assert abs(float(ts[1]) - (1 - r1)) < 1e-12 and abs(float(ts[1]) - 0.9588) < 1e-3
    # the non-uniform grids concentrate steps near t = 1
    for kind in ("quadratic", "edm"):
        steps = time_grid(16, kind).diff()
        assert bool((steps[1:] < steps[:-1]).all())


def test_time_grid_errors() -> None:
    with pytest.raises(ConfigError, match="n_steps"):
        time_grid(0)
    with pytest.raises(ConfigError, match="kind"):
        time_grid(4, "cosine")
    with pytest.raises(ConfigError, match="t_min"):
        time_grid(4, t_min=0.6, t_max=0.4)


# --------------------------------------------------------------------------------------- noise


def test_seed_is_stable_and_keyed() -> None:
    # golden value: changing the hash would silently change every stored sample's noise
    assert seed_for(0, 1) == 5836529245451711556
    assert seed_for(1, 23) != seed_for(12, 3) != seed_for(123)
    a = torch.randn(5, generator=generator_for(7, 3, 1))
    assert torch.equal(a, torch.randn(5, generator=generator_for(7, 3, 1)))
    assert not torch.equal(a, torch.randn(5, generator=generator_for(7, 3, 2)))
    with pytest.raises(ValueError, match="non-negative"):
        seed_for(0, -1)


def test_per_sample_noise_independent_of_batch_composition() -> None:
    keys = [(0, 0), (0, 1), (5, 0), (5, 1)]
    full = PerSampleNoise.from_keys(3, keys, dtype=torch.float64)
    first, second = full.draw((2, 3)), full.draw((2, 3))
    assert first.shape == (4, 2, 3) and first.dtype == torch.float64
    pair = PerSampleNoise.from_keys(3, [keys[3], keys[1]], dtype=torch.float64)
    p1, p2 = pair.draw((2, 3)), pair.draw((2, 3))
    assert torch.equal(p1, first[[3, 1]]) and torch.equal(p2, second[[3, 1]])
    assert not torch.equal(first, second)


# ----------------------------------------------------------------------------- ODE accuracy


def _ode_errors(sampler, ns: Sequence[int]) -> list[float]:
    """Max error against the exact flow map (truncation to [t_min, t_max] included)."""
    u = torch.randn(64, 1, 2, 2, dtype=torch.float64)
    m = u + SHIFT
    eps = torch.randn_like(u)
    exact = gaussian_flow_map(u + SIGMA * eps, T_MIN, T_MAX, u, m, S, SIGMA)
    errs = []
    for n in ns:
        x = sampler(gaussian_model(m), u, time_grid(n), FixedNoise(eps), sigma=SIGMA)
        errs.append(float((x - exact).abs().max()))
    return errs


def _slope(ns: Sequence[int], errs: Sequence[float]) -> float:
    return -float(np.polyfit(np.log(ns), np.log(errs), 1)[0])


def test_euler_is_first_order() -> None:
    ns = [4, 8, 16, 32, 64]
    errs = _ode_errors(euler, ns)
    slope = _slope(ns, errs)
    assert 0.8 <= slope <= 1.3, (slope, errs)  # measured 0.95
    assert errs[-1] < 0.05


def test_heun_is_second_order() -> None:
    ns = [4, 8, 16, 32, 64]
    errs = _ode_errors(heun, ns)
    slope = _slope(ns, errs)
    assert 1.7 <= slope <= 2.4, (slope, errs)  # measured 2.1
    assert errs[-1] < 1e-3


@pytest.mark.parametrize("sampler", [euler, heun])
def test_ode_samples_have_target_mean_and_std(sampler) -> None:
    n_samples = 20000
    u = torch.zeros(n_samples, 1, 1, 1, dtype=torch.float64)
    m = SHIFT
    x = sampler(gaussian_model(m), u, time_grid(64), BatchNoise(n_samples, 1), sigma=SIGMA)
    assert abs(float(x.mean()) - m) < 4 * S / math.sqrt(n_samples)
    # measured std / s: Euler 0.970 (its O(h) bias at 64 steps), Heun 0.998
    tol = 0.04 if sampler is euler else 0.02
    assert abs(float(x.std()) / S - 1) < tol


# ----------------------------------------------------------------------------------- the SDE


def test_sde_samples_have_target_mean_and_std() -> None:
    n_samples = 20000
    u = torch.zeros(n_samples, 1, 1, 1, dtype=torch.float64)
    x = euler_maruyama(
        gaussian_model(SHIFT), u, time_grid(200), BatchNoise(n_samples, 2), sigma=SIGMA, delta=1.0
    )
    assert abs(float(x.mean()) - SHIFT) < 4 * S / math.sqrt(n_samples)
    assert abs(float(x.std()) / S - 1) < 0.03  # measured 0.985: O(h) bias + 0.5 % noise


def test_sde_with_zero_delta_is_euler() -> None:
    u = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    eps = torch.randn_like(u)
    model, ts = gaussian_model(u + SHIFT), time_grid(8)
    x_sde = euler_maruyama(model, u, ts, FixedNoise(eps), sigma=SIGMA, delta=0.0)
    torch.testing.assert_close(x_sde, euler(model, u, ts, FixedNoise(eps), sigma=SIGMA))


def test_sde_last_step_is_deterministic() -> None:
    u = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    model = gaussian_model(u + SHIFT)
    # one step: no noise beyond x0, no score, i.e. exactly one Euler step
    x_sde = euler_maruyama(model, u, time_grid(1), BatchNoise(4, 6), sigma=SIGMA, delta=1.0)
    torch.testing.assert_close(x_sde, euler(model, u, time_grid(1), BatchNoise(4, 6), sigma=SIGMA))
    # n steps draw x0 plus n - 1 increments
    noise = BatchNoise(4, 7)
    euler_maruyama(model, u, time_grid(5), noise, sigma=SIGMA)
    assert noise.shapes == [(2, 3, 3)] * 5


@pytest.mark.parametrize("schedule", ["annealed", "constant"])
@pytest.mark.parametrize("n", [1, 2, 3, 16])
def test_sde_finite_and_bounded_for_huge_delta(schedule: str, n: int) -> None:
    # delta = 1e6 would blow an uncapped explicit step up by ~1e6 per step; the churn cap keeps
    # every step contracting, so samples stay within a few std of the target
    u = torch.zeros(256, 1, 2, 2)
    x = euler_maruyama(
        gaussian_model(SHIFT),
        u,
        time_grid(n),
        BatchNoise(256, 3, torch.float32),
        sigma=SIGMA,
        delta=1e6,
        delta_schedule=schedule,
    )
    assert torch.isfinite(x).all()
    assert float((x - SHIFT).abs().max()) < 10 * S


def test_sde_option_errors() -> None:
    u = torch.zeros(2, 1, 2, 2)
    noise = BatchNoise(2, 0, torch.float32)
    with pytest.raises(ConfigError, match="delta_schedule"):
        euler_maruyama(gaussian_model(0.0), u, time_grid(2), noise, sigma=0.1, delta_schedule="x")
    with pytest.raises(ConfigError, match="max_churn"):
        euler_maruyama(gaussian_model(0.0), u, time_grid(2), noise, sigma=0.1, max_churn=2.0)


# ---------------------------------------------------------------------- common sampler checks


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("grid", ["linear", "quadratic", "edm"])
def test_all_samplers_finite_for_one_step(name: str, grid: str) -> None:
    u = torch.randn(3, 8, 8, 8)
    x = sample(
        name,
        gaussian_model(u + SHIFT),
        u,
        n_steps=1,
        grid=grid,
        noise=BatchNoise(3, 4, u.dtype),
        sigma=SIGMA,
    )
    assert x.shape == u.shape and x.dtype == torch.float32 and torch.isfinite(x).all()


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_reproducible_whatever_the_batch_split(name: str) -> None:
    keys = [(11, 0), (11, 1), (12, 0), (13, 4)]
    u_all = torch.randn(4, 2, 4, 4)
    m_all = u_all + 0.3 * torch.randn_like(u_all)

    def run(idx: list[int]) -> torch.Tensor:
        u, m = u_all[idx], m_all[idx]
        noise = PerSampleNoise.from_keys(42, [keys[i] for i in idx])
        return sample(name, gaussian_model(m), u, n_steps=5, noise=noise, sigma=SIGMA)

    together = run([0, 1, 2, 3])
    halves = torch.cat([run([3, 1]), run([2, 0])])[[3, 1, 2, 0]]
    torch.testing.assert_close(halves, together, rtol=0, atol=1e-6)
    other_seed = sample(
        name,
        gaussian_model(m_all),
        u_all,
        n_steps=5,
        sigma=SIGMA,
        noise=PerSampleNoise.from_keys(43, keys),
    )
    assert not torch.allclose(other_seed, together)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_nfe_and_callback(name: str) -> None:
    u = torch.zeros(2, 1, 4, 4)
    counted = count_nfe(gaussian_model(SHIFT))
    seen: list[tuple[int, float]] = []
    sample(
        name,
        counted,
        u,
        n_steps=6,
        grid="edm",
        noise=BatchNoise(2, 5, u.dtype),
        sigma=SIGMA,
        callback=lambda d: seen.append((d["i"], d["t"])),
    )
    assert counted.nfe == expected_nfe(name, 6) == {"heun": 12}.get(name, 6)
    ts = time_grid(6, "edm").tolist()
    assert seen == list(zip(range(6), ts[1:]))


def test_model_gets_per_sample_time() -> None:
    calls: list[torch.Tensor] = []

    def model(x, t, u):
        calls.append(t)
        return torch.zeros_like(x)

    u = torch.zeros(3, 1, 2, 2)
    heun(model, u, [0.0, 0.5, 1.0], BatchNoise(3, 0, u.dtype), sigma=SIGMA)
    assert [c.tolist() for c in calls] == [[0.0] * 3, [0.5] * 3, [0.5] * 3, [1.0] * 3]
    assert all(c.dtype == torch.float32 for c in calls)


def test_registry_and_option_errors() -> None:
    assert get_sampler("heun").fn is heun
    with pytest.raises(ConfigError, match="unknown sampler 'rk4'"):
        get_sampler("rk4")
    u = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ConfigError, match="delta"):
        sample(
            "euler", gaussian_model(0.0), u, n_steps=2, noise=BatchNoise(1, 0), sigma=0.1, delta=1.0
        )
    with pytest.raises(ValueError, match="increasing"):
        euler(gaussian_model(0.0), u, [0.0, 0.5, 0.4], BatchNoise(1, 0), sigma=0.1)


@pytest.fixture
def midpoint_registered():
    """A toy second-order sampler added with one function and one registration (then removed)."""

    @register_sampler("toy_midpoint", nfe_per_step=2)
    @torch.no_grad()
    def toy_midpoint(model, u, ts, noise, *, sigma, callback=None, half_step: float = 0.5):
        x = u + sigma * noise.draw(tuple(u.shape[1:])).to(u)
        grid = torch.as_tensor(ts, dtype=torch.float64).tolist()
        for t, t_next in zip(grid[:-1], grid[1:]):
            h = t_next - t
            tt = torch.full((x.shape[0],), t, dtype=torch.float32)
            v = model(x, tt, u)
            tm = torch.full_like(tt, t + half_step * h)
            x = x + h * model(x + half_step * h * v, tm, u)
        return x

    yield toy_midpoint
    del SAMPLERS["toy_midpoint"]


def test_a_sampler_is_one_function_and_one_registration(midpoint_registered) -> None:
    from mhdsr.config import load_config
    from mhdsr.sample.config import SampleConfig

    assert "toy_midpoint" in sampler_names()
    assert expected_nfe("toy_midpoint", 5) == 10
    assert get_sampler("toy_midpoint").options == {"half_step"}
    # the sample config accepts it and its option, and still refuses unknown options
    cfg = load_config(
        SampleConfig,
        None,
        ["sampler.name=toy_midpoint", "sampler.options.half_step=0.5", "shards=x"],
    )
    assert cfg.sampler.name == "toy_midpoint"
    with pytest.raises(ConfigError, match="takes no option"):
        load_config(
            SampleConfig, None, ["sampler.name=toy_midpoint", "sampler.options.delta=1", "shards=x"]
        )
    # and it integrates the exact Gaussian flow to second order, like Heun
    u = torch.zeros(4000, 1, 1, 1)
    errs = []
    for n in (4, 8):
        noise = PerSampleNoise.from_keys(0, [(i,) for i in range(4000)])
        x = sample(
            "toy_midpoint", gaussian_model(u + SHIFT), u, n_steps=n, noise=noise, sigma=SIGMA
        )
        noise = PerSampleNoise.from_keys(0, [(i,) for i in range(4000)])
        x0 = u + SIGMA * noise.draw((1, 1, 1))
        exact = gaussian_flow_map(x0, 1e-4, 1 - 1e-4, u, u + SHIFT, S, SIGMA)
        errs.append(float((x - exact).abs().max()))
    assert errs[1] < errs[0] / 3  # second order: halving h cuts the error ~4x


def test_registering_a_taken_name_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_sampler("heun", nfe_per_step=2)(heun)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_on_cuda_match_cpu(name: str) -> None:
    u = torch.randn(2, 3, 8, 8)
    keys = [(0,), (1,)]
    out = {}
    for dev in ("cpu", "cuda"):
        noise = PerSampleNoise.from_keys(1, keys, device=dev)
        ud = u.to(dev)
        out[dev] = sample(name, gaussian_model(ud + SHIFT), ud, n_steps=4, noise=noise, sigma=0.1)
    torch.testing.assert_close(out["cuda"].cpu(), out["cpu"], rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_generators_are_reproducible() -> None:
    def draw() -> torch.Tensor:
        noise = PerSampleNoise.from_keys(1, [(0,), (1,)], device="cuda", generator_device="cuda")
        return noise.draw((3, 4))

    a = draw()
    assert a.device.type == "cuda" and a.shape == (2, 3, 4)
    assert torch.equal(a, draw())


def test_source_temperature_scales_the_spread_per_channel() -> None:
    """x0 = T sigma eps: for the exact Gaussian velocity the ODE map is affine with slope
    S / sigma, so channel c of the samples has std T_c S around the same mean; T = 1 leaves
    the draws bit-identical; only the first draw (x0) is scaled."""
    from mhdsr.method.config import SamplerConfig
    from mhdsr.method.noise import SourceTemperature

    n = 20000
    u = torch.zeros(n, 2, 1, 1, dtype=torch.float64)
    cfg = SamplerConfig(name="heun", steps=32, temperature=[1.5, 0.5])
    x = heun(gaussian_model(SHIFT), u, time_grid(32), cfg.noise(BatchNoise(n, 1)), sigma=SIGMA)
    for c, t in enumerate((1.5, 0.5)):
        assert abs(float(x[:, c].mean()) - SHIFT) < 4 * t * S / math.sqrt(n)
        assert float(x[:, c].std()) / (t * S) == pytest.approx(1.0, abs=0.02)
    plain = BatchNoise(4, 3)
    assert SamplerConfig(temperature=[1.0]).noise(plain) is plain
    wrapped = SourceTemperature(BatchNoise(4, 3), [2.0, 3.0])
    ref = BatchNoise(4, 3)
    torch.testing.assert_close(
        wrapped.draw((2, 1, 1)),
        ref.draw((2, 1, 1)) * torch.tensor([2.0, 3.0]).reshape(1, 2, 1, 1).double(),
    )
    torch.testing.assert_close(wrapped.draw((2, 1, 1)), ref.draw((2, 1, 1)))  # SDE draws unscaled
    with pytest.raises(ValueError, match="3 values for 2 channels"):
        SourceTemperature(BatchNoise(4, 3), [1.0, 2.0, 3.0]).draw((2, 1, 1))
    with pytest.raises(ConfigError, match="sampler.temperature"):
        SamplerConfig(temperature=[0.0]).validate()
