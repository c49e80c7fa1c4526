"""Per-channel normalization of fields with the train-split statistics of a shard manifest."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class Normalizer:
    """Per-channel affine normalization ``(x - mean) / std`` (std already floored).

    Attributes:
        mean, std: float32 arrays (C,) in physical units of the selected channels.
    """

    mean: np.ndarray
    std: np.ndarray

    def normalize_np(self, x: np.ndarray) -> np.ndarray:
        """``(C, H, W)`` physical -> normalized, float32."""
        return ((x - self.mean[:, None, None]) / self.std[:, None, None]).astype(np.float32)

    def normalize_into(self, x: np.ndarray, out: np.ndarray) -> np.ndarray:
        """:meth:`normalize_np` written into ``out`` (float32, the shape of ``x``: ``(C, H, W)``
        or ``(..., C, H, W)``) without temporaries; the same float32 operations in the same
        order, so the values are bit-identical. Returns ``out``."""
        np.subtract(x, self.mean[:, None, None], out=out)
        np.divide(out, self.std[:, None, None], out=out)
        return out

    def normalize(self, x: Tensor) -> Tensor:
        """``(..., C, H, W)`` physical -> normalized."""
        m = torch.as_tensor(self.mean, device=x.device, dtype=x.dtype)[:, None, None]
        s = torch.as_tensor(self.std, device=x.device, dtype=x.dtype)[:, None, None]
        return (x - m) / s

    def denormalize(self, x: Tensor) -> Tensor:
        """``(..., C, H, W)`` normalized -> physical."""
        m = torch.as_tensor(self.mean, device=x.device, dtype=x.dtype)[:, None, None]
        s = torch.as_tensor(self.std, device=x.device, dtype=x.dtype)[:, None, None]
        return x * s + m
