"""``mhdsr eval`` end to end: sample files + shards -> metrics.json, figures/*.png, report.md.

Phases: read the headers of every sample file and the shard manifest and check that each sim
can be scored (before any heavy work); the reference statistics of the hi split (only when
held-out sims are present); one sim at a time, every method file, baseline, truth and input
(:func:`mhdsr.eval.evaluate.evaluate_sim`), drawing that sim's comparison panels on the way;
then the pooled summary, the figures, metrics.json and report.md, each written atomically.
"""

from __future__ import annotations

import datetime as _dt
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from mhdsr import __version__
from mhdsr.channels import UNITS
from mhdsr.config import require_folder, to_dict
from mhdsr.eval import figures as F
from mhdsr.eval.config import EvalConfig
from mhdsr.eval.evaluate import (
    HELDOUT,
    Curve,
    Reference,
    SimJob,
    SimResult,
    check_reference_split,
    curve_metrics,
    evaluate_sim,
    physics_metrics,
    plan_jobs,
    pool_curves,
    reference_stats,
    take_values,
    value_stride,
)
from mhdsr.eval.inputs import SampleFile, ShardTruth, discover
from mhdsr.eval.metrics import histogram_distance
from mhdsr.eval.report import check_clean, clean, report_markdown, summary_table
from mhdsr.eval.spectra import band_edges, band_errors
from mhdsr.io_utils import make_output_dir, write_json_atomic, write_text_atomic

METRICS_VERSION = 1
BANDS = ("resolved", "transition", "generated")


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-")


