"""Model FLOPs and device peaks: the MFU (model FLOPs utilization) of a training run.

MFU = achieved model FLOP/s per device / peak FLOP/s of the device (Chowdhery et al. 2022,
"PaLM", appendix B; Karpathy's nanoGPT ``estimate_mfu``). Conventions used here:

* **Model FLOPs** are counted, not estimated: :func:`training_flops` runs one forward and one
  backward of the model on a copy of it on the ``meta`` device (shapes only, no arithmetic, so
  counting the 40M-parameter UNet at 256² costs seconds, not minutes) under
  :class:`torch.utils.flop_counter.FlopCounterMode`, which counts 2 FLOPs per multiply-add of
  matrix multiplications, convolutions and attention (``aten.mm``/``addmm``/``bmm``,
  ``convolution`` and ``convolution_backward``, scaled-dot-product attention, forward and
  backward). Element-wise work (norms, activations, the loss) and FFTs are not counted.
  Training FLOPs = forward + backward as counted (backward ≈ 2 × forward, so ≈ 3 × forward:
  measured 2.997 × for gpu-40m). Gradient checkpointing is switched off for the count: the
  recomputed forward is hardware work, not model work (MFU, not HFU).
* **Peak**: ``engine.peak_tflops`` when set; else a small table of known GPUs (dense, no
  sparsity; bf16 or TF32 tensor-core rate by the run's precision, plain fp32 without TF32),
  matched on ``torch.cuda.get_device_name()``; on a CPU, a float32 (or bf16) matrix product
  measured once (:func:`measure_cpu_matmul_peak`, a few hundred ms). The entry used is named
  in the log line.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

#: dense peak TFLOP/s per device: (name substring, bf16 tensor core, TF32 tensor core, fp32)
#: from the vendors' data sheets (NVIDIA H100/H200/GH200 SXM, H100 PCIe, A100, L40S, B200);
#: first match wins, so more specific names come first.
KNOWN_PEAKS: tuple[tuple[str, float, float, float], ...] = (
    ("H100 PCIe", 756.0, 378.0, 51.2),
    ("H100 NVL", 835.0, 417.5, 60.0),
    ("GH200", 989.4, 494.7, 66.9),
    ("H200", 989.4, 494.7, 66.9),
    ("H100", 989.4, 494.7, 66.9),
    ("B200", 2250.0, 1125.0, 80.0),
    ("A100", 312.0, 156.0, 19.5),
    ("L40S", 362.0, 181.0, 91.6),
)


@dataclass
class Peak:
    """Peak FLOP/s of one device and where the number comes from.

    Attributes:
        flops: peak FLOP/s (NaN when unknown: MFU is then not reported).
        source: for the log, e.g. ``"table: NVIDIA H100 80GB HBM3 bf16 dense"``.
    """

    flops: float
    source: str


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the ``meta`` device (shapes only) with gradient checkpointing
    switched off (MFU counts model FLOPs, not the recomputed forward), in the same train/eval
    mode."""
    meta = copy.deepcopy(model).to("meta")
    for m in meta.modules():
        if hasattr(m, "grad_checkpointing"):
            m.grad_checkpointing = False
    return meta.train(model.training)


def training_flops(
    model: nn.Module,
    inputs: Callable[[torch.device], Sequence[Tensor]],
    *,
    backward: bool = True,
) -> tuple[float, float]:
    """FLOPs of one forward (and backward) call of ``model`` on ``inputs``, counted on a copy of
    the model on the ``meta`` device (see the module docstring for what is counted).

    Args:
        model: the network (left untouched; a ``meta`` model from :func:`meta_copy` is used as
            it is).
        inputs: ``device -> positional arguments`` of one call, built on the device given.
        backward: also count the backward of ``sum(output)`` (gradients of every parameter;
            the inputs do not require gradients, as in training).

    Returns:
        ``(forward, forward + backward)`` FLOPs of the call (the second equals the first when
        ``backward`` is False).
    """
    on_meta = all(p.device.type == "meta" for p in model.parameters())
    meta = model if on_meta else meta_copy(model)
    args = list(inputs(torch.device("meta")))
    with FlopCounterMode(display=False) as fwd:
        out = meta(*args)
    forward = float(fwd.get_total_flops())
    if not backward:
        return forward, forward
    with FlopCounterMode(display=False) as bwd:
        out.float().sum().backward()
    return forward, forward + float(bwd.get_total_flops())


