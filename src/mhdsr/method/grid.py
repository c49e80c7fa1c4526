"""Grid operators of the periodic, cell-centred hi and lo grids, in one place: the method
(training pairs, formulation, samplers' inputs) and the evaluation (inputs, baselines, scores)
use these same functions, so both build ``lo`` and ``u = Up(lo)`` bit-identically.

* :func:`avgpool2`: the 2x2 block means (``lo = avgpool2(hi)``, a finite-volume restriction);
* :func:`upsample`: periodic bilinear, bicubic or cubic-B-spline interpolation
  (:func:`spline_upsample`) by an integer factor;
* :func:`project_block_means`: the orthogonal projection onto ``{x : avgpool2(x) = lo}``;
* :func:`curl_z`: ``dBy/dx - dBx/dy`` with periodic centred differences (AthenaK's ``jz``);
* :func:`upsample_np`, :func:`avgpool2_np`: the same operators on float32 numpy arrays.

All torch functions are device-agnostic (they follow the device of their tensor inputs).
"""

from __future__ import annotations

import math
from typing import get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mhdsr.errors import ConfigError
from mhdsr.method.config import UpsampleMode

__all__ = [
    "avgpool2",
    "avgpool2_np",
    "curl_z",
    "project_block_means",
    "spline_upsample",
    "upsample",
    "upsample_np",
]

_UPSAMPLE_MODES = get_args(UpsampleMode)


