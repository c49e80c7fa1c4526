"""The velocity network of mhdsr: a periodic (circular-padding) UNet ``v_theta(x_t, t, u)``."""

from mhdsr.model.config import PRESETS, ModelConfig, cpu_small, gpu_40m, preset
from mhdsr.model.unet import UNet, count_parameters

__all__ = ["PRESETS", "ModelConfig", "UNet", "count_parameters", "cpu_small", "gpu_40m", "preset"]