def measure_cpu_matmul_peak(dtype: torch.dtype = torch.float32, n: int = 1024) -> float:
    """FLOP/s of an ``n x n`` by ``n x n`` matrix product on this CPU with the current torch
    thread count: the best of several repeats within about 0.3 s (2 n³ FLOPs each).

    On a shared machine the figure includes the other processes' load, like the training
    steps it is compared with.
    """
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b  # warm-up (thread pool, kernels)
    best, t_end = float("inf"), time.perf_counter() + 0.3
    reps = 0
    while reps < 3 or (time.perf_counter() < t_end and reps < 50):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return 2.0 * n**3 / best


def device_peak(
    device: torch.device, precision: str, override_tflops: float = 0.0, tf32: bool = True
) -> Peak:
    """Peak FLOP/s of ``device`` for the run's ``precision`` (``fp32`` | ``bf16``).

    Args:
        device: the compute device.
        precision: resolved precision of the run.
        override_tflops: ``engine.peak_tflops`` (> 0 wins over everything else).
        tf32: fp32 matrix products on a GPU run on TF32 tensor cores (``engine.tf32``).

    Returns:
        The peak and its source; ``flops`` is NaN for a GPU missing from :data:`KNOWN_PEAKS`
        (set ``engine.peak_tflops``).
    """
    if override_tflops > 0:
        return Peak(override_tflops * 1e12, f"engine.peak_tflops={override_tflops:g}")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, bf16, tf, fp32 in KNOWN_PEAKS:
            if key in name:
                if precision == "bf16":
                    return Peak(bf16 * 1e12, f"table: {name} bf16 dense")
                if tf32:
                    return Peak(tf * 1e12, f"table: {name} TF32 dense")
                return Peak(fp32 * 1e12, f"table: {name} fp32")
        return Peak(float("nan"), f"{name} not in the table (set engine.peak_tflops)")
    if device.type == "cpu":
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        flops = measure_cpu_matmul_peak(dtype)
        threads = torch.get_num_threads()
        return Peak(
            flops, f"measured: CPU {str(dtype).removeprefix('torch.')} matmul, {threads} thread(s)"
        )
    return Peak(float("nan"), f"no peak known for device {device} (set engine.peak_tflops)")


def mfu(flops_per_sample: float, samples_per_s_per_device: float, peak: float) -> float:
    """Model FLOPs utilization: ``flops_per_sample * samples_per_s_per_device / peak`` (NaN when
    either the FLOPs or the peak is unknown)."""
    if not (flops_per_sample > 0 and peak > 0):
        return float("nan")
    return flops_per_sample * samples_per_s_per_device / peak


class CallRecorder:
    """Records the positional tensor arguments (as ``meta`` tensors of the same shape and
    dtype) of every call of ``module`` while active: the generic way :func:`mhdsr.runtime.loop.fit`
    counts the FLOPs of a task without ``flops_per_sample`` (the model calls of its first
    micro-step, however many there are, e.g. a rolled-out forecast)."""

    def __init__(self, module: nn.Module) -> None:
        self.calls: list[list[Tensor]] = []
        self._handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, _module: nn.Module, args: tuple) -> None:
        self.calls.append(
            [
                torch.empty(a.shape, dtype=a.dtype, device="meta") if torch.is_tensor(a) else a
                for a in args
            ]
        )

    def stop(self) -> None:
        """Remove the hook (idempotent)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def training_flops(self, model: nn.Module) -> float:
        """Forward + backward FLOPs of all recorded calls of ``model`` (its architecture; the
        weights do not matter)."""
        meta = meta_copy(model)
        return sum(training_flops(meta, lambda _dev, a=args: a)[1] for args in self.calls)
