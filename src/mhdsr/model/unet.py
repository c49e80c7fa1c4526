"""The velocity network ``v_theta(x_t, t, u)``: an ADM-style UNet on periodic 2D fields.

Architecture (Ho et al. 2020; Dhariwal & Nichol 2021, "ADM"), for ``L = len(mults)`` levels:

    concat(x_t, u) -> conv_in -> encoder: per level, blocks_per_level x [ResBlock (+ attention)],
    then a strided-conv downsample (not after the coarsest level) -> middle: ResBlock
    (+ attention if the coarsest level is an attention level) + ResBlock -> decoder: per level,
    (blocks_per_level + 1) x [concat skip, ResBlock (+ attention)], then nearest+conv upsample
    -> GroupNorm, SiLU, conv_out -> velocity.

Every encoder activation (conv_in, each block, each downsample) is a skip consumed by one decoder
block. The flow time enters through a sinusoidal embedding and an MLP, and modulates every
ResBlock by FiLM after its second GroupNorm. All spatial convolutions pad circularly (periodic
domain, docs/design.md), so the network commutes with rolls by multiples of ``2**(L-1)`` pixels.

Zero initialisation (ADM/EDM practice): ``conv_out``, the last conv of every ResBlock and the
output projection of every attention block start at zero. Hence the initial velocity is exactly
0 for any input, and every block starts as its skip path; only ``conv_out`` gets a gradient on
the very first step, after which the rest of the network trains normally.

Precision: DeepSpeed bf16 casts the parameters to bf16 without autocast, so ``forward`` casts
``x``, ``u`` and the time embedding to the dtype of ``conv_in.weight``; GroupNorm and attention
run in that dtype and the velocity is returned in it (the loss casts to float32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mhdsr.model.config import ModelConfig
from mhdsr.model.layers import Block, Downsample, Upsample, conv3x3, timestep_embedding, zero_


class _Level(nn.Module):
    """The blocks of one encoder or decoder level and the resampling that follows them."""

    def __init__(self, blocks: list[Block], resample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.resample = resample


class UNet(nn.Module):
    """Velocity network of the stochastic interpolant (docs/design.md, The method).

    Args:
        cfg: the architecture; validated here (raises ConfigError on bad values).

    Attributes:
        grad_checkpointing: if True (default ``cfg.grad_checkpointing``) and gradients are
            enabled, every block (ResBlock + optional attention) is recomputed in backward
            (``torch.utils.checkpoint``, ``use_reentrant=False``, RNG state preserved so dropout
            masks match).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.grad_checkpointing = cfg.grad_checkpointing
        c, w = cfg.channels, cfg.width
        emb_dim = cfg.time_emb_mult * w
        attn = set(cfg.attn_levels)
        last = cfg.num_levels - 1

        def block(cin: int, cout: int, with_attn: bool) -> Block:
            head_dim = cfg.attn_head_dim if with_attn else None
            return Block(cin, cout, emb_dim, cfg.groups, cfg.dropout, head_dim)

        self.time_mlp = nn.Sequential(
            nn.Linear(w, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim), nn.SiLU()
        )
        self.conv_in = conv3x3(c + cfg.cond_width, w)

        # Encoder; `skips` records the channel count of every activation pushed as a skip.
        skips = [w]
        ch = w
        self.down = nn.ModuleList()
        for level, out_ch in enumerate(cfg.level_channels()):
            blocks = []
            for _ in range(cfg.blocks_per_level):
                blocks.append(block(ch, out_ch, level in attn))
                ch = out_ch
                skips.append(ch)
            resample = Downsample(ch) if level < last else None
            if resample is not None:
                skips.append(ch)
            self.down.append(_Level(blocks, resample))

        self.mid = nn.ModuleList([block(ch, ch, last in attn), block(ch, ch, False)])

        # Decoder, coarsest level first; each block consumes one skip.
        self.up = nn.ModuleList()
        for level, out_ch in reversed(list(enumerate(cfg.level_channels()))):
            blocks = []
            for _ in range(cfg.blocks_per_level + 1):
                blocks.append(block(ch + skips.pop(), out_ch, level in attn))
                ch = out_ch
            self.up.append(_Level(blocks, Upsample(ch) if level > 0 else None))
        assert not skips

        self.norm_out = nn.GroupNorm(cfg.groups, ch)
        self.conv_out = zero_(conv3x3(ch, c))

    def _block(self, blk: Block, h: Tensor, emb: Tensor) -> Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(blk, h, emb, use_reentrant=False)
        return blk(h, emb)

    def check_input(self, x: Tensor, t: Tensor, u: Tensor) -> None:
        """Validate shapes of a forward call.

        Raises:
            ValueError: ``x`` is not (B, channels, H, W); ``u`` differs in shape from ``x``;
                ``t`` is not (B,) or a scalar; H or W is not divisible by ``cfg.size_multiple``.
        """
        c, m = self.cfg.channels, self.cfg.size_multiple
        if x.ndim != 4 or x.shape[1] != c:
            raise ValueError(f"x must have shape (B, {c}, H, W), got {tuple(x.shape)}")
        want = (x.shape[0], self.cfg.cond_width, *x.shape[2:])
        if tuple(u.shape) != want:
            raise ValueError(
                f"u must have the shape {want} (B, cond_width, H, W), got {tuple(u.shape)}"
            )
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != x.shape[0]):
            raise ValueError(f"t must have shape ({x.shape[0]},) or (), got {tuple(t.shape)}")
        h, w = x.shape[-2:]
        if h % m or w % m:
            raise ValueError(
                f"spatial size (H, W) = ({h}, {w}) of input {tuple(x.shape)} must be divisible by "
                f"{m} = 2**(len(mults) - 1) for mults={self.cfg.mults}"
            )

    def forward(self, x: Tensor, t: Tensor, u: Tensor) -> Tensor:
        """Velocity ``v_theta(x_t, t, u)``.

        Args:
            x: ``(B, C, H, W)`` the state ``x_t`` (normalized channels), any float dtype.
            t: ``(B,)`` flow times in [0, 1] (a 0-d tensor is broadcast over the batch).
            u: ``(B, C_u, H, W)`` the conditioning on the same grid, ``C_u = cfg.cond_width``
                (super-resolution: ``Up(lo)``, ``C_u = C``; the generative forecast with an
                operator source: the operator's mean and ``x(t)``, ``C_u = 2 C``).

        Returns:
            ``(B, C, H, W)`` velocity, in the dtype of the parameters (``conv_in.weight``).

        Raises:
            ValueError: bad shapes (see :meth:`check_input`), incl. H, W not divisible by
                ``2**(len(mults) - 1)``.
        """
        self.check_input(x, t, u)
        dtype = self.conv_in.weight.dtype
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        emb = self.time_mlp(timestep_embedding(t, self.cfg.width).to(dtype))

        h = self.conv_in(torch.cat([x, u], dim=1).to(dtype))
        hs = [h]
        for lvl in self.down:
            for blk in lvl.blocks:
                h = self._block(blk, h, emb)
                hs.append(h)
            if lvl.resample is not None:
                h = lvl.resample(h)
                hs.append(h)
        for blk in self.mid:
            h = self._block(blk, h, emb)
        for lvl in self.up:
            for blk in lvl.blocks:
                h = self._block(blk, torch.cat([h, hs.pop()], dim=1), emb)
            if lvl.resample is not None:
                h = lvl.resample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable, by default) scalar parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
