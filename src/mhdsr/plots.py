"""Every figure of mhdsr (matplotlib, Agg backend): training logs, the evaluation report and the
forecast report.

Conventions: one panel per channel, laid out by :func:`channel_axes` (at most 4 per row, fixed
margins: ``tight_layout`` costs seconds per figure with many axes), or one row per channel in
the comparison panels, where every panel of a row shares one colour scale (symmetric about 0 for
signed fields, from the truth when present) and differences use their own symmetric scale;
titles carry the channel name and physical unit (:data:`mhdsr.channels.UNITS`); curves keep one
style per name (:data:`CURVE_STYLES`). Functions take plain arrays / dicts (physical units) and
return a ``Figure``; :func:`save_png` writes one atomically, :func:`save` / :func:`close` as in
the training logs.

Sections: fields and spectra (:func:`comparison_panel`, :func:`spectra_figure`,
:func:`spectra_plot`); the evaluation report (:func:`panel_figure`, bars, spread/skill,
histograms, time series, PDFs, and :func:`summary_figures`, which draws them all from a
metrics.json dict); the forecast report (:func:`lead_curve_figure`,
:func:`lead_energy_figure`, :func:`spectra_drift_figure`, and for ensemble forecasts
:func:`ensemble_energy_figure`, :func:`ensemble_spectra_figure`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import NullLocator  # noqa: E402

from mhdsr.channels import UNITS  # noqa: E402
from mhdsr.io_utils import atomic_path  # noqa: E402


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
    fig, axes = channel_axes(len(channels), 3.3, 2.8)
    styles = dict(styles or {})
    for i, (ax, ch) in enumerate(zip(axes, channels)):
        for name, (k, e) in spectra.items():
            ax.loglog(k, np.maximum(e[i], 1e-300), label=name, **styles.get(name, {}))
        if k_nyquist_lo:
            for kk, ls in ((k_nyquist_lo, "--"), (k_nyquist_lo / 2, ":")):
                ax.axvline(kk, color="gray", ls=ls, lw=0.8)
        ax.set_title(f"{ch} [{UNITS.get(ch, '')}]", fontsize=8)
        _label(ax, "k [2π/L]", "E(k)")
    axes[0].legend(fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def save(fig: Figure, path: str) -> None:
    """Save a figure as PNG (dpi 110) and close it."""
    fig.savefig(path, dpi=110)
    plt.close(fig)


def close(fig: Figure) -> None:
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# The evaluation report

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
    # forecast methods (lead-time curves) and the chain's
    "model": {"color": "tab:blue", "ls": "-"},
    "persistence": {"color": "tab:gray", "ls": "--"},
    "linear": {"color": "tab:orange", "ls": ":"},
    "chain": {"color": "tab:blue", "ls": "-"},
    "chain member": {"color": "tab:cyan", "ls": "-."},
    "persistence+bicubic": {"color": "tab:gray", "ls": "--"},
    "forecast+bicubic": {"color": "tab:green", "ls": ":"},
    "truth-lo+bicubic": {"color": "tab:brown", "ls": "-."},
    "fno": {"color": "tab:red", "ls": "-."},
    "climatology": {"color": "tab:green", "ls": ":"},
    "persistence+spline": {"color": "tab:purple", "ls": "--"},
    "fno+spline": {"color": "tab:red", "ls": "-."},
}


#: rc settings of every eval figure: a fixed title height skips matplotlib's per-axes title
#: placement (a tight-bbox pass over the ticks, seconds per many-axes figure).
FAST_RC = {"axes.titley": 1.0}


def save_png(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically, close it, return the path."""
    path = Path(path)
    try:  # a full disk: OutputWriteError naming the file (atomic_path)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        close(fig)
    return path


def _label(ax: Any, xlabel: str, ylabel: str) -> None:
    """The axis labels and tick size every per-channel panel uses."""
    ax.set_xlabel(xlabel, fontsize=7)
    ax.set_ylabel(ylabel, fontsize=7)
    ax.tick_params(labelsize=6)


def _no_minor(ax: Any) -> None:
    """Drop the minor ticks of a log axis: on spectra spanning 20 decades they are most of the
    drawing time (3x); decades stay labelled."""
    ax.xaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_minor_locator(NullLocator())


