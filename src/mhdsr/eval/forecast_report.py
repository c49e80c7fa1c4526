"""``mhdsr eval`` of forecast rollouts and chain files: metrics.json, figures, report.md and
the lead-time table (summary.md, also printed). Scores: :mod:`mhdsr.eval.forecast`.

Figures (``figures/``): NRMSE and correlation against lead time in orbits per channel (model,
persistence, linear extrapolation), the energies' relative error against lead, the drift of
the model's spectrum with lead against the truth's, fields at chosen leads (initial state,
truth, model, persistence, model - truth), and for the chain its hi-grid NRMSE against lead
and the fields and spectra at each scored lead. Ensemble rollouts add CRPS against lead, the
energies against lead (every member, the ensemble mean, the truth) and the spectra at three
leads (members, mean, truth), pooled over the rollouts.
"""

from __future__ import annotations

import datetime as _dt
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mhdsr import __version__
from mhdsr.dataset import h5layout as H
from mhdsr.eval.config import EvalConfig
from mhdsr.eval.forecast import (
    CHAIN_KIND,
    CHAIN_METHODS,
    CORR_THRESHOLD,
    FORECAST_METHODS,
    ForecastEvalError,
    climatology_members,
    energy_check,
    ensemble_goals,
    goals,
    read_operator_rollouts,
    reduce_rollouts,
    score_chain,
    score_rollout,
)
from mhdsr.eval.registry import FORECAST, FORECAST_ENSEMBLE, NULL_KEY
from mhdsr.io_utils import make_output_dir, write_json_atomic, write_text_atomic

# ----------------------------------------------------------------------------------------------
# Figures


def _drift_spectra(score_list: list[Any]) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """The model's mean spectrum per lead and the truth's over every scored lead, pooled."""
    model, truth = {}, {}
    for s in score_list:
        for L, e in s.stats["model"].spec.items():
            model[L] = model.get(L, 0.0) + e
            model[(L, "n")] = model.get((L, "n"), 0) + s.stats["model"].count[L]
        for L, e in s.truth.spec.items():
            truth[L] = truth.get(L, 0.0) + e
            truth[(L, "n")] = truth.get((L, "n"), 0) + s.truth.count[L]
    leads = sorted(k for k in model if not isinstance(k, tuple))
    tl = sorted(k for k in truth if not isinstance(k, tuple))
    et = sum(truth[L] for L in tl) / sum(truth[(L, "n")] for L in tl)
    return {L: model[L] / model[(L, "n")] for L in leads}, et


def _member_spectra(score_list: list[Any], leads: list[int]) -> dict[int, dict[str, np.ndarray]]:
    """Pooled mean spectra at ``leads``: every member index ``(E, C, K)``, the ensemble mean's
    and the truth's ``(C, K)``."""
    out: dict[int, dict[str, np.ndarray]] = {}
    for L in leads:

        def pooled(stats: list[Any], L: int = L) -> np.ndarray | None:
            n = sum(st.count.get(L, 0) for st in stats)
            return sum(st.spec[L] for st in stats if L in st.spec) / n if n else None

        p = {"mean": pooled([s.stats["model"] for s in score_list]),
             "truth": pooled([s.truth for s in score_list])}  # fmt: skip
        mem = [
            pooled([s.members[e] for s in score_list]) for e in range(len(score_list[0].members))
        ]
        if mem and all(m is not None for m in mem):
            p["members"] = np.stack(mem)
        out[L] = {k: v for k, v in p.items() if v is not None}
    return out


def _rollout_grid(path: Path) -> tuple[list[str], int]:
    """The channels and lo grid of a rollout file (for the climatology)."""
    import h5py

    with h5py.File(path, "r") as f:
        return [str(c) for c in np.atleast_1d(f.attrs["channels"])], int(f[H.FORECAST].shape[-1])


