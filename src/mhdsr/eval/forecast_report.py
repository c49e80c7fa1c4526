"""``mhdsr eval`` of forecast rollouts and chain files: metrics.json, figures, report.md and
the lead-time table (summary.md, also printed). Scores: :mod:`mhdsr.eval.forecast`.

Figures (``figures/``): NRMSE and correlation against lead time in orbits per channel (model,
persistence, linear extrapolation), the energies' relative error against lead, the drift of
the model's spectrum with lead against the truth's, fields at chosen leads (initial state,
truth, model, persistence, model - truth), and for the chain its hi-grid NRMSE against lead
and the fields and spectra at each scored lead.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mhdsr.eval.config import EvalConfig
from mhdsr.eval.forecast import (
    CHAIN_KIND,
    CHAIN_METHODS,
    CORR_THRESHOLD,
    FORECAST_METHODS,
    ForecastEvalError,
    energy_check,
    goals,
    reduce_rollouts,
    score_chain,
    score_rollout,
)
from mhdsr.io_utils import make_output_dir, write_json_atomic, write_text_atomic

DEFINITIONS = (
    ("lead", "k dt after the initial time t0 (k = 1 .. steps), in orbits; dt = the model's step"),
    ("model / persistence / linear", "the forecast; x(t0); x(t0) + k (x(t0) - x(t0 - dt))"),
    ("NRMSE", "sqrt(<(p - y)^2>) / std(y) over the grid, per channel, mean over initial states"),
    ("corr", "Pearson correlation of p and y over the grid, per channel, mean over initial states"),
    ("corr-0.5 lead", "the first lead at which corr falls below 0.5 (> L dt: never in the rollout)"),
    ("KE, ME", "<rho |v|^2 / 2>, <|B|^2 / 2> (code units, 4 pi absorbed); error = E_p / E_y - 1"),
    ("band error", "mean over k in the band of |log10 E_p(k) / E_y(k)|, spectra averaged over "
                   "initial states at each lead; lo grid: resolved [1, 32), transition [32, 64)"),
    ("chain", "`mhdsr sample` of every forecast step (ensemble mean; 'chain member': single "
              "members), scored on the hi grid against the hi run at t0 + k dt"),
    ("x+bicubic", "periodic bicubic Up of x(t0) (persistence), of the forecast, of avgpool2(y)"),
)  # fmt: skip


def _f(v: Any, nd: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{nd}g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


def _verdict(v: bool | None) -> str:
    return {True: "MET", False: "NOT MET", None: "undetermined"}[v]


# ----------------------------------------------------------------------------------------------
# Tables


def lead_table(fc: dict[str, Any]) -> str:
    """The lead-time table of the pooled rollouts (mean over channels)."""
    c = fc["all"]["curves"]
    m = c["model"]
    head = ("| lead [orbits] | n | NRMSE model | NRMSE persistence | NRMSE linear | corr model | "
            "corr persistence | corr linear | KE err model | ME err model | KE err persist. | "
            "ME err persist. |")  # fmt: skip
    lines = [head, "|" + "---|" * (head.count("|") - 1)]

    def at(name: str, key: str, i: int) -> Any:
        cur = c.get(name, {})
        if not cur or m["lead"][i] not in cur["lead"]:
            return None
        j = cur["lead"].index(m["lead"][i])
        return cur[key][j] if key in cur else None

    for i in range(len(m["lead"])):
        lines.append(
            f"| {m['lead_orbits'][i]:.2f} | {m['n'][i]} | "
            + " | ".join(_f(at(n, "nrmse_mean", i)) for n in FORECAST_METHODS) + " | "
            + " | ".join(_f(at(n, "corr_mean", i)) for n in FORECAST_METHODS) + " | "
            + " | ".join(_f(at(n, k, i), 2) for n in ("model", "persistence") for k in ("ke_rel", "me_rel"))
            + " |"
        )  # fmt: skip
    return "\n".join(lines)


def channel_table(fc: dict[str, Any], metric: str, lead_index: int = 0) -> str:
    """Per channel ``metric`` at one lead for every method (and model / persistence)."""
    c = fc["all"]["curves"]
    chans = fc["channels"]
    L = c["model"]["lead"][lead_index]
    o = c["model"]["lead_orbits"][lead_index]
    lines = [f"{metric} at lead {o:.2f} orbits (k = {L}), pooled over the held-out rollouts:", "",
             "| method | " + " | ".join(chans) + " |", "|---|" + "---|" * len(chans)]  # fmt: skip
    for name in FORECAST_METHODS:
        cur = c[name]
        if L not in cur["lead"]:
            continue
        j = cur["lead"].index(L)
        lines.append(f"| {name} | " + " | ".join(_f(cur[metric][ch][j]) for ch in chans) + " |")
    if metric == "nrmse":
        p = c["persistence"]
        j = p["lead"].index(L)
        lines.append("| model / persistence | " + " | ".join(
            _f(c["model"]["nrmse"][ch][lead_index] / p["nrmse"][ch][j]) for ch in chans) + " |")  # fmt: skip
    return "\n".join(lines)


def corr_lead_table(fc: dict[str, Any]) -> str:
    """The correlation-0.5 lead per channel for each method."""
    c = fc["all"]["curves"]
    chans = [*fc["channels"], "mean"]
    last = fc["all"]["rollout_orbits"]
    lines = ["| method | " + " | ".join(chans) + " |", "|---|" + "---|" * len(chans)]
    for name in FORECAST_METHODS:
        vals = [c[name]["corr_lead"][ch] for ch in chans]
        lines.append(
            f"| {name} | "
            + " | ".join(f"> {last:g}" if v is None else f"{v:g}" for v in vals)
            + " |"
        )
    return "\n".join(lines)


def chain_table(ch: dict[str, Any]) -> str:
    """Hi-grid NRMSE (mean over channels) per lead of a chain file and its baselines."""
    c = ch["curves"]
    lines = ["| lead [orbits] | n | " + " | ".join(f"NRMSE {m}" for m in CHAIN_METHODS) + " | corr chain | corr persistence+bicubic |",
             "|---|---|" + "---|" * (len(CHAIN_METHODS) + 2)]  # fmt: skip
    for i, L in enumerate(c["chain"]["lead"]):
        row = [f"{c['chain']['lead_orbits'][i]:.2f}", str(c["chain"]["n"][i])]
        row += [_f(c[m]["nrmse_mean"][c[m]["lead"].index(L)]) for m in CHAIN_METHODS]
        row += [_f(c["chain"]["corr_mean"][i]), _f(c["persistence+bicubic"]["corr_mean"][i])]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def chain_channel_table(ch: dict[str, Any], lead_index: int = 0) -> str:
    """Per-channel hi-grid NRMSE at one lead for the chain and its baselines."""
    c = ch["curves"]
    chans = ch["channels"]
    L = c["chain"]["lead"][lead_index]
    lines = ["| method | " + " | ".join(chans) + " |", "|---|" + "---|" * len(chans)]
    for m in CHAIN_METHODS:
        j = c[m]["lead"].index(L)
        lines.append(f"| {m} | " + " | ".join(_f(c[m]["nrmse"][x][j]) for x in chans) + " |")
    return "\n".join(lines)


def goals_table(g: dict[str, Any]) -> str:
    """The goals with their numbers."""
    rows = ["| goal | verdict | numbers |", "|---|---|---|"]
    o = g["one_step"]
    if o.get("met") is not None:
        worst = max(o["ratio"], key=o["ratio"].get)
        rows.append(f"| one-step NRMSE <= 0.5 x persistence, every channel | {_verdict(o['met'])} | "
                    f"ratio model/persistence: " + ", ".join(f"{k} {v:.2f}" for k, v in o["ratio"].items())
                    + f" (worst {worst}) |")  # fmt: skip
    else:
        rows.append(f"| one-step NRMSE | undetermined | {o.get('why')} |")
    cl = g["corr_lead"]
    txt = ", ".join(
        f"{k} {_f(v['model'])} vs {_f(v['persistence'])}" for k, v in cl["per_channel"].items()
    )
    rows.append(f"| corr-0.5 lead >= 2 x persistence's, every channel | {_verdict(cl['met'])} | "
                f"model vs persistence [orbits; — = not below 0.5 within {cl['rollout_orbits']:g}]: {txt} |")  # fmt: skip
    e = g["energy"]
    if e.get("met") is not None:
        rows.append(f"| KE, ME within {e['tol']:.0%} over the first orbit | {_verdict(e['met'])} | "
                    f"worst mean |E/E_true - 1| at leads {e['leads_orbits']}: KE {e['worst_mean_abs_rel']['ke']:.3f}, "
                    f"ME {e['worst_mean_abs_rel']['me']:.3f} |")  # fmt: skip
    else:
        rows.append(f"| energies | undetermined | {e.get('why')} |")
    f = g["finite"]
    rows.append(f"| finite for {f['required_orbits']:g} orbits | {_verdict(f['met'])} | finite for "
                f"{f['finite_orbits']:g} of {f['rollout_orbits']:g} orbits rolled out |")  # fmt: skip
    c = g["chain"]
    if c.get("met") is not None:
        txt = "; ".join(
            f"{r['sim']} {r['lead_orbits']:g} orb: {r['chain_mean']:.3f} vs {r['baseline_mean']:.3f}"
            f" ({sum(r['better'].values())}/{len(r['better'])} channels)" for r in c["rows"])  # fmt: skip
        rows.append(f"| chain NRMSE < persistence+bicubic at every lead <= 1 orbit, every channel | "
                    f"{_verdict(c['met'])} | mean NRMSE chain vs baseline: {txt} |")  # fmt: skip
    else:
        rows.append(f"| chain | undetermined | {c.get('why')} |")
    return "\n".join(rows)


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
            fields = {"x(t0)": f["init"][i], "truth": f["truth"][i, L - 1],
                      "model": f["forecast"][i, L - 1], "persistence": f["init"][i]}  # fmt: skip
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
    from mhdsr.eval.interp import upsample_np
    from mhdsr.plots import FAST_RC, comparison_panel, plt, save_png, spectra_figure

    written = []
    with h5py.File(ch["file"], "r") as f, h5py.File(ch["forecast_file"], "r") as r:
        run = open_run(str(r.attrs["run_dir"]))
        chans = [str(c) for c in np.atleast_1d(f.attrs["channels"])]
        rc = [list(np.atleast_1d(r.attrs["channels"])).index(c) for c in chans]
        snap, lead, init_index = f["snapshot"][()], f["lead"][()], f["init_index"][()]
        done = set()
        for t in range(len(snap)):
            if snap[t] < 0 or int(lead[t]) in done or init_index[t] != init_index[0]:
                continue
            L = int(lead[t])
            done.add(L)
            y = run.read_snapshot(int(snap[t]), chans).data
            fields = {
                "truth": y, "chain": f["samples"][t, 0],
                "forecast+bicubic": upsample_np(f["input"][t], 2, "bicubic"),
                "persistence+bicubic": upsample_np(r["init"][int(init_index[t])][rc], 2, "bicubic"),
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
    from mhdsr.eval.report import check_clean, clean
    from mhdsr.plots import (
        FAST_RC,
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
    scores = [score_rollout(p) for p in files["forecast"]]
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
        "kind": "forecast",
        "definitions": dict(DEFINITIONS),
        "forecast": fc,
        "chain": chains,
        "energy_check": checks,
        "goals": g,
        "config": {"samples": cfg.samples, "output_dir": cfg.output_dir,
                   "forecast": {k: getattr(fcfg, k) for k in fcfg.__dataclass_fields__}},
        "timing": {"total_s": round(time.perf_counter() - t_start, 2)},
    })  # fmt: skip
    check_clean(metrics)
    write_json_atomic(out / "metrics.json", metrics)
    summary = summary_markdown(fc, chains, g)
    write_text_atomic(out / "summary.md", summary + "\n")
    write_text_atomic(out / "report.md", report_markdown(fc, chains, checks, g, written))
    print(summary, file=sys.stdout)
    print(f"\nwrote {out / 'metrics.json'}, {out / 'report.md'}, summary.md and {len(written)} "
          f"figure(s) in {figdir} ({time.perf_counter() - t_start:.0f} s)", file=sys.stdout)  # fmt: skip
    return metrics


def summary_markdown(fc: dict[str, Any], chains: list[dict[str, Any]], g: dict[str, Any]) -> str:
    """The lead-time table (pooled, channel means), the chain table and the goals."""
    parts = [
        f"## Forecast lead-time table (held-out rollouts {', '.join(fc['all']['sims'])}; mean over "
        f"the {len(fc['channels'])} channels; dt = {fc['dt_orbits']:g} orbits)", "", lead_table(fc), "",
        "Correlation-0.5 lead [orbits]:", "", corr_lead_table(fc), "",
    ]  # fmt: skip
    for ch in chains:
        if "curves" in ch:
            parts += [f"## Chain {ch['sim']} (hi grid, {ch['members']} member(s); mean over channels)",
                      "", chain_table(ch), ""]  # fmt: skip
    parts += ["## Goals", "", goals_table(g)]
    return "\n".join(parts)


def report_markdown(fc: dict[str, Any], chains: list[dict[str, Any]], checks: dict[str, Any],
                    g: dict[str, Any], figures: list[str]) -> str:  # fmt: skip
    """report.md: definitions, the tables per channel, per sim, the chain, the energy check."""
    lines = ["# Forecast evaluation", "", "## Definitions", ""]
    lines += [f"- **{k}**: {v}" for k, v in DEFINITIONS]
    lines += ["", summary_markdown(fc, chains, g), ""]
    lines += ["## Per channel", "", channel_table(fc, "nrmse"), "", channel_table(fc, "corr"), ""]
    if len(fc["all"]["curves"]["model"]["lead"]) > 1:
        lines += [channel_table(fc, "corr", 1), ""]
    lines += ["## Per sim", ""]
    for sim, d in fc["sims"].items():
        m = d["curves"]["model"]
        p = d["curves"]["persistence"]
        lines += [f"### {sim} ({d['lo_kind']}, initial snapshots {d['init_snapshots']}, finite for "
                  f"{d['finite_orbits']:g} orbits)", "",
                  "| lead [orbits] | n | NRMSE model | NRMSE persistence | corr model | corr persistence |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for i, L in enumerate(m["lead"]):
            j = p["lead"].index(L) if L in p["lead"] else None
            lines.append(f"| {m['lead_orbits'][i]:.2f} | {m['n'][i]} | {_f(m['nrmse_mean'][i])} | "
                         f"{_f(p['nrmse_mean'][j]) if j is not None else '—'} | {_f(m['corr_mean'][i])} | "
                         f"{_f(p['corr_mean'][j]) if j is not None else '—'} |")  # fmt: skip
        lines.append("")
    for ch in chains:
        if "curves" in ch:
            lines += [
                f"## Chain {ch['sim']}: per channel, first lead",
                "",
                chain_channel_table(ch),
                "",
            ]
        else:
            lines += [f"## Chain {ch['sim']}", "", ch.get("skipped", ""), ""]
    if checks:
        lines += ["## Energy cross-check against AthenaK's history file", "",
                  "Fields' KE = <rho |v|^2/2> and ME = <|B|^2/2> (cell-centred B) against the "
                  "history's sums of i-KE and i-ME at the same times (linear interpolation). The "
                  "history's ME averages the SQUARED face fields (0.25 (B_f-^2 + B_f+^2)), the "
                  "cell-centred B is their mean: its energy is lower by a truncation-level amount.",
                  "", "| run | snapshots | KE max abs rel | ME max abs rel | ME rel (min..max) | ME avgpool2 rel (min..max) |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for sim, c in checks.items():
            if "error" in c:
                lines.append(f"| {sim} | — | — | — | {c['error']} | — |")
                continue
            lo = c["me_avgpool2_rel"]
            lines.append(f"| {sim} | {len(c['snapshots'])} | {c['ke_max_abs_rel']:.2e} | {c['me_max_abs_rel']:.2e} | "
                         f"{min(c['me_rel']):+.2e} .. {max(c['me_rel']):+.2e} | "
                         + (f"{min(lo):+.2e} .. {max(lo):+.2e}" if lo else "—") + " |")  # fmt: skip
        lines.append("")
    lines += ["## Figures", ""] + [f"- [{Path(f).name}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


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
