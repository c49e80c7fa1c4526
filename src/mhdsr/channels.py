"""Canonical channel names and their AthenaK sources.

The order is fixed everywhere in mhdsr (arrays are ``(C, ny, nx)`` with C in this order):
density, velx, vely, velz, Bx, By, Bz, jz. Geometry (docs/design.md): x = x1 (radial, array
columns), y = x2 (vertical, array rows), z = x3 (azimuthal, out of plane).
"""

from __future__ import annotations

from collections.abc import Sequence

from mhdsr.errors import ConfigError

#: Canonical channel order.
CHANNELS: tuple[str, ...] = ("density", "velx", "vely", "velz", "Bx", "By", "Bz", "jz")

#: channel -> (AthenaK output variable group, variable name inside that group).
ATHENAK_SOURCE: dict[str, tuple[str, str]] = {
    "density": ("mhd_w", "dens"),
    "velx": ("mhd_w", "velx"),
    "vely": ("mhd_w", "vely"),
    "velz": ("mhd_w", "velz"),
    "Bx": ("mhd_bcc", "bcc1"),
    "By": ("mhd_bcc", "bcc2"),
    "Bz": ("mhd_bcc", "bcc3"),
    "jz": ("mhd_jz", "jz"),
}

#: Physical units (code units of the shearing box: rho0 = 1, cs = 1, Omega = 1, L = 1).
UNITS: dict[str, str] = {
    "density": "rho0",
    "velx": "cs",
    "vely": "cs",
    "velz": "cs",
    "Bx": "code B (sqrt(4 pi) absorbed)",
    "By": "code B (sqrt(4 pi) absorbed)",
    "Bz": "code B (sqrt(4 pi) absorbed)",
    "jz": "code B / L",
}


def channel_indices(names: Sequence[str] | None) -> list[int]:
    """Indices into :data:`CHANNELS` of ``names`` (``None`` or empty = all 8, in canonical order).

    Raises:
        ConfigError: a name is not a known channel, or a name repeats.
    """
    if not names:
        return list(range(len(CHANNELS)))
    out = []
    for n in names:
        if n not in CHANNELS:
            raise ConfigError(f"unknown channel {n!r}; expected some of {list(CHANNELS)}")
        i = CHANNELS.index(n)
        if i in out:
            raise ConfigError(f"channel {n!r} listed twice")
        out.append(i)
    return out