def channel_axes(n: int, width: float, height: float) -> tuple[Any, list[Any]]:
    """The per-channel axes helper: a figure with one panel per channel (at most 4 per row) of
    ``width x height`` inches.

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
    fig, axes = channel_axes(len(channels), 3.3, 2.6)
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
        _label(ax, "k [2π/L]", "E(k)")
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
    fig, axes = channel_axes(len(channels), 3.3, 2.4)
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
    fig, axes = channel_axes(len(channels), 3.0, 2.6)
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
        _label(ax, "skill: RMSE of ensemble mean", "sqrt(1+1/n) · spread")
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
    fig, axes = channel_axes(len(channels), 3.3, 2.4)
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
        _label(ax, UNITS.get(ch, ""), "density")
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
    fig, axes = channel_axes(len(channels), 3.3, 2.4)
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
        _label(ax, "t [orbits]", ylabel)
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
    fig, axes = channel_axes(len(names), 3.3, 2.4)
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
        _label(ax, "value / rms", "density")
    axes[0].legend(fontsize=5)
    fig.suptitle(title, fontsize=9)
    return fig


# ---------------------------------------------------------------------------------------------
# The evaluation report's group figures, from the metrics.json dict

BANDS = ("resolved", "transition", "generated")
#: Time-series figures: (file stem, metric, y label).
TIMESERIES = (
    ("generated_error_vs_orbit", "spectral_error.generated", "generated-band error"),
    ("transition_coherence_vs_orbit", "coherence.transition", "transition-band coherence"),
)


def _save(fig: Any, figdir: Path, name: str) -> str:
    save_png(fig, figdir / name)
    return f"figures/{name}"


def _timeseries(metrics: Mapping[str, Any], group: str, metric: str) -> dict[str, list]:
    """curve -> [(orbits (T,), values (T, C)) per sim] of a time-series metric."""
    channels = metrics["channels"]
    out: dict[str, list] = {}
    for rec in metrics["sims"].values():
        if rec["group"] != group:
            continue
        orbit_of = dict(zip(rec["snapshots"], rec["orbits"], strict=True))
        for curve, per in rec.get("per_snapshot", {}).items():
            vals = per.get(metric)
            if not vals:
                continue
            t = np.array([orbit_of[n] for n in per["snapshots"]], np.float64)
            v = np.array(
                [[np.nan if x is None else x for x in vals[ch]] for ch in channels], np.float64
            ).T
            out.setdefault(curve, []).append((t, v))
    return out


def summary_figures(
    metrics: dict[str, Any], figdir: Path, hist: dict[str, list[np.ndarray]] | None
) -> list[str]:
    """Draw every group figure; ``hist``: the value samples of the domain-gap histograms.
    Returns paths relative to the output folder."""
    with plt.rc_context(FAST_RC):
        return _summary_figures(metrics, figdir, hist)


def _summary_figures(
    metrics: dict[str, Any], figdir: Path, hist: dict[str, list[np.ndarray]] | None
) -> list[str]:
    channels = metrics["channels"]
    k_n = metrics["grids"]["k_n"]
    ref_split = metrics["config"]["reference_split"]
    written = []

    def arr(per_channel: dict[str, list[float]]) -> np.ndarray:
        return np.array(
            [[np.nan if x is None else x for x in per_channel[ch]] for ch in channels],
            dtype=np.float64,
        )

    for group, s in metrics["spectra"].items():
        bands = {n: (arr(b["min"]), arr(b["max"])) for n, b in s.get("spread", {}).items()}
        fig = spectra_plot(
            np.array(s["k"]),
            {n: arr(v) for n, v in s["curves"].items()},
            channels,
            k_lo=np.array(s["k_lo"]),
            k_n=k_n,
            title=f"{group}: mean power spectra, ensemble spread shaded (k_n dashed, k_n/2 dotted)",
            bands=bands,
        )
        written.append(_save(fig, figdir, f"spectra_{group}.png"))
        summ = metrics["summary"][group]
        against = "truth" if metrics["groups"][group]["truth"] else f"the {ref_split}-split mean"
        errs = {
            n: {ch: v[ch].get("spectral_error", {}) for ch in channels} for n, v in summ.items()
        }
        fig = band_error_figure(
            errs, channels, BANDS, title=f"{group}: band spectral error vs {against}"
        )
        written.append(_save(fig, figdir, f"band_errors_{group}.png"))
        coh = {
            n: {ch: v[ch]["coherence"] for ch in channels}
            for n, v in summ.items()
            if all("coherence" in v[ch] for ch in channels)
        }
        if coh:
            fig = band_error_figure(
                coh, channels, BANDS, title=f"{group}: band coherence with the truth (single "
                "members)", ylabel="coherence",
            )  # fmt: skip
            written.append(_save(fig, figdir, f"coherence_{group}.png"))
        for stem, metric, label in TIMESERIES:
            series = _timeseries(metrics, group, metric)
            if series:
                fig = timeseries_figure(
                    series, channels, title=f"{group}: {label} per snapshot", ylabel=label
                )
                written.append(_save(fig, figdir, f"{stem}_{group}.png"))
        dens = metrics.get("pdfs", {}).get(group, {}).get("variables")
        if dens:
            fig = density_figure(
                np.array(metrics["pdfs"][group]["edges"]),
                dens,
                title=f"{group}: PDFs of jz and of velocity increments (l = 1), each / its rms",
            )
            written.append(_save(fig, figdir, f"pdfs_{group}.png"))
    for group, ss in metrics["spread_skill"].items():
        pts = {n: (arr(v["skill"]).T, arr(v["spread_calibrated"]).T) for n, v in ss.items()}
        fig = spread_skill_figure(
            pts, channels, title=f"{group}: spread vs skill per snapshot (1:1 = calibrated)"
        )
        written.append(_save(fig, figdir, f"spread_skill_{group}.png"))
    gap = metrics["domain_gap"]
    if gap.get("available"):
        sp = gap["spectra"]
        kk = np.array(sp["k"])
        fig = spectra_plot(
            kk,
            {n: arr(sp[n]) for n in ("native lo", "avgpool2(hi)")},
            channels,
            k_lo=kk,
            k_n=k_n,
            title="domain gap: lo-grid spectra, native lo vs avgpool2(hi)",
        )
        written.append(_save(fig, figdir, "domain_gap_spectra.png"))
        if hist is not None:
            fig = histogram_figure(
                hist, channels, title="domain gap: value distributions, native lo vs avgpool2(hi)"
            )
            written.append(_save(fig, figdir, "domain_gap_hist.png"))
    return written


# ---------------------------------------------------------------------------------------------
# The forecast report


def lead_curve_figure(curves: dict[str, Any], methods: tuple[str, ...], metric: str, channels: list[str],
                  title: str, ylabel: str, hline: float | None = None) -> Any:  # fmt: skip
    fig, axes = channel_axes(len(channels), 3.0, 2.3)
    for ax, ch in zip(axes, channels):
        for name in methods:
            cur = curves.get(name)
            if not cur or not cur["lead"]:
                continue
            ax.plot(cur["lead_orbits"], cur[metric][ch], marker="o", ms=2.5, lw=1.0, label=name,
                    **CURVE_STYLES.get(name, {}))  # fmt: skip
        if hline is not None:
            ax.axhline(hline, color="k", lw=0.6, ls=":")
        ax.set_title(ch, fontsize=8)
        _label(ax, "lead [orbits]", ylabel)
    axes[0].legend(fontsize=5)
    fig.suptitle(title, fontsize=9)
    return fig


def lead_energy_figure(curves: dict[str, Any], methods: tuple[str, ...], title: str) -> Any:
    fig, axes = plt.subplots(1, 2, figsize=(7, 2.8))
    for ax, e, lab in zip(axes, ("ke_rel", "me_rel"), ("kinetic", "magnetic")):
        for name in methods:
            cur = curves.get(name)
            if cur and e in cur:
                ax.plot(
                    cur["lead_orbits"],
                    cur[e],
                    marker="o",
                    ms=2.5,
                    label=name,
                    **CURVE_STYLES.get(name, {}),
                )
        ax.axhspan(-0.1, 0.1, color="green", alpha=0.08)
        ax.axhline(0, color="k", lw=0.6)
        _label(ax, "lead [orbits]", f"{lab} E / E_true - 1")
    axes[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def spectra_drift_figure(
    model: Mapping[int, np.ndarray], truth: np.ndarray, channels: Sequence[str]
) -> Any:
    """Mean spectrum of the model at each lead (colour = lead) and of the truth.

    Args:
        model: lead -> mean spectrum ``(C, K)`` of the model forecasts at that lead.
        truth: mean spectrum ``(C, K)`` of the truth over every scored lead.
    """
    leads = sorted(model)
    fig, axes = channel_axes(len(channels), 3.0, 2.4)
    cmap = plt.get_cmap("viridis")
    for i, (ax, ch) in enumerate(zip(axes, channels)):
        for j, L in enumerate(leads):
            e = model[L][i]
            k = np.arange(1, e.size + 1)
            ax.loglog(k, np.maximum(e, 1e-300), color=cmap(j / max(1, len(leads) - 1)), lw=0.9,
                      label=f"model +{L}" if i == 0 else None)  # fmt: skip
        et = truth[i]
        ax.loglog(
            np.arange(1, et.size + 1),
            np.maximum(et, 1e-300),
            color="k",
            lw=1.6,
            label="truth" if i == 0 else None,
        )
        ax.set_title(ch, fontsize=8)
        ax.tick_params(labelsize=6)
    axes[0].legend(fontsize=5)
    fig.suptitle(
        "spectrum drift with lead (lo grid; truth: mean over all scored leads)", fontsize=9
    )
    return fig


def ensemble_energy_figure(
    lead_orbits: Sequence[float],
    members: Mapping[str, np.ndarray],
    mean: Mapping[str, Sequence[float]],
    truth: Mapping[str, Sequence[float]],
    title: str,
) -> Any:
    """Kinetic and magnetic energy against lead: every member (thin), the ensemble mean's
    energy and the truth's, each the mean over initial states (code units).

    Args:
        lead_orbits: ``(L,)`` leads in orbits.
        members: ``"ke"`` / ``"me"`` -> ``(E, L)`` member energies.
        mean, truth: ``"ke"`` / ``"me"`` -> ``(L,)`` (an absent key is not drawn).
    """
    fig, axes = plt.subplots(1, 2, figsize=(7.5, 2.9))
    for ax, e, lab in zip(axes, ("ke", "me"), ("kinetic", "magnetic")):
        for j, series in enumerate(np.atleast_2d(members.get(e, np.empty((0, 0))))):
            if len(series):
                ax.plot(lead_orbits, series, color="tab:blue", lw=0.5, alpha=0.5,
                        label="members" if j == 0 else None)  # fmt: skip
        if e in mean:
            ax.plot(lead_orbits, mean[e], color="tab:orange", lw=1.4, ls="--",
                    label="ensemble mean")  # fmt: skip
        if e in truth:
            ax.plot(lead_orbits, truth[e], label="truth", **CURVE_STYLES["truth"])
        ax.set_yscale("log")
        _label(ax, "lead [orbits]", f"{lab} energy")
    axes[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def ensemble_spectra_figure(
    panels: Mapping[float, Mapping[str, np.ndarray]], channels: Sequence[str], title: str
) -> Any:
    """Radial spectra at a few leads (rows) per channel (columns): every member (thin), the
    ensemble mean's, the truth's, each the mean over initial states.

    Args:
        panels: lead in orbits -> ``{"members": (E, C, K), "mean": (C, K), "truth": (C, K)}``
            (shells ``k = 1 .. K``).
        channels: the ``C`` names.
    """
    leads = list(panels)
    nc = len(channels)
    fig, axes = plt.subplots(len(leads), nc, figsize=(1.9 * nc, 1.7 * len(leads) + 0.5),
                             squeeze=False)  # fmt: skip
    for r, o in enumerate(leads):
        p = panels[o]
        for c, ch in enumerate(channels):
            ax = axes[r][c]
            for j, e in enumerate(p.get("members", [])):
                k = np.arange(1, e.shape[-1] + 1)
                ax.loglog(k, np.maximum(e[c], 1e-300), color="tab:blue", lw=0.4, alpha=0.5,
                          label="members" if j == 0 else None)  # fmt: skip
            for key, style in (("mean", {"color": "tab:orange", "ls": "--", "lw": 1.0}),
                               ("truth", CURVE_STYLES["truth"])):  # fmt: skip
                if key in p:
                    e = p[key][c]
                    ax.loglog(np.arange(1, e.size + 1), np.maximum(e, 1e-300), label=key, **style)
            ax.set_title(f"{ch}, {o:g} orb", fontsize=7)
            ax.tick_params(labelsize=5)
            _no_minor(ax)
    axes[0][0].legend(fontsize=5)
    fig.suptitle(title, fontsize=9)
    return fig
