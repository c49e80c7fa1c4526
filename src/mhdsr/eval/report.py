"""metrics.json hygiene, the summary tables and report.md of ``mhdsr eval``.

- :func:`clean` makes a nested structure JSON-safe: numpy scalars/arrays become Python numbers
  and lists, and every non-finite number becomes ``null`` with a reason recorded next to it
  (``null_reasons: {key: reason}`` in the enclosing object), so the file has no NaN/Infinity.
- :func:`summary_table`: per group, one compact table per summary metric of the registry
  (generated-band error, transition-band coherence, ensemble-mean NRMSE, CRPS, jz PDF distance),
  every method next to every baseline; printed to stdout and pasted into the report.
- :func:`report_markdown` renders report.md: the definitions, the tables and their reading
  (:mod:`mhdsr.eval.reading`) are all generated from the metric registry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mhdsr.eval.forecast import CHAIN_METHODS, FORECAST_METHODS
from mhdsr.eval.reading import curves_of, fmt, get, score
from mhdsr.eval.registry import (
    FORECAST,
    FORECAST_ENSEMBLE,
    NULL_KEY,
    SR_KINDS,
    TABLES,
    Metric,
    for_kinds,
    in_table,
    registered,
)

#: Version of the metrics.json schema (both kinds, "sr" and "forecast"): 2 = one registry's
#: ``metric_definitions`` in both, a ``kind`` field, no keys kept for earlier versions.
METRICS_VERSION = 2
#: Definitions that are not per-snapshot metrics (the registry provides the rest).
EXTRA_LINES = (
    (
        "E(k)",
        "shell-summed power spectrum, F = fft2(f)/N^2, E(k) = sum of |F|^2 over "
        "round(|k|) = k, k = 1..N/2 in units of 2 pi/L; averaged over snapshots and members; "
        "the lo input on its own grid; the shaded band on the spectra figures is the ensemble "
        "spread (member min..max, averaged over snapshots).",
    ),
    (
        "orbits",
        "times are given in orbits, t / (2 pi / Omega), Omega = omega0 of the input deck (1).",
    ),
    (
        "domain gap",
        "native lo inputs of the held-out sims vs avgpool2(hi) of the reference "
        "split: mean lo-grid spectra (band errors) and value distributions (W1 / std, KS).",
    ),
)


def _reason(v: float) -> str:
    return f"non-finite value ({v!r}): undefined here (e.g. a zero denominator)"


def clean(obj: Any) -> Any:
    """JSON-safe copy of ``obj`` (dicts, lists, tuples, numpy and Python scalars, strings).

    Non-finite floats become ``None``; each is explained in the enclosing dict's
    ``null_reasons`` (key -> reason, or ``"<key>[i]"`` for list items). Existing reasons are kept.
    """
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        reasons: dict[str, str] = dict(obj.get(NULL_KEY, {}))
        for k, v in obj.items():
            if k == NULL_KEY:
                continue
            key = str(k)
            if isinstance(v, np.ndarray):
                v = v.tolist()
            if isinstance(v, (list, tuple)):
                items = []
                for i, x in enumerate(v):
                    if _is_nonfinite(x):
                        reasons.setdefault(f"{key}[{i}]", _reason(float(x)))
                        items.append(None)
                    else:
                        items.append(clean(x))
                out[key] = items
            elif _is_nonfinite(v):
                reasons.setdefault(key, _reason(float(v)))
                out[key] = None
            else:
                out[key] = clean(v)
        if reasons:
            out[NULL_KEY] = reasons
        return out
    if isinstance(obj, (list, tuple)):
        return [clean(x) for x in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, np.generic):
        return clean(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _is_nonfinite(x: Any) -> bool:
    return isinstance(x, (float, np.floating)) and not math.isfinite(float(x))


def check_clean(obj: Any, where: str = "metrics") -> None:
    """Assert every number in ``obj`` is finite and every ``None`` has a reason nearby.

    Raises:
        ValueError: naming the path of the first offending value.
    """
    if isinstance(obj, Mapping):
        reasons = obj.get(NULL_KEY, {})
        for k, v in obj.items():
            if k == NULL_KEY:
                continue
            if v is None and k not in reasons:
                raise ValueError(f"{where}.{k} is null without a reason")
            if isinstance(v, list):
                for i, x in enumerate(v):
                    if x is None and f"{k}[{i}]" not in reasons:
                        raise ValueError(f"{where}.{k}[{i}] is null without a reason")
            check_clean(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, x in enumerate(obj):
            check_clean(x, f"{where}[{i}]")
    elif isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"{where} is not finite: {obj}")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += [
        "| " + " | ".join(x if isinstance(x, str) else fmt(x) for x in row) + " |" for row in rows
    ]
    return "\n".join(lines)


def _values_row(
    m: Metric, summ: Mapping[str, Any], curves: Sequence[str], ch: str, target: Any
) -> list[str]:
    """Formatted values of one metric and channel across ``curves``; the best one in bold."""
    vals = [get(summ, (c, ch, *m.path())) for c in curves]
    t = float(target) if isinstance(target, (int, float)) else None
    scores = [score(m, float(v), t) if isinstance(v, (int, float)) else None for v in vals]
    ok = [s for s in scores if s is not None]
    best = min(ok) if len(ok) > 1 else None
    return [
        f"**{fmt(v)}**" if best is not None and s == best else fmt(v) for v, s in zip(vals, scores)
    ]


def _has(summ: Mapping[str, Any], curve: str, m: Metric, channels: Sequence[str]) -> bool:
    """Whether a curve reports metric ``m`` (a value or a null with its reason)."""
    for ch in channels:
        parent = get(summ, (curve, ch, *m.path()[:-1]))
        if isinstance(parent, Mapping) and m.path()[-1] in parent:
            return True
    return False


def _metric_table(
    metrics: Mapping[str, Any], group: str, ms: Sequence[Metric], *, with_metric: bool
) -> str | None:
    """Markdown table of metrics ``ms`` in one group: rows channel (x metric), columns curves
    (+ the target's value for metrics compared with it); ``None`` if nothing to show."""
    summ = metrics["summary"].get(group, {})
    methods, baselines = curves_of(metrics, group)
    chans = metrics["channels"]
    curves = [c for c in methods + baselines if any(_has(summ, c, m, chans) for m in ms)]
    if not curves:
        return None
    targets = metrics.get("targets", {}).get(group, {})
    tname = "truth" if group != "heldout" else "reference"
    with_target = any(m.better == "truth" for m in ms)
    header = ["channel"] + (["metric"] if with_metric else []) + curves
    header += [tname] if with_target else []
    rows = []
    for ch in chans:
        for m in ms:
            if m.channels is not None and ch not in m.channels:
                continue
            tv = get(targets.get("metrics", {}), (ch, *m.path()))
            row = [ch] + ([m.label] if with_metric else []) + _values_row(m, summ, curves, ch, tv)
            if all(v == "—" for v in row[-len(curves) :]):
                continue
            rows.append(row + ([fmt(tv) if m.better == "truth" else ""] if with_target else []))
    return _table(header, rows) if rows else None


def summary_metrics() -> list[Metric]:
    """The registered metrics shown in summary.md (``summary=True``)."""
    return [m for m in registered() if m.summary and m.per_channel]


def summary_table(metrics: Mapping[str, Any]) -> str:
    """summary.md / stdout: per group, one compact table per summary metric (rows channels,
    columns every method and baseline; the best value of a row in bold)."""
    out = []
    for group, info in metrics["groups"].items():
        parts = [f"### {group}: {info['description']}"]
        for m in summary_metrics():
            t = _metric_table(metrics, group, [m], with_metric=False)
            if t is not None:
                sense = {"lower": "lower is better", "higher": "higher is better",
                         "one": "1 is best", "truth": "closest to the truth is best",
                         "none": "no ranking"}[m.better]  # fmt: skip
                parts.append(f"**{m.label}** ({sense})\n\n{t}")
        out.append("\n\n".join(parts))
    return "\n\n".join(out)


def _reading_block(lines: Sequence[str]) -> str:
    return "\n".join(f"- {x}" for x in lines)


def _group_details(metrics: Mapping[str, Any], group: str) -> str:
    readings = metrics.get("readings", {}).get(group, {})
    parts = []
    for table, title in TABLES.items():
        ms = [m for m in in_table(table) if m.per_channel]
        t = _metric_table(metrics, group, ms, with_metric=True) if ms else None
        if t is None:
            continue
        parts.append(f"### {title}\n\n{t}")
        if readings.get(table):
            parts.append("Reading:\n\n" + _reading_block(readings[table]))
    shape = _native_shape_table(metrics, group)
    if shape:
        parts.append(shape)
    goal = _goal_tables(metrics, group)
    if goal:
        parts.append(goal)
        if readings.get("goal"):
            parts.append("Reading:\n\n" + _reading_block(readings["goal"]))
    return "\n\n".join(parts)


#: Baselines shown next to the methods in the held-out shape-error table.
SHAPE_BASELINES = ("spline", "spectral-noise")


def _native_shape_table(metrics: Mapping[str, Any], group: str) -> str | None:
    """The held-out shape-error table (:mod:`mhdsr.eval.native_shape`): channel, floor, each
    method's and spline / spectral-noise's shape error, the methods' verdicts."""
    block = get(metrics, ("native_shape", group))
    if not isinstance(block, Mapping):
        return None
    title = "### Level-free spectral shape error against every hi seed\n\n"
    if not block.get("available"):
        return title + f"Not computed: {block.get('reason', '')}"
    curves = block["curves"]
    methods = [m["name"] for m in metrics["methods"] if m["name"] in curves]
    shown = methods + [b for b in SHAPE_BASELINES if b in curves]
    fl = block["floor"]
    rows = []
    for ch in metrics["channels"]:
        floor = get(fl, ("channels", ch, "shape")) if fl.get("available") else None
        verdict = ", ".join(
            (f"{m}: " if len(methods) > 1 else "") + ("met" if curves[m][ch]["met"] else "not met")
            for m in methods
        )
        rows.append([ch, fmt(floor), *(fmt(curves[c][ch]["shape_error"]) for c in shown),
                     verdict or "—"])  # fmt: skip
    ref = block["reference"]
    floor_txt = (
        f"The floor is the shape error a real {metrics['grids']['n_hi']}² run itself scores "
        "against the mean of the other seeds (leave-one-out over the "
        f"{len(ref['seeds'])} seeds): a model at most {fmt(block['floor_factor'])} x the floor "
        f"(or at most {fmt(block['shape_bar'])} dex) is as close to the reference as one "
        "realization is to another."
        if fl.get("available")
        else f"Floor unavailable: {fl.get('reason', '')}."
    )
    return (
        title
        + f"Reference: {ref['description']}. {block['definition']} Rule: {block['rule']}. "
        + floor_txt
        + "\n\n"
        + _table(["channel", "floor", *shown, "verdict"], rows)
    )


#: At most this many snapshots per method in the per-snapshot goal table (the worst ones).
GOAL_ROWS = 20


def _worst_diff(snapshot: Mapping[str, Any]) -> float:
    """The lowest defined coherence difference of one per-snapshot row (+inf if none is)."""
    vals = [x for x in snapshot["diff"].values() if x is not None and math.isfinite(x)]
    return min(vals, default=math.inf)


def _goal_tables(metrics: Mapping[str, Any], group: str) -> str | None:
    goal = get(metrics, ("goals", "transition_coherence"))
    per_method = get(goal, ("groups", group)) if goal and goal.get("available") else None
    if not per_method:
        return None
    chans = metrics["channels"]
    rows = []
    for name, g in per_method.items():
        snaps = g["per_snapshot"]
        if len(snaps) > GOAL_ROWS:
            snaps = sorted(snaps, key=_worst_diff)[:GOAL_ROWS]
        for s in snaps:
            rows.append(
                [name, f"{s['sim']} n{s['snapshot']}", fmt(s["orbit"])]
                + [fmt(s["diff"][ch]) for ch in chans]
            )
        rows.append(
            [f"**{name}**", "**min**", ""]
            + [
                ("✗ " if v["pass"] is False else "") + f"**{fmt(v['min_diff'])}**"
                for v in (g["channels"][ch] for ch in chans)
            ]
        )
    head = (
        f"### Transition-band coherence minus spline's, per snapshot\n\nGoal: {goal['rule']}; "
        f"✗ marks a channel below -{goal['margin']}"
        + (
            f" (the {GOAL_ROWS} worst snapshots per method are listed)"
            if any(len(g["per_snapshot"]) > GOAL_ROWS for g in per_method.values())
            else ""
        )  # fmt: skip
        + ".\n\n"
    )
    return head + _table(["method", "snapshot", "orbit", *chans], rows)


def _physics_table(metrics: Mapping[str, Any]) -> str:
    phys = metrics["physics"]
    if not phys.get("groups"):
        return phys.get("note", "not computed")
    ms = [m for m in for_kinds(SR_KINDS) if not m.per_channel]
    rows = []
    for group, curves in phys["groups"].items():
        for curve, v in curves.items():
            rows.append([group, curve, *(v.get(m.name) for m in ms)])
    return _table(["group", "fields", *(m.label for m in ms)], rows)


def _domain_gap_text(metrics: Mapping[str, Any]) -> str:
    dg = metrics["domain_gap"]
    if not dg.get("available"):
        return f"Not computed: {dg.get('reason', '')}"
    rows = [
        [
            ch,
            v["mean_native"],
            v["mean_reference"],
            v["std_native"],
            v["std_reference"],
            v["w1_norm"],
            v["ks"],
            get(v, ("spectral_error", "resolved")),
            get(v, ("spectral_error", "transition")),
        ]
        for ch, v in dg["channels"].items()
    ]
    orb = dg.get("reference_orbit_range")
    when = f", orbits {fmt(orb[0])}–{fmt(orb[1])}" if orb else ""
    head = (
        f"Native lo: {dg['native']}. Reference: {dg['reference']}{when}. Histograms from "
        f"{dg['hist_values']['native']} / {dg['hist_values']['reference']} values per channel.\n\n"
    )
    return head + _table(
        [
            "channel",
            "mean native",
            "mean ref",
            "std native",
            "std ref",
            "W1/std",
            "KS",
            "resolved err",
            "transition err",
        ],
        rows,
    )


def metric_lines(
    kinds: frozenset[str] = SR_KINDS, extra: Sequence[tuple[str, str]] = EXTRA_LINES
) -> list[str]:
    """The report's definition list: every registered metric of these curve kinds (by table)
    and the extra terms."""
    lines = []
    for table, title in TABLES.items():
        ms = [m for m in in_table(table) if m.kinds & kinds]
        if ms:
            lines.append(f"- {title}:")
            lines += [f"  - **{m.label}** (`{m.name}`): {m.definition}" for m in ms]
    lines += [f"- **{name}**: {text}" for name, text in extra]
    return lines


def report_markdown(metrics: Mapping[str, Any], figures: Sequence[str]) -> str:
    """report.md text: inputs, metric definitions, tables with their reading, figure links; of a
    forecast evaluation (``metrics["kind"] == "forecast"``) the lead-time tables instead."""
    if metrics.get("kind") == "forecast":
        return _forecast_report(metrics, figures)
    g = metrics["grids"]
    res, tra, gen = (
        [fmt(x) for x in g["bands"][k]] for k in ("resolved", "transition", "generated")
    )
    inp = metrics["inputs"]
    lines = [
        "# mhdsr evaluation report",
        "",
        f"Samples: `{inp['samples']}` ({inp['n_files']} files); shards: `{inp['shards']}`; "
        f"mhdsr {metrics['code_version']}. Full numbers: [metrics.json](metrics.json).",
        "",
        "## Methods",
        "",
    ]
    for m in metrics["methods"]:
        s = m.get("sampler") or {}
        lines.append(
            f"- **{m['name']}**: sampler {s.get('name')} ({s.get('steps')} steps, NFE "
            f"{s.get('nfe')}, grid {s.get('grid')}), weights {m.get('weights')}, checkpoint step "
            f"{m.get('checkpoint_step')}, {m['ensemble_size']} member(s), sims {len(m['sims'])}"
        )
    bdefs = metrics.get("baseline_definitions", {})
    if metrics["baselines"]:
        lines.append("- baselines (computed from the same lo inputs):")
        for b in metrics["baselines"]:
            d = bdefs.get(b, {})
            kind = "stochastic, as many members as the methods" if d.get("stochastic") else (
                "deterministic")  # fmt: skip
            lines.append(f"  - **{b}** ({kind}): {d.get('description', '')}")
    else:
        lines.append("- baselines: none")
    lines += [
        "",
        "## Metrics",
        "",
        f"Bands relative to the lo grid's Nyquist k_n = N_lo/2 = {fmt(g['k_n'])} "
        f"(N_lo = {g['n_lo']}, N_hi = {g['n_hi']}): resolved [{res[0]}, {res[1]}), "
        f"transition [{tra[0]}, {tra[1]}), generated [{gen[0]}, {gen[1]}]. Bold = the best "
        "value of a row.",
        "",
        *metric_lines(),
    ]
    lines += ["", "## Summary", "", summary_table(metrics), ""]
    for group, info in metrics["groups"].items():
        lines += [
            f"## {group} in detail",
            "",
            info["description"],
            "",
            _group_details(metrics, group),
            "",
        ]
    readings = metrics.get("readings", {})
    lines += ["## Physics consistency", "", _physics_table(metrics), ""]
    if readings.get("physics"):
        lines += ["Reading:", "", _reading_block(readings["physics"]), ""]
    lines += ["## Domain gap", "", _domain_gap_text(metrics), ""]
    if readings.get("domain_gap"):
        lines += ["Reading:", "", _reading_block(readings["domain_gap"]), ""]
    if metrics.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in metrics["notes"]] + [""]
    lines += ["## Figures", ""]
    for f in figures:
        lines += [f"![{f}]({f})", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Forecast evaluation (metrics.json kind "forecast"): the same definition list (the registry's
# forecast metrics and these terms), its tables and summary

#: Terms of the forecast report that are not per-lead metrics (the registry provides the rest).
FORECAST_TERMS = (
    ("lead", "k dt after the initial time t0 (k = 1 .. steps), in orbits; dt = the model's step"),
    ("model / persistence / linear", "the forecast; x(t0); x(t0) + k (x(t0) - x(t0 - dt))"),
    ("corr-0.5 lead", "the first lead at which corr falls below 0.5 (> L dt: never in the rollout)"),
    ("band error", "mean over k in the band of |log10 E_p(k) / E_y(k)|, spectra averaged over "
                   "initial states at each lead; lo grid: resolved [1, 32), transition [32, 64)"),
    ("chain", "`mhdsr sample` of every forecast step (ensemble mean; 'chain member': single "
              "members), scored on the hi grid against the hi run at t0 + k dt"),
    ("x+bicubic", "periodic bicubic Up of x(t0) (persistence), of the forecast, of avgpool2(y)"),
    ("x+spline", "periodic cubic-spline Up (mhdsr.method.grid) of x(t0), of the paired FNO forecast"),
    ("ensemble rollout", "model = the ensemble mean (deterministic scores); CRPS, spread/skill, "
                         "jz PDF, div B of the members; a deterministic forecast is one member "
                         "(its CRPS = its MAE)"),
    ("fno", "the deterministic FNO rollout of the same sim and initial snapshot"),
    ("climatology", "E train snapshots of an orbit window (forecast.climatology), the same "
                    "ensemble at every (initial state, lead)"),
    ("CRPS/σ", "mean over channels of CRPS_c / std_c(y) (truth std averaged over initial states)"),
    ("worst member", "max over members of |mean over initial states of E_member / E_y - 1|"),
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
    """The lead-time table of the pooled rollouts (mean over channels): NRMSE and corr of the
    model (an ensemble: its mean) and every baseline present, CRPS / std(y) (mean over
    channels of the per-channel CRPS over the truth's std: comparable across channels),
    spread/skill (mean over channels), the energies' errors of the model and, for ensembles,
    of the worst member (mean over initial states)."""
    c = fc["all"]["curves"]
    m = c["model"]
    mem = fc["all"].get("members") or {}
    methods = [n for n in FORECAST_METHODS if n in c]
    crps = [n for n in methods if "crps_norm_mean" in c[n]]
    ss = [n for n in methods if "spread_skill_mean" in c[n]]
    head = ("| lead [orbits] | n | " + " | ".join(f"NRMSE {n}" for n in methods) + " | "
            + " | ".join(f"corr {n}" for n in methods) + " | "
            + "".join(f"CRPS/σ {n} | " for n in crps) + "".join(f"spread/skill {n} | " for n in ss)
            + "KE err model | ME err model | KE err persist. | ME err persist. |"
            + (" KE err worst member | ME err worst member |" if "ke_worst_abs_rel" in mem else ""))  # fmt: skip
    lines = [head, "|" + "---|" * (head.count("|") - 1)]

    def at(name: str, key: str, i: int) -> Any:
        cur = c.get(name, {})
        if not cur or m["lead"][i] not in cur["lead"]:
            return None
        j = cur["lead"].index(m["lead"][i])
        return cur[key][j] if key in cur else None

    def at_mem(key: str, i: int) -> Any:
        L = m["lead"][i]
        return mem[key][mem["lead"].index(L)] if key in mem and L in mem["lead"] else None

    for i in range(len(m["lead"])):
        row = (f"| {m['lead_orbits'][i]:.2f} | {m['n'][i]} | "
               + " | ".join(_f(at(n, "nrmse_mean", i)) for n in methods) + " | "
               + " | ".join(_f(at(n, "corr_mean", i)) for n in methods) + " | "
               + "".join(f"{_f(at(n, 'crps_norm_mean', i))} | " for n in crps)
               + "".join(f"{_f(at(n, 'spread_skill_mean', i))} | " for n in ss)
               + " | ".join(_f(at(n, k, i), 2) for n in ("model", "persistence") for k in ("ke_rel", "me_rel"))
               + " |")  # fmt: skip
        if "ke_worst_abs_rel" in mem:
            row += f" {_f(at_mem('ke_worst_abs_rel', i), 2)} | {_f(at_mem('me_worst_abs_rel', i), 2)} |"
        lines.append(row)
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
        cur = c.get(name)
        if cur is None or metric not in cur or L not in cur["lead"]:
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
    for name in (n for n in FORECAST_METHODS if n in c):
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
    methods = [m for m in CHAIN_METHODS if m in c]
    crps = [m for m in methods if "crps_norm_mean" in c[m]]
    lines = ["| lead [orbits] | n | " + " | ".join(f"NRMSE {m}" for m in methods) + " | corr chain | corr persistence+bicubic | "
             + "".join(f"CRPS/σ {m} | " for m in crps),
             "|---|---|" + "---|" * (len(methods) + 2 + len(crps))]  # fmt: skip
    for i, L in enumerate(c["chain"]["lead"]):
        row = [f"{c['chain']['lead_orbits'][i]:.2f}", str(c["chain"]["n"][i])]
        row += [_f(c[m]["nrmse_mean"][c[m]["lead"].index(L)]) for m in methods]
        row += [_f(c["chain"]["corr_mean"][i]), _f(c["persistence+bicubic"]["corr_mean"][i])]
        row += [_f(c[m]["crps_norm_mean"][c[m]["lead"].index(L)]) for m in crps]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def chain_channel_table(ch: dict[str, Any], lead_index: int = 0) -> str:
    """Per-channel hi-grid NRMSE at one lead for the chain and its baselines."""
    c = ch["curves"]
    chans = ch["channels"]
    L = c["chain"]["lead"][lead_index]
    lines = ["| method | " + " | ".join(chans) + " |", "|---|" + "---|" * len(chans)]
    for m in (m for m in CHAIN_METHODS if m in c):
        j = c[m]["lead"].index(L)
        lines.append(f"| {m} | " + " | ".join(_f(c[m]["nrmse"][x][j]) for x in chans) + " |")
    return "\n".join(lines)


def goals_table(g: dict[str, Any]) -> str:
    """The goals with their numbers."""
    rows = ["| goal | verdict | numbers |", "|---|---|---|"]
    o = g["one_step"]
    if o.get("met") is not None:
        worst = max(o["ratio"], key=o["ratio"].get)
        rows.append(f"| {o['rule']} | {_verdict(o['met'])} | "
                    f"ratio model/persistence: " + ", ".join(f"{k} {v:.2f}" for k, v in o["ratio"].items())
                    + f" (worst {worst}) |")  # fmt: skip
    else:
        rows.append(f"| {o['rule']} | undetermined | {o.get('why')} |")
    cl = g["corr_lead"]
    txt = ", ".join(
        f"{k} {_f(v['model'])} vs {_f(v['persistence'])}" for k, v in cl["per_channel"].items()
    )
    rows.append(f"| {cl['rule']} | {_verdict(cl['met'])} | "
                f"model vs persistence [orbits; — = not below 0.5 within {cl['rollout_orbits']:g}]: {txt} |")  # fmt: skip
    e = g["energy"]
    if e.get("met") is not None:
        rows.append(f"| {e['rule']} | {_verdict(e['met'])} | "
                    f"worst mean |E/E_true - 1| at leads {e['leads_orbits']}: KE {e['worst_mean_abs_rel']['ke']:.3f}, "
                    f"ME {e['worst_mean_abs_rel']['me']:.3f} |")  # fmt: skip
    else:
        rows.append(f"| {e['rule']} | undetermined | {e.get('why')} |")
    f = g["finite"]
    rows.append(f"| {f['rule']} | {_verdict(f['met'])} | finite for "
                f"{f['finite_orbits']:g} of {f['rollout_orbits']:g} orbits rolled out |")  # fmt: skip
    c = g["chain"]
    if c.get("met") is not None:
        txt = "; ".join(
            f"{r['sim']} {r['lead_orbits']:g} orb: {r['chain_mean']:.3f} vs {r['baseline_mean']:.3f}"
            f" ({sum(r['better'].values())}/{len(r['better'])} channels)" for r in c["rows"])  # fmt: skip
        rows.append(f"| {c['rule']} | "
                    f"{_verdict(c['met'])} | mean NRMSE chain vs baseline: {txt} |")  # fmt: skip
    else:
        rows.append(f"| {c['rule']} | undetermined | {c.get('why')} |")
    return "\n".join(rows)


def ensemble_goals_table(eg: dict[str, Any]) -> str:
    """The ensemble-forecast goals: goal, value, threshold, pass / FAIL / not measured (why)."""
    rows = ["| goal | value | threshold | verdict |", "|---|---|---|---|"]
    for name, v in eg.items():
        val = v.get("value")
        if isinstance(val, dict):
            val = ", ".join(f"{k} {_f(x)}" for k, x in val.items() if k != NULL_KEY)
        elif isinstance(val, list):
            val = " .. ".join(_f(x) for x in val)
        else:
            val = _f(val)
        if v.get("where"):
            val += f" ({v['where']})"
        met = v.get("met")
        verdict = ("pass" if met else "FAIL") if met is not None else (
            "not measured: " + v.get(NULL_KEY, {}).get("met", ""))  # fmt: skip
        rows.append(f"| {name}: {v['rule']} | {val} | {v['threshold']} | {verdict} |")
    return "\n".join(rows)


def forecast_summary(metrics: Mapping[str, Any]) -> str:
    """summary.md of a forecast evaluation: the lead-time table (pooled, channel means), the
    chain table and the goals."""
    fc, chains, g = metrics["forecast"], metrics["chain"], metrics["goals"]
    parts = [
        f"## Forecast lead-time table (held-out rollouts {', '.join(fc['all']['sims'])}; mean over "
        f"the {len(fc['channels'])} channels; dt = {fc['dt_orbits']:g} orbits)", "", lead_table(fc), "",
        "Correlation-0.5 lead [orbits]:", "", corr_lead_table(fc), "",
    ]  # fmt: skip
    for ch in chains:
        if "curves" in ch:
            parts += [f"## Chain {ch['sim']} (hi grid, ensemble of {ch.get('ensemble', ch['members'])} per lead: forecast members x {ch['members']} SR sample(s); mean over channels)",
                      "", chain_table(ch), ""]  # fmt: skip
    parts += ["## Goals", "", goals_table(g)]
    if "ensemble" in g:
        parts += ["", "## Ensemble-forecast goals (every lead <= the goal window, every channel)",
                  "", ensemble_goals_table(g["ensemble"])]  # fmt: skip
    return "\n".join(parts)


def _forecast_report(metrics: Mapping[str, Any], figures: Sequence[str]) -> str:
    """report.md of a forecast evaluation: definitions, the tables per channel, per sim, the
    chain, the energy check."""
    fc, chains, checks = metrics["forecast"], metrics["chain"], metrics["energy_check"]
    lines = ["# Forecast evaluation", "", "## Definitions", ""]
    lines += metric_lines(frozenset({FORECAST, FORECAST_ENSEMBLE}), FORECAST_TERMS)
    lines += ["", forecast_summary(metrics), ""]
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
