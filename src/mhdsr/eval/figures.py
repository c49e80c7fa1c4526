"""Figures of the evaluation report (PNG, matplotlib Agg), written atomically.

The comparison panels come from :mod:`mhdsr.plots` (shared with the training logs); the spectra
with their ensemble spread band, the per-band bars, the spread/skill plot, the time series in
orbits and the histograms live here, laid out with fixed margins (``tight_layout`` costs seconds
per figure with many axes). All take plain arrays / dicts (physical units) and return a
``Figure``; :func:`save_png` writes one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import NullLocator

from mhdsr.channels import UNITS
from mhdsr.io_utils import atomic_path
from mhdsr.plots import close, comparison_panel, plt

#: Line styles of the spectra curves (methods get the default colour cycle).
CURVE_STYLES: dict[str, dict[str, Any]] = {
    "truth": {"color": "black", "lw": 2.0},
    "reference": {"color": "black", "lw": 2.0},
    "input": {"color": "gray", "ls": "--", "lw": 1.2},
    "bilinear": {"color": "tab:olive", "ls": ":", "lw": 1.4},
    "bicubic": {"color": "tab:brown", "ls": "-.", "lw": 1.2},
    "spline": {"color": "tab:purple", "ls": "--", "lw": 1.2},
    "spectral-noise": {"color": "tab:pink", "ls": "-", "lw": 1.0},
    "noise": {"color": "tab:gray", "ls": "-", "lw": 0.8},
}


#: rc settings of every eval figure: a fixed title height skips matplotlib's per-axes title
#: placement (a tight-bbox pass over the ticks, seconds per many-axes figure).
FAST_RC = {"axes.titley": 1.0}


def save_png(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically, close it, return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    close(fig)
    return path


def _no_minor(ax: Any) -> None:
    """Drop the minor ticks of a log axis: on spectra spanning 20 decades they are most of the
    drawing time (3x); decades stay labelled."""
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_locator(NullLocator())


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


def panel_figure(panel: Mapping[str, Any]) -> Any:
    """Comparison panel of one snapshot: input lo, the panel baselines, one sample and the
    ensemble mean per method, truth, and differences (first method and the first baseline vs
    the truth, or vs that baseline for held-out sims) on a shared colour scale per channel row.

    Args:
        panel: the dict :func:`mhdsr.eval.scoring.evaluate_sim` passes to ``on_panel``
            (``panel["baselines"]``: its baseline columns, deterministic first).
    """
    fields = dict(panel["fields"])
    methods = panel["methods"]
    first = f"{methods[0]} sample"
    diffs: dict[str, tuple[str, str]] = {}
    base = panel["baselines"][0] if panel.get("baselines") else None
    if panel["has_truth"]:
        ref = "truth"
        diffs[f"{first} − truth"] = (first, "truth")
        if base:
            diffs[f"{base} − truth"] = (base, "truth")
    else:
        ref = first
        if base:
            diffs[f"{first} − {base}"] = (first, base)
    n_lo = fields["input lo"].shape[-1]
    fields = {f"input lo ({n_lo}²)" if k == "input lo" else k: v for k, v in fields.items()}
    title = (
        f"{panel['sim']} ({panel['group']}), snapshot {panel['snapshot']}, t = {panel['time']:.2f}"
        f" ({panel['orbit']:.2f} orbits)  —  colour scale per row from the {ref}"
    )
    return comparison_panel(
        fields, panel["channels"], reference=ref, diffs=diffs, title=title, shared_diff_scale=True
    )


def _style(name: str, i: int) -> dict[str, Any]:
    return CURVE_STYLES.get(name, {"color": f"C{i % 10}", "lw": 1.2})


def spectra_plot(
    k: np.ndarray,
    curves: Mapping[str, np.ndarray],
    channels: Sequence[str],
    *,
    k_lo: np.ndarray | None = None,
    k_n: float,
    title: str,
    bands: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> Any:
    """Power spectra, one panel per channel, every curve; ``k_n`` (dashed) and ``k_n/2`` (dotted);
    the ensemble spread band (member min..max) shaded for the curves in ``bands``.

    Args:
        k: ``(K,)`` wavenumbers of the hi-grid curves.
        curves: name -> ``(C, K)`` mean spectrum; lo-grid curves (names ``"input"``,
            ``"native lo"``, ``"avgpool2(hi)"``) use ``k_lo``.
        k_lo: ``(K_lo,)`` wavenumbers of the lo-grid curves.
        k_n: the lo grid's Nyquist wavenumber.
        bands: name -> ``(min (C, K), max (C, K))`` spread band of that curve.
    """
    lo_names = {"input", "native lo", "avgpool2(hi)"}
    bands = dict(bands or {})
    fig, axes = _grid(len(channels), 3.3, 2.6)
    for i, (ax, ch) in enumerate(zip(axes, channels)):
        for j, (name, e) in enumerate(curves.items()):
            kk = k_lo if name in lo_names and k_lo is not None else k
            style = _style(name, j)
            ax.loglog(kk, np.maximum(np.asarray(e)[i], 1e-300), label=name, **style)
            if name in bands:
                lo, hi = bands[name]
                ax.fill_between(
                    kk, np.maximum(lo[i], 1e-300), np.maximum(hi[i], 1e-300),
                    color=style.get("color"), alpha=0.2, lw=0,
                )  # fmt: skip
        for kk, ls in ((k_n, "--"), (k_n / 2, ":")):
            ax.axvline(kk, color="gray", ls=ls, lw=0.8)
        _no_minor(ax)
        ax.set_title(f"{ch} [{UNITS.get(ch, '')}]", fontsize=8)
        ax.set_xlabel("k [2π/L]", fontsize=7)
        ax.set_ylabel("E(k)", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0].legend(fontsize=5)
    fig.suptitle(title, fontsize=9)
    return fig


def band_error_figure(
    errors: Mapping[str, Mapping[str, Mapping[str, float | None]]],
    channels: Sequence[str],
    bands: Sequence[str],
    *,
    title: str,
    ylabel: str = "mean |log10 E/E_ref|",
) -> Any:
    """Grouped bars of per-band values: one panel per channel, bands on x, one bar per curve.

    Args:
        errors: curve -> channel -> band -> value (band spectral error, coherence; ``None`` =
            no bar).
        channels: channel names; bands: band names in order.
        ylabel: the value's axis label.
    """
    names = list(errors)
    fig, axes = _grid(len(channels), 3.3, 2.4)
    width = 0.8 / max(1, len(names))
    x = np.arange(len(bands))
    for ax, ch in zip(axes, channels):
        for j, name in enumerate(names):
            vals = [errors[name].get(ch, {}).get(b) for b in bands]
            h = [np.nan if v is None else v for v in vals]
            style = _style(name, j)
            ax.bar(
                x + (j - (len(names) - 1) / 2) * width,
                h,
                width,
                label=name,
                color=style.get("color"),
            )
        ax.set_xticks(x, bands, fontsize=7)
        ax.set_title(ch, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=7)
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
        _no_minor(ax)
        if np.isfinite(floor):
            ax.set_ylim(bottom=floor / 2)
        ax.set_title(ch, fontsize=8)
        ax.set_xlabel(UNITS.get(ch, ""), fontsize=7)
        ax.set_ylabel("density", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    return fig


def timeseries_figure(
    series: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]],
    channels: Sequence[str],
    *,
    title: str,
    ylabel: str,
) -> Any:
    """A per-snapshot value against time in orbits, one panel per channel.

    Args:
        series: curve -> list of ``(orbits (T,), values (T, C))`` segments (one per sim; a line
            joins the snapshots of one sim only).
        ylabel: the value's axis label.
    """
    fig, axes = _grid(len(channels), 3.3, 2.4)
    for i, (ax, ch) in enumerate(zip(axes, channels)):
        for j, (name, segs) in enumerate(series.items()):
            style = {k: v for k, v in _style(name, j).items() if k in ("color", "ls")}
            for s, (t, v) in enumerate(segs):
                order = np.argsort(t)
                ax.plot(
                    np.asarray(t)[order], np.asarray(v)[order, i], marker="o", ms=2.5, lw=0.9,
                    label=name if s == 0 else None, **style,
                )  # fmt: skip
        ax.set_title(ch, fontsize=8)
        ax.set_xlabel("t [orbits]", fontsize=7)
        ax.set_ylabel(ylabel, fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0].legend(fontsize=5)
    fig.suptitle(title, fontsize=9)
    return fig


def density_figure(
    edges: np.ndarray,
    densities: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    title: str,
) -> Any:
    """PDFs on shared bins (log density), one panel per variable, one curve per source.

    Args:
        edges: ``(B + 1,)`` bin edges (units of each variable's rms).
        densities: variable label -> curve -> ``(B,)`` density.
    """
    names = list(densities)
    fig, axes = _grid(len(names), 3.3, 2.4)
    centres = 0.5 * (np.asarray(edges[1:]) + np.asarray(edges[:-1]))
    for ax, var in zip(axes, names):
        floor = np.inf
        for j, (name, d) in enumerate(densities[var].items()):
            d = np.asarray(d, np.float64)
            style = {k: v for k, v in _style(name, j).items() if k in ("color", "ls")}
            ax.plot(centres, np.where(d > 0, d, np.nan), label=name, lw=1.0, **style)
            if (d > 0).any():
                floor = min(floor, float(d[d > 0].min()))
        ax.set_yscale("log")
        _no_minor(ax)
        if np.isfinite(floor):
            ax.set_ylim(bottom=floor / 2)
        ax.set_title(var, fontsize=8)
        ax.set_xlabel("value / rms", fontsize=7)
        ax.set_ylabel("density", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0].legend(fontsize=5)
    fig.suptitle(title, fontsize=9)
    return fig
