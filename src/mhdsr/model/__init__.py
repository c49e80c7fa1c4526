"""The networks of mhdsr: the periodic (circular-padding) UNet ``v_theta(x_t, t, u)`` of the
super-resolution flow, its configs, the export format and the inference loader.

The configs import without torch; ``UNet`` and ``count_parameters`` are loaded on first use
(PEP 562), so reading a config never pays for ``import torch``.
"""

from typing import Any

from mhdsr.model.config import PRESETS, ModelConfig, cpu_small, gpu_40m, preset

__all__ = ["PRESETS", "ModelConfig", "UNet", "count_parameters", "cpu_small", "gpu_40m", "preset"]


def __getattr__(name: str) -> Any:
    if name in ("UNet", "count_parameters"):
        from mhdsr.model import unet

        return getattr(unet, name)
    raise AttributeError(f"module 'mhdsr.model' has no attribute {name!r}")
