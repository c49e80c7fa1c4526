"""The science benchmark: the goals of the super-resolution model, measured on a `mhdsr eval`
metrics.json, against every baseline the evaluation computed.

    python benchmarks/science.py --metrics runs/science/bundled/eval/metrics.json --label bundled \
        [--metrics runs/science/shared/eval/metrics.json --label shared] \
        [--wall bundled=2710 ...] --out benchmarks/science

writes ``benchmarks/science.json`` and ``benchmarks/science.md``: per data set and channel the model
(each sampler) next to every baseline, each goal marked met / not met with its numbers, and the
ablation table (``benchmarks/science_ablation.json``, written by ``benchmarks/ablation.py``).

Goals (test split, every channel, ensemble >= 4):

1. generated-band error <= 0.15 dex for both samplers;
2. resolved-band error <= the best interpolant's (bilinear, bicubic, spline);
3. ensemble-mean NRMSE <= 0.8 x the best interpolant's;
4. CRPS below every baseline's (spectral-noise and noise included);
5. ensemble-mean coherence in the transition and generated bands >= the best interpolant's
   (an interpolant is deterministic: its coherence is its ensemble mean's);
6. jz PDF W1 below spectral-noise's;
7. spread/skill in [0.8, 1.2];
8. |member-member - member-truth| generated-band coherence <= 0.05 (a calibrated ensemble's
   members agree with each other as much as with the truth);
9. div B and jz - curl B residuals <= 2 x the truth's;
10. on every snapshot of seeds outside training, transition-band coherence >= the spline's - 0.02;
11. held-out native-128 runs (no pixel truth): native-128 shape error <= 0.15 or <= 1.5 x floor
    (the level-free generated-band shape error against the mean of every 256² seed in their orbit
    window; the floor is a real 256² run's own leave-one-out shape error; metrics.json
    ``native_shape.heldout``, mhdsr.eval.native_shape).

Why goal 5 scores the ensemble mean and goal 8 exists: for a calibrated ensemble (truth
exchangeable with a member; signal power S and unpredictable power N in a band) a single
member's coherence with the truth is S / (S + N), about the square of the ensemble mean's
sqrt(S / (S + N)); so "one member's coherence > the best interpolant's" is out of reach even for
a perfect sampler wherever N > 0. The ensemble mean is the fair comparison with a deterministic
interpolant, and the member-member coherence (same S / (S + N) when calibrated) tests that the
members' small-scale phases are as certain as they should be, no more and no less.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

#: metrics.json schema versions this script reads (the keys it uses are the same in both).
METRICS_VERSIONS = (1, 2)


def read_metrics(path: str | Path) -> dict[str, Any]:
    """A super-resolution metrics.json of ``mhdsr eval``; exits naming the file if it is another
    schema version or a forecast evaluation."""
    m = json.loads(Path(path).read_text())
    if m.get("version") not in METRICS_VERSIONS or m.get("kind", "sr") != "sr":
        sys.exit(
            f"{path}: metrics.json version {m.get('version')!r}, kind {m.get('kind', 'sr')!r}; "
            f"this script reads super-resolution files of versions {METRICS_VERSIONS}"
        )
    return m


# the interpolants and the member-gap bar (goal 8) are the eval's own: one definition
from mhdsr.eval.reading import INTERPOLANTS, MEMBER_GAP  # noqa: E402

ABLATION = Path(__file__).with_name("science_ablation.json")
#: Goal 11 (held-out native-128 runs).
NATIVE_SHAPE = "native-128 shape error <= 0.15 or <= 1.5 x floor"


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _best(
    summ: dict, curves: list[str], ch: str, *path: str, lower: bool = True
) -> tuple[str, float] | None:
    vals = [(c, _get(summ, c, ch, *path)) for c in curves]
    vals = [(c, v) for c, v in vals if isinstance(v, (int, float))]
    if not vals:
        return None
    return min(vals, key=lambda cv: cv[1]) if lower else max(vals, key=lambda cv: cv[1])


def goals_of(metrics: dict[str, Any], group: str = "test") -> dict[str, Any]:
    """Every goal per method and channel: ``{method: {goal: {channel: {value, bar, met}}}}``."""
    summ = metrics["summary"][group]
    channels = metrics["channels"]
    methods = [m["name"] for m in metrics["methods"]]
    baselines = [b for b in metrics["baselines"] if b in summ]
    interps = [b for b in INTERPOLANTS if b in summ]
    phys = _get(metrics, "physics", "groups", group) or {}
    tc = _get(metrics, "goals", "transition_coherence", "groups", group) or {}
    shape = _get(metrics, "native_shape", "heldout") or {}
    shape_curves = shape.get("curves", {}) if shape.get("available") else {}
    out: dict[str, Any] = {}
    for m in methods:
        g: dict[str, dict[str, Any]] = {}

        def put(
            goal: str, ch: str, value: Any, bar: Any, met: bool | None, vs: str = "", g: dict = g
        ) -> None:
            g.setdefault(goal, {})[ch] = {"value": value, "bar": bar, "vs": vs, "met": met}

        for ch in channels:
            v = _get(summ, m, ch, "spectral_error", "generated")
            put("generated-band error <= 0.15", ch, v, 0.15, None if v is None else v <= 0.15)
            b = _best(summ, interps, ch, "spectral_error", "resolved")
            v = _get(summ, m, ch, "spectral_error", "resolved")
            put(
                "resolved-band error <= best interpolant",
                ch,
                v,
                b and b[1],
                None if None in (v, b) else v <= b[1],
                b and b[0],
            )
            b = _best(summ, interps, ch, "nrmse_ensemble_mean")
            v = _get(summ, m, ch, "nrmse_ensemble_mean")
            bar = None if b is None else 0.8 * b[1]
            put(
                "ensemble-mean NRMSE <= 0.8 x best interpolant",
                ch,
                v,
                bar,
                None if None in (v, bar) else v <= bar,
                b and b[0],
            )
            b = _best(summ, baselines, ch, "crps")
            v = _get(summ, m, ch, "crps")
            put(
                "CRPS below every baseline",
                ch,
                v,
                b and b[1],
                None if None in (v, b) else v < b[1],
                b and b[0],
            )
            for band in ("transition", "generated"):
                # interpolants are deterministic: their coherence is their ensemble mean's
                b = _best(summ, interps, ch, "coherence", band, lower=False)
                v = _get(summ, m, ch, "coherence_ensemble_mean", band)
                put(
                    f"{band} ensemble-mean coherence >= best interpolant",
                    ch,
                    v,
                    b and b[1],
                    None if None in (v, b) else v >= b[1],
                    b and b[0],
                )
            v = _get(summ, m, ch, "spread_skill")
            put(
                "spread/skill in [0.8, 1.2]",
                ch,
                v,
                "0.8-1.2",
                None if v is None else 0.8 <= v <= 1.2,
            )
            mm = _get(summ, m, ch, "coherence_member_member", "generated")
            mt = _get(summ, m, ch, "coherence", "generated")
            gap = None if None in (mm, mt) else abs(mm - mt)
            put(
                f"|member-member - member-truth| generated-band coherence <= {MEMBER_GAP}",
                ch,
                gap,
                MEMBER_GAP,
                None if gap is None else gap <= MEMBER_GAP,
                "" if gap is None else f"member-member {_fmt(mm)}, member-truth {_fmt(mt)}",
            )
            t = _get(tc, m, "channels", ch)
            if t is not None:
                put(
                    "every snapshot: transition coherence >= spline - 0.02",
                    ch,
                    t.get("min_diff"),
                    -0.02,
                    t.get("pass"),
                )
            r = _get(shape_curves, m, ch)
            if r is not None:
                fl = _get(shape, "floor", "channels", ch, "shape")
                put(
                    NATIVE_SHAPE,
                    ch,
                    r["shape_error"],
                    r["bar"],
                    r["met"],
                    "held-out; floor unavailable" if fl is None else f"held-out; floor {_fmt(fl)}",
                )
        v, b = _get(summ, m, "jz", "jz_pdf_w1"), _get(summ, "spectral-noise", "jz", "jz_pdf_w1")
        if v is not None:
            put(
                "jz PDF W1 < spectral-noise",
                "jz",
                v,
                b,
                None if b is None else v < b,
                "spectral-noise",
            )
        for key, name in (
            ("div_b", "div B <= 2 x truth"),
            ("jz_curl_b", "jz - curl B <= 2 x truth"),
        ):
            v, t = _get(phys, m, key), _get(phys, "truth", key)
            if v is not None and t is not None:
                put(name, "B", v, 2 * t, v <= 2 * t, "truth")
        out[m] = g
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def table(metrics: dict[str, Any], group: str = "test") -> str:
    """Per channel: the headline metrics of every method and baseline."""
    summ = metrics["summary"][group]
    curves = [m["name"] for m in metrics["methods"]] + [
        b for b in metrics["baselines"] if b in summ
    ]
    rows = [
        ("gen. err", ("spectral_error", "generated")),
        ("res. err", ("spectral_error", "resolved")),
        ("trans. coh", ("coherence", "transition")),
        ("gen. coh", ("coherence", "generated")),
        ("trans. coh (ens. mean)", ("coherence_ensemble_mean", "transition")),
        ("gen. coh (ens. mean)", ("coherence_ensemble_mean", "generated")),
        ("gen. coh (member-member)", ("coherence_member_member", "generated")),
        ("ens-mean NRMSE", ("nrmse_ensemble_mean",)),
        ("CRPS", ("crps",)),
        ("spread/skill", ("spread_skill",)),
    ]
    out = []
    for label, path in rows:
        if not any(
            _get(summ, c, ch, *path) is not None for c in curves for ch in metrics["channels"]
        ):
            continue
        out.append(f"**{label}**\n\n| channel | " + " | ".join(curves) + " |")
        out.append("|---|" + "---|" * len(curves))
        for ch in metrics["channels"]:
            out.append(
                f"| {ch} | " + " | ".join(_fmt(_get(summ, c, ch, *path)) for c in curves) + " |"
            )
        out.append("")
    return "\n".join(out)


def goal_lines(goals: dict[str, Any]) -> list[str]:
    lines = []
    for m, g in goals.items():
        lines.append(f"**{m}**\n")
        lines.append("| goal | met on | not met (value vs bar) |")
        lines.append("|---|---|---|")
        for goal, per in g.items():
            met = [ch for ch, r in per.items() if r["met"]]
            miss = [
                f"{ch} {_fmt(r['value'])} vs {_fmt(r['bar'])}{' (' + r['vs'] + ')' if r['vs'] else ''}"
                for ch, r in per.items()
                if r["met"] is False
            ]
            verdict = "**met**" if not miss and met else f"{len(met)}/{len(per)}"
            lines.append(
                f"| {goal} | {verdict} {', '.join(met) if miss else ''} | {'; '.join(miss) or '—'} |"
            )
        lines.append("")
    return lines


def ablation_md() -> str:
    if not ABLATION.is_file():
        return "_No ablation recorded (run benchmarks/ablation.py)._\n"
    rows = json.loads(ABLATION.read_text())
    head = (
        "| # | change | steps / wall | velx gen. err | vely gen. err | velz gen. err | velx res. err | "
        "vely res. err | velx ens-mean NRMSE | vely ens-mean NRMSE | velx CRPS | vely CRPS | min trans. coh - spline (vel) |"
    )
    out = [head, "|" + "---|" * 13]
    for i, r in enumerate(rows):
        v = r["values"]
        out.append(
            f"| {i} | {r['change']} | {r.get('steps', '—')} / {_fmt(r.get('wall_s'))} s | "
            + " | ".join(
                _fmt(v.get(k))
                for k in (
                    "velx.gen",
                    "vely.gen",
                    "velz.gen",
                    "velx.res",
                    "vely.res",
                    "velx.nrmse",
                    "vely.nrmse",
                    "velx.crps",
                    "vely.crps",
                    "vel.min_tc",
                )
            )
            + " |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--metrics", action="append", default=[], help="a metrics.json (repeatable)")
    ap.add_argument("--label", action="append", help="a name per --metrics")
    ap.add_argument("--wall", action="append", default=[], help="label=seconds of the whole run")
    ap.add_argument(
        "--collect", help="a folder of `make science` runs: every <name>/eval/metrics.json in it"
    )
    ap.add_argument("--only", action="append", help="with --collect: just these run names")
    ap.add_argument("--out", default="benchmarks/science", help="output stem (.json and .md)")
    a = ap.parse_args(argv)
    labels = list(a.label or [Path(p).parent.parent.name for p in a.metrics])
    walls = dict(w.split("=", 1) for w in a.wall)
    if a.collect:
        for m in sorted(Path(a.collect).glob("*/eval/metrics.json")):
            name = m.parent.parent.name
            if (a.only and name not in a.only) or (not a.only and name.endswith("-smoke")):
                continue
            a.metrics.append(str(m))
            labels.append(name)
            run = m.parent.parent / "run.json"
            if run.is_file():
                walls[name] = json.loads(run.read_text())["wall_s"]
    if not a.metrics:
        ap.error("no metrics.json given or found")
    result: dict[str, Any] = {"datasets": {}}
    md = ["# Science benchmark: the super-resolution model against every baseline", ""]
    md.append(
        "Produced by `make science` (see README). Test split of each data set, ensemble >= 4, "
        "EMA weights; baselines computed by `mhdsr eval` from the same inputs. A goal is met on a "
        "channel when the model's number passes the bar; see benchmarks/science.py for the rules.\n"
    )
    for path, label in zip(a.metrics, labels):
        m = read_metrics(path)
        goals = goals_of(m)
        result["datasets"][label] = {
            "metrics": str(path),
            "wall_s": float(walls[label]) if label in walls else None,
            "groups": m["groups"],
            "goals": goals,
            "summary_test": m["summary"]["test"],
        }
        md.append(f"## {label}: {m['groups']['test']['description']}")
        if label in walls:
            md.append(
                f"\nWall time of `make science` on this data: {float(walls[label]) / 60:.1f} min."
            )
        md += ["", "### Goals", "", *goal_lines(goals), "### Per channel", "", table(m)]
        if "heldout" in m["summary"]:
            md += ["### Held-out native 128² runs (no pixel truth)", "", table(m, "heldout")]
    md += ["## Ablation (one change at a time, bundled data)", "", ablation_md()]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in (
        (".json", json.dumps(result, indent=1) + "\n"),
        (".md", "\n".join(md) + "\n"),
    ):
        tmp = out.with_suffix(suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(out.with_suffix(suffix))  # never a half-written report
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
