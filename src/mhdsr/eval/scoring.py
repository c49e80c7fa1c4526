"""Scoring of one sim: per-snapshot rows of every registered metric for every curve (methods,
baselines, truth, input), plus running spectra and PDF histograms.

The loop is snapshot-major (:func:`evaluate_sim`): for each snapshot the truth (or the held-out
reference), the input, each baseline and each method file's ensemble are wrapped in
:class:`~mhdsr.eval.fields.Fields` once and every metric reads the shared FFTs and sorted samples
from them. Memory: one snapshot's truth plus one ensemble ``(E, C, H, W)`` at a time.

Records (:class:`Curve`) keep each metric's per-snapshot rows, so per-sim values, pooled
per-group values and time series all come from the same numbers
(:mod:`mhdsr.eval.pooling`). All fields are in physical units.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from mhdsr.eval.baselines import BASELINES, BaselineInputs, make_baseline
from mhdsr.eval.consistency import check_input, check_rows, expected_input, file_transfer
from mhdsr.eval.curve import Curve, SimResult
from mhdsr.eval.fields import Fields, Target
from mhdsr.eval.inputs import EvalInputError, ShardTruth, read_inputs, read_samples
from mhdsr.eval.planning import HELDOUT, SimJob, orbits, panel_baselines, union_inputs
from mhdsr.eval.reference import Reference
from mhdsr.eval.registry import TABLES, Metric
from mhdsr.method.grid import avgpool2_np


def evaluate_sim(
    job: SimJob,
    truth: ShardTruth,
    *,
    baselines: Sequence[str],
    inputs: BaselineInputs | None = None,
    reference: Reference | None = None,
    panel_snapshots: Iterable[int] = (),
    on_panel: Callable[[dict[str, Any]], None] | None = None,
    on_input: Callable[[np.ndarray], None] | None = None,
    on_snapshot: Callable[[], None] | None = None,
) -> SimResult:
    """Score every method file of one sim, the baselines, the truth and the input.

    Args:
        job: the sim (from :func:`mhdsr.eval.planning.plan_jobs`).
        truth: the shard folder (pixel truth for sims with a split).
        baselines: baseline names (:data:`mhdsr.eval.baselines.BASELINE_NAMES`), computed from
            the sim's lo inputs.
        inputs: what the baselines need (:func:`mhdsr.eval.planning.baseline_inputs`); default:
            the grid factor and the sim's ensemble size (enough for the interpolants).
        reference: statistics of the reference split (needed for held-out sims).
        panel_snapshots: snapshot numbers for which ``on_panel`` receives the fields.
        on_panel: called once per panel snapshot with ``{"sim", "group", "snapshot", "time",
            "orbit", "fields": {column: (C, H, W)}, "methods", "baselines", "channels",
            "has_truth"}`` (physical units; the lo input on its own grid).
        on_input: called with each input ``(C, h, w)`` (e.g. to collect domain-gap values).
        on_snapshot: called after each snapshot (progress).

    Returns:
        The sim's :class:`SimResult`.

    Raises:
        EvalInputError: a truth field is missing or belongs to another sim, or a sample holds
            nan/inf.
        ValueError: a held-out sim without ``reference``, or a baseline without its inputs.
    """
    f0 = job.files[0]
    channels = list(f0.channels)
    n_lo, n_hi = f0.n_lo, f0.n_hi
    factor = n_hi // n_lo
    has_truth = job.split is not None
    if not has_truth and reference is None:
        raise ValueError(f"held-out sim {job.sim}: scoring needs the reference statistics")
    inputs = inputs or BaselineInputs(factor=factor, n_members=job.n_members)
    u = union_inputs(job)
    notes = list(u.notes)
    orb = orbits(u.times, job.omega)
    panel_set = set(panel_snapshots)
    shown = panel_baselines(baselines)

    # ---- the curves and the metrics each one gets
    curves: dict[str, Curve] = {
        "truth": Curve("truth", "truth"),
        "input": Curve("input", "input"),
    }
    for b in baselines:
        st = BASELINES[b].stochastic
        curves[b] = Curve(b, "baseline", inputs.n_members if st else 1, stochastic=st)
    files: dict[str, str] = {}
    for f in job.files:
        files[f.method] = f.rel
        curves[f.method] = Curve(f.method, "method", f.n_members, stochastic=True)
    if not has_truth:
        del curves["truth"]
    skipped: dict[str, Metric] = {}
    for cur in curves.values():
        skipped.update({m.name: m for m in cur.plan(channels, has_truth)})
    by_table: dict[str, list[Metric]] = defaultdict(list)
    for m in skipped.values():
        by_table[m.table].append(m)
    for table, ms in by_table.items():
        need = sorted({c for m in ms for c in m.requires})
        notes.append(
            f"{TABLES[table].lower()} ({', '.join(m.name for m in ms)}) skipped: channels "
            f"{channels} lack some of {need}"
        )
    index = {f.method: {int(n): t for t, n in enumerate(f.snapshots)} for f in job.files}

    # ---- one snapshot at a time
    idx = [truth.channels.index(c) for c in channels] if has_truth else []
    own_inputs = {f.method: read_inputs(f.path) for f in job.files}
    transfers = {f.method: file_transfer(f.attrs, f.rel, len(channels)) for f in job.files}

    def fields(x: np.ndarray) -> Fields:
        return Fields(x, channels, n_lo=n_lo, n_hi=n_hi)

    for i, n in enumerate(u.snapshots):
        lo = u.inputs[i]
        where = dict(sim=job.sim, snapshot=n, time=u.times[i], orbit=orb[i])
        if on_input is not None:
            on_input(lo)
        panel: dict[str, np.ndarray] | None = {"input lo": lo} if n in panel_set else None
        y = None
        if has_truth:
            key = u.keys[i]
            rec = truth.record(job.split, key)
            if rec.get("sim", job.sim) != job.sim:
                raise EvalInputError(
                    f"{f0.rel}: key {key} of split {job.split!r} belongs to sim "
                    f"{rec.get('sim')!r}, not {job.sim!r}"
                )
            y_all = truth.hi(job.split, key)
            y = y_all[idx]
            if factor == 2:  # every file's input must be avgpool2 of this truth
                pooled_all = avgpool2_np(y_all)
                for f in job.files:
                    t = index[f.method].get(n)
                    if t is None:
                        continue
                    if transfers[f.method] is None:
                        check_input(f.rel, n, own_inputs[f.method][t], pooled_all,
                                    channels, truth.channels)  # fmt: skip
                    else:  # method.degrade: the input is degrade(avgpool2(truth), T)
                        want = expected_input(pooled_all[idx], transfers[f.method])
                        check_input(f.rel, n, own_inputs[f.method][t], want, channels, channels)
            tf = fields(y[None])
            target = Target.of_truth(tf)
            curves["truth"].add(tf, target, **where)
        else:
            assert reference is not None
            target = Target(None, reference.hi_power, reference.pdfs)
        curves["input"].add(fields(lo[None]), target, **where)
        for b in baselines:
            x = make_baseline(b, lo, inputs, n)
            curves[b].add(fields(x), target, **where)
            if panel is not None and b in shown:
                panel[b if x.shape[0] == 1 else f"{b} (1 of {x.shape[0]})"] = x[0]
        for f in job.files:
            t = index[f.method].get(n)
            if t is None:
                continue
            ens = read_samples(f.path, t)
            if not np.isfinite(ens).all():
                raise EvalInputError(f"{f.rel}: samples of snapshot {n} hold nan or inf")
            if factor == 2:
                pooled = expected_input(avgpool2_np(ens.mean(axis=0)), transfers[f.method])
                check_rows(f.rel, f.snapshots.tolist(), t, pooled, own_inputs[f.method])
            curves[f.method].add(fields(ens), target, **where)
            if panel is not None:
                panel[f"{f.method} sample"] = ens[0]
                if f.n_members > 1:
                    panel[f"{f.method} mean (E={f.n_members})"] = ens.mean(axis=0)
        if panel is not None and on_panel is not None:
            if y is not None:
                panel["truth"] = y
            on_panel(
                {
                    **where,
                    "group": job.group,
                    "fields": panel,
                    "methods": list(files),
                    "baselines": [k for k in panel if k.split(" (")[0] in shown],
                    "channels": channels,
                    "has_truth": has_truth,
                }
            )
        if on_snapshot is not None:
            on_snapshot()

    return SimResult(
        sim=job.sim,
        group=job.group if has_truth else HELDOUT,
        has_truth=has_truth,
        snapshots=u.snapshots,
        times=u.times,
        orbits=orb,
        omega=job.omega,
        files=files,
        curves=curves,
        notes=notes,
        baseline_members=inputs.n_members,
    )
