"""The forecast network: a Fourier neural operator on the periodic lo grid, predicting the
increment over one step (docs/design.md "Forecast stage").

    x(t + dt) = x(t) + G_theta(x(t), [x(t - dt)], dt)

``G_theta`` is neuraloperator's :class:`neuralop.models.FNO` (Li et al. 2021; with
``factorization`` a tensorised TFNO, Kossaifi et al. 2023): a pointwise lifting, ``layers``
Fourier blocks (a spectral convolution keeping ``modes`` Fourier modes per axis, plus a
pointwise skip and channel MLP) and a pointwise projection. Built without positional embedding
and without domain padding, every layer commutes with periodic translations by whole cells (an
FFT turns a roll into a phase per mode, which a per-mode weight leaves alone), so the operator is
exactly roll-equivariant on the periodic shearing-box fields; ``tests/test_forecast_model.py``
checks it.

Inputs are the normalized states (the ``history`` most recent ones, oldest first) and, with
``dt_input``, the step ``dt`` in orbits as one constant channel. Two adaptations of the
library's module, neither of which changes its maths:

* its spectral weights are complex parameters, which DeepSpeed's ZeRO flattening cannot hold
  (it casts them to real); each is stored as a real ``(..., 2)`` parameter ``<name>_ri`` whose
  complex view (``view_as_complex``) is set before every forward (``torch.nn.utils.parametrize``
  cannot be used: tensorly-torch's tensor classes refuse its injected subclass);
* FFTs have no bf16 kernels: each spectral convolution runs in float32 and returns its input's
  dtype, so bf16 training (DeepSpeed casts the parameters) works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from mhdsr.config import require

Factorization = Literal["none", "tucker", "cp", "tt"]
Norm = Literal["none", "group_norm", "instance_norm"]


@dataclass
class FNOConfig:
    """Hyper-parameters of :class:`ForecastFNO` (the ``model`` key of a forecast train config)."""

    #: state channels C (the forecast channels, canonical order)
    channels: int = 8
    #: states fed to the network: 1 = x(t); 2 = x(t) and x(t - dt)
    history: int = 2
    #: feed dt (orbits) as one constant input channel
    dt_input: bool = True
    #: Fourier modes kept per axis (neuraloperator n_modes; odd keeps +-k symmetric:
    #: |k| <= modes // 2); at most the lo grid size
    modes: int = 33
    #: hidden channels of the Fourier blocks
    width: int = 32
    #: Fourier blocks
    layers: int = 4
    #: lifting MLP hidden channels = lifting_ratio * width
    lifting_ratio: float = 2.0
    #: projection MLP hidden channels = projection_ratio * width
    projection_ratio: float = 2.0
    #: spectral weights: none = dense FNO; tucker | cp | tt = tensorised TFNO (see rank)
    factorization: Factorization = "none"
    #: TFNO rank as a fraction of the dense parameter count (factorization != none)
    rank: float = 0.1
    #: normalization inside the Fourier blocks
    norm: Norm = "none"

    @property
    def in_channels(self) -> int:
        """Network input channels: ``history * channels`` (+ 1 for dt)."""
        return self.history * self.channels + int(self.dt_input)

    def validate(self) -> None:
        """Raises ConfigError naming ``model.<key>``."""
        require(self.channels >= 1, "model.channels", "an integer >= 1", self.channels)
        require(self.history in (1, 2), "model.history", "1 or 2", self.history)
        require(self.modes >= 1, "model.modes", "an integer >= 1", self.modes)
        require(self.width >= 1, "model.width", "an integer >= 1", self.width)
        require(self.layers >= 1, "model.layers", "an integer >= 1", self.layers)
        require(self.lifting_ratio > 0, "model.lifting_ratio", "> 0", self.lifting_ratio)
        require(self.projection_ratio > 0, "model.projection_ratio", "> 0", self.projection_ratio)
        require(0 < self.rank <= 1, "model.rank", "in (0, 1]", self.rank)


def _spectral_conv_fp32() -> type:
    """neuraloperator's SpectralConv computing in float32 (FFTs have no bf16 kernels) and
    returning its input's dtype."""
    from neuralop.layers.spectral_convolution import SpectralConv

    class SpectralConvFP32(SpectralConv):
        def forward(self, x: Tensor, output_shape: tuple[int, ...] | None = None) -> Tensor:
            return super().forward(x.float(), output_shape).to(x.dtype)

    return SpectralConvFP32


#: suffix of the real parameter that stores a complex weight
REAL_SUFFIX = "_ri"