def avgpool2(hi: Tensor) -> Tensor:
    """Coarse-grain by 2 in both grid axes: the exact mean of each 2x2 block (docs/design.md: the
    training input is ``lo = avgpool2(hi)``, a finite-volume restriction).

    Args:
        hi: ``(..., H, W)`` floating tensor, H and W even.

    Returns:
        ``(..., H/2, W/2)`` tensor, same dtype and device.

    Raises:
        ValueError: fewer than 2 dimensions, or H or W odd.
    """
    if hi.ndim < 2:
        raise ValueError(f"avgpool2 needs a (..., H, W) tensor, got shape {tuple(hi.shape)}")
    h, w = hi.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(f"avgpool2 needs even H and W, got H={h}, W={w}")
    blocks = hi.reshape(*hi.shape[:-2], h // 2, 2, w // 2, 2)
    return blocks.mean(dim=(-3, -1))


def upsample(lo: Tensor, factor: int = 2, mode: str = "bilinear") -> Tensor:
    """Upsample a PERIODIC field by an integer factor: ``u = Up(lo)`` (docs/design.md, "The method").

    The field is padded circularly by 2 coarse cells on every side (enough for the 4-tap bicubic
    stencil), interpolated with ``F.interpolate(align_corners=False)`` (cell-centred grids: fine
    cell ``j`` sits at coarse coordinate ``(j + 0.5) / factor - 0.5``), and cropped back. The
    result is therefore exactly translation-equivariant (rolling ``lo`` by one cell rolls the
    output by ``factor`` cells) and a constant field stays constant; no boundary artefacts.

    Args:
        lo: ``(B, C, h, w)`` or ``(C, h, w)`` floating tensor.
        factor: integer upsampling factor >= 1 (2 for 128^2 -> 256^2).
        mode: ``"bilinear"`` (default), ``"bicubic"`` (Keys cubic, a = -0.75, PyTorch's) or
            ``"spline"`` (interpolating periodic cubic B-spline, :func:`spline_upsample`).

    Returns:
        ``(B, C, h*factor, w*factor)`` (or ``(C, ...)`` for 3-d input), same dtype and device.

    Raises:
        ConfigError: unknown ``mode`` or ``factor`` < 1.
        ValueError: ``lo`` is not 3-d or 4-d.
    """
    if mode not in _UPSAMPLE_MODES:
        raise ConfigError(f"upsample mode must be one of {_UPSAMPLE_MODES}, got {mode!r}")
    if int(factor) != factor or factor < 1:
        raise ConfigError(f"upsample factor must be an integer >= 1, got {factor!r}")
    factor = int(factor)
    if lo.ndim == 3:
        return upsample(lo.unsqueeze(0), factor, mode).squeeze(0)
    if lo.ndim != 4:
        raise ValueError(f"upsample needs (B, C, h, w) or (C, h, w), got shape {tuple(lo.shape)}")
    if factor == 1:
        return lo.clone()
    if mode == "spline":
        return spline_upsample(lo, factor)
    pad = 2  # coarse cells; the bicubic stencil reaches 2 cells left and right of a fine cell
    h, w = lo.shape[-2:]
    padded = F.pad(lo, (pad, pad, pad, pad), mode="circular")
    fine = F.interpolate(
        padded,
        size=((h + 2 * pad) * factor, (w + 2 * pad) * factor),
        mode=mode,
        align_corners=False,
    )
    crop = pad * factor
    return fine[..., crop : crop + h * factor, crop : crop + w * factor]


def _bspline3(x: float) -> float:
    """The centred cubic B-spline ``beta3(x)`` (support ``|x| < 2``, integral 1)."""
    ax = abs(x)
    if ax < 1:
        return 2.0 / 3.0 - ax * ax + ax**3 / 2.0
    if ax < 2:
        return (2.0 - ax) ** 3 / 6.0
    return 0.0


def spline_upsample(lo: Tensor, factor: int = 2) -> Tensor:
    """Interpolating periodic cubic B-spline upsampling on cell-centred grids.

    The field is represented as ``f(x) = sum_k c_k beta3(x - k)`` on coarse cell indices ``x``,
    with coefficients ``c`` chosen so that ``f`` passes through every coarse value (the
    "prefilter", exact for a periodic field in Fourier space: divide each axis' DFT by
    ``(4 + 2 cos w) / 6``; Unser, Aldroubi & Eden 1993, IEEE Trans. Signal Process. 41:821), then
    evaluated at the fine cell centres, ``x = (j + 0.5) / factor - 0.5``. Separable along both
    axes, exactly periodic and translation-equivariant, keeps constants, and reproduces the coarse
    values where a fine centre coincides with a coarse one (odd factors). It agrees with
    ``scipy.ndimage.zoom(order=3, mode="grid-wrap", grid_mode=True)`` to float rounding.

    Args:
        lo: ``(B, C, h, w)`` floating tensor (float32 or float64).
        factor: integer upsampling factor >= 2.

    Returns:
        ``(B, C, h * factor, w * factor)``, same dtype and device.
    """
    h, w = lo.shape[-2:]
    wy = 2 * math.pi * torch.fft.fftfreq(h, device=lo.device, dtype=lo.dtype)
    wx = 2 * math.pi * torch.fft.rfftfreq(w, device=lo.device, dtype=lo.dtype)
    gain = ((2 + torch.cos(wy)) / 3)[:, None] * ((2 + torch.cos(wx)) / 3)[None, :]
    coef = torch.fft.irfft2(torch.fft.rfft2(lo) / gain, s=(h, w))

    def along(c: Tensor, dim: int) -> Tensor:
        phases = []
        for q in range(factor):
            d = (q + 0.5) / factor - 0.5  # offset of fine cell q from its coarse centre
            phases.append(
                sum(_bspline3(d - m) * torch.roll(c, shifts=-m, dims=dim) for m in range(-2, 3))
            )
        stacked = torch.stack(phases, dim=dim + 1 if dim >= 0 else dim)  # (.., n, factor) order
        shape = list(c.shape)
        shape[dim] *= factor
        return stacked.reshape(shape)

    return along(along(coef, -1), -2)


def project_block_means(hi: Tensor, lo: Tensor) -> Tensor:
    """Orthogonal projection of ``hi`` onto the fields whose 2x2 block means equal ``lo``:
    ``hi - NN(avgpool2(hi) - lo)`` with ``NN`` the nearest-neighbour (block-constant) upsampling.

    Because ``avgpool2 NN = identity`` and ``NN`` is ``4 avgpool2^T``, this is the L2-orthogonal
    projection onto the affine set ``{x : avgpool2(x) = lo}`` (a hard consistency constraint in
    the sense of Harder et al. 2023, "Hard-constrained deep learning for climate downscaling",
    JMLR 24:365). So for any truth with ``avgpool2(truth) = lo`` the projected field is never
    farther from it: ``|P(x) - truth| <= |x - truth|``. Linear per channel, so it can be applied
    in normalized or physical units alike.

    Args:
        hi: ``(..., H, W)`` field on the fine grid.
        lo: ``(..., H/2, W/2)`` block means it must reproduce.

    Returns:
        ``(..., H, W)`` tensor with ``avgpool2(result) == lo`` to rounding.
    """
    d = avgpool2(hi) - lo
    return hi - d.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def curl_z(bx: Tensor, by: Tensor, lx: float = 1.0, ly: float = 1.0) -> Tensor:
    """``dBy/dx - dBx/dy`` of periodic fields ``bx``, ``by`` ``(..., ny, nx)`` on a box
    ``lx x ly`` with centred differences (AthenaK's definition of ``jz``, docs/design.md
    "Geometry")."""
    ny, nx = bx.shape[-2:]
    dby_dx = (torch.roll(by, -1, -1) - torch.roll(by, 1, -1)) * (nx / (2.0 * lx))
    dbx_dy = (torch.roll(bx, -1, -2) - torch.roll(bx, 1, -2)) * (ny / (2.0 * ly))
    return dby_dx - dbx_dy


# ----------------------------------------------------------------------------------------------
# numpy wrappers (the evaluation builds its inputs and baselines exactly as sampling and training)


def upsample_np(lo: np.ndarray, factor: int, mode: str) -> np.ndarray:
    """:func:`upsample` of ``(C, h, w)`` float32 -> ``(C, H, W)`` float32 (cell-centred;
    ``mode`` as there)."""
    with torch.no_grad():
        return upsample(torch.from_numpy(np.ascontiguousarray(lo)), factor, mode).numpy()


def avgpool2_np(hi: np.ndarray) -> np.ndarray:
    """:func:`avgpool2` of ``(..., H, W)`` float32: the 2x2 block means, float32, exactly as the
    training inputs are made."""
    return avgpool2(torch.from_numpy(np.ascontiguousarray(hi))).numpy()
