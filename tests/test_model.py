"""Tests of mhdsr.model: the periodic UNet velocity network and its config."""

from __future__ import annotations

import copy

import pytest
import torch

from mhdsr.config import load_config
from mhdsr.errors import ConfigError
from mhdsr.model import PRESETS, ModelConfig, UNet, count_parameters, preset


def tiny_cfg(**kw) -> ModelConfig:
    """A ~60k-parameter 3-level model (size multiple 4) with attention at levels 1 and 2."""
    base = dict(
        channels=3,
        width=16,
        mults=[1, 2, 2],
        blocks_per_level=1,
        attn_levels=[1, 2],
        attn_head_dim=16,
        dropout=0.0,
        groups=4,
        time_emb_mult=2,
    )
    base.update(kw)
    return ModelConfig(**base)


def perturbed(model: UNet, scale: float = 0.05, seed: int = 1) -> UNet:
    """Add Gaussian noise to every parameter (moves the zero-initialised layers off zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def inputs(b: int, c: int, h: int, w: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=g)
    u = torch.randn(b, c, h, w, generator=g)
    t = torch.rand(b, generator=g)
    return x, t, u


@pytest.mark.parametrize("hw", [(16, 16), (16, 32), (32, 8)])
def test_output_shape_square_and_non_square(hw):
    torch.manual_seed(0)
    model = perturbed(UNet(tiny_cfg()))
    x, t, u = inputs(2, 3, *hw)
    v = model(x, t, u)
    assert v.shape == (2, 3, *hw)
    assert v.dtype == torch.float32
    assert v.abs().max() > 1e-3  # perturbed model: genuinely non-zero output


def test_scalar_t_is_broadcast():
    torch.manual_seed(0)
    model = perturbed(UNet(tiny_cfg()))
    x, _, u = inputs(2, 3, 16, 16)
    v_scalar = model(x, torch.tensor(0.3), u)
    v_vec = model(x, torch.full((2,), 0.3), u)
    torch.testing.assert_close(v_scalar, v_vec)


def test_zero_output_at_init():
    torch.manual_seed(0)
    model = UNet(tiny_cfg())
    x, t, u = inputs(2, 3, 16, 16)
    v = model(x, t, u)
    assert torch.equal(v, torch.zeros_like(v))
    # every block starts as its skip path: zero-initialised last convs and attention projections
    for blk in [*model.down[0].blocks, *model.mid]:
        assert torch.count_nonzero(blk.res.conv2.weight) == 0
    assert torch.count_nonzero(model.mid[0].attn.proj.weight) == 0
    assert model.mid[1].attn is None  # only the first middle block carries attention


@pytest.mark.parametrize("shift", [(4, 0), (0, 8), (12, -4), (16, 28)])
def test_translation_equivariance_on_the_torus(shift):
    """Rolling the inputs by multiples of 2**(levels-1) = 4 rolls the velocity identically."""
    torch.manual_seed(0)
    model = perturbed(UNet(tiny_cfg())).eval()
    x, t, u = inputs(2, 3, 16, 32)
    with torch.no_grad():
        v = model(x, t, u)
        v_rolled = model(x.roll(shift, (2, 3)), t, u.roll(shift, (2, 3)))
    assert v.abs().max() > 0.1
    torch.testing.assert_close(v_rolled, v.roll(shift, (2, 3)), atol=1e-5, rtol=1e-5)


def test_roll_by_non_multiple_does_not_commute():
    """Control for the test above: a 2-pixel roll (not a multiple of 4) does not commute,
    so the equivariance test can fail."""
    torch.manual_seed(0)
    model = perturbed(UNet(tiny_cfg())).eval()
    x, t, u = inputs(1, 3, 16, 16)
    with torch.no_grad():
        v = model(x, t, u)
        v_rolled = model(x.roll(2, 3), t, u.roll(2, 3))
    assert (v_rolled - v.roll(2, 3)).abs().max() > 1e-2
    # and every spatial conv pads circularly
    convs = [
        m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
    ]
    assert convs and all(c.padding_mode == "circular" for c in convs)


@pytest.mark.parametrize("hw", [(18, 16), (16, 10), (2, 2)])
def test_bad_spatial_size_raises(hw):
    model = UNet(tiny_cfg())
    x, t, u = inputs(1, 3, *hw)
    with pytest.raises(ValueError, match=r"divisible by 4") as e:
        model(x, t, u)
    assert f"({hw[0]}, {hw[1]})" in str(e.value)


def test_bad_shapes_raise():
    model = UNet(tiny_cfg())
    x, t, u = inputs(2, 3, 16, 16)
    with pytest.raises(ValueError, match="x must have shape"):
        model(x[:, :2], t, u[:, :2])
    with pytest.raises(ValueError, match="u must have the shape"):
        model(x, t, u[:, :, :8])
    with pytest.raises(ValueError, match="t must have shape"):
        model(x, t[:1], u)


def test_preset_parameter_counts():
    gpu = count_parameters(UNet(preset("gpu-40m")))
    cpu = count_parameters(UNet(preset("cpu-small")))
    assert 38_000_000 <= gpu <= 42_000_000, gpu
    assert 1_000_000 <= cpu <= 2_000_000, cpu
    # exact values, so any architecture change is noticed (and the README numbers updated)
    assert gpu == 39_646_344
    assert cpu == 1_131_752


def test_count_parameters_known_answer():
    lin = torch.nn.Linear(3, 5)  # 15 weights + 5 biases
    assert count_parameters(lin) == 20
    lin.bias.requires_grad_(False)
    assert count_parameters(lin) == 15
    assert count_parameters(lin, trainable_only=False) == 20


def test_time_conditioning_matters():
    torch.manual_seed(0)
    model = perturbed(UNet(tiny_cfg())).eval()
    x, _, u = inputs(2, 3, 16, 16)
    with torch.no_grad():
        v1 = model(x, torch.full((2,), 0.1), u)
        v9 = model(x, torch.full((2,), 0.9), u)
        v1_again = model(x, torch.full((2,), 0.1), u)
    torch.testing.assert_close(v1, v1_again)
    rel = (v1 - v9).norm() / v1.norm()
    assert rel > 0.05, rel


def test_conditioning_field_matters():
    torch.manual_seed(0)
    model = perturbed(UNet(tiny_cfg())).eval()
    x, t, u = inputs(2, 3, 16, 16)
    with torch.no_grad():
        diff = (model(x, t, u) - model(x, t, u + 1.0)).abs().max()
    assert diff > 1e-2


def test_bf16_parameters_fp32_inputs():
    """DeepSpeed bf16: parameters cast to bf16, no autocast; inputs arrive in fp32."""
    torch.manual_seed(0)
    ref = perturbed(UNet(tiny_cfg(mults=[1, 2], attn_levels=[1]))).eval()
    model = copy.deepcopy(ref).to(torch.bfloat16)
    x, t, u = inputs(1, 3, 8, 8)
    with torch.no_grad():
        v = model(x, t, u)
        v_ref = ref(x, t, u)
    assert v.dtype == torch.bfloat16
    assert torch.isfinite(v).all()
    err = (v.float() - v_ref).norm() / v_ref.norm()
    assert err < 0.05, err


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_gradient_checkpointing_same_gradients(dropout):
    torch.manual_seed(0)
    plain = perturbed(UNet(tiny_cfg(dropout=dropout))).train()
    ckpt = copy.deepcopy(plain)
    ckpt.grad_checkpointing = True
    calls = {"plain": 0, "ckpt": 0}
    for key, m in (("plain", plain), ("ckpt", ckpt)):
        # pre-hook: non-reentrant recomputation stops early, before any post-forward hook
        m.down[0].blocks[0].register_forward_pre_hook(
            lambda *_, k=key: calls.__setitem__(k, calls[k] + 1)
        )
    x, t, u = inputs(2, 3, 16, 16)
    for m in (plain, ckpt):
        torch.manual_seed(123)  # same dropout masks in both runs
        (m(x, t, u) ** 2).mean().backward()
    assert calls == {"plain": 1, "ckpt": 2}  # checkpointed blocks are recomputed in backward
    n_checked = 0
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        assert p.grad is not None, name
        torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-5, msg=name)
        n_checked += 1
    assert n_checked == len(list(plain.parameters()))
    # checkpointing must not change the forward value either
    with torch.no_grad():
        plain.eval(), ckpt.eval()
        torch.testing.assert_close(ckpt(x, t, u), plain(x, t, u))


def test_grad_checkpointing_flag_from_config():
    assert UNet(tiny_cfg(grad_checkpointing=True)).grad_checkpointing is True
    assert UNet(tiny_cfg()).grad_checkpointing is False


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        (dict(width=20, groups=8), "model.groups"),
        (dict(width=16, mults=[1, 3], groups=32), "model.groups"),
        (dict(width=15, groups=5), "model.width"),
        (dict(attn_levels=[3]), "model.attn_levels"),
        (dict(attn_levels=[-1]), "model.attn_levels"),
        (dict(attn_levels=[1, 1]), "model.attn_levels"),
        (dict(attn_head_dim=12), "model.attn_head_dim"),
        (dict(mults=[]), "model.mults"),
        (dict(mults=[1, 0]), "model.mults"),
        (dict(blocks_per_level=0), "model.blocks_per_level"),
        (dict(dropout=1.0), "model.dropout"),
        (dict(dropout=-0.1), "model.dropout"),
        (dict(channels=0), "model.channels"),
        (dict(time_emb_mult=0), "model.time_emb_mult"),
    ],
)
def test_validate_names_the_key(kw, key):
    cfg = tiny_cfg(**kw)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        cfg.validate()
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        UNet(cfg)


def test_presets_validate_and_are_fresh():
    for name in PRESETS:
        preset(name).validate()
    a = preset("cpu-small")
    a.mults.append(2)
    assert preset("cpu-small").mults == [1, 2, 4, 4]
    with pytest.raises(ConfigError, match="unknown model preset"):
        preset("gpu-1b")


def test_omegaconf_structured_round_trip(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text("width: 32\nmults: [1, 2]\nattn_levels: [1]\ngroups: 8\n")
    cfg = load_config(ModelConfig, path, ["dropout=0.1"])
    assert cfg == ModelConfig(width=32, mults=[1, 2], attn_levels=[1], groups=8, dropout=0.1)
    with pytest.raises(ConfigError, match=r"model\.attn_levels"):
        load_config(ModelConfig, path, ["attn_levels=[2]"])
