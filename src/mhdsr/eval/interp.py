"""numpy wrappers of the torch grid operators of :mod:`mhdsr.method.interpolant`, so that the
evaluation builds its inputs and baselines exactly as sampling and training do."""

from __future__ import annotations

import numpy as np


def upsample_np(lo: np.ndarray, factor: int, mode: str) -> np.ndarray:
    """Periodic ``mhdsr.method.interpolant.upsample`` of ``(C, h, w)`` float32 -> ``(C, H, W)``
    float32 (cell-centred; ``mode`` as there)."""
    import torch

    from mhdsr.method.interpolant import upsample

    with torch.no_grad():
        return upsample(torch.from_numpy(np.ascontiguousarray(lo)), factor, mode).numpy()


def avgpool2_np(hi: np.ndarray) -> np.ndarray:
    """``mhdsr.method.interpolant.avgpool2`` of ``(..., H, W)`` float32: the 2x2 block means,
    float32, exactly as the training inputs are made."""
    import torch

    from mhdsr.method.interpolant import avgpool2

    return avgpool2(torch.from_numpy(np.ascontiguousarray(hi))).numpy()
