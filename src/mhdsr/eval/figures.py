"""Figures of the evaluation report (PNG, matplotlib Agg), written atomically.

Built on :mod:`mhdsr.plots` (comparison panels and spectra shared with the training logs); the
bar chart of band errors, the spread/skill plot and the domain-gap histograms live here. All
take plain arrays / dicts (physical units) and return a ``Figure``; :func:`save_png` writes one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mhdsr.channels import UNITS
from mhdsr.io_utils import atomic_path
from mhdsr.plots import close, comparison_panel, plt, spectra_figure

#: Line styles of the spectra curves (methods get the default colour cycle).
CURVE_STYLES: dict[str, dict[str, Any]] = {
    "truth": {"color": "black", "lw": 2.0},
    "reference": {"color": "black", "lw": 2.0},
    "input": {"color": "gray", "ls": "--", "lw": 1.2},
    "bilinear": {"color": "tab:olive", "ls": ":", "lw": 1.4},
    "bicubic": {"color": "tab:brown", "ls": "-.", "lw": 1.2},
}


def save_png(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically, close it, return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    close(fig)
    return path


def _grid(n: int, width: float, height: float) -> tuple[Any, list[Any]]:
    """A figure with one panel per channel (at most 4 per row) of ``width x height`` inches.

    Margins are fixed in inches (cheaper than ``tight_layout``, which costs seconds per figure
    with many axes); unused axes of the last row are hidden. Returns ``(fig, axes[:n])``.
    """
    ncol = min(n, 4)
    nrow = -(-n // ncol)
    left, right, bottom, top = 0.75, 0.2, 0.55, 0.6  # inches: labels, suptitle
    fw, fh = width * ncol + left + right, height * nrow + bottom + top
    fig, axes = plt.subplots(nrow, ncol, figsize=(fw, fh), squeeze=False)
    fig.subplots_adjust(
        left=left / fw,
        right=1 - right / fw,
        bottom=bottom / fh,
        top=1 - top / fh,
        wspace=0.4,
        hspace=0.55,
    )
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


def panel_figure(panel: Mapping[str, Any], baselines: Sequence[str]) -> Any:
    """Comparison panel of one snapshot: input lo, baselines, one sample and the ensemble mean
    per method, truth, and differences (first method and the last baseline vs the truth, or vs
    the last baseline for held-out sims) on a shared colour scale per channel row.

    Args:
        panel: the dict :func:`mhdsr.eval.evaluate.evaluate_sim` passes to ``on_panel``.
        baselines: baseline names present in ``panel["fields"]``.
    """
    fields = dict(panel["fields"])
    methods = panel["methods"]
    first = f"{methods[0]} sample"
    diffs: dict[str, tuple[str, str]] = {}
    last_base = baselines[-1] if baselines else None
    if panel["has_truth"]:
        ref = "truth"
        diffs[f"{first} − truth"] = (first, "truth")
        if last_base:
            diffs[f"{last_base} − truth"] = (last_base, "truth")
    else:
        ref = first
        if last_base:
            diffs[f"{first} − {last_base}"] = (first, last_base)
    n_lo = fields["input lo"].shape[-1]
    fields = {f"input lo ({n_lo}²)" if k == "input lo" else k: v for k, v in fields.items()}
    title = (
        f"{panel['sim']} ({panel['group']}), snapshot {panel['snapshot']}, t = {panel['time']:.2f}"
        f"  —  colour scale per row from the {ref}"
    )
    return comparison_panel(
        fields, panel["channels"], reference=ref, diffs=diffs, title=title, shared_diff_scale=True
    )


def spectra_plot(
    k: np.ndarray,
    curves: Mapping[str, np.ndarray],
    channels: Sequence[str],
    *,
    k_lo: np.ndarray | None = None,
    k_n: float,
    title: str,
) -> Any:
    """Power spectra, one panel per channel, every curve; ``k_n`` (dashed) and ``k_n/2`` (dotted).

    Args:
        k: ``(K,)`` wavenumbers of the hi-grid curves.
        curves: name -> ``(C, K)`` mean spectrum; the curve named ``"input"`` is on the lo grid.
        k_lo: ``(K_lo,)`` wavenumbers of the lo-grid curve(s) (names ``"input"``, ``"native lo"``,
            ``"avgpool2(hi)"``).
        k_n: the lo grid's Nyquist wavenumber.
    """
    lo_names = {"input", "native lo", "avgpool2(hi)"}
    spec = {
        name: (k_lo if name in lo_names and k_lo is not None else k, np.asarray(e))
        for name, e in curves.items()
    }
    return spectra_figure(spec, channels, k_nyquist_lo=k_n, title=title, styles=CURVE_STYLES)


def band_error_figure(
    errors: Mapping[str, Mapping[str, Mapping[str, float | None]]],
    channels: Sequence[str],
    bands: Sequence[str],
    *,
    title: str,
) -> Any:
    """Grouped bars of band spectral errors: one panel per channel, bands on x, one bar per curve.

    Args:
        errors: curve -> channel -> band -> mean ``|log10(E_pred / E_ref)|`` (``None`` = no bar).
        channels: channel names; bands: band names in order.
    """
    names = list(errors)
    fig, axes = _grid(len(channels), 3.3, 2.4)
    width = 0.8 / max(1, len(names))
    x = np.arange(len(bands))
    for ax, ch in zip(axes, channels):
        for j, name in enumerate(names):
            vals = [errors[name].get(ch, {}).get(b) for b in bands]
            h = [np.nan if v is None else v for v in vals]
            style = CURVE_STYLES.get(name, {})
            ax.bar(
                x + (j - (len(names) - 1) / 2) * width,
                h,
                width,
                label=name,
                color=style.get("color"),
            )
        ax.set_xticks(x, bands, fontsize=7)
        ax.set_title(ch, fontsize=8)
        ax.set_ylabel("mean |log10 E/E_ref|", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    return fig


def spread_skill_figure(
    points: Mapping[str, tuple[np.ndarray, np.ndarray]], channels: Sequence[str], *, title: str
) -> Any:
    """Calibrated spread vs skill, one point per snapshot, one panel per channel, 1:1 line.

    Args:
        points: method -> ``(skill (T, C), spread_cal (T, C))``: RMSE of the ensemble mean and
            ``sqrt(1 + 1/n)`` times the member spread, per snapshot (physical units).
    """
    fig, axes = _grid(len(channels), 3.0, 2.6)
    for i, (ax, ch) in enumerate(zip(axes, channels)):
        top = 0.0
        for name, (skill, spread) in points.items():
            ax.scatter(skill[:, i], spread[:, i], s=12, label=name)
            top = max(top, float(np.nanmax(skill[:, i])), float(np.nanmax(spread[:, i])))
        top = top * 1.1 or 1.0
        ax.plot([0, top], [0, top], color="gray", lw=0.8, ls="--")
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        unit = UNITS.get(ch, "")
        ax.set_title(f"{ch} [{unit}]", fontsize=8)
        ax.set_xlabel("skill: RMSE of ensemble mean", fontsize=7)
        ax.set_ylabel("sqrt(1+1/n) · spread", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    return fig


def histogram_figure(
    values: Mapping[str, Sequence[np.ndarray]],
    channels: Sequence[str],
    *,
    title: str,
    bins: int = 80,
) -> Any:
    """Value distributions per channel (shared bins, log density), one curve per sample set.

    Args:
        values: set name -> per channel a 1-d array of values (physical units).
    """
    fig, axes = _grid(len(channels), 3.3, 2.4)
    for i, (ax, ch) in enumerate(zip(axes, channels)):
        data = {name: np.asarray(v[i], np.float64) for name, v in values.items()}
        lo = min(float(np.percentile(d, 0.01)) for d in data.values())
        hi = max(float(np.percentile(d, 99.99)) for d in data.values())
        edges = np.linspace(lo, hi if hi > lo else lo + 1e-12, bins + 1)
        floor = np.inf
        for name, d in data.items():
            dens, _ = np.histogram(d, bins=edges, density=True)
            ax.stairs(dens, edges, label=name, baseline=None)
            if (dens > 0).any():
                floor = min(floor, float(dens[dens > 0].min()))
        ax.set_yscale("log", nonpositive="mask")
        if np.isfinite(floor):
            ax.set_ylim(bottom=floor / 2)
        ax.set_title(ch, fontsize=8)
        ax.set_xlabel(UNITS.get(ch, ""), fontsize=7)
        ax.set_ylabel("density", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    return fig
