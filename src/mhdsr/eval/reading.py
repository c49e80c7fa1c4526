"""Automatic reading of the numbers: a few sentences after each table of report.md.

Pure functions of the cleaned metrics dict (:func:`mhdsr.eval.report.clean`; missing values are
``None``). For each registered metric of a table: which curve is best per channel, best method
against best baseline (the sense of "best" is the metric's ``better``); the ensemble calibration
(spread/skill < 0.8 under-, > 1.2 over-dispersed); the fair coherence comparisons (the
ensemble mean against the best interpolant, member-member against member-truth); the physics
residuals against the truth's own floor; the domain-gap floor of held-out sims; the
per-snapshot transition-coherence goal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mhdsr.eval.registry import TABLES, Metric, in_table

#: spread/skill outside [UNDER, OVER] is flagged as under- / over-dispersed.
UNDER, OVER = 0.8, 1.2
#: The deterministic interpolation baselines (their coherence is their ensemble mean's).
INTERPOLANTS: tuple[str, ...] = ("bilinear", "bicubic", "spline")
#: |member-member - member-truth| generated-band coherence above this is flagged.
MEMBER_GAP = 0.05


def fmt(v: Any) -> str:
    """A number in 3 significant digits, ``—`` for a missing one."""
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def get(d: Any, path: Sequence[str]) -> Any:
    """``d[p0][p1]...`` or ``None`` when any step is missing."""
    for p in path:
        if not isinstance(d, Mapping) or p not in d:
            return None
        d = d[p]
    return d


def fmt_pair(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` with the fewest significant digits (3 to 6) that tell them apart."""
    for d in range(3, 7):
        sa, sb = f"{a:.{d}g}", f"{b:.{d}g}"
        if sa != sb:
            break
    return sa, sb


def score(m: Metric, v: float, target: float | None) -> float | None:
    """Smaller is better: the value itself, its negative, its distance to 1 or to the target
    (``None``: no ranking)."""
    if m.better == "none":
        return None
    if m.better == "lower":
        return v
    if m.better == "higher":
        return -v
    if m.better == "one":
        return abs(v - 1.0)
    return None if target is None else abs(v - target)


def curves_of(metrics: Mapping[str, Any], group: str) -> tuple[list[str], list[str]]:
    """``(methods, baselines)`` present in a group's summary, in report order."""
    summ = metrics["summary"].get(group, {})
    methods = [m["name"] for m in metrics["methods"] if m["name"] in summ]
    return methods, [b for b in metrics["baselines"] if b in summ]


def _best(
    m: Metric, names: Sequence[str], summ: Mapping[str, Any], ch: str, target: float | None
) -> tuple[str, float] | None:
    scored = []
    for n in names:
        v = get(summ, (n, ch, *m.path()))
        if isinstance(v, (int, float)):
            s = score(m, float(v), target)
            if s is not None:
                scored.append((s, n, float(v)))
    if not scored:
        return None
    s, n, v = min(scored)
    return n, v


def metric_reading(metrics: Mapping[str, Any], group: str, m: Metric) -> str | None:
    """One sentence: on how many channels the best method beats the best baseline."""
    if m.better == "none":
        return None
    summ = metrics["summary"].get(group, {})
    targets = metrics.get("targets", {}).get(group, {}).get("metrics", {})
    methods, baselines = curves_of(metrics, group)
    won, lost, wins_by, base_by = [], [], {}, {}
    for ch in metrics["channels"]:
        tv = get(targets, (ch, *m.path()))
        target = float(tv) if isinstance(tv, (int, float)) else None
        bm = _best(m, methods, summ, ch, target)
        bb = _best(m, baselines, summ, ch, target)
        if bm is None or bb is None:
            continue
        wins_by[bm[0]] = wins_by.get(bm[0], 0) + 1
        base_by[bb[0]] = base_by.get(bb[0], 0) + 1
        sm, sb = score(m, bm[1], target), score(m, bb[1], target)
        (won if sm <= sb else lost).append((ch, bm, bb, target))  # type: ignore[operator]
    n = len(won) + len(lost)
    if n == 0:
        return None
    sense = {"lower": "lower", "higher": "higher", "one": "closer to 1", "truth": "closer to the "
             "truth's"}[m.better]  # fmt: skip
    if group == "heldout" and m.better == "truth":
        sense = "closer to the reference's"
    best_m = ", ".join(f"{k} ({v})" for k, v in sorted(wins_by.items(), key=lambda x: -x[1]))
    best_b = ", ".join(f"{k} ({v})" for k, v in sorted(base_by.items(), key=lambda x: -x[1]))
    text = (
        f"**{m.label}** ({sense} is better): a method beats every baseline on {len(won)}/{n} "
        f"channels; best method {best_m}; best baseline {best_b}."
    )
    if lost:
        parts = []
        for ch, (mn, mv), (bn, bv), target in lost:
            ref = f", target {fmt(target)}" if target is not None else ""
            sb, sm = fmt_pair(bv, mv)
            parts.append(f"{ch} ({bn} {sb} vs {mn} {sm}{ref})")
        text += " Baseline ahead on " + "; ".join(parts) + "."
    return text


