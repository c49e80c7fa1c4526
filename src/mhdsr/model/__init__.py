"""The networks of mhdsr, their configs, the export format and the inference loader.

* :mod:`~mhdsr.model.unet` + :mod:`~mhdsr.model.layers`: the periodic (circular-padding) UNet
  ``v_theta(x_t, t, u)``, the velocity of the super-resolution flow; configs and presets
  (``cpu_small``, ``gpu_40m``) in :mod:`~mhdsr.model.config`.
* :mod:`~mhdsr.model.fno`: the forecast network of ``mhdsr forecast``, neuraloperator's Fourier
  neural operator on the periodic lo grid predicting the increment over one step (``FNOConfig``).
* :mod:`~mhdsr.model.export`: the exported-weights format (raw + EMA weights, config,
  normalization; a forecast export also ``kind: forecast``), loadable without DeepSpeed.
* :mod:`~mhdsr.model.inference`: ``load_model`` / ``LoadedModel``: an export rebuilt for sampling.

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
