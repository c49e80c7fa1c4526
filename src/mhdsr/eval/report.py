"""metrics.json hygiene, the summary tables and report.md of ``mhdsr eval``.

- :func:`clean` makes a nested structure JSON-safe: numpy scalars/arrays become Python numbers
  and lists, and every non-finite number becomes ``null`` with a reason recorded next to it
  (``null_reasons: {key: reason}`` in the enclosing object), so the file has no NaN/Infinity.
- :func:`summary_table` is the compact per-channel table (RMSE and generated-band spectral error
  of each method next to the baselines) printed to stdout and pasted into the report.
- :func:`report_markdown` renders report.md from the metrics and the figure list.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

NULL_KEY = "null_reasons"

#: One line per metric, for the report (DESIGN.md, "Metrics").
METRIC_LINES = (
    (
        "RMSE",
        "sqrt(mean over the grid of (pred - truth)^2), per snapshot; single samples are "
        "averaged over members, then everything over snapshots (physical units).",
    ),
    (
        "NRMSE",
        "RMSE / std(truth) of the same snapshot (dimensionless; 1 = as bad as predicting "
        "the truth's mean).",
    ),
    (
        "RMSE of the ensemble mean",
        "RMSE of the member average (lower than single samples when "
        "members scatter around the truth).",
    ),
    (
        "CRPS (fair)",
        "mean_i |x_i - y| - sum_ij |x_i - x_j| / (2 n (n-1)) per pixel, grid mean "
        "(Ferro 2014); 0 for a perfect ensemble, physical units.",
    ),
    (
        "spread/skill",
        "sqrt(1 + 1/n) * spread / skill, spread = sqrt(mean member variance, "
        "ddof=1), skill = RMSE of the ensemble mean, pooled over snapshots; 1 = calibrated, < 1 "
        "under-dispersed.",
    ),
    (
        "E(k)",
        "shell-summed power spectrum, F = fft2(f)/N^2, E(k) = sum of |F|^2 over "
        "round(|k|) = k, k = 1..N/2 in units of 2 pi/L; averaged over snapshots and members; "
        "the lo input on its own grid.",
    ),
    (
        "band spectral error",
        "mean over k in the band of |log10(E_pred(k)/E_ref(k))| on the "
        "snapshot-averaged spectra (0 = identical; 0.3 = a factor 2).",
    ),
    ("div B", "rms(dBx/dx + dBy/dy) / rms(jz), periodic centred differences (as AthenaK)."),
    (
        "jz vs curl B",
        "rms(jz - (dBy/dx - dBx/dy)) / rms(jz), same differences; ~0 for AthenaK "
        "output on its own grid.",
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


def fmt(v: Any) -> str:
    """A number in 3 significant digits, ``—`` for a missing one."""
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def _get(d: Mapping[str, Any], *path: str) -> Any:
    for p in path:
        if not isinstance(d, Mapping) or p not in d:
            return None
        d = d[p]
    return d


def summary_table(metrics: Mapping[str, Any]) -> str:
    """Compact markdown tables, one per group: per channel, RMSE (groups with pixel truth) and
    generated-band spectral error of each method next to the baselines."""
    out = []
    curves_all = [m["name"] for m in metrics["methods"]] + list(metrics["baselines"])
    for group, info in metrics["groups"].items():
        summ = metrics["summary"].get(group, {})
        curves = [c for c in curves_all if c in summ]
        header = ["channel"]
        if info["truth"]:
            header += [f"RMSE {c}" for c in curves]
        header += [f"gen. err {c}" for c in curves]
        rows = []
        for ch in metrics["channels"]:
            row: list[Any] = [ch]
            if info["truth"]:
                row += [_get(summ, c, ch, "rmse") for c in curves]
            row += [_get(summ, c, ch, "spectral_error", "generated") for c in curves]
            rows.append(row)
        out.append(f"### {group}: {info['description']}\n\n" + _table(header, rows))
    return "\n\n".join(out)


def _group_details(metrics: Mapping[str, Any], group: str) -> str:
    info = metrics["groups"][group]
    summ = metrics["summary"].get(group, {})
    parts = []
    for curve, per_ch in summ.items():
        cols = ["rmse", "nrmse"]
        if any("crps" in v for v in per_ch.values()):
            cols += ["rmse_ensemble_mean", "nrmse_ensemble_mean", "crps", "spread_skill"]
        if not info["truth"]:
            cols = []
        bands = ["resolved", "transition", "generated"]
        header = ["channel", *cols, *(f"{b} err" for b in bands)]
        rows = [
            [
                ch,
                *(per_ch[ch].get(c) for c in cols),
                *(_get(per_ch, ch, "spectral_error", b) for b in bands),
            ]
            for ch in metrics["channels"]
        ]
        parts.append(f"**{curve}**\n\n" + _table(header, rows))
    return "\n\n".join(parts)


def _physics_table(metrics: Mapping[str, Any]) -> str:
    phys = metrics["physics"]
    if not phys.get("groups"):
        return phys.get("note", "not computed")
    rows = []
    for group, curves in phys["groups"].items():
        for curve, v in curves.items():
            rows.append([group, curve, v.get("div_b"), v.get("jz_curl_b")])
    return _table(["group", "fields", "div B / rms jz", "rms(jz - curl B) / rms jz"], rows)


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
            _get(v, "spectral_error", "resolved"),
            _get(v, "spectral_error", "transition"),
        ]
        for ch, v in dg["channels"].items()
    ]
    head = (
        f"Native lo: {dg['native']}. Reference: {dg['reference']}. Histograms from "
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


def report_markdown(metrics: Mapping[str, Any], figures: Sequence[str]) -> str:
    """report.md text: inputs, metric definitions, tables, links to ``figures`` (relative paths)."""
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
    baselines = ", ".join(metrics["baselines"]) or "none"
    lines.append(f"- baselines: {baselines} (periodic upsampling of the same input)")
    lines += [
        "",
        "## Metrics",
        "",
        f"Bands relative to the lo grid's Nyquist k_n = N_lo/2 = {fmt(g['k_n'])} "
        f"(N_lo = {g['n_lo']}, N_hi = {g['n_hi']}): resolved [{res[0]}, {res[1]}), "
        f"transition [{tra[0]}, {tra[1]}), generated [{gen[0]}, {gen[1]}].",
        "",
    ]
    lines += [f"- **{name}**: {text}" for name, text in METRIC_LINES]
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
    lines += ["## Physics consistency", "", _physics_table(metrics), ""]
    lines += ["## Domain gap", "", _domain_gap_text(metrics), ""]
    if metrics.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in metrics["notes"]] + [""]
    lines += ["## Figures", ""]
    for f in figures:
        lines += [f"![{f}]({f})", ""]
    return "\n".join(lines)