def dispersion_reading(metrics: Mapping[str, Any], group: str) -> list[str]:
    """Per ensemble: channels with spread/skill < 0.8 (under-dispersed) or > 1.2 (over)."""
    summ = metrics["summary"].get(group, {})
    lines = []
    for name, per_ch in summ.items():
        vals = {ch: get(per_ch, (ch, "spread_skill")) for ch in metrics["channels"]}
        vals = {ch: v for ch, v in vals.items() if isinstance(v, (int, float))}
        if not vals:
            continue
        under = [f"{ch} {fmt(v)}" for ch, v in vals.items() if v < UNDER]
        over = [f"{ch} {fmt(v)}" for ch, v in vals.items() if v > OVER]
        ok = [ch for ch, v in vals.items() if UNDER <= v <= OVER]
        parts = []
        if under:
            parts.append(f"under-dispersed (spread/skill < {UNDER}) on {', '.join(under)}")
        if over:
            parts.append(f"over-dispersed (> {OVER}) on {', '.join(over)}")
        if ok:
            parts.append(f"calibrated ({UNDER}–{OVER}) on {len(ok)} channel(s)")
        lines.append(f"{name}: " + "; ".join(parts) + ".")
    return lines


def coherence_reading(metrics: Mapping[str, Any], group: str) -> list[str]:
    """Per method, one sentence each: its ensemble-mean coherence against the best
    interpolant's (transition and generated bands), and its member-member against its
    member-truth generated-band coherence (equal in expectation for a calibrated ensemble; a
    single member's coherence is about the square of the ensemble mean's, so it is not compared
    with an interpolant)."""
    summ = metrics["summary"].get(group, {})
    methods, baselines = curves_of(metrics, group)
    interps = [b for b in INTERPOLANTS if b in baselines]
    lines = []
    for name in methods:
        counts, behind = [], []
        for band in ("transition", "generated"):
            won = n = 0
            for ch in metrics["channels"]:
                v = get(summ, (name, ch, "coherence_ensemble_mean", band))
                best = [
                    (float(x), b)
                    for b in interps
                    if isinstance(x := get(summ, (b, ch, "coherence", band)), (int, float))
                ]
                if not isinstance(v, (int, float)) or not best:
                    continue
                bv, bn = max(best)
                n += 1
                if v >= bv:
                    won += 1
                else:
                    behind.append((v - bv, ch, band, float(v), bn, bv))
            if n:
                counts.append(f"{won}/{n} channels in the {band} band")
        if counts:
            text = f"{name}: ensemble-mean coherence >= the best interpolant's on " + " and ".join(
                counts
            )
            if behind:
                _, ch, band, v, bn, bv = min(behind)
                sb, sv = fmt_pair(bv, v)
                text += f"; furthest behind {ch} ({band}: {sv} vs {bn} {sb})"
            lines.append(text + ".")
        close, more, less = [], [], []
        for ch in metrics["channels"]:
            mm = get(summ, (name, ch, "coherence_member_member", "generated"))
            mt = get(summ, (name, ch, "coherence", "generated"))
            if not isinstance(mm, (int, float)) or not isinstance(mt, (int, float)):
                continue
            if abs(mm - mt) <= MEMBER_GAP:
                close.append(ch)
            else:
                (more if mm > mt else less).append(f"{ch} {fmt(mm)} vs {fmt(mt)}")
        n = len(close) + len(more) + len(less)
        if n:
            text = (
                f"{name}: member-member generated-band coherence is within {MEMBER_GAP} of "
                f"member-truth (calibrated phases) on {len(close)}/{n} channels"
            )
            if more:
                text += (
                    "; members agree more with each other than with the truth (under-dispersed) "
                    "on " + ", ".join(more)
                )
            if less:
                text += "; less (over-dispersed) on " + ", ".join(less)
            lines.append(text + ".")
    return lines


def goal_reading(metrics: Mapping[str, Any], group: str) -> list[str]:
    """The transition-coherence goal of the methods of one group, one line per method."""
    goal = get(metrics, ("goals", "transition_coherence"))
    per_method = get(goal, ("groups", group)) if goal and goal.get("available") else None
    if not per_method:
        return []
    lines = []
    for name, g in per_method.items():
        defined = [(c, v) for c, v in g["channels"].items() if v["min_diff"] is not None]
        undefined = sum(v.get("undefined", 0) for v in g["channels"].values())
        note = (
            f" ({undefined} channel-snapshot(s) without power in the band: undefined, skipped)"
            if undefined
            else ""
        )
        if not defined:
            lines.append(f"{name}: the goal is undefined on every channel{note}.")
            continue
        ch, w = min(defined, key=lambda kv: kv[1]["min_diff"])
        fails = [c for c, v in g["channels"].items() if v["pass"] is False]
        verdict = "meets the goal" if g["pass"] else f"misses it on {', '.join(fails)}"
        lines.append(
            f"{name} {verdict}: worst min over {len(g['per_snapshot'])} snapshot(s) of coh - "
            f"coh_spline is {fmt(w['min_diff'])} ({ch}, orbit {fmt(w['at']['orbit'])}, snapshot "
            f"{w['at']['snapshot']} of {w['at']['sim']}){note}."
        )
    return lines


