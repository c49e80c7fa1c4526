"""The metrics.json structure of ``mhdsr eval`` for super-resolution, from the per-sim results
(before :func:`mhdsr.eval.report.clean`).

Schema version :data:`mhdsr.eval.report.METRICS_VERSION` (2): a reader checks ``version`` and
``kind`` (``"sr"`` here, ``"forecast"`` for :mod:`mhdsr.eval.forecast_report`); no key is kept
for earlier versions. Top level: ``version, kind, code_version, created, config, inputs,
channels, units, grids, methods, baselines, baseline_definitions, metric_definitions, groups,
sims, summary, targets, physics, spectra, spread_skill, pdfs, goals, domain_gap, native_shape,
notes`` (plus ``readings`` and ``timing``, added by :mod:`mhdsr.eval.run`).
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mhdsr import __version__
from mhdsr.analysis.scores import histogram_distance
from mhdsr.analysis.spectra import band_edges, band_errors
from mhdsr.channels import UNITS
from mhdsr.config import to_dict
from mhdsr.eval.baselines import BASELINES
from mhdsr.eval.config import EvalConfig
from mhdsr.eval.curve import HIST_EDGES, Curve, SimResult
from mhdsr.eval.inputs import SampleFile
from mhdsr.eval.native_shape import SeedSpectra, shape_block, unavailable
from mhdsr.eval.planning import HELDOUT, orbits
from mhdsr.eval.pooling import (
    curve_metrics,
    per_snapshot,
    physics_metrics,
    pool_curves,
    spread_skill_points,
)
from mhdsr.eval.reference import Reference, TrainSpectra
from mhdsr.eval.registry import SR_KINDS, for_kinds
from mhdsr.eval.report import METRICS_VERSION

#: The goal checked per snapshot (docs/design.md: a model must keep the transition-band phases
#: of the best interpolant): transition-band coherence >= spline's - margin on every channel.
GOAL_MARGIN = 0.02


def _per_channel(a: np.ndarray, channels: Sequence[str]) -> dict[str, list[float]]:
    return {ch: np.asarray(a[c], np.float64).tolist() for c, ch in enumerate(channels)}


def curve_order(names: Sequence[str], baselines: Sequence[str]) -> list[str]:
    """Methods (sorted) then baselines (config order); truth and input left out."""
    methods = sorted(n for n in names if n not in ("truth", "input", *baselines))
    return methods + [b for b in baselines if b in names]


def _orbit_range(values: Sequence[float]) -> list[float] | None:
    v = [x for x in values if np.isfinite(x)]
    return [min(v), max(v)] if v else None


def _method_records(files: Sequence[SampleFile]) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    keep = (
        "weights",
        "sampler",
        "checkpoint",
        "checkpoint_sha256",
        "checkpoint_step",
        "sigma",
        "seed",
        "upsample",
        "code_version",
    )
    for f in files:
        rec = out.setdefault(
            f.method,
            {
                "name": f.method,
                **{k: f.attrs.get(k) for k in keep},
                "ensemble_size": f.n_members,
                "files": [],
                "sims": [],
            },
        )
        rec["files"].append(f.rel)
        rec["sims"].append(f.sim)
        rec["ensemble_size"] = max(rec["ensemble_size"], f.n_members)
    for rec in out.values():
        for k, v in list(rec.items()):
            if v is None:
                rec.setdefault("null_reasons", {})[k] = "attribute absent from the sample file"
    return [out[k] for k in sorted(out)]


def metric_definitions(kinds: frozenset[str] = SR_KINDS) -> dict[str, dict[str, Any]]:
    """The registry as JSON: ``name -> {label, definition, needs, ...}`` of the metrics of these
    curve kinds (super-resolution by default; ``{FORECAST}`` for forecasts)."""
    return {
        m.name: {
            "label": m.label,
            "definition": m.definition,
            "needs": m.needs,
            "min_members": m.min_members,
            "ensemble_only": m.ensemble,
            "reduce": m.reduce
            if isinstance(m.reduce, str)
            else getattr(m.reduce, "__name__", "custom"),
            "curves": sorted(m.kinds),
            "per_channel": m.per_channel,
            "channels": list(m.channels) if m.channels else "all",
            "better": m.better,
            "table": m.table,
            "summary": m.summary,
            "timeseries": m.timeseries,
        }
        for m in for_kinds(kinds)
    }


def domain_gap(
    native_spec: np.ndarray,
    native_values: list[list[np.ndarray]],
    n_native: int,
    ref: Reference,
    channels: Sequence[str],
    n_lo: int,
    n_hi: int,
) -> dict[str, Any]:
    """Domain-gap statistics (docs/design.md, "Metrics"): native lo vs avgpool2(hi) of the reference.

    Per channel: mean and std of both value samples, ``histogram_distance`` (``w1``, ``w1_norm``
    = W1 / std of the reference, ``ks``), and the resolved / transition band errors of the mean
    native lo spectrum against the mean avgpool2(hi) spectrum, both on the lo grid (its
    generated band would be the single Nyquist shell, so it is left out).
    """
    k = np.arange(1, native_spec.shape[-1] + 1)
    errs = band_errors(native_spec, ref.lo_spectrum, k, n_lo, n_hi)
    errs.pop("generated", None)
    out: dict[str, Any] = {}
    for c, ch in enumerate(channels):
        a = np.concatenate(native_values[c])
        b = np.concatenate(ref.lo_values[c])
        out[ch] = {
            "mean_native": float(a.mean(dtype=np.float64)),
            "mean_reference": float(b.mean(dtype=np.float64)),
            "std_native": float(a.std(dtype=np.float64)),
            "std_reference": float(b.std(dtype=np.float64)),
            **histogram_distance(a, b),
            "spectral_error": {name: float(v[c]) for name, v in errs.items()},
        }
    t_range = [min(ref.times), max(ref.times)] if ref.times else None
    return {
        "available": True,
        "native": f"inputs of the held-out sims ({n_native} snapshots, native {n_lo}² runs)",
        "reference": f"avgpool2(hi) of the {ref.split!r} split ({ref.n_snapshots} snapshots)",
        "why_reference": "hi seeds are exchangeable, so the held-out test seeds stand for the "
        "training distribution; it is the split already read for the reference spectrum",
        "native_snapshots": n_native,
        "reference_snapshots": ref.n_snapshots,
        "reference_time_range": t_range,
        "reference_orbit_range": orbits(t_range, ref.omega) if t_range else None,
        "hist_values": {
            "native": int(sum(v.size for v in native_values[0])),
            "reference": int(sum(v.size for v in ref.lo_values[0])),
        },
        "channels": out,
        "spectra": {
            "k": k.tolist(),
            "native lo": _per_channel(native_spec, channels),
            "avgpool2(hi)": _per_channel(ref.lo_spectrum, channels),
        },
    }


def _densities(curves: dict[str, Curve], names: Sequence[str]) -> dict[str, dict[str, list]]:
    width = float(HIST_EDGES[1] - HIST_EDGES[0])
    out: dict[str, dict[str, list]] = {}
    for n in names:
        cur = curves.get(n)
        for label, counts in (cur.hist if cur is not None else {}).items():
            total = counts.sum()
            if total > 0:
                out.setdefault(label, {})[n] = (counts / (total * width)).tolist()
    return out


def _group_entries(
    group: str,
    curves: dict[str, Curve],
    sims: Sequence[SimResult],
    baselines: Sequence[str],
    ref: Reference | None,
    channels: Sequence[str],
    n_lo: int,
    n_hi: int,
) -> dict[str, Any]:
    """The metrics.json entries of one group (pooled curves)."""
    names = curve_order(list(curves), baselines)
    has_truth = group != HELDOUT
    n_snap = sum(len(r.snapshots) for r in sims)
    orb = _orbit_range([o for r in sims for o in r.orbits])
    when = f", orbits {orb[0]:.2f}–{orb[1]:.2f}" if orb else ""
    if has_truth:
        desc = (
            f"{len(sims)} sim(s), {n_snap} snapshot(s) of the {group!r} split{when}; pixel truth "
            "from the shards"
        )
    else:
        assert ref is not None
        desc = (
            f"{len(sims)} sim(s), {n_snap} snapshot(s) of native {n_lo}² runs{when}; no pixel "
            f"truth: spectra vs the mean {n_hi}² spectrum of the {ref.split!r} split "
            f"({ref.n_snapshots} snapshots)"
        )
    shown = ["truth", *names, "input"] if has_truth else [*names, "input"]
    spec = {
        n: _per_channel(curves[n].spectrum, channels)
        for n in shown
        if n in curves and curves[n].spectrum is not None
    }
    if not has_truth:
        assert ref is not None
        spec = {"reference": _per_channel(ref.hi_spectrum, channels), **spec}
    band = {}
    for n in names:
        b = curves[n].spectrum_band
        if b is not None and curves[n].n_members > 1:
            band[n] = {"min": _per_channel(b[0], channels), "max": _per_channel(b[1], channels)}
    spread = {
        n: pts
        for n in names
        if curves[n].stochastic and (pts := spread_skill_points(curves[n], channels)) is not None
    }
    target_curve = curves.get("truth") if has_truth else (ref.curve if ref else None)
    hist_curves = dict(curves)
    if not has_truth and ref is not None and ref.curve is not None:
        hist_curves["reference"] = ref.curve
    phys = _physics(curves, ["truth", "input", *names])
    if not has_truth and ref is not None and ref.curve is not None:
        p = physics_metrics(ref.curve)
        if p is not None:
            phys = {"reference": p, **phys}
    return {
        "summary": {n: curve_metrics(curves[n], channels) for n in names},
        "group": {
            "truth": has_truth,
            "sims": [r.sim for r in sims],
            "n_snapshots": n_snap,
            "orbit_range": orb,
            "description": desc,
        },
        "physics": phys,
        "spectra": {
            "k": list(range(1, n_hi // 2 + 1)),
            "k_lo": list(range(1, n_lo // 2 + 1)),
            "curves": spec,
            "spread": band,
        },
        "spread_skill": spread,
        "targets": {
            "name": "truth" if has_truth else f"reference ({ref.split!r} split)" if ref else None,
            "metrics": curve_metrics(target_curve, channels) if target_curve else {},
        },
        "pdfs": {
            "edges": HIST_EDGES.tolist(),
            "units": "each variable divided by its own rms (per snapshot, members pooled)",
            "variables": _densities(
                hist_curves, (["reference"] if not has_truth else ["truth"]) + names
            ),
        },
    }


def _physics(curves: dict[str, Curve], names: Sequence[str]) -> dict[str, Any]:
    out = {}
    for n in names:
        if n in curves:
            p = physics_metrics(curves[n])
            if p is not None:
                out[n] = p
    return out


def _worse(snap: dict[str, Any], ch: str) -> float:
    """The lower of the member and ensemble-mean coherence differences of a snapshot."""
    return min(snap["diff"][ch], snap.get("diff_mean", snap["diff"])[ch])


def transition_goal(
    results: Sequence[SimResult], baselines: Sequence[str], channels: Sequence[str]
) -> dict[str, Any]:
    """Per snapshot and channel, ``coh_method - coh_spline`` of the transition band, of single
    members (mean over members: ``diff``) and of the ensemble mean (``diff_mean``), on sims
    with pixel truth outside the train split; the goal is ``>= -GOAL_MARGIN`` for both on every
    snapshot and channel (``min_diff`` is the worse of the two)."""
    rule = (
        f"on every snapshot of seeds outside training, transition-band coherence >= spline's - "
        f"{GOAL_MARGIN} on every channel, for single members (mean over members) and for the "
        "ensemble mean"
    )
    if "spline" not in baselines:
        return {"available": False, "reason": "the spline baseline is not selected", "rule": rule}
    groups: dict[str, Any] = {}
    for r in results:
        if not r.has_truth or r.group == "train" or "spline" not in r.curves:
            continue
        sp = r.curves["spline"]
        sp_rows = sp.table("coherence.transition")
        if sp_rows is None:
            continue
        sp_at = {n: sp_rows[i] for i, n in enumerate(sp.snapshots)}
        for name, cur in r.curves.items():
            rows = cur.table("coherence.transition") if cur.kind == "method" else None
            if rows is None:
                continue
            mean_rows = cur.table("coherence_ensemble_mean.transition")
            g = groups.setdefault(r.group, {}).setdefault(name, {"per_snapshot": []})
            for i, n in enumerate(cur.snapshots):
                d = rows[i] - sp_at[n]
                dm = mean_rows[i] - sp_at[n] if mean_rows is not None else d
                g["per_snapshot"].append(
                    {
                        "sim": r.sim,
                        "snapshot": n,
                        "orbit": cur.orbits[i],
                        "diff": {ch: float(d[c]) for c, ch in enumerate(channels)},
                        "diff_mean": {ch: float(dm[c]) for c, ch in enumerate(channels)},
                    }
                )
    for per_method in groups.values():
        for g in per_method.values():
            chans = {}
            for ch in channels:
                # a snapshot whose truth has no power in the band (e.g. a uniform initial
                # density) has no coherence: the goal is undefined there, not failed or met
                defined = [s for s in g["per_snapshot"] if math.isfinite(_worse(s, ch))]
                undefined = len(g["per_snapshot"]) - len(defined)
                if not defined:
                    chans[ch] = {"min_diff": None, "at": None, "pass": None, "undefined": undefined}
                    continue
                worst = min(defined, key=lambda s, ch=ch: _worse(s, ch))
                v = _worse(worst, ch)
                chans[ch] = {
                    "min_diff": v,
                    "at": {k: worst[k] for k in ("sim", "snapshot", "orbit")},
                    "pass": bool(v >= -GOAL_MARGIN),
                    "undefined": undefined,
                }
            g["channels"] = chans
            g["pass"] = all(c["pass"] is not False for c in chans.values())
    return {"available": bool(groups), "rule": rule, "margin": GOAL_MARGIN, "groups": groups}


def baseline_definitions(
    baselines: Sequence[str],
    results: Sequence[SimResult],
    train: TrainSpectra | None,
    channels: Sequence[str],
    n_hi: int,
    sigmas: dict[str, list[float]],
) -> dict[str, Any]:
    """What each selected baseline is, and the numbers that define the stochastic ones."""
    out: dict[str, Any] = {}
    for b in baselines:
        spec = BASELINES[b]
        rec: dict[str, Any] = {"stochastic": spec.stochastic, "description": spec.description}
        if spec.stochastic:
            rec["ensemble_size"] = {r.sim: r.baseline_members for r in results}
        if b == "spectral-noise" and train is not None:
            rec["train_split"] = train.split
            rec["train_snapshots"] = train.n
            rec["noise_spectrum"] = {
                "k": list(range(1, n_hi // 2 + 1)),
                **_per_channel(train.noise_spectrum[:, 1 : n_hi // 2 + 1], channels),
            }
        if b == "noise":
            rec["sigma_physical"] = {
                sim: dict(zip(channels, s, strict=True)) for sim, s in sigmas.items()
            }
        out[b] = rec
    return out


def _native_shape(
    cfg: EvalConfig,
    curves: dict[str, Curve],
    seeds: SeedSpectra | None,
    channels: Sequence[str],
    n_lo: int,
    n_hi: int,
) -> dict[str, Any]:
    """The held-out group's ``native_shape`` block (:mod:`mhdsr.eval.native_shape`)."""
    if cfg.native_reference != "all":
        return unavailable(
            f"config key native_reference is {cfg.native_reference!r}: the held-out sims are "
            f"compared with the {cfg.reference_split!r} split only"
        )
    if seeds is None:
        return unavailable("the held-out sims' snapshots have no finite time: no orbit window")
    names = curve_order(list(curves), list(cfg.baselines))
    return shape_block(curves, names, seeds, channels, n_lo, n_hi)


