"""mhdsr.runtime.flops: counted model FLOPs against analytic counts, the peak table, MFU."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mhdsr.runtime.flops import (
    KNOWN_PEAKS,
    CallRecorder,
    device_peak,
    measure_cpu_matmul_peak,
    meta_copy,
    mfu,
    training_flops,
)


def test_conv_forward_and_backward_flops_match_the_analytic_count() -> None:
    # forward: 2 * B * Cout * Hout * Wout * Cin * k * k; the input needs no gradient, so the
    # backward computes the weight gradient only: the same count again
    conv = nn.Conv2d(3, 5, 3, padding=1)
    b, h, w = 2, 8, 6
    fwd, total = training_flops(conv, lambda d: (torch.empty(b, 3, h, w, device=d),))
    expect = 2 * b * 5 * h * w * 3 * 3 * 3
    assert fwd == expect
    assert total == 2 * expect
    assert all(p.device.type == "cpu" for p in conv.parameters())  # the model is left alone


def test_linear_chain_backward_counts_input_gradients_of_inner_layers_only() -> None:
    # layer 1 (inputs without gradient): weight gradient only; layer 2: weight + input gradients
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    b = 5
    fwd, total = training_flops(net, lambda d: (torch.empty(b, 4, device=d),))
    assert fwd == 2 * b * (4 * 6 + 6 * 3)
    assert total == fwd + 2 * b * 4 * 6 + 2 * (2 * b * 6 * 3)
    assert training_flops(net, lambda d: (torch.empty(b, 4, device=d),), backward=False) == (
        fwd,
        fwd,
    )


def test_meta_copy_switches_gradient_checkpointing_off_and_keeps_the_mode() -> None:
    net = nn.Sequential(nn.Linear(2, 2))
    net[0].grad_checkpointing = True
    net.eval()
    meta = meta_copy(net)
    assert not meta[0].grad_checkpointing and net[0].grad_checkpointing
    assert not meta.training
    assert next(meta.parameters()).device.type == "meta"


def test_call_recorder_counts_every_call_like_training_flops() -> None:
    net = nn.Linear(4, 3)
    rec = CallRecorder(net)
    net(torch.randn(2, 4))
    net(torch.randn(7, 4))
    rec.stop()
    rec.stop()  # idempotent
    net(torch.randn(1, 4))  # not recorded any more
    assert len(rec.calls) == 2
    one = training_flops(net, lambda d: (torch.empty(2, 4, device=d),))[1]
    other = training_flops(net, lambda d: (torch.empty(7, 4, device=d),))[1]
    assert rec.training_flops(net) == one + other


def test_mfu_arithmetic_and_unknowns() -> None:
    # 2.5 TFLOP per sample x 160 samples/s = 400 TFLOP/s of a 1000 TFLOP/s peak
    assert mfu(2.5e12, 160.0, 1e15) == pytest.approx(0.4)
    assert math.isnan(mfu(float("nan"), 160.0, 1e15))
    assert math.isnan(mfu(2.5e12, 160.0, float("nan")))
    assert math.isnan(mfu(0.0, 160.0, 1e15))


@pytest.mark.parametrize(
    ("name", "precision", "tf32", "tflops", "label"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", True, 989.4, "bf16 dense"),
        ("NVIDIA H100 80GB HBM3", "fp32", True, 494.7, "TF32 dense"),
        ("NVIDIA H100 80GB HBM3", "fp32", False, 66.9, "fp32"),
        ("NVIDIA H100 PCIe", "bf16", True, 756.0, "bf16 dense"),  # before the generic H100
        ("NVIDIA H200", "bf16", True, 989.4, "bf16 dense"),
        ("NVIDIA A100-SXM4-80GB", "bf16", True, 312.0, "bf16 dense"),
    ],
)
def test_peak_table_lookup_names_the_entry(monkeypatch, name, precision, tf32, tflops, label):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _d=None: name)
    p = device_peak(torch.device("cuda", 0), precision, 0.0, tf32)
    assert p.flops == pytest.approx(tflops * 1e12)
    assert p.source == f"table: {name} {label}"


def test_peak_unknown_gpu_is_nan_and_override_wins(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _d=None: "Some GPU 9000")
    p = device_peak(torch.device("cuda", 0), "bf16")
    assert math.isnan(p.flops) and "engine.peak_tflops" in p.source
    p = device_peak(torch.device("cuda", 0), "bf16", override_tflops=123.0)
    assert p.flops == 123e12 and p.source == "engine.peak_tflops=123"
    assert all(len(row) == 4 and row[1] >= row[2] >= row[3] * 0.9 for row in KNOWN_PEAKS[:5])


def test_cpu_peak_is_a_measured_matmul_rate() -> None:
    torch.set_num_threads(1)
    rate = measure_cpu_matmul_peak(n=256)
    assert 1e8 < rate < 1e13  # one core: 0.1 GFLOP/s .. 10 TFLOP/s
    p = device_peak(torch.device("cpu"), "fp32")
    assert p.flops > 1e8 and p.source == "measured: CPU float32 matmul, 1 thread(s)"