def _realify(net: nn.Module) -> int:
    """Store every complex parameter of ``net`` as a real ``(..., 2)`` parameter ``<name>_ri``
    (DeepSpeed's ZeRO buffers are real) and register a forward pre-hook on ``net`` that sets
    ``<name>`` to its complex view before each forward (gradients flow through the view).

    The hook resolves the modules by name at call time, so copies of ``net`` (the EMA's
    ``deepcopy``) refresh their own weights. Returns how many parameters were converted.
    """
    names = []
    for path, m in net.named_modules():
        for name, p in list(m.named_parameters(recurse=False)):
            if not p.is_complex():
                continue
            del m._parameters[name]
            m.register_parameter(
                name + REAL_SUFFIX, nn.Parameter(torch.view_as_real(p.data).clone())
            )
            names.append((path, name))
    net._complex_views = tuple(names)
    net.register_forward_pre_hook(_refresh_complex_views)
    net.register_forward_hook(_detach_complex_views)
    _detach_complex_views(net, (), None)
    return len(names)


def _refresh_complex_views(net: nn.Module, args: tuple) -> None:
    """Forward pre-hook of :func:`_realify`: ``<name> = view_as_complex(<name>_ri)``."""
    for path, name in net._complex_views:
        m = net.get_submodule(path)
        real = getattr(m, name + REAL_SUFFIX)
        object.__setattr__(m, name, torch.view_as_complex(real.float().contiguous()))


def _detach_complex_views(net: nn.Module, args: tuple, out: object) -> None:
    """Forward hook of :func:`_realify`: between forwards each view is a detached copy (a graph
    leaf, so the module can be deep-copied; the graph of the forward keeps its own view)."""
    for path, name in net._complex_views:
        m = net.get_submodule(path)
        real = getattr(m, name + REAL_SUFFIX)
        object.__setattr__(m, name, torch.view_as_complex(real.detach().float().contiguous()))


class ForecastFNO(nn.Module):
    """``x(t + dt) = x(t) + G_theta(states, dt)`` on periodic fields (see the module docstring).

    Args:
        cfg: the model config.

    Raises:
        ImportError: neuraloperator is not installed (``pip install neuraloperator==2.0.0``).
    """

    def __init__(self, cfg: FNOConfig) -> None:
        super().__init__()
        from neuralop.models import FNO

        self.cfg = cfg
        self.net = FNO(
            n_modes=(cfg.modes, cfg.modes),
            in_channels=cfg.in_channels,
            out_channels=cfg.channels,
            hidden_channels=cfg.width,
            n_layers=cfg.layers,
            lifting_channel_ratio=cfg.lifting_ratio,
            projection_channel_ratio=cfg.projection_ratio,
            positional_embedding=None,  # translation equivariance on the periodic grid
            domain_padding=None,  # the fields are periodic: no padding
            norm=None if cfg.norm == "none" else cfg.norm,
            factorization=None if cfg.factorization == "none" else cfg.factorization,
            rank=1.0 if cfg.factorization == "none" else cfg.rank,
            conv_module=_spectral_conv_fp32(),
        )
        _realify(self.net)

    def state_dict(self, *args, **kwargs):  # type: ignore[override]
        """Tensors only: neuraloperator's models add a ``_metadata`` entry (their constructor
        arguments, with classes) that ``torch.load(weights_only=True)`` refuses; it is dropped."""
        sd = super().state_dict(*args, **kwargs)
        sd.pop("_metadata", None)
        return sd

    def forward(self, states: Tensor, dt: Tensor) -> Tensor:
        """One step.

        Args:
            states: ``(B, history, C, h, w)`` normalized states, oldest first (the last is
                ``x(t)``), any float dtype.
            dt: ``(B,)`` step in orbits (ignored unless ``dt_input``).

        Returns:
            ``(B, C, h, w)`` the predicted ``x(t + dt)``, in the dtype of the parameters.

        Raises:
            ValueError: ``states`` is not ``(B, history, C, h, w)`` or the grid is smaller than
                the kept modes.
        """
        cfg = self.cfg
        if states.ndim != 5 or states.shape[1:3] != (cfg.history, cfg.channels):
            raise ValueError(
                f"states must be (B, {cfg.history}, {cfg.channels}, h, w), got {tuple(states.shape)}"
            )
        b, _, _, h, w = states.shape
        if min(h, w) < cfg.modes:
            raise ValueError(f"grid {h}x{w} is smaller than model.modes={cfg.modes}")
        dtype = next(self.net.parameters()).dtype
        x = states.to(dtype)
        inp = x.flatten(1, 2)
        if cfg.dt_input:
            plane = dt.to(dtype).view(b, 1, 1, 1).expand(b, 1, h, w)
            inp = torch.cat([inp, plane], dim=1)
        return x[:, -1] + self.net(inp)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (a complex weight counts its real and imaginary parts)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