def _field_panels(score: Any, leads: list[int], figdir: Path, prefix: str) -> list[str]:
    """Panels of the first initial state of one rollout file at the chosen leads."""
    import h5py

    from mhdsr.plots import FAST_RC, comparison_panel, plt, save_png

    written = []
    with h5py.File(score.path, "r") as f:
        for L in leads:
            if score.steps < L:
                continue
            rows = [i for i in range(score.n_init) if score.truth_snapshots[i, L - 1] >= 0]
            if not rows:
                continue
            i = rows[0]
            fields = {"x(t0)": f[H.INIT][i], "truth": f[H.TRUTH][i, L - 1],
                      "model": f[H.FORECAST][i, L - 1], "persistence": f[H.INIT][i]}  # fmt: skip
            title = (f"{score.sim}: initial snapshot {score.init_snapshots[i]}, lead {L} = "
                     f"{score.lead_orbits[L]:g} orbits")  # fmt: skip
            with plt.rc_context(FAST_RC):
                fig = comparison_panel(fields, score.channels, reference="truth",
                                       diffs={"model - truth": ("model", "truth")}, title=title)  # fmt: skip
                name = f"{prefix}_{score.sim.replace('/', '__')}_lead{L:02d}.png"
                save_png(fig, figdir / name, dpi=70)
            written.append(f"figures/{name}")
    return written


def _chain_panels(ch: dict[str, Any], figdir: Path) -> list[str]:
    """Hi-grid panels and spectra of the chain at its scored leads (first initial state)."""
    import h5py

    from mhdsr.analysis.spectra import radial_spectrum
    from mhdsr.athenak import open_run
    from mhdsr.method.grid import upsample_np
    from mhdsr.plots import FAST_RC, comparison_panel, plt, save_png, spectra_figure

    written = []
    with h5py.File(ch["file"], "r") as f, h5py.File(ch["forecast_file"], "r") as r:
        run = open_run(str(r.attrs["run_dir"]))
        chans = [str(c) for c in np.atleast_1d(f.attrs["channels"])]
        rc = [list(np.atleast_1d(r.attrs["channels"])).index(c) for c in chans]
        snap, lead, init_index = f[H.SNAPSHOT][()], f[H.LEAD][()], f[H.INIT_INDEX][()]
        done = set()
        for t in range(len(snap)):
            if snap[t] < 0 or int(lead[t]) in done or init_index[t] != init_index[0]:
                continue
            L = int(lead[t])
            done.add(L)
            y = run.read_snapshot(int(snap[t]), chans).data
            fields = {
                "truth": y, "chain": f[H.SAMPLES][t, 0],
                "forecast+bicubic": upsample_np(f[H.INPUT][t], 2, "bicubic"),
                "persistence+bicubic": upsample_np(r[H.INIT][int(init_index[t])][rc], 2, "bicubic"),
            }  # fmt: skip
            title = (
                f"chain {ch['sim']}: lead {L} ({float(r['lead_orbits'][L - 1]):g} orbits), hi grid"
            )
            with plt.rc_context(FAST_RC):
                fig = comparison_panel(fields, chans, reference="truth",
                                       diffs={"chain - truth": ("chain", "truth")}, title=title)  # fmt: skip
                name = f"chain_fields_{ch['sim'].replace('/', '__')}_lead{L:02d}.png"
                save_png(fig, figdir / name, dpi=60)
                written.append(f"figures/{name}")
                spec = {k: radial_spectrum(v.astype(np.float64)) for k, v in fields.items()}
                fig = spectra_figure(spec, chans, k_nyquist_lo=y.shape[-1] / 4, title=title)
                name = f"chain_spectra_{ch['sim'].replace('/', '__')}_lead{L:02d}.png"
                save_png(fig, figdir / name, dpi=70)
                written.append(f"figures/{name}")
    return written


# ----------------------------------------------------------------------------------------------
# The run