def physics_reading(metrics: Mapping[str, Any]) -> list[str]:
    """Each group's physics residuals against the truth's (or the reference split's) floor."""
    phys = metrics.get("physics", {}).get("groups", {})
    lines = []
    if phys:
        lines.append(
            "The truth's div B is NOT 0: AthenaK keeps the face-centred B divergence-free "
            "(constrained transport) and writes cell-centred B as face averages, whose centred-"
            "difference divergence is a discretisation-level residual. So the truth's own value "
            "is the floor; only the excess over it is an error. jz - curl B of the truth is 0 to "
            "float32 rounding (AthenaK derives jz with these differences)."
        )
    for group, curves in phys.items():
        floor_name = (
            "truth" if "truth" in curves else "reference" if "reference" in curves else None
        )
        if floor_name is None:
            continue
        fl = curves[floor_name]
        who = "truth" if floor_name == "truth" else "reference split's hi fields"
        parts = []
        for name, v in curves.items():
            if name in ("truth", "reference"):
                continue
            d = v.get("div_b")
            ratio = f"{d / fl['div_b']:.2g}×" if d is not None and fl.get("div_b") else "—"
            note = " (lo grid)" if name == "input" else ""
            parts.append(f"{name}{note} div B {ratio}, jz - curl B {fmt(v.get('jz_curl_b'))}")
        lines.append(
            f"{group}: floor ({who}) div B = {fmt(fl.get('div_b'))} rms(jz), jz - curl B = "
            f"{fmt(fl.get('jz_curl_b'))}; relative to it: " + "; ".join(parts) + "."
        )
    return lines


def domain_gap_reading(metrics: Mapping[str, Any]) -> list[str]:
    """The floor the domain gap sets for held-out sims, and where the curves sit above it."""
    dg = metrics.get("domain_gap", {})
    if not dg.get("available"):
        return []
    chans = dg["channels"]
    res = {ch: get(v, ("spectral_error", "resolved")) for ch, v in chans.items()}
    tra = {ch: get(v, ("spectral_error", "transition")) for ch, v in chans.items()}
    w1 = {ch: v.get("w1_norm") for ch, v in chans.items()}

    def span(d: Mapping[str, Any]) -> str:
        v = [x for x in d.values() if isinstance(x, (int, float))]
        return f"{fmt(min(v))}–{fmt(max(v))}" if v else "—"

    lines = [
        f"Domain-gap floor: the native lo inputs differ from avgpool2(hi) of the reference by "
        f"{span(res)} (resolved band) and {span(tra)} (transition band) in mean |log10 E ratio| "
        f"on the lo grid, and by W1/std {span(w1)} in their value distributions. A method that "
        "keeps its input's resolved scales (what the conditioning asks) inherits the resolved-"
        "band gap: against the reference spectrum it cannot go much below this floor on held-"
        "out sims, and a held-out resolved-band error near 1x the floor is the gap's, not the "
        "method's. Differences between curves smaller than the floor are not evidence."
    ]
    summ = metrics["summary"].get("heldout", {})
    above = []
    for ch in metrics["channels"]:
        vals = [get(per, (ch, "spectral_error", "resolved")) for per in summ.values()]
        vals = [v for v in vals if isinstance(v, (int, float))]
        if vals and isinstance(res.get(ch), (int, float)) and res[ch] > 0:
            above.append(f"{ch} {min(vals) / res[ch]:.2g}×")
    if above:
        lines.append(
            "Best held-out resolved-band error relative to that floor: " + ", ".join(above) + "."
        )
    return lines


def readings(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Every reading: ``{group: {table: [lines]}, "physics": [...], "domain_gap": [...]}``."""
    out: dict[str, Any] = {}
    for group in metrics["groups"]:
        g: dict[str, list[str]] = {}
        for table in TABLES:
            lines = [
                t
                for m in in_table(table)
                if m.per_channel and (t := metric_reading(metrics, group, m)) is not None
            ]
            if table == "ensemble":
                lines += dispersion_reading(metrics, group)
            if table == "coherence":
                lines += coherence_reading(metrics, group)
            if lines:
                g[table] = lines
        goal = goal_reading(metrics, group)
        if goal:
            g["goal"] = goal
        out[group] = g
    out["physics"] = physics_reading(metrics)
    out["domain_gap"] = domain_gap_reading(metrics)
    return out
