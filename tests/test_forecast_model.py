"""The forecast FNO (neuraloperator): shapes, the increment form, exact equivariance to
periodic rolls, real-valued storage of the spectral weights, export round trip, bf16."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from mhdsr.config import load_config
from mhdsr.errors import ConfigError
from mhdsr.model.fno import REAL_SUFFIX, FNOConfig, ForecastFNO, count_parameters


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _model(seed: int = 0, **kw) -> ForecastFNO:
    torch.manual_seed(seed)
    cfg = FNOConfig(**{"channels": 8, "history": 2, "modes": 9, "width": 8, "layers": 2, **kw})
    return ForecastFNO(cfg).eval()


def test_shapes_and_increment_form() -> None:
    m = _model()
    x = torch.randn(3, 2, 8, 32, 24)
    dt = torch.full((3,), 0.5)
    y = m(x, dt)
    assert y.shape == (3, 8, 32, 24) and y.dtype == torch.float32
    # increment form: with the last projection layer zero, the forecast is x(t) exactly
    last = m.net.projection.fcs[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
    torch.testing.assert_close(m(x, dt), x[:, -1], rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"\(B, 2, 8, h, w\)"):
        m(x[:, :1], dt)
    with pytest.raises(ValueError, match="smaller than model.modes"):
        m(torch.randn(1, 2, 8, 8, 8), dt[:1])


def test_dt_and_history_are_inputs() -> None:
    m = _model()
    x = torch.randn(2, 2, 8, 16, 16)
    a = m(x, torch.full((2,), 0.5))
    assert not torch.allclose(a, m(x, torch.full((2,), 0.25)))  # dt is seen
    x2 = x.clone()
    x2[:, 0] += 1.0
    assert not torch.allclose(a, m(x2, torch.full((2,), 0.5)))  # the previous state is seen
    one = _model(history=1, dt_input=False)
    assert one.cfg.in_channels == 8 and one(x[:, 1:], torch.zeros(2)).shape == (2, 8, 16, 16)


@pytest.mark.parametrize("factorization", ["none", "tucker"])
def test_equivariant_to_periodic_rolls(factorization: str) -> None:
    """No positional embedding, no padding: G(roll(x)) = roll(G(x)) for every whole-cell shift
    (the FFT turns the roll into a phase per mode), to float32 rounding."""
    m = _model(seed=1, factorization=factorization, rank=0.5)
    x = torch.randn(2, 2, 8, 32, 32)
    dt = torch.full((2,), 0.5)
    y = m(x, dt)
    for sy, sx in [(1, 0), (0, 7), (13, 29)]:
        ys = m(torch.roll(x, (sy, sx), (-2, -1)), dt)
        err = (ys - torch.roll(y, (sy, sx), (-2, -1))).abs().max() / y.abs().max()
        assert err < 1e-5, (sy, sx, float(err))
    # a field that is not a roll of the input breaks it (the check can fail)
    flip = m(torch.flip(x, (-1,)), dt)
    assert (flip - torch.roll(y, (0, 1), (-2, -1))).abs().max() / y.abs().max() > 1e-2


def test_spectral_weights_are_stored_real_and_round_trip() -> None:
    m = _model(factorization="none")
    names = [n for n, _ in m.named_parameters()]
    assert all(not p.is_complex() for p in m.parameters())  # DeepSpeed ZeRO buffers are real
    assert any(n.endswith(REAL_SUFFIX) for n in names)
    n_complex = sum(p.numel() for n, p in m.named_parameters() if n.endswith(REAL_SUFFIX)) // 2
    assert n_complex == 2 * 8 * 8 * 9 * 5  # layers x width x width x modes x (modes // 2 + 1)
    assert count_parameters(m) == sum(p.numel() for p in m.parameters())
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)  # tensors only: loadable with weights_only=True
    sd = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    assert "_metadata" not in sd
    other = _model(seed=5)
    other.load_state_dict(sd)
    x = torch.randn(1, 2, 8, 16, 16)
    dt = torch.full((1,), 0.5)
    torch.testing.assert_close(other(x, dt), m(x, dt), rtol=0, atol=0)
    # a deep copy (the EMA) refreshes its own weights, not the original's
    ema = copy.deepcopy(m)
    with torch.no_grad():
        for p in ema.parameters():
            p.mul_(0.5)
    assert not torch.allclose(ema(x, dt), m(x, dt))
    torch.testing.assert_close(other(x, dt), m(x, dt), rtol=0, atol=0)


def test_gradients_reach_the_spectral_weights() -> None:
    m = _model().train()
    x = torch.randn(2, 2, 8, 16, 16)
    m(x, torch.full((2,), 0.5)).square().mean().backward()
    grads = {n: p.grad for n, p in m.named_parameters() if n.endswith(REAL_SUFFIX)}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())


def test_bf16_parameters_run() -> None:
    """DeepSpeed bf16 casts the parameters; FFTs run in float32 inside, output in bf16."""
    m = _model().to(torch.bfloat16)
    y = m(torch.randn(1, 2, 8, 16, 16), torch.full((1,), 0.5))
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


def test_config_validation(tmp_path) -> None:
    from mhdsr.forecast.config import ForecastTrainConfig

    for over, match in [
        ("model.history=3", "model.history"),
        ("model.channels=4", "model.channels"),
        ("model.factorization=svd", "factorization"),
        ("loss.rollout_steps=-1", "loss.rollout_steps"),
        ("loss.one_step_weight=0 loss.rollout_weight=0", "loss.one_step_weight"),
    ]:
        with pytest.raises(ConfigError, match=match):
            load_config(ForecastTrainConfig, None, over.split())


def test_shipped_forecast_configs_validate(repo) -> None:
    from mhdsr.eval.config import EvalConfig
    from mhdsr.forecast.config import FlowForecastTrainConfig, ForecastTrainConfig, RolloutConfig
    from mhdsr.sample.config import SampleConfig
    from mhdsr.shard_builder.config import ShardBuildConfig

    train = load_config(ForecastTrainConfig, repo / "configs/forecast/cpu-small.yaml")
    assert train.model.history == 1 and train.loss.rollout_steps == 2
    roll = load_config(RolloutConfig, repo / "configs/forecast/rollout-demo.yaml")
    assert roll.steps == 20 and roll.ensemble == 8
    flow = load_config(FlowForecastTrainConfig, repo / "configs/forecast/flow-cpu-small.yaml")
    assert flow.forecast.source == "operator" and flow.model.cond_channels == 16
    assert flow.forecast.operator == train.run_dir and not flow.method.project
    shard = load_config(ShardBuildConfig, repo / "configs/shard/forecast-demo.yaml")
    assert shard.task == "forecast" and shard.forecast.length == 3
    assert shard.forecast.dt_orbits == 0.1 and not shard.hi_runs
    chain = load_config(SampleConfig, repo / "configs/sample/forecast-chain.yaml")
    assert chain.inputs.kind == "forecast"
    assert (
        load_config(EvalConfig, repo / "configs/eval/forecast-demo.yaml").forecast.goal_orbits
        == 1.0
    )