def assemble_metrics(
    cfg: EvalConfig,
    files: Sequence[SampleFile],
    results: Sequence[SimResult],
    ref: Reference | None,
    native: tuple[list[list[np.ndarray]], int] | None,
    *,
    train: TrainSpectra | None = None,
    sigmas: dict[str, list[float]] | None = None,
    notes: Sequence[str] = (),
    native_seeds: SeedSpectra | None = None,
) -> dict[str, Any]:
    """The metrics.json structure (before :func:`mhdsr.eval.report.clean`).

    Args:
        cfg: the config (recorded).
        files: every sample file's header.
        results: per-sim results, in job order.
        ref: reference-split statistics (held-out sims), else ``None``.
        native: ``(per-channel value samples, snapshot count)`` of the held-out inputs, or
            ``None`` without held-out sims.
        train: the train spectra of ``spectral-noise`` (if selected).
        sigmas: ``sim -> (C,)`` physical sigma of the ``noise`` baseline (if selected).
        notes: run-level notes (before the per-sim ones).
        native_seeds: per-seed mean hi spectra over the held-out orbit window
            (:func:`mhdsr.eval.native_shape.seed_spectra`; ``native_reference: all``), else
            ``None``.
    """
    from mhdsr.dataset.manifest import manifest_sha256

    channels = list(files[0].channels)
    n_lo, n_hi = files[0].n_lo, files[0].n_hi
    baselines = list(cfg.baselines)
    all_notes: list[str] = list(notes)
    sims: dict[str, Any] = {}
    for r in results:
        names = curve_order(list(r.curves), baselines)
        all_notes.extend(r.notes)
        sims[r.sim] = {
            "group": r.group,
            "has_truth": r.has_truth,
            "snapshots": r.snapshots,
            "times": r.times,
            "orbits": r.orbits,
            "omega": r.omega,
            "files": r.files,
            "metrics": {n: curve_metrics(r.curves[n], channels) for n in [*names, "input"]},
            "physics": _physics(r.curves, [*names, "input", "truth"]),
            "per_snapshot": {
                n: {"snapshots": r.curves[n].snapshots, **per_snapshot(r.curves[n], channels)}
                for n in [*names, "input"]
            },
            "notes": r.notes,
        }
    pooled = pool_curves(results)
    entries = {
        g: _group_entries(
            g, curves, [r for r in results if r.group == g], baselines, ref, channels, n_lo, n_hi
        )
        for g, curves in pooled.items()
    }
    physics = {g: e["physics"] for g, e in entries.items() if e["physics"]}
    if ref is not None and native is not None:
        values, n_native = native
        native_spec = pooled[HELDOUT]["input"].spectrum
        gap = domain_gap(native_spec, values, n_native, ref, channels, n_lo, n_hi)
    else:
        gap = {"available": False, "reason": "no held-out (native lo) sample files"}
    native_shape = {}
    if HELDOUT in pooled:
        native_shape[HELDOUT] = _native_shape(
            cfg, pooled[HELDOUT], native_seeds, channels, n_lo, n_hi
        )
    bands = band_edges(n_lo, n_hi)
    return {
        "version": METRICS_VERSION,
        "kind": "sr",
        "code_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "config": to_dict(cfg),
        "inputs": {
            "samples": str(Path(cfg.samples).resolve()),
            "shards": str(Path(cfg.shards).resolve()),
            "manifest_sha256": manifest_sha256(cfg.shards),
            "n_files": len(files),
        },
        "channels": channels,
        "units": {ch: UNITS.get(ch, "") for ch in channels},
        "grids": {
            "n_lo": n_lo,
            "n_hi": n_hi,
            "k_n": n_lo / 2,
            "bands": {b.name: [b.lo, b.hi] for b in bands.values()},
            "band_intervals": "resolved and transition [lo, hi); generated [lo, hi]",
        },
        "methods": _method_records(files),
        "baselines": baselines,
        "baseline_definitions": baseline_definitions(
            baselines, results, train, channels, n_hi, sigmas or {}
        ),
        "metric_definitions": metric_definitions(),
        "groups": {g: e["group"] for g, e in entries.items()},
        "sims": sims,
        "summary": {g: e["summary"] for g, e in entries.items()},
        "targets": {g: e["targets"] for g, e in entries.items()},
        "physics": {
            "groups": physics,
            "note": "div_b = rms(dBx/dx + dBy/dy) / rms(jz); jz_curl_b = rms(jz - (dBy/dx - "
            "dBx/dy)) / rms(jz); means over snapshots and members; the input on its lo grid; "
            "'reference' = the hi fields of the reference split (held-out floor)"
            if physics
            else f"skipped: channels {channels} lack some of Bx, By, jz",
        },
        "spectra": {g: e["spectra"] for g, e in entries.items()},
        "spread_skill": {g: e["spread_skill"] for g, e in entries.items() if e["spread_skill"]},
        "pdfs": {g: e["pdfs"] for g, e in entries.items()},
        "goals": {"transition_coherence": transition_goal(results, baselines, channels)},
        "domain_gap": gap,
        "native_shape": native_shape,
        "notes": all_notes,
    }
