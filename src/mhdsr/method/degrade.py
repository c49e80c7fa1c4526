"""Degradation matching (``method.degrade``; docs/design.md, "The method"): avgpool2 then an
isotropic transfer function fitted to native / avgpool2 mean spectra.

At inference the inputs are native lo runs, but the model trains on ``lo = avgpool2(hi)`` of hi
runs. A native lo run is not a block average of a hi run: its numerical dissipation damps the
top octave of its spectrum. Degradation matching trains on ``lo = D(hi)`` with

    ``D(hi) = irfft2( rfft2(avgpool2(hi)) * T_c(round(|k|)) )``

per channel ``c``, ``k`` the integer wavenumber vector of the lo grid (units of ``2 pi / L``),
``T_c`` a real transfer function of the shell ``round(|k|)`` fitted once
(:func:`fit_transfer`) from the mean shell spectra of native lo snapshots and of avgpool2 of
hi snapshots over the same orbit window:

    ``T_c(k) = sqrt(E_native,c(k) / E_pool,c(k))``, ``k = 0 .. N_lo / 2``,

divided by its geometric mean over the lowest shells ``1 <= k < kref`` (so the mean of
``log T`` there is 0: ``D`` changes the spectral SHAPE, not the level; a less energetic run is
another realization, not another resolution) and pinned to 1 in that band (both resolutions
resolve the largest scales alike; the shell-to-shell scatter there is the realization noise of
a few runs, which the running minimum below would otherwise carry to every higher shell),
clipped to ``[T_MIN, 1]`` (``D`` can only damp:
it models dissipation, never adds power), made monotone non-increasing in ``k`` (running
minimum from low ``k``: a stable, smooth filter whatever the noise of the fitted ratio) and
``T_c(0) = 1`` (the mean is kept). Shells beyond ``N_lo / 2`` (the corners of the square
Fourier plane) take ``T_c(N_lo / 2)``.

This module is torch-only and data-free: the spectra are made by the caller (``mhdsr train``,
:mod:`mhdsr.train.degrade`) and ``T`` travels in the export (``normalization.degrade_transfer``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["T_MIN", "default_kref", "degrade", "fit_transfer", "transfer_from_list"]

#: Smallest value of a fitted transfer function (a mode is damped by at most 1e-3).
T_MIN = 1e-3


def default_kref(n_lo: int) -> int:
    """The default upper end of the normalization band, ``max(2, N_lo // 16)`` (8 for
    ``N_lo = 128``): shells ``1 <= k < kref`` hold the largest scales, which both resolutions
    resolve alike."""
    return max(2, int(n_lo) // 16)


def fit_transfer(e_native: Tensor, e_pool: Tensor, kref: int = 0) -> Tensor:
    """Fit the per-channel transfer function ``T`` of degradation matching (see the module
    docstring for the formula).

    Args:
        e_native: ``(C, K)`` mean shell power spectra of native lo snapshots, shells
            ``k = 0 .. K - 1`` with ``K = N_lo / 2 + 1`` (normalized units squared; any
            non-negative float dtype). Shell ``k`` sums ``|fft2(x)/N^2|^2`` over
            ``round(|k_vec|) = k`` (:func:`mhdsr.analysis.spectra.power_spectrum`'s definition).
        e_pool: ``(C, K)`` the same of ``avgpool2(hi)`` over the same orbit window.
        kref: normalization band ``1 <= k < kref``; 0 = :func:`default_kref` of
            ``N_lo = 2 (K - 1)``.

    Returns:
        ``(C, K)`` float64 ``T`` with ``T[:, k] = 1`` for ``k < kref``, values in
        ``[T_MIN, 1]``, non-increasing in ``k``.

    Raises:
        ValueError: shapes that differ or are not ``(C, K)`` with ``K >= 3``, ``kref`` outside
            ``[2, K - 1]``, or a spectrum that is not finite and > 0 in the shells ``k >= 1``.
    """
    en = torch.as_tensor(e_native, dtype=torch.float64)
    ep = torch.as_tensor(e_pool, dtype=torch.float64)
    if en.ndim != 2 or en.shape != ep.shape or en.shape[1] < 3:
        raise ValueError(
            f"fit_transfer needs two (C, K) spectra of one shape with K >= 3 shells, got "
            f"{tuple(en.shape)} (native) and {tuple(ep.shape)} (avgpool2)"
        )
    k_count = en.shape[1]
    kref = int(kref) or default_kref(2 * (k_count - 1))
    if not 2 <= kref <= k_count - 1:
        raise ValueError(f"fit_transfer: kref must be in [2, {k_count - 1}], got {kref}")
    for name, e in (("native", en), ("avgpool2", ep)):
        body = e[:, 1:]
        if not bool(torch.isfinite(body).all() and (body > 0).all()):
            raise ValueError(
                f"fit_transfer: the {name} spectrum must be finite and > 0 in every shell k >= 1 "
                "(a constant or empty channel cannot be fitted)"
            )
    log_t = 0.5 * (torch.log(en[:, 1:]) - torch.log(ep[:, 1:]))  # (C, K - 1), shells 1..K-1
    log_t = log_t - log_t[:, : kref - 1].mean(dim=1, keepdim=True)
    log_t[:, : kref - 1] = 0.0  # the reference band is pinned to 1 (its scatter is realization)
    t = torch.exp(log_t).clamp(T_MIN, 1.0)
    t = torch.cummin(t, dim=1).values
    return torch.cat([torch.ones_like(t[:, :1]), t], dim=1)


def _shell_of(h: int, w: int, k_count: int, device: torch.device) -> Tensor:
    """``(h, w // 2 + 1)`` int64: ``min(round(|k_vec|), K - 1)`` of every ``rfft2`` coefficient
    of an ``h x w`` grid (integer wavenumbers; ``|k|^2`` is an integer, so no rounding ties)."""
    ky = torch.fft.fftfreq(h, 1.0 / h, dtype=torch.float64, device=device)
    kx = torch.fft.rfftfreq(w, 1.0 / w, dtype=torch.float64, device=device)
    kmag = torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2)
    return kmag.round().long().clamp_max(k_count - 1)


def degrade(lo: Tensor, transfer: Tensor) -> Tensor:
    """Apply a fitted transfer function to lo fields: ``irfft2(rfft2(lo) * T_c(round(|k|)))``.

    Periodic, linear, per channel and isotropic (it commutes with periodic translations and
    with the flips of the symmetry group); mean-preserving (``T(0) = 1``), so it can be applied
    in physical or normalized units alike (``D((x - m) / s) = (D(x) - m) / s``).

    Args:
        lo: ``(..., C, h, w)`` real float32 or float64 fields on the lo grid (e.g.
            ``avgpool2(hi)``, ``(B, C, h, w)``).
        transfer: ``(C, K)`` transfer function (:func:`fit_transfer`), shells ``0 .. K - 1``;
            shells beyond ``K - 1`` take ``T[:, K - 1]``.

    Returns:
        ``(..., C, h, w)`` tensor of ``lo``'s dtype and device.

    Raises:
        ValueError: ``lo`` has fewer than 3 dims, is not real floating point, or its channel
            count differs from ``transfer``'s.
    """
    if lo.ndim < 3 or not lo.is_floating_point():
        raise ValueError(
            f"degrade needs real (..., C, h, w) fields, got {tuple(lo.shape)} {lo.dtype}"
        )
    t = torch.as_tensor(transfer)
    if t.ndim != 2 or t.shape[0] != lo.shape[-3]:
        raise ValueError(
            f"degrade: transfer function of shape {tuple(t.shape)} does not fit "
            f"{lo.shape[-3]} channels (expected (C, K))"
        )
    h, w = lo.shape[-2:]
    shell = _shell_of(h, w, t.shape[1], lo.device)
    gain = t.to(device=lo.device, dtype=lo.dtype)[:, shell]  # (C, h, w // 2 + 1)
    return torch.fft.irfft2(torch.fft.rfft2(lo) * gain, s=(h, w))


def transfer_from_list(values: object, channels: int, where: str) -> Tensor:
    """A stored transfer function (nested lists, e.g. an export's
    ``normalization.degrade_transfer``) as a ``(C, K)`` float64 tensor, checked.

    Raises:
        ValueError: not a ``(channels, K)`` table of finite values in ``[0, 1]`` with
            ``T[:, 0] = 1`` (the message names ``where``).
    """
    try:
        t = torch.as_tensor(values, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{where}: not a numeric table ({e})") from None
    ok = (
        t.ndim == 2
        and t.shape[0] == channels
        and t.shape[1] >= 2
        and bool(torch.isfinite(t).all())
        and bool(((t >= 0) & (t <= 1)).all())
        and bool((t[:, 0] == 1).all())
    )
    if not ok:
        raise ValueError(
            f"{where}: expected a ({channels}, K) transfer function with values in [0, 1] and "
            f"T(k=0) = 1, got shape {tuple(t.shape)}"
        )
    return t
