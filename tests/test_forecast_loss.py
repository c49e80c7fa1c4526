"""The forecast losses on a known linear system x_{k+1} = a x_k (docs/design.md "Forecast
stage"): hand-computed one-step and rolled-out values, the gradient through the rollout, a
model x -> a_hat x that recovers a exactly, and the FNO learning x -> a x."""

from __future__ import annotations

import pytest
import torch

from mhdsr.forecast.loss import forecast_loss, min_window, rollout
from mhdsr.model.fno import FNOConfig, ForecastFNO


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Scalar(torch.nn.Module):
    """x(t + dt) = a_hat * x(t) (history H: the older states are ignored)."""

    def __init__(self, a_hat: float) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(float(a_hat), dtype=torch.float64))

    def forward(self, states: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        return self.a * states[:, -1]


def _windows(a: float, k: int, b: int = 2, seed: int = 0) -> torch.Tensor:
    x0 = torch.randn(
        b, 1, 3, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    return torch.cat([x0 * a**j for j in range(k)], dim=1)  # (B, K, C, h, w)


@pytest.mark.parametrize("history", [1, 2])
def test_hand_computed_losses(history: int) -> None:
    a, ah, k, r = 0.9, 0.7, 5, 3
    seq = _windows(a, k)
    m2 = (seq[:, 0] ** 2).flatten(1).mean(1)  # <x0^2> per window
    dt = torch.full((2,), 0.5)
    loss, per, parts = forecast_loss(Scalar(ah), seq, dt, history=history, rollout_steps=r,
                                     one_step_weight=2.0, rollout_weight=3.0, loss_scale=10.0)  # fmt: skip
    # one step from the true x_s: error (ah - a) a^s x0 at s = H-1 .. K-2
    s = torch.arange(history - 1, k - 1, dtype=torch.float64)
    want1 = ((ah - a) ** 2 * a ** (2 * s)).mean() * m2
    # rollout from x_{H-1}: y_j = ah^j a^{H-1} x0 against a^{H-1+j} x0, j = 1 .. R
    j = torch.arange(1, r + 1, dtype=torch.float64)
    wantr = ((ah**j - a**j) ** 2).mean() * a ** (2 * (history - 1)) * m2
    torch.testing.assert_close(parts["one_step"], want1)
    torch.testing.assert_close(parts["rollout"], wantr)
    torch.testing.assert_close(per, 10.0 * (2.0 * want1 + 3.0 * wantr))
    torch.testing.assert_close(loss, per.mean())


def test_gradient_flows_through_the_rollout() -> None:
    """d LR / d a_hat = mean_j 2 (ah^j - a^j) j ah^(j-1) <x0^2>: every step's dependence on the
    earlier predictions is differentiated (a detached rollout would give only the j = 1 term)."""
    a, ah, r = 1.1, 0.8, 4
    seq = _windows(a, r + 1)
    m = Scalar(ah)
    _, _, parts = forecast_loss(m, seq, torch.zeros(2), history=1, rollout_steps=r,
                                one_step_weight=0.0)  # fmt: skip
    parts["rollout"].mean().backward()
    j = torch.arange(1, r + 1, dtype=torch.float64)
    m2 = (seq[:, 0] ** 2).flatten(1).mean(1).mean()
    want = (2 * (ah**j - a**j) * j * ah ** (j - 1)).mean() * m2
    torch.testing.assert_close(m.a.grad, want)


def test_rolled_out_training_recovers_a_exactly() -> None:
    a = 0.93
    seq = _windows(a, 5, b=4)
    m = Scalar(0.5)
    opt = torch.optim.SGD(m.parameters(), lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        loss, _, _ = forecast_loss(m, seq, torch.zeros(4), history=2, rollout_steps=3)
        loss.backward()
        opt.step()
    assert abs(m.a.item() - a) < 1e-9 and loss.item() < 1e-15
    # its rollout is then the system's own trajectory
    out = rollout(m, seq[:, :2], torch.zeros(4), steps=3)
    torch.testing.assert_close(out, seq[:, 2:], rtol=1e-9, atol=0)


def test_window_too_short_is_refused() -> None:
    assert min_window(2, 0) == 3 and min_window(2, 3) == 5
    with pytest.raises(ValueError, match="needs 5"):
        forecast_loss(Scalar(1.0), _windows(1.0, 4), torch.zeros(2), history=2, rollout_steps=3)


def test_fno_learns_a_linear_map() -> None:
    """The FNO fits x -> a x (a per channel, one step of a linear system) on smooth periodic
    fields: the one-step loss falls three orders of magnitude below persistence's (a relative
    rms error of a few per cent; the GELU network represents the linear map approximately, the
    scalar model above exactly)."""
    torch.manual_seed(0)
    c, n = 3, 16
    a = torch.tensor([0.8, 1.1, -0.5])
    cfg = FNOConfig(channels=c, history=1, dt_input=False, modes=9, width=16, layers=2)
    model = ForecastFNO(cfg)

    def batch(g: torch.Generator) -> torch.Tensor:
        k2 = (torch.fft.fftfreq(n) * n)[:, None] ** 2 + (torch.fft.rfftfreq(n) * n)[None, :] ** 2
        spec = torch.randn(8, 1, c, n, n // 2 + 1, dtype=torch.complex64, generator=g)
        x0 = torch.fft.irfft2(spec / (k2 + 1), s=(n, n))
        x0 = x0 / x0.std()
        return torch.cat([x0, x0 * a[:, None, None]], dim=1)

    g = torch.Generator().manual_seed(1)
    test = batch(torch.Generator().manual_seed(99))
    persist = ((test[:, 1] - test[:, 0]) ** 2).mean().item()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(600):
        for p in opt.param_groups:
            p["lr"] = 3e-3 * (1 - step / 600) + 1e-5
        opt.zero_grad()
        loss, _, _ = forecast_loss(model, batch(g), torch.zeros(8), history=1, rollout_steps=0)
        loss.backward()
        opt.step()
    with torch.no_grad():
        final, _, _ = forecast_loss(model, test, torch.zeros(8), history=1, rollout_steps=0)
    assert final.item() < 2e-3 * persist, (final.item(), persist)
