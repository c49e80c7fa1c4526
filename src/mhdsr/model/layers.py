"""Building blocks of the UNet: periodic convolutions, time embedding, residual and attention blocks.

Every spatial convolution pads circularly (``padding_mode="circular"``) because the shearing-box
fields are periodic in both in-plane axes (docs/design.md, Geometry): the network is then exactly
translation-equivariant on the torus for shifts by multiples of its total downsampling factor.
Tensors are ``(B, C, H, W)``; ``emb`` is the (already activated) time embedding ``(B, E)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Sinusoidal-embedding argument is ``TIME_SCALE * t``: t in [0, 1] is spread over the same
#: range as the integer diffusion steps 0..1000 of DDPM/ADM, for which ``max_period`` is tuned.
TIME_SCALE = 1000.0


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with circular (periodic) padding of 1; ``stride=2`` halves H and W."""
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, padding_mode="circular")


def zero_(module: nn.Module) -> nn.Module:
    """Set all parameters of ``module`` to zero in place and return it (ADM/EDM output layers)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of flow time (Vaswani et al. 2017; Ho et al. 2020 / ADM form).

    ``emb = [cos(s t f_0..f_{d/2-1}), sin(s t f_0..f_{d/2-1})]`` with ``s = TIME_SCALE`` and
    ``f_i = max_period ** (-i / (d/2))``.

    Args:
        t: ``(B,)`` flow times in [0, 1] (any float dtype; computed in float32).
        dim: embedding size, even.

    Returns:
        ``(B, dim)`` float32.
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = TIME_SCALE * t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """Residual block: GN-SiLU-conv, FiLM by the time embedding, GN-SiLU-dropout-conv, + skip.

    FiLM after the second GroupNorm (ADM "scale-shift norm", Dhariwal & Nichol 2021):
    ``h = norm(h) * (1 + scale) + shift`` with ``(scale, shift) = Linear(emb)``. The last conv
    is zero-initialised, so at init the block is its skip path (identity or a 1x1 conv).
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = conv3x3(in_ch, out_ch)
        self.film = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_(conv3x3(out_ch, out_ch))
        self.skip = nn.Identity() if in_ch == out_ch else nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """``x`` (B, in_ch, H, W), ``emb`` (B, emb_dim) -> (B, out_ch, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over all H*W positions, pre-GroupNorm, residual.

    Uses :func:`torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient
    kernels where available). Permutation-equivariant over positions, hence translation-equivariant.
    The output projection is zero-initialised (identity block at init).
    """

    def __init__(self, ch: int, head_dim: int, groups: int) -> None:
        super().__init__()
        self.heads = ch // head_dim
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = zero_(nn.Conv2d(ch, ch, 1))

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (B, ch, H, W) -> (B, ch, H, W)."""
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(1)  # each (B, heads, H*W, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Block(nn.Module):
    """One UNet stage: a :class:`ResBlock`, optionally followed by :class:`SelfAttention2d`.

    The unit of gradient checkpointing.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        emb_dim: int,
        groups: int,
        dropout: float,
        attn_head_dim: int | None,
    ) -> None:
        super().__init__()
        self.res = ResBlock(in_ch, out_ch, emb_dim, groups, dropout)
        self.attn = (
            SelfAttention2d(out_ch, attn_head_dim, groups) if attn_head_dim is not None else None
        )

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """``x`` (B, in_ch, H, W), ``emb`` (B, emb_dim) -> (B, out_ch, H, W)."""
        h = self.res(x, emb)
        return self.attn(h) if self.attn is not None else h


class Downsample(nn.Module):
    """Strided 3x3 periodic conv: (B, ch, H, W) -> (B, ch, H/2, W/2)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = conv3x3(ch, ch, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then 3x3 periodic conv: (B, ch, H, W) -> (B, ch, 2H, 2W)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = conv3x3(ch, ch)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
