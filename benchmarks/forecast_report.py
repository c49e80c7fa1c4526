"""Write benchmarks/forecast.md (+ forecast.json) from a `make forecast-bench` run folder.

Reads the eval of the main rollouts (``<root>/eval``: report.md's lead table and goals, and
metrics.json) and of the NFE trade-off rollouts (``<root>/nfe/heun{2,4,8}/eval``), the stage
timings passed by scripts/forecast-recipe.sh, and writes one markdown page with the command that
reproduces it. Nothing here computes a score: every number comes from `mhdsr eval`.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
from pathlib import Path

import torch


def _section(md: str, title_re: str) -> str:
    """The markdown section whose heading matches ``title_re`` (up to the next heading of the
    same or a higher level), or ""."""
    lines = md.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(#+)\s+(.*)$", line)
        if m and re.search(title_re, m.group(2), re.I):
            level = len(m.group(1))
            out = [line]
            for nxt in lines[i + 1 :]:
                h = re.match(r"^(#+)\s", nxt)
                if h and len(h.group(1)) <= level:
                    break
                out.append(nxt)
            return "\n".join(out).strip() + "\n"
    return ""


def _at(curve: dict, key: str, lead_orbits: float) -> float | None:
    ls = curve.get("lead_orbits") or []
    for i, lo in enumerate(ls):
        if abs(lo - lead_orbits) < 1e-6:
            v = curve.get(key)
            return None if v is None else v[i]
    return None


def _fmt(v: float | None, p: int = 3) -> str:
    return "–" if v is None else f"{v:.{p}g}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--root", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--times", nargs="*", default=[])
    ap.add_argument("--nfe", nargs="*", default=[])
    ap.add_argument("--out", required=True)
    ap.add_argument(
        "--bench",
        default="benchmarks/results.json",
        help="make bench results with bench_forecast (ms per member-step, idle)",
    )
    ap.add_argument("--note", default="", help="a sentence on the conditions of this run")
    a = ap.parse_args()
    root = Path(a.root)
    times = dict(t.split("=") for t in a.times)
    nfe_s = dict(t.split("=") for t in a.nfe)
    report = (root / "eval" / "report.md").read_text()
    bench: dict = {}
    if Path(a.bench).exists():
        res = json.loads(Path(a.bench).read_text())
        bench = res.get("bench_forecast") or res.get("results", {}).get("bench_forecast") or {}
    metrics = json.loads((root / "eval" / "metrics.json").read_text())
    fc = metrics["forecast"]
    curves = fc["all"]["curves"]
    m = curves["model"]
    leads = m["lead_orbits"]
    e = max((s.get("ensemble") or 1) for s in fc["sims"].values())
    n_member_steps = {}
    rows = []
    for k in (2, 4, 8):
        d = root / "nfe" / f"heun{k}" / "eval" / "metrics.json"
        if not d.exists():
            continue
        mm = json.loads(d.read_text())["forecast"]
        cm = mm["all"]["curves"]["model"]
        sims = mm["sims"]
        steps = sum(s["n_init"] * s["steps"] for s in sims.values())
        n_member_steps[k] = steps * e
        sec = float(nfe_s.get(f"heun{k}", "nan"))
        ms = bench.get(f"ms_per_member_step_nfe{2 * k}")
        row = [f"{2 * k}", _fmt(ms, 3), f"{1e3 * sec / max(n_member_steps[k], 1):.0f}"]
        for lo in (0.1, 0.5, 1.0, 2.0):
            row.append(_fmt(_at(cm, "crps_norm_mean", lo)))
        row += [_fmt(_at(cm, "spread_skill_mean", 1.0)), _fmt(_at(cm, "ke_rel", 2.0), 2)]
        rows.append(row)
    out = [
        "# The forecast recipe: generative forecaster on 0.1-orbit data (measured)",
        "",
        "Written by `make forecast-bench` (scripts/forecast-recipe.sh, benchmarks/forecast_report.py)"
        " on this machine "
        f"({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, no GPU).",
        f"Reproduce: `make forecast-bench FORECAST_DATA={a.data}` (FORECAST_DATA: an AthenaK folder"
        " with the full 0.1-orbit 128² seeds 5 and 6 and 256² seed 4; the bundled data/athenak has"
        " shorter copies of them).",
        "",
        "Train: windows of 3 snapshots 0.1 orbit apart of 128² seed 5 (2.5–8 orbits); the FNO"
        " (configs/forecast/cpu-small.yaml, history 1), then the generative forecaster"
        " (configs/forecast/flow-cpu-small.yaml: operator source, cpu-small UNet, residual,"
        " instance scale, jz derived), both on 2 gloo ranks. Held out: 128² seed 6 (initial states"
        " at 3, 3.5, 4 orbits, 40 steps = 4 orbits, 8 members, Heun 4 steps = 8 NFE) and the chain"
        " on avgpool2(256² seed 4) (initial states at 3, 3.5, 4 orbits; 256² truth at 0.5 and 1"
        " orbit; the SR model of `make demo`). Baselines: persistence, linear extrapolation, the"
        " FNO's rollouts of the same states, climatology (8 snapshots of the train seed between"
        " 2.5 and 8 orbits).",
        "",
        "Stage times [s]: "
        + ", ".join(f"{k} {v}" for k, v in times.items())
        + (f" ({a.note})" if a.note else ""),
        "",
        f"Ensemble {e}; leads {leads[0]:.1f}–{leads[-1]:.1f} orbits.",
        "",
    ]
    if rows:
        out += [
            "## NFE per step: cost and quality",
            "",
            "Seed 6 from 3 and 3.5 orbits, 20 steps (2 orbits), 8 members, the same trained model"
            " and keyed noise; CRPS/σ = mean over channels of CRPS / std of the truth (ensemble"
            " members against the truth; lower is better). ms per member-step: the network step"
            " (UNet NFE times + the FNO source, batch of 8 members, 128², fp32) measured by"
            " `make bench` (bench_forecast) on the idle machine; and the rollout command's wall"
            " time / (initial states × steps × members) in this run (incl. reading, writing, and"
            " whatever else ran on the machine).",
            "",
            "| NFE per step | ms per member-step (bench, idle) | ms per member-step (this run's wall time) | CRPS/σ 0.1 orbit | 0.5 | 1 | 2 | spread/skill at 1 orbit | KE error of the mean at 2 orbits |",
            "|---|---|---|---|---|---|---|---|---|",
            *["| " + " | ".join(r) + " |" for r in rows],
            "",
        ]
    out += ["## The eval's report (held-out seed 6 and the chain)", ""]
    body = report.split("\n", 1)[1] if report.startswith("#") else report
    out.append(re.sub(r"^(#+)", r"#\1", body, flags=re.M))
    Path(a.out).write_text("\n".join(out) + "\n")
    Path(a.out).with_suffix(".json").write_text(
        json.dumps({"times_s": times, "nfe_rollout_s": nfe_s, "nfe_rows": rows,
                    "member_steps": n_member_steps, "bench_forecast": bench,
                    "curves": curves, "goals": metrics.get("goals"),
                    "chain": [{k: c.get(k) for k in ("sim", "curves", "ensemble")}
                              for c in metrics.get("chain", [])]}, indent=1, default=str)
    )  # fmt: skip
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
