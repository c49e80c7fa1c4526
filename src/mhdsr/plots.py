"""Figures shared by training logs and the evaluation report (matplotlib, Agg backend).

Conventions: one row per channel; every panel of a row shares one colour scale (symmetric
about 0 for signed fields, from the truth when present); differences use their own symmetric
scale; titles carry the channel name and physical unit (:data:`mhdsr.channels.UNITS`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mhdsr.channels import UNITS  # noqa: E402


def _limits(ref: np.ndarray) -> tuple[float, float, str]:
    lo, hi = float(np.nanpercentile(ref, 0.5)), float(np.nanpercentile(ref, 99.5))
    if lo < 0 < hi:
        m = max(-lo, hi)
        return -m, m, "RdBu_r"
    return lo, hi, "viridis"


def comparison_panel(
    fields: Mapping[str, np.ndarray],
    channels: Sequence[str],
    *,
    reference: str | None = None,
    diffs: Mapping[str, tuple[str, str]] | None = None,
    title: str = "",
    shared_diff_scale: bool = False,
) -> Figure:
    """Grid of images: rows = channels, columns = ``fields`` then ``diffs``.

    Args:
        fields: column name -> (C, H, W) array in physical units (any H, W per column: the lo
            input can be shown at its own resolution).
        channels: the C channel names.
        reference: column whose range sets each row's colour scale (default: the last).
        diffs: extra columns ``name -> (a, b)`` showing ``fields[a] - fields[b]``.
        title: figure title.
        shared_diff_scale: one symmetric colour scale for all ``diffs`` columns of a row (so
            error maps compare directly); default: each difference column has its own.
    """
    diffs = dict(diffs or {})
    cols = list(fields) + list(diffs)
    ref = reference or list(fields)[-1]
    fig, axes = plt.subplots(
        len(channels), len(cols), figsize=(2.2 * len(cols), 2.2 * len(channels)), squeeze=False
    )
    for r, ch in enumerate(channels):
        vmin, vmax, cmap = _limits(fields[ref][r])
        row_m = None
        if shared_diff_scale and diffs:
            row_m = (
                max(
                    float(np.nanpercentile(np.abs(fields[a][r] - fields[b][r]), 99.5))
                    for a, b in diffs.values()
                )
                or 1e-30
            )
        for c, name in enumerate(cols):
            ax = axes[r][c]
            if name in fields:
                im = ax.imshow(
                    fields[name][r],
                    origin="lower",
                    vmin=vmin,
                    vmax=vmax,
                    cmap=cmap,
                    interpolation="nearest",
                )
            else:
                a, b = diffs[name]
                d = fields[a][r] - fields[b][r]
                m = row_m or float(np.nanpercentile(np.abs(d), 99.5)) or 1e-30
                im = ax.imshow(
                    d, origin="lower", vmin=-m, vmax=m, cmap="RdBu_r", interpolation="nearest"
                )
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{ch}\n[{UNITS.get(ch, '')}]", fontsize=7)
            if c == len(fields) - 1 or name in diffs:
                fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def spectra_figure(
    spectra: Mapping[str, tuple[np.ndarray, np.ndarray]],
    channels: Sequence[str],
    *,
    k_nyquist_lo: float | None = None,
    title: str = "",
    styles: Mapping[str, dict] | None = None,
) -> Figure:
    """Radially averaged power spectra, one panel per channel, every curve on each.

    Args:
        spectra: curve name -> ``(k (K,), E (C, K))``.
        channels: channel names (C).
        k_nyquist_lo: draw the lo grid's Nyquist k_n (and k_n / 2) as vertical lines.
    """
    n = len(channels)
    ncol = min(n, 4)
    nrow = (n + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.3 * ncol, 2.8 * nrow), squeeze=False)
    styles = dict(styles or {})
    for i, ch in enumerate(channels):
        ax = axes[i // ncol][i % ncol]
        for name, (k, e) in spectra.items():
            ax.loglog(k, np.maximum(e[i], 1e-300), label=name, **styles.get(name, {}))
        if k_nyquist_lo:
            for kk, ls in ((k_nyquist_lo, "--"), (k_nyquist_lo / 2, ":")):
                ax.axvline(kk, color="gray", ls=ls, lw=0.8)
        ax.set_title(f"{ch} [{UNITS.get(ch, '')}]", fontsize=8)
        ax.set_xlabel("k [2π/L]", fontsize=7)
        ax.set_ylabel("E(k)", fontsize=7)
        ax.tick_params(labelsize=6)
    for j in range(n, nrow * ncol):
        axes[j // ncol][j % ncol].axis("off")
    axes[0][0].legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def save(fig: Figure, path: str) -> None:
    """Save a figure as PNG (dpi 110) and close it."""
    fig.savefig(path, dpi=110)
    plt.close(fig)


def close(fig: Figure) -> None:
    plt.close(fig)
