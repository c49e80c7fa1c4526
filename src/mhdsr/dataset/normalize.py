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
