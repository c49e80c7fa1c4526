"""Training pairs of the super-resolution method: ``(hi, u)`` from normalized hi fields.

Random draws, in this order, all from the step's generator: window offsets (periodic roll and/or
crop), then one symmetry element per sample (augmentation). ``lo = avgpool2(hi)`` (with
degradation matching ``lo = D(hi)``, :func:`mhdsr.method.degrade.degrade` of it) and
``u = Up(lo)`` are computed on the FULL (transformed) periodic field before the window is cut, so
``u`` is never wrong at a window edge.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mhdsr.errors import ShardError
from mhdsr.method import symmetry
from mhdsr.method.degrade import degrade
from mhdsr.method.grid import avgpool2, upsample


def make_pair(
    hi: Tensor,
    *,
    crop: int,
    roll: bool,
    upsample_mode: str,
    generator: torch.Generator | None,
    augment: Sequence[str] | None = None,
    with_lo: bool = False,
    transfer: Tensor | None = None,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
    """Training pair on the device: ``(hi, u)`` from normalized hi fields.

    A random periodic translation by even offsets (``roll``; even keeps the 2x2 coarse cells
    aligned, so avgpool2 and Up commute with it) and, if ``crop`` > 0, a ``crop x crop`` window
    (with periodic wrap) are cut from hi and u alike. With ``augment`` (the channel names of
    ``hi``), each sample is first transformed by one element of the 8-element symmetry group
    (:mod:`mhdsr.method.symmetry`), uniform over the group.

    Args:
        hi: (B, C, H, W) normalized float32.
        crop: window size in hi pixels (0 = full field).
        roll: random periodic translation.
        upsample_mode: ``bilinear`` | ``bicubic`` | ``spline``.
        generator: RNG for the offsets and group elements (a CPU generator).
        augment: channel names of ``hi`` to augment with the symmetry group; ``None`` = off.
        with_lo: also return the FULL-field (uncropped, transformed) ``lo = avgpool2(hi)``
            ``(B, C, H/2, W/2)``, whose level the instance scale measures.
        transfer: ``(C, K)`` degradation-matching transfer function (``method.degrade``):
            ``lo = degrade(avgpool2(hi), transfer)``, applied after the symmetry element and
            before ``Up``; ``None`` = plain avgpool2. It draws nothing from ``generator``.

    Returns:
        ``(hi, u)``, each (B, C, crop or H, crop or W), and ``lo`` when ``with_lo``.

    Raises:
        ShardError: ``crop`` larger than the field.
    """
    b, _, h, w = hi.shape
    ch, cw = (crop, crop) if crop else (h, w)
    if crop and (crop > h or crop > w):
        raise ShardError(f"data.crop={crop} is larger than the stored field {h}x{w}")
    window = bool(roll or crop)
    if roll:  # any even offset, windows wrap around the periodic domain
        oy = torch.randint(0, h // 2, (b,), generator=generator) * 2
        ox = torch.randint(0, w // 2, (b,), generator=generator) * 2
    elif crop:  # plain crop: even offsets with the window inside the field
        oy = torch.randint(0, (h - ch) // 2 + 1, (b,), generator=generator) * 2
        ox = torch.randint(0, (w - cw) // 2 + 1, (b,), generator=generator) * 2
    if augment is not None:
        hi = symmetry.apply_batch(hi, symmetry.draw(b, generator), augment)
    lo = avgpool2(hi)
    if transfer is not None:
        lo = degrade(lo, transfer)
    u = upsample(lo, 2, upsample_mode)
    if not window:
        return (hi, u, lo) if with_lo else (hi, u)
    iy = (oy[:, None] + torch.arange(ch)[None, :]) % h  # (B, ch)
    ix = (ox[:, None] + torch.arange(cw)[None, :]) % w  # (B, cw)
    iy, ix = iy.to(hi.device), ix.to(hi.device)
    bidx = torch.arange(b, device=hi.device)[:, None, None]

    def cut(x: Tensor) -> Tensor:
        # (B, C, H, W) -> (B, ch, cw, C) by advanced indexing, then channels first
        return (
            x.permute(0, 2, 3, 1)[bidx, iy[:, :, None], ix[:, None, :]]
            .permute(0, 3, 1, 2)
            .contiguous()
        )

    return (cut(hi), cut(u), lo) if with_lo else (cut(hi), cut(u))
