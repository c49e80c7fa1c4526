"""The one training loss (mhdsr.method.flow.Formulation.loss): golden values, draw order, and that
validation draws t from the configured law (docs/design.md, "The method"). The golden values are
those of the original recipe (mhdsr.method.config.ORIGINAL_RECIPE), set explicitly."""

from __future__ import annotations

import pytest
import torch

from mhdsr.method.config import original_recipe
from mhdsr.method.flow import Formulation, flow_matching_loss, sample_time
from mhdsr.method.grid import avgpool2, upsample
from mhdsr.model import ModelConfig, UNet


def tiny_net() -> UNet:
    torch.manual_seed(0)
    cfg = ModelConfig(
        channels=2,
        width=8,
        mults=[1, 2],
        blocks_per_level=1,
        attn_levels=[1],
        attn_head_dim=8,
        groups=4,
    )
    net = UNet(cfg)
    with torch.no_grad():  # leave the zero initialisation so the output depends on the input
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


HI = torch.randn(3, 2, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    ("crop", "roll", "golden_loss", "golden_t"),
    [
        (0, False, 94.64266204833984, [0.815257, 0.222044, 0.982777]),
        (8, True, 86.44417572021484, [0.413567, 0.814329, 0.030903]),
    ],
)
def test_golden_loss(crop: int, roll: bool, golden_loss: float, golden_t: list[float]) -> None:
    """Stored values of a fixed tiny net, batch and generator (torchtitan-style golden test):
    a change of the recipe or of the order of the random draws shows up here."""
    with torch.no_grad():
        loss, per, t = Formulation(original_recipe()).loss(
            tiny_net(),
            HI,
            torch.Generator().manual_seed(2),
            crop=crop,
            roll=roll,
        )
    assert float(loss) == pytest.approx(golden_loss, rel=1e-4)
    assert t.tolist() == pytest.approx(golden_t, abs=1e-6)
    assert per.shape == (3,) and float(per.mean()) == pytest.approx(float(loss), rel=1e-6)


def test_draw_order_is_offsets_then_eps_then_t() -> None:
    """Full fields without roll draw nothing for the window: eps first, then t."""
    m = original_recipe(t_dist="logit_normal", logit_mean=0.7, logit_std=0.5)
    net = tiny_net()
    with torch.no_grad():
        loss, _, t = Formulation(m).loss(net, HI, torch.Generator().manual_seed(5))
        g = torch.Generator().manual_seed(5)
        eps = torch.randn(HI.shape, generator=g)
        t_ref = sample_time(
            3,
            kind="logit_normal",
            logit_mean=0.7,
            logit_std=0.5,
            generator=g,
            t_min=m.t_min,
            t_max=m.t_max,
        )
        u = upsample(avgpool2(HI), 2, m.upsample)
        ref, _ = flow_matching_loss(net, HI, u, eps, t_ref, sigma=m.sigma, loss_scale=m.loss_scale)
    assert torch.equal(t, t_ref)
    assert float(loss) == float(ref)


def test_validation_uses_the_configured_time_law() -> None:
    """The old validation ignored logit_mean/logit_std; the one loss honours them."""
    m = original_recipe(t_dist="logit_normal", logit_mean=3.0, logit_std=0.3)
    net = tiny_net()
    ts = []
    with torch.no_grad():
        for i in range(64):
            ts.append(Formulation(m).loss(net, HI[:1], torch.Generator().manual_seed(i))[2])
    mean_t = float(torch.cat(ts).mean())
    assert 0.93 < mean_t < 0.97  # sigmoid(3) = 0.953; uniform would give 0.5
