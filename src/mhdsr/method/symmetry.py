"""The exact symmetries of the 2D shearing box in the x1-x2 plane (docs/design.md, "Symmetries").

Three commuting involutions act on a snapshot ``(..., C, ny, nx)`` (rows = x2, columns = x1):

* ``R``, rotation by pi about the vertical axis (x1 -> -x1, x3 -> -x3): flip the columns and
  negate velx, velz, Bx, Bz, jz;
* ``M``, vertical mirror (x2 -> -x2), B as a vector: flip the rows and negate vely, By, jz;
* ``P``, field reversal (B -> -B): negate Bx, By, Bz, jz.

They generate a group of 8 elements, indexed here by ``e = 4 r + 2 m + p`` with bits
``(r, m, p)`` (``e = 0`` is the identity). Cell centres are symmetric about 0 on the periodic grid,
so a flip maps centres to centres, 2x2 coarse blocks to blocks (it commutes with avgpool2 and
with the symmetric interpolations of ``Up``), and commutes with the periodic centred differences
that define ``jz``: a transformed snapshot still satisfies ``jz = dBy/dx - dBx/dy`` to float32
rounding. Each element maps a solution of the equations to a solution, so super-resolution should
commute with them: ``p(g hi | g lo) = p(hi | lo)`` (the initial zero-net-flux field pattern of a
run breaks this weakly in the linear phase only).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mhdsr.errors import ConfigError

#: channels negated by each generator
NEGATED: dict[str, frozenset[str]] = {
    "R": frozenset({"velx", "velz", "Bx", "Bz", "jz"}),
    "M": frozenset({"vely", "By", "jz"}),
    "P": frozenset({"Bx", "By", "Bz", "jz"}),
}
#: number of group elements
ORDER = 8


def bits(e: int) -> tuple[int, int, int]:
    """``(r, m, p)`` of group element ``e`` in ``0 .. 7``."""
    if not 0 <= int(e) < ORDER:
        raise ValueError(f"group element must be in 0..7, got {e}")
    return (e >> 2) & 1, (e >> 1) & 1, e & 1


def compose(a: int, b: int) -> int:
    """The product ``a b`` (the group is abelian and every element is its own inverse: XOR)."""
    for v in (a, b):
        bits(v)  # validates
    return a ^ b


def signs(e: int, channels: Sequence[str]) -> list[float]:
    """Per-channel factor (+1 or -1) of element ``e`` for ``channels`` (canonical names).

    Raises:
        ConfigError: a channel name the group does not know (it must be one of the 8).
    """
    from mhdsr.channels import CHANNELS

    unknown = [c for c in channels if c not in CHANNELS]
    if unknown:
        raise ConfigError(f"symmetry: unknown channel(s) {unknown}; known {list(CHANNELS)}")
    r, m, p = bits(e)
    out = []
    for c in channels:
        flips = r * (c in NEGATED["R"]) + m * (c in NEGATED["M"]) + p * (c in NEGATED["P"])
        out.append(-1.0 if flips % 2 else 1.0)
    return out


def apply(x: Tensor, e: int, channels: Sequence[str]) -> Tensor:
    """Element ``e`` applied to ``x`` ``(..., C, ny, nx)`` with ``C = len(channels)``.

    Returns:
        A new tensor of the same shape, dtype and device.
    """
    if x.shape[-3] != len(channels):
        raise ValueError(f"x has {x.shape[-3]} channels, channels names {len(channels)}")
    r, m, _ = bits(e)
    dims = [d for d, on in ((-1, r), (-2, m)) if on]
    y = torch.flip(x, dims) if dims else x.clone()
    s = torch.tensor(signs(e, channels), dtype=x.dtype, device=x.device)
    return y * s[:, None, None]


def apply_batch(x: Tensor, elements: Tensor, channels: Sequence[str]) -> Tensor:
    """Element ``elements[b]`` applied to sample ``b`` of ``x`` ``(B, C, ny, nx)``.

    Args:
        x: ``(B, C, ny, nx)`` fields.
        elements: ``(B,)`` integer tensor of group elements in ``0 .. 7``.
        channels: the ``C`` channel names.

    Returns:
        ``(B, C, ny, nx)`` tensor.
    """
    if elements.shape != (x.shape[0],):
        raise ValueError(f"elements must have shape ({x.shape[0]},), got {tuple(elements.shape)}")
    return torch.stack([apply(x[b], int(e), channels) for b, e in enumerate(elements.tolist())])


def draw(n: int, generator: torch.Generator | None) -> Tensor:
    """``n`` group elements, uniform over the 8, from ``generator`` (CPU), ``(n,)`` int64."""
    return torch.randint(0, ORDER, (n,), generator=generator)
