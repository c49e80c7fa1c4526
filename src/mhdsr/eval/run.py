"""``mhdsr eval`` end to end: sample files + shards -> metrics.json, figures/*.png, report.md.

Phases (each in its own module): plan (headers and the manifest; every user error is raised
here, before any output: :mod:`~mhdsr.eval.planning`); whole-split statistics (the train
spectra of ``spectral-noise``, the reference of held-out sims: :mod:`~mhdsr.eval.reference`);
one sim at a time, snapshot by snapshot, every method, baseline, truth and input, drawing that
sim's comparison panels on the way (:mod:`~mhdsr.eval.scoring`); the every-seed reference of
the held-out shape error over their scored orbit window (:mod:`~mhdsr.eval.native_shape`);
pooling, metrics.json
(:mod:`~mhdsr.eval.assemble`), the reading (:mod:`~mhdsr.eval.reading`), figures and report.md
(:mod:`mhdsr.plots`, :mod:`~mhdsr.eval.report`), each file written atomically.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mhdsr.config import require_folder
from mhdsr.eval.assemble import assemble_metrics
from mhdsr.eval.config import EvalConfig
from mhdsr.eval.curve import SimResult
from mhdsr.eval.inputs import ShardTruth, discover
from mhdsr.eval.native_shape import orbit_window, seed_spectra
from mhdsr.eval.planning import (
    HELDOUT,
    baseline_inputs,
    check_baselines,
    panel_plan,
    plan_jobs,
)
from mhdsr.eval.reading import readings
from mhdsr.eval.reference import (
    check_reference_split,
    reference_stats,
    take_values,
    train_spectra,
    value_stride,
)
from mhdsr.eval.report import check_clean, clean, report_markdown, summary_table
from mhdsr.eval.scoring import evaluate_sim
from mhdsr.io_utils import (
    make_output_dir,
    publish_dir,
    staging_dir,
    write_json_atomic,
    write_text_atomic,
)
from mhdsr.plots import FAST_RC, panel_figure, plt, save_png, summary_figures


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-")


def _forecast_kinds(samples: str) -> dict[str, list[Path]] | None:
    """The files below ``samples`` by kind when any is a forecast rollout or chain file (those
    have their own evaluation, :mod:`mhdsr.eval.forecast_report`), else ``None`` (the
    super-resolution evaluation, unchanged).

    Raises:
        EvalInputError: super-resolution sample files mixed with forecast files (evaluate them
            with separate ``samples`` folders).
    """
    from mhdsr.eval.forecast_report import forecast_files

    root = Path(samples)
    if not root.is_dir():
        return None  # discover() names the problem
    paths = sorted(p for p in root.rglob("*.h5") if p.is_file() and not p.name.startswith("."))
    kinds = forecast_files(paths)
    if not kinds["forecast"] and not kinds["chain"]:
        return None
    if kinds["sr"]:
        from mhdsr.eval.inputs import EvalInputError

        raise EvalInputError(
            f"config key 'samples': {root} mixes super-resolution sample files (e.g. "
            f"{kinds['sr'][0]}) with forecast rollout/chain files (e.g. "
            f"{(kinds['forecast'] or kinds['chain'])[0]}); evaluate them with separate samples= "
            "folders"
        )
    return kinds


def run_eval(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate every sample file below ``cfg.samples``; write the outputs; return the metrics.

    The summary table goes to ``sys.stdout`` (looked up at call time, so
    ``contextlib.redirect_stdout`` captures it), notes to ``sys.stderr``.

    Args:
        cfg: the validated config.

    Returns:
        The metrics dict as written to ``output_dir/metrics.json``.

    Raises:
        EvalInputError: a missing samples folder, no ``.h5`` files, a malformed file, a sim
            without truth in the shards, a baseline that cannot be made (all before heavy
            work), or a bad truth field.
        ShardError: the shard folder has no valid manifest.
    """
    from mhdsr.dataset.manifest import normalization, read_manifest

    forecast = _forecast_kinds(cfg.samples)
    if forecast is not None:  # rollout / chain files: the forecast evaluation
        from mhdsr.eval.forecast_report import run_forecast_eval

        return run_forecast_eval(cfg, forecast)
    stdout = sys.stdout
    clock = {"start": time.perf_counter()}
    # ---- headers and plan (cheap; every user error is raised here)
    files = discover(cfg.samples)
    manifest = read_manifest(require_folder(cfg.shards, "shards"))
    truth = ShardTruth(Path(cfg.shards), manifest)
    jobs = plan_jobs(files, truth)
    channels = list(files[0].channels)
    n_lo, factor = files[0].n_lo, files[0].n_hi // files[0].n_lo
    baselines = list(cfg.baselines)
    check_baselines(baselines, files, truth, cfg.train_split)
    held = [j for j in jobs if j.group == HELDOUT]
    if held:
        check_reference_split(truth, cfg.reference_split)
    out = Path(cfg.output_dir)
    figdir = staging_dir(out / "figures")  # drawn here, renamed to figures/ when complete
    make_output_dir(out, "output_dir")
    figdir.mkdir(exist_ok=True)
    timing: dict[str, float] = {}

    # ---- whole-split statistics
    t0 = time.perf_counter()
    train = None
    if "spectral-noise" in baselines:
        train = train_spectra(truth, cfg.train_split, channels, factor, cfg.train_max_snapshots)
    std = normalization(manifest, "hi", channels)[1] if "noise" in baselines else None
    ref = None
    if held:
        ref = reference_stats(
            truth,
            cfg.reference_split,
            channels,
            cfg.hist_max_values,
            omega=held[0].omega,
            pdf_snapshots=cfg.reference_pdf_snapshots,
        )
    timing["split_statistics_s"] = time.perf_counter() - t0

    # ---- one sim at a time
    n_native = sum(len(j.snapshots) for j in held)
    stride = value_stride(max(1, n_native) * n_lo * n_lo, cfg.hist_max_values)
    native_values: list[list[np.ndarray]] = [[] for _ in channels]
    counter = [0]
    written: list[str] = []

    def collect(lo: np.ndarray) -> None:
        for c in range(len(channels)):
            native_values[c].append(take_values(lo[c], stride, counter[0]))
        counter[0] += 1

    def draw(panel: dict[str, Any]) -> None:
        name = f"panel_{len(written):02d}_{_slug(panel['sim'])}_n{panel['snapshot']:05d}.png"
        with plt.rc_context(FAST_RC):
            save_png(panel_figure(panel), figdir / name, dpi=80)
        written.append(f"figures/{name}")

    plan = panel_plan(jobs, cfg.max_panels)
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        total = sum(len(j.snapshots) for j in jobs)
        bar = tqdm(total=total, unit="snapshot", desc=f"eval -> {out}", file=sys.stderr)
    results: list[SimResult] = []
    notes: list[str] = []
    sigmas: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    try:
        for job in jobs:
            inputs, job_notes = baseline_inputs(
                job,
                baselines,
                seed=cfg.baseline_seed,
                std=std,
                noise_spectrum=train.noise_spectrum if train is not None else None,
            )
            notes += job_notes
            if inputs.sigma is not None:
                sigmas[job.sim] = [float(s) for s in inputs.sigma]
            results.append(
                evaluate_sim(
                    job,
                    truth,
                    baselines=baselines,
                    inputs=inputs,
                    reference=ref,
                    panel_snapshots=plan.get(job.sim, ()),
                    on_panel=draw,
                    on_input=collect if job.group == HELDOUT else None,
                    on_snapshot=(lambda: bar.update(1)) if bar is not None else None,
                )
            )
    finally:
        if bar is not None:
            bar.close()
    timing["scoring_s"] = time.perf_counter() - t0

    # ---- the every-seed reference of the held-out shape error (their orbit window)
    seeds = None
    win = orbit_window([o for r in results if r.group == HELDOUT for o in r.orbits])
    if held and cfg.native_reference == "all" and win is not None:
        t0 = time.perf_counter()
        seeds = seed_spectra(truth, channels, win[:2], win[2])
        timing["native_reference_s"] = time.perf_counter() - t0

    # ---- numbers, reading, figures, files
    native = (native_values, n_native) if held else None
    metrics = clean(
        assemble_metrics(
            cfg,
            files,
            results,
            ref,
            native,
            train=train,
            sigmas=sigmas,
            notes=notes,
            native_seeds=seeds,
        )
    )
    metrics["readings"] = clean(readings(metrics))
    check_clean(metrics)
    hist = None
    if ref is not None:
        hist = {
            "native lo": [np.concatenate(v) for v in native_values],
            "avgpool2(hi)": [np.concatenate(v) for v in ref.lo_values],
        }
    t0 = time.perf_counter()
    written += summary_figures(metrics, figdir, hist)
    timing["figures_s"] = time.perf_counter() - t0
    figdir = publish_dir(figdir, out / "figures")  # complete: replaces the earlier figures/
    timing["total_s"] = time.perf_counter() - clock["start"]
    metrics["timing"] = {k: round(v, 2) for k, v in timing.items()}
    write_json_atomic(out / "metrics.json", metrics)
    write_text_atomic(out / "report.md", report_markdown(metrics, written))
    table = summary_table(metrics)
    write_text_atomic(out / "summary.md", table + "\n")
    print(table, file=stdout)
    for n in metrics["notes"]:
        print(f"note: {n}", file=sys.stderr)
    print(
        f"\nwrote {out / 'metrics.json'}, {out / 'report.md'}, summary.md and {len(written)} "
        f"figure(s) in {figdir} ({timing['total_s']:.0f} s)",
        file=stdout,
    )
    return metrics
