"""The group figures of the report, drawn from the (clean) metrics dict: spectra with the
ensemble spread band, band errors and coherence bars, spread/skill, per-snapshot band error and
coherence against time in orbits, PDFs, and the domain gap. Comparison panels are drawn during
scoring (:mod:`mhdsr.eval.run`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mhdsr.eval import figures as F
from mhdsr.eval.reading import get
from mhdsr.plots import plt

BANDS = ("resolved", "transition", "generated")
#: Time-series figures: (file stem, metric, y label).
TIMESERIES = (
    ("generated_error_vs_orbit", "spectral_error.generated", "generated-band error"),
    ("transition_coherence_vs_orbit", "coherence.transition", "transition-band coherence"),
)


def _save(fig: Any, figdir: Path, name: str) -> str:
    F.save_png(fig, figdir / name)
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
    with plt.rc_context(F.FAST_RC):
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
        fig = F.spectra_plot(
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
        fig = F.band_error_figure(
            errs, channels, BANDS, title=f"{group}: band spectral error vs {against}"
        )
        written.append(_save(fig, figdir, f"band_errors_{group}.png"))
        coh = {
            n: {ch: v[ch]["coherence"] for ch in channels}
            for n, v in summ.items()
            if all("coherence" in v[ch] for ch in channels)
        }
        if coh:
            fig = F.band_error_figure(
                coh, channels, BANDS, title=f"{group}: band coherence with the truth (single "
                "members)", ylabel="coherence",
            )  # fmt: skip
            written.append(_save(fig, figdir, f"coherence_{group}.png"))
        for stem, metric, label in TIMESERIES:
            series = _timeseries(metrics, group, metric)
            if series:
                fig = F.timeseries_figure(
                    series, channels, title=f"{group}: {label} per snapshot", ylabel=label
                )
                written.append(_save(fig, figdir, f"{stem}_{group}.png"))
        dens = get(metrics, ("pdfs", group, "variables"))
        if dens:
            fig = F.density_figure(
                np.array(metrics["pdfs"][group]["edges"]),
                dens,
                title=f"{group}: PDFs of jz and of velocity increments (l = 1), each / its rms",
            )
            written.append(_save(fig, figdir, f"pdfs_{group}.png"))
    for group, ss in metrics["spread_skill"].items():
        pts = {n: (arr(v["skill"]).T, arr(v["spread_calibrated"]).T) for n, v in ss.items()}
        fig = F.spread_skill_figure(
            pts, channels, title=f"{group}: spread vs skill per snapshot (1:1 = calibrated)"
        )
        written.append(_save(fig, figdir, f"spread_skill_{group}.png"))
    gap = metrics["domain_gap"]
    if gap.get("available"):
        sp = gap["spectra"]
        kk = np.array(sp["k"])
        fig = F.spectra_plot(
            kk,
            {n: arr(sp[n]) for n in ("native lo", "avgpool2(hi)")},
            channels,
            k_lo=kk,
            k_n=k_n,
            title="domain gap: lo-grid spectra, native lo vs avgpool2(hi)",
        )
        written.append(_save(fig, figdir, "domain_gap_spectra.png"))
        if hist is not None:
            fig = F.histogram_figure(
                hist, channels, title="domain gap: value distributions, native lo vs avgpool2(hi)"
            )
            written.append(_save(fig, figdir, "domain_gap_hist.png"))
    return written
