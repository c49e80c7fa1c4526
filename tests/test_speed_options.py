"""GPU speed options (engine.channels_last, engine.fused_adamw, engine.tf32) leave results
unchanged within float tolerance: their CPU paths against the plain ones. engine.compile is
exercised by the bench-gpu smoke test (tests/test_gpu_check.py): compiling on a CPU takes
minutes."""

from __future__ import annotations

import copy

import pytest
import torch

from mhdsr.method.config import original_recipe
from mhdsr.method.flow import Formulation
from mhdsr.model import UNet
from mhdsr.runtime.engine import GuardedAdamW, set_tf32, to_channels_last, use_fused_adamw
from test_model import perturbed, tiny_cfg


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _pair() -> tuple[UNet, UNet]:
    torch.manual_seed(0)
    plain = perturbed(UNet(tiny_cfg()))
    return plain, to_channels_last(copy.deepcopy(plain))


def test_channels_last_forward_equals_contiguous() -> None:
    plain, nhwc = _pair()
    # the weights stay contiguous (DeepSpeed's start-up broadcast refuses channels-last ones)
    assert all(p.is_contiguous() for p in nhwc.parameters())
    seen = []
    for m in nhwc.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda _m, _a, out: seen.append(out))
    g = torch.Generator().manual_seed(1)
    x, u = torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, 3, 32, 32, generator=g)
    t = torch.rand(2, generator=g)
    with torch.no_grad():
        a, b = plain(x, t, u), nhwc(x, t, u)
    # every convolution returns NHWC (C > 1, so the two formats differ in strides)
    assert len(seen) > 10
    assert all(o.is_contiguous(memory_format=torch.channels_last) for o in seen)
    assert not seen[0].is_contiguous()
    assert b.abs().max() > 0.1  # the perturbed net does real work
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_channels_last_training_loss_and_gradients_equal_contiguous() -> None:
    plain, nhwc = _pair()
    form = Formulation(
        original_recipe(formulation="residual", upsample="spline", scale="instance"),
        torch.full((3,), 0.5),
    )
    hi = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    la, _, ta = form.loss(plain, hi, torch.Generator().manual_seed(3), crop=16)
    lb, _, tb = form.loss(nhwc, hi, torch.Generator().manual_seed(3), crop=16)
    torch.testing.assert_close(tb, ta)
    torch.testing.assert_close(lb, la, rtol=1e-5, atol=1e-6)
    la.backward()
    lb.backward()
    for (name, pa), pb in zip(plain.named_parameters(), nhwc.parameters()):
        # float rounding of another summation order: ~1e-6 of the gradient's scale (measured)
        scale = float(pa.grad.abs().max())
        assert float((pb.grad - pa.grad).abs().max()) <= 1e-5 * scale + 1e-7, name


def test_fused_adamw_is_chosen_on_cuda_only_unless_forced() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert use_fused_adamw("auto", cuda) and not use_fused_adamw("auto", cpu)
    assert use_fused_adamw("on", cpu) and not use_fused_adamw("off", cuda)


def test_fused_adamw_update_equals_the_foreach_update() -> None:
    torch.manual_seed(0)
    net = perturbed(UNet(tiny_cfg()))
    twins = [copy.deepcopy(net), copy.deepcopy(net)]
    opts = [
        GuardedAdamW(m.parameters(), lr=1e-3, weight_decay=0.01, clip=1.0, fused=fused)
        for m, fused in zip(twins, (False, True))
    ]
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        x, u = torch.randn(2, 3, 16, 16, generator=g), torch.randn(2, 3, 16, 16, generator=g)
        t = torch.rand(2, generator=g)
        for m, opt in zip(twins, opts):
            m(x, t, u).square().mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    moved = max((a - b).abs().max() for a, b in zip(twins[0].parameters(), net.parameters()))
    assert moved > 1e-4  # the steps changed the weights
    for a, b in zip(twins[0].parameters(), twins[1].parameters()):  # rounding: << lr = 1e-3
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    assert opts[0]._global_grad_norm == pytest.approx(opts[1]._global_grad_norm, rel=1e-5)


def test_tf32_switch_sets_the_cuda_flags_and_leaves_cpu_results_bitwise_equal() -> None:
    has_new = hasattr(torch.backends.cuda.matmul, "fp32_precision")
    before = torch.backends.cuda.matmul.fp32_precision if has_new else None
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(64, 64, generator=g), torch.randn(64, 64, generator=g)
    w = torch.randn(4, 3, 3, 3, generator=g)
    img = torch.randn(1, 3, 16, 16, generator=g)
    try:
        set_tf32(False)
        ref = (a @ b, torch.nn.functional.conv2d(img, w))
        if has_new:
            assert torch.backends.cuda.matmul.fp32_precision == "ieee"
            assert torch.backends.cudnn.conv.fp32_precision == "ieee"
        set_tf32(True)
        if has_new:
            assert torch.backends.cuda.matmul.fp32_precision == "tf32"
            assert torch.backends.cudnn.conv.fp32_precision == "tf32"
        assert torch.equal(a @ b, ref[0])
        assert torch.equal(torch.nn.functional.conv2d(img, w), ref[1])
    finally:
        if has_new:
            torch.backends.cuda.matmul.fp32_precision = before
            torch.backends.cudnn.conv.fp32_precision = before