def run_forecast_eval(cfg: EvalConfig, files: dict[str, list[Path]]) -> dict[str, Any]:
    """Evaluate the rollout (``files["forecast"]``) and chain (``files["chain"]``) files.

    Writes ``metrics.json``, ``report.md``, ``summary.md`` and ``figures/*.png`` in
    ``cfg.output_dir``; prints the lead-time table and the goals.

    Raises:
        ForecastEvalError: no rollout file, unreadable files, or a chain file whose rollout file
            is missing.
    """
    from mhdsr.eval.assemble import metric_definitions
    from mhdsr.eval.report import (
        METRICS_VERSION,
        check_clean,
        clean,
        forecast_summary,
        report_markdown,
    )
    from mhdsr.plots import (
        FAST_RC,
        ensemble_energy_figure,
        ensemble_spectra_figure,
        lead_curve_figure,
        lead_energy_figure,
        plt,
        save_png,
        spectra_drift_figure,
    )

    t_start = time.perf_counter()
    fcfg = cfg.forecast
    if not files.get("forecast"):
        raise ForecastEvalError(
            f"config key 'samples': {cfg.samples} holds chain files but no rollout file; the chain "
            "is scored with its rollout file (put both below `samples`)"
        )
    out = make_output_dir(cfg.output_dir, "output_dir")
    figdir = out / "figures"
    figdir.mkdir(exist_ok=True)
    operators = read_operator_rollouts(fcfg.operator_rollouts) if fcfg.operator_rollouts else None
    clim, climatology = None, {NULL_KEY: {"picks": "forecast.climatology.runs is not set"},
                               "picks": None}  # fmt: skip
    if fcfg.climatology.runs:
        clim, picks = climatology_members(fcfg.climatology, *_rollout_grid(files["forecast"][0]))
        climatology = {"runs": list(fcfg.climatology.runs), "picks": picks}
    scores = [score_rollout(p, operators=operators, climatology=clim) for p in files["forecast"]]
    by_sim = {s.sim: s for s in scores}
    if len(by_sim) != len(scores):
        raise ForecastEvalError(
            "two rollout files hold the same sim: " + ", ".join(str(s.path) for s in scores)
        )
    fc = reduce_rollouts(scores)
    chains = [score_chain(p, by_sim) for p in files.get(CHAIN_KIND, [])]
    checks = {}
    if fcfg.hst_check:
        for s in scores:
            snaps = sorted(
                {*s.init_snapshots, *(int(x) for x in s.truth_snapshots.ravel() if x >= 0)}
            )
            checks[s.sim] = energy_check(s.run_dir, snaps, pooled=s.lo_kind == "avgpool2_hi")
    g = goals(fc, chains, goal_orbits=fcfg.goal_orbits, energy_tol=fcfg.energy_tol,
              finite_orbits=fcfg.finite_orbits)  # fmt: skip
    g["ensemble"] = ensemble_goals(fc, chains, fcfg)
    fc["climatology"] = climatology

    # ---- figures
    written: list[str] = []
    chans = fc["channels"]
    curves = fc["all"]["curves"]
    with plt.rc_context(FAST_RC):
        for metric, lab, hl in (("nrmse", "NRMSE", 1.0), ("corr", "correlation", CORR_THRESHOLD)):
            fig = lead_curve_figure(curves, FORECAST_METHODS, metric, chans,
                                f"{lab} vs lead, held-out rollouts ({', '.join(fc['all']['sims'])})", lab, hl)  # fmt: skip
            save_png(fig, figdir / f"forecast_{metric}_vs_lead.png", dpi=80)
            written.append(f"figures/forecast_{metric}_vs_lead.png")
        save_png(lead_energy_figure(curves, FORECAST_METHODS, "domain-mean energies vs lead (pooled)"),
                 figdir / "forecast_energy_vs_lead.png", dpi=80)  # fmt: skip
        written.append("figures/forecast_energy_vs_lead.png")
        save_png(
            spectra_drift_figure(*_drift_spectra(scores), chans),
            figdir / "forecast_spectra_drift.png",
            dpi=80,
        )
        written.append("figures/forecast_spectra_drift.png")
        if "crps" in curves.get("model", {}):
            fig = lead_curve_figure(curves, FORECAST_METHODS, "crps", chans,
                                    "CRPS vs lead (physical units), pooled rollouts", "CRPS")  # fmt: skip
            save_png(fig, figdir / "forecast_crps_vs_lead.png", dpi=80)
            written.append("figures/forecast_crps_vs_lead.png")
        mem = fc["all"].get("members")
        if mem and "ke" in mem and mem["lead"]:
            m, t = curves["model"], fc["all"]["truth"]
            mean = {
                e: [m[e][m["lead"].index(L)] for L in mem["lead"]] for e in ("ke", "me") if e in m
            }
            tru = {
                e: [t[e][t["lead"].index(L)] for L in mem["lead"]] for e in ("ke", "me") if e in t
            }
            fig = ensemble_energy_figure(mem["lead_orbits"], {e: np.asarray(mem[e]) for e in ("ke", "me")},
                                         mean, tru, f"energies vs lead, {mem['n_members']} members (pooled)")  # fmt: skip
            save_png(fig, figdir / "forecast_ensemble_energy_vs_lead.png", dpi=80)
            written.append("figures/forecast_ensemble_energy_vs_lead.png")
            leads = mem["lead"]
            three = sorted({leads[0], leads[len(leads) // 2], leads[-1]})
            panels = {fc["all"]["curves"]["model"]["lead_orbits"][curves["model"]["lead"].index(L)]: v
                      for L, v in _member_spectra(scores, three).items()}  # fmt: skip
            fig = ensemble_spectra_figure(
                panels, chans, "spectra of members, ensemble mean and truth (pooled)"
            )
            save_png(fig, figdir / "forecast_ensemble_spectra.png", dpi=70)
            written.append("figures/forecast_ensemble_spectra.png")
        for ch in chains:
            if "curves" in ch:
                fig = lead_curve_figure(ch["curves"], CHAIN_METHODS, "nrmse", ch["channels"],
                                    f"chain {ch['sim']}: hi-grid NRMSE vs lead", "NRMSE", 1.0)  # fmt: skip
                name = f"chain_nrmse_vs_lead_{ch['sim'].replace('/', '__')}.png"
                save_png(fig, figdir / name, dpi=80)
                written.append(f"figures/{name}")
    for s in scores:
        written += _field_panels(s, list(fcfg.field_leads), figdir, "forecast_fields")
    for ch in chains:
        if "curves" in ch:
            written += _chain_panels(ch, figdir)
    for p in figdir.glob("*.png"):
        if f"figures/{p.name}" not in written:
            p.unlink()

    # ---- files
    metrics = clean({
        "version": METRICS_VERSION,
        "kind": "forecast",
        "code_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "channels": fc["channels"],
        "metric_definitions": metric_definitions(frozenset({FORECAST, FORECAST_ENSEMBLE})),
        "forecast": fc,
        "chain": chains,
        "energy_check": checks,
        "goals": g,
        "config": {"samples": cfg.samples, "output_dir": cfg.output_dir,
                   "forecast": _config_dict(fcfg)},
        "timing": {"total_s": round(time.perf_counter() - t_start, 2)},
    })  # fmt: skip
    check_clean(metrics)
    write_json_atomic(out / "metrics.json", metrics)
    summary = forecast_summary(metrics)
    write_text_atomic(out / "summary.md", summary + "\n")
    write_text_atomic(out / "report.md", report_markdown(metrics, written))
    print(summary, file=sys.stdout)
    print(f"\nwrote {out / 'metrics.json'}, {out / 'report.md'}, summary.md and {len(written)} "
          f"figure(s) in {figdir} ({time.perf_counter() - t_start:.0f} s)", file=sys.stdout)  # fmt: skip
    return metrics


def _config_dict(fcfg: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(fcfg)


def forecast_files(paths: list[Path]) -> dict[str, list[Path]]:
    """``{"sr": [...], "forecast": [...], "chain": [...]}`` by each file's ``kind``.

    Raises:
        ForecastEvalError: an unreadable file.
    """
    from mhdsr.eval.forecast import file_kind

    out: dict[str, list[Path]] = {"sr": [], "forecast": [], "chain": []}
    for p in paths:
        k = file_kind(p)
        out[k if k in out else "sr"].append(p)
    return out


__all__ = ["ForecastEvalError", "forecast_files", "run_forecast_eval"]