def panel_plan(jobs: Sequence[SimJob], max_panels: int) -> dict[str, list[int]]:
    """Snapshots to draw, ``sim -> [snapshot, ...]``: ``max_panels`` spread round-robin over the
    sims (in job order: sims with truth first), evenly inside each sim (1 pick = the middle)."""
    if max_panels <= 0 or not jobs:
        return {}
    per = [max_panels // len(jobs) + (i < max_panels % len(jobs)) for i in range(len(jobs))]
    plan: dict[str, list[int]] = {}
    for job, k in zip(jobs, per):
        snaps = sorted({int(n) for f in job.files for n in f.snapshots})
        if k <= 0:
            continue
        # the centres of k equal parts of the snapshot list (distinct, since len(snaps) >= k)
        k = min(k, len(snaps))
        plan[job.sim] = [snaps[int((i + 0.5) * len(snaps) / k)] for i in range(k)]
    return plan


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


def _per_channel(a: np.ndarray, channels: Sequence[str]) -> dict[str, list[float]]:
    return {ch: np.asarray(a[c], np.float64).tolist() for c, ch in enumerate(channels)}


def _curve_order(names: Sequence[str], baselines: Sequence[str]) -> list[str]:
    methods = sorted(n for n in names if n not in ("truth", "input", *baselines))
    return methods + [b for b in baselines if b in names]


def domain_gap(
    native_spec: np.ndarray,
    native_values: list[list[np.ndarray]],
    n_native: int,
    ref: Reference,
    channels: Sequence[str],
    n_lo: int,
    n_hi: int,
) -> dict[str, Any]:
    """Domain-gap statistics (DESIGN.md, "Metrics"): native lo vs avgpool2(hi) of the reference.

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
    return {
        "available": True,
        "native": f"inputs of the held-out sims ({n_native} snapshots, native {n_lo}² runs)",
        "reference": f"avgpool2(hi) of the {ref.split!r} split ({ref.n_snapshots} snapshots)",
        "why_reference": "hi seeds are exchangeable, so the held-out test seeds stand for the "
        "training distribution; it is the split already read for the reference spectrum",
        "native_snapshots": n_native,
        "reference_snapshots": ref.n_snapshots,
        "reference_time_range": [min(ref.times), max(ref.times)] if ref.times else None,
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


def run_eval(cfg: EvalConfig, *, stdout: TextIO | None = None) -> dict[str, Any]:
    """Evaluate every sample file below ``cfg.samples``; write the outputs; return the metrics.

    Args:
        cfg: the validated config.
        stdout: where the summary table goes (default ``sys.stdout``).

    Returns:
        The metrics dict as written to ``output_dir/metrics.json``.

    Raises:
        EvalInputError: a missing samples folder, no ``.h5`` files, a malformed file, a sim
            without truth in the shards (all before heavy work), or a bad truth field.
        ShardError: the shard folder has no valid manifest.
    """
    from mhdsr.shard_builder.manifest import read_manifest

    stdout = stdout or sys.stdout
    # ---- headers and plan (cheap; every user error is raised here)
    files = discover(cfg.samples)
    manifest = read_manifest(require_folder(cfg.shards, "shards"))
    truth = ShardTruth(Path(cfg.shards), manifest)
    jobs = plan_jobs(files, truth)
    channels = list(files[0].channels)
    n_lo = files[0].n_lo
    baselines = list(cfg.baselines)
    out = Path(cfg.output_dir)
    figdir = out / "figures"
    written: list[str] = []

    # ---- reference split (held-out sims only)
    held = [j for j in jobs if j.group == HELDOUT]
    if held:  # a user error: raise before any output exists
        check_reference_split(truth, cfg.reference_split)
    make_output_dir(out, "output_dir")
    figdir.mkdir(exist_ok=True)
    ref = (
        reference_stats(truth, cfg.reference_split, channels, cfg.hist_max_values) if held else None
    )
    n_native = sum(len({int(n) for f in j.files for n in f.snapshots}) for j in held)
    stride = value_stride(max(1, n_native) * n_lo * n_lo, cfg.hist_max_values)
    native_values: list[list[np.ndarray]] = [[] for _ in channels]
    counter = [0]

    def collect(lo: np.ndarray) -> None:
        for c in range(len(channels)):
            native_values[c].append(take_values(lo[c], stride, counter[0]))
        counter[0] += 1

    def draw(panel: dict[str, Any]) -> None:
        name = f"panel_{len(written):02d}_{_slug(panel['sim'])}_n{panel['snapshot']:05d}.png"
        F.save_png(F.panel_figure(panel, baselines), figdir / name, dpi=80)
        written.append(f"figures/{name}")

    # ---- one sim at a time
    plan = panel_plan(jobs, cfg.max_panels)
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(files), unit="file", desc=f"eval -> {out}", file=sys.stderr)
    results: list[SimResult] = []
    try:
        for job in jobs:
            results.append(
                evaluate_sim(
                    job,
                    truth,
                    baselines=baselines,
                    panel_snapshots=plan.get(job.sim, ()),
                    on_panel=draw,
                    on_input=collect if job.group == HELDOUT else None,
                    on_file=(lambda f: bar.update(1)) if bar is not None else None,
                )
            )
    finally:
        if bar is not None:
            bar.close()

    # ---- numbers, figures, files
    native = (native_values, n_native) if held else None
    metrics = clean(assemble_metrics(cfg, files, results, ref, native))
    check_clean(metrics)
    hist = None
    if ref is not None and held:
        hist = {
            "native lo": [np.concatenate(v) for v in native_values],
            "avgpool2(hi)": [np.concatenate(v) for v in ref.lo_values],
        }
    written += summary_figures(metrics, figdir, hist)
    for p in figdir.glob("*.png"):  # figures of an earlier run that this one did not redraw
        if f"figures/{p.name}" not in written:
            p.unlink()
    write_json_atomic(out / "metrics.json", metrics)
    write_text_atomic(out / "report.md", report_markdown(metrics, written))
    table = summary_table(metrics)
    write_text_atomic(out / "summary.md", table + "\n")
    print(table, file=stdout)
    for n in metrics["notes"]:
        print(f"note: {n}", file=sys.stderr)
    print(
        f"\nwrote {out / 'metrics.json'}, {out / 'report.md'}, summary.md and {len(written)} figure(s) in "
        f"{figdir}",
        file=stdout,
    )
    return metrics


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
    """The metrics.json entries of one group (pooled curves): summary, group info, physics,
    mean spectra and the per-snapshot spread/skill points."""
    names = _curve_order(list(curves), baselines)
    has_truth = group != HELDOUT
    reference = None if has_truth else ref.hi_spectrum
    n_snap = sum(len(r.snapshots) for r in sims)
    if has_truth:
        desc = (
            f"{len(sims)} sim(s), {n_snap} snapshot(s) of the {group!r} split; pixel truth from "
            "the shards"
        )
    else:
        desc = (
            f"{len(sims)} sim(s), {n_snap} snapshot(s) of native {n_lo}² runs; no pixel truth: "
            f"spectra vs the mean {n_hi}² spectrum of the {ref.split!r} split "
            f"({ref.n_snapshots} snapshots)"
        )
    spec = {
        n: _per_channel(curves[n].spectrum, channels)
        for n in ["truth", *names, "input"]
        if n in curves and curves[n].spectrum is not None and (has_truth or n != "truth")
    }
    if not has_truth:
        spec = {"reference": _per_channel(reference, channels), **spec}
    spread = {
        n: {
            "n_members": curves[n].n_members,
            "skill": _per_channel(np.sqrt(curves[n].table("skill2")).T, channels),
            "spread_calibrated": _per_channel(np.sqrt(curves[n].table("spread2_cal")).T, channels),
        }
        for n in names
        if curves[n].kind == "method" and curves[n].table("skill2") is not None
    }
    return {
        "summary": {
            n: curve_metrics(curves[n], channels, n_lo, n_hi, reference=reference) for n in names
        },
        "group": {
            "truth": has_truth,
            "sims": [r.sim for r in sims],
            "n_snapshots": n_snap,
            "description": desc,
        },
        "physics": _physics(curves, ["truth", "input", *names]),
        "spectra": {
            "k": list(range(1, n_hi // 2 + 1)),
            "k_lo": list(range(1, n_lo // 2 + 1)),
            "curves": spec,
        },
        "spread_skill": spread,
    }


def assemble_metrics(
    cfg: EvalConfig,
    files: Sequence[SampleFile],
    results: Sequence[SimResult],
    ref: Reference | None,
    native: tuple[list[list[np.ndarray]], int] | None,
) -> dict[str, Any]:
    """The metrics.json structure (before :func:`mhdsr.eval.report.clean`).

    Args:
        cfg: the config (recorded).
        files: every sample file's header.
        results: per-sim results, in job order.
        ref: reference-split statistics (held-out sims), else ``None``.
        native: ``(per-channel value samples, snapshot count)`` of the held-out inputs, or
            ``None`` without held-out sims.
    """
    from mhdsr.shard_builder.manifest import manifest_sha256

    channels = list(files[0].channels)
    n_lo, n_hi = files[0].n_lo, files[0].n_hi
    baselines = list(cfg.baselines)
    ref_hi = ref.hi_spectrum if ref is not None else None
    sims: dict[str, Any] = {}
    notes: list[str] = []
    for r in results:
        names = _curve_order(list(r.curves), baselines)
        reference = ref_hi if r.group == HELDOUT else None
        notes.extend(r.notes)
        sims[r.sim] = {
            "group": r.group,
            "has_truth": r.has_truth,
            "snapshots": r.snapshots,
            "times": r.times,
            "files": r.files,
            "metrics": {
                n: curve_metrics(r.curves[n], channels, n_lo, n_hi, reference=reference)
                for n in [*names, "input"]
            },
            "physics": _physics(r.curves, [*names, "input", "truth"]),
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
    bands = band_edges(n_lo, n_hi)
    return {
        "version": METRICS_VERSION,
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
        "groups": {g: e["group"] for g, e in entries.items()},
        "sims": sims,
        "summary": {g: e["summary"] for g, e in entries.items()},
        "physics": {
            "groups": physics,
            "note": "div_b = rms(dBx/dx + dBy/dy) / rms(jz); jz_curl_b = rms(jz - (dBy/dx - "
            "dBx/dy)) / rms(jz); means over snapshots and members; the input on its lo grid"
            if physics
            else f"skipped: channels {channels} lack some of Bx, By, jz",
        },
        "spectra": {g: e["spectra"] for g, e in entries.items()},
        "spread_skill": {g: e["spread_skill"] for g, e in entries.items() if e["spread_skill"]},
        "domain_gap": gap,
        "notes": notes,
    }


def summary_figures(
    metrics: dict[str, Any], figdir: Path, hist: dict[str, list[np.ndarray]] | None
) -> list[str]:
    """Draw the group figures from the (clean) metrics: spectra, band errors, spread/skill,
    domain gap (``hist``: the value samples of its histograms). Returns paths relative to the
    output folder."""
    channels = metrics["channels"]
    k_n = metrics["grids"]["k_n"]
    ref_split = metrics["config"]["reference_split"]
    written = []

    def arr(per_channel: dict[str, list[float]]) -> np.ndarray:
        return np.array([per_channel[ch] for ch in channels], dtype=np.float64)

    for group, s in metrics["spectra"].items():
        fig = F.spectra_plot(
            np.array(s["k"]),
            {n: arr(v) for n, v in s["curves"].items()},
            channels,
            k_lo=np.array(s["k_lo"]),
            k_n=k_n,
            title=f"{group}: mean power spectra (k_n dashed, k_n/2 dotted)",
        )
        written.append(_save(fig, figdir, f"spectra_{group}.png"))
        summ = metrics["summary"][group]
        errs = {
            n: {ch: v[ch].get("spectral_error", {}) for ch in channels} for n, v in summ.items()
        }
        against = "truth" if metrics["groups"][group]["truth"] else f"the {ref_split}-split mean"
        fig = F.band_error_figure(
            errs, channels, BANDS, title=f"{group}: band spectral error vs {against}"
        )
        written.append(_save(fig, figdir, f"band_errors_{group}.png"))
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


def _save(fig: Any, figdir: Path, name: str) -> str:
    F.save_png(fig, figdir / name)
    return f"figures/{name}"


def _physics(curves: dict[str, Curve], names: Sequence[str]) -> dict[str, Any]:
    out = {}
    for n in names:
        if n in curves:
            p = physics_metrics(curves[n])
            if p is not None:
                out[n] = p
    return out
