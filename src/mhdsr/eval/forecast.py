"""Scores of forecast rollouts and of the forecast -> super-resolve chain, per lead time
(docs/design.md "Forecast stage"), and the energy cross-check against AthenaK's history file.

Inputs (found by :func:`mhdsr.eval.run.run_eval` from the ``kind`` attribute of each HDF5 file):
rollout files of ``mhdsr forecast rollout`` (``kind = "forecast"``) and super-resolved rollouts
of ``mhdsr sample`` with ``inputs.kind=forecast`` (``kind = "chain"``).

Per rollout file, initial state ``i`` and lead ``k`` (``k dt`` after ``t0``) where the run has
the truth ``y``, every channel, in physical units on the lo grid:

* methods: the **model** forecast; **persistence** ``x(t0)``; **linear** extrapolation
  ``x(t0) + k (x(t0) - x(t0 - dt))`` (where the file has ``x(t0 - dt)``);
* ``RMSE = sqrt(<(p - y)^2>)``, ``NRMSE = RMSE / std(y)`` (std over the grid of that truth);
  ``corr`` = Pearson correlation over the grid (:func:`mhdsr.analysis.energy.pearson`);
* band spectral errors (resolved ``[1, 32)``, transition ``[32, 64)`` on a 128^2 grid) of the
  mean spectrum over initial states at each lead against the truth's (docs/design.md
  "Metrics");
* domain-mean kinetic ``<rho |v|^2 / 2>`` and magnetic ``<|B|^2 / 2>`` energy: the relative
  error ``E_p / E_y - 1`` per initial state;
* the **correlation-0.5 lead**: the first lead at which the mean correlation over initial
  states falls below 0.5 (``None`` if it never does within the rollout).

Values are averaged over the initial states with truth at that lead, per file ("sim") and
pooled over every rollout file ("all"). The chain is scored on the hi grid against the hi run at
``t0 + k dt`` (rollouts of avgpool2-ed hi runs only: a native lo run has no hi truth) for the
ensemble mean and single members of the super-resolved forecast, next to
**persistence+bicubic** ``Up(x(t0))``, **forecast+bicubic** ``Up(forecast)`` and
**truth-lo+bicubic** ``Up(avgpool2(y))`` (what interpolation gives with a perfect forecast), with
the hi-grid bands (resolved, transition, generated ``[64, 128]``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mhdsr.analysis.energy import kinetic_energy, magnetic_energy
from mhdsr.analysis.spectra import band_edges, band_errors, radial_spectrum
from mhdsr.dataset import h5layout as H
from mhdsr.errors import MhdsrError
from mhdsr.eval.consistency import INPUT_RTOL, check_rows
from mhdsr.eval.fields import Fields, Target
from mhdsr.eval.inputs import EvalInputError
from mhdsr.eval.registry import FORECAST, NULL_KEY, Metric, for_kinds

FORECAST_KIND, CHAIN_KIND = H.KIND_FORECAST, H.KIND_CHAIN
#: methods of a rollout file (model first)
FORECAST_METHODS = ("model", "persistence", "linear")
#: methods of a chain file (the super-resolved forecast first)
CHAIN_METHODS = ("chain", "chain member", "persistence+bicubic", "forecast+bicubic",
                 "truth-lo+bicubic")  # fmt: skip
CORR_THRESHOLD = 0.5


class ForecastEvalError(MhdsrError, ValueError):
    """A rollout or chain file cannot be evaluated (the message names the file)."""


def file_kind(path: Path) -> str:
    """``"forecast"``, ``"chain"`` or ``"sr"`` (the ``kind`` attribute; absent = an SR file).

    Raises:
        ForecastEvalError: the file cannot be opened as HDF5.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return H.file_kind(f.attrs)
    except OSError as e:
        raise ForecastEvalError(f"{path}: cannot read as HDF5 ({e})") from None


# ----------------------------------------------------------------------------------------------
# Accumulating rows per lead


@dataclass
class LeadStats:
    """Per-(initial state, lead) rows of one method, and the spectra summed per lead.

    Attributes:
        rows: lead (1-based) -> metric -> list of rows (``(C,)`` arrays or scalars).
        spec: lead -> summed spectrum ``(C, K)``; ``count`` lead -> number summed.
    """

    rows: dict[int, dict[str, list[Any]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    spec: dict[int, np.ndarray] = field(default_factory=dict)
    count: dict[int, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, lead: int, values: dict[str, Any], spectrum: np.ndarray) -> None:
        for k, v in values.items():
            self.rows[lead][k].append(v)
        self.spec[lead] = self.spec.get(lead, 0.0) + spectrum
        self.count[lead] += 1

    def merge(self, other: LeadStats) -> None:
        for lead, d in other.rows.items():
            for k, v in d.items():
                self.rows[lead][k] += v
        for lead, e in other.spec.items():
            self.spec[lead] = self.spec.get(lead, 0.0) + e
            self.count[lead] += other.count[lead]


def forecast_metrics(channels: list[str]) -> list[Metric]:
    """The registered metrics of forecast curves (:data:`~mhdsr.eval.registry.FORECAST`) that
    ``channels`` support (the energies need their components)."""
    return [m for m in for_kinds({FORECAST}) if all(c in channels for c in m.requires)]


def _rows(
    pred: np.ndarray, truth: np.ndarray, channels: list[str]
) -> tuple[dict[str, Any], np.ndarray]:
    """Rows of every forecast metric of the registry for one field pair ``(C, N, N)`` (float64)
    and the prediction's spectrum ``(C, K)``."""
    p = pred.astype(np.float64)
    y = truth.astype(np.float64)
    n = p.shape[-1]
    pf = Fields(p[None], channels, n_lo=n, n_hi=2 * n)
    # no spectral metric among the forecast metrics: the target needs no spectrum
    target = Target(Fields(y[None], channels, n_lo=n, n_hi=2 * n), np.empty((0, 0)))
    vals = {m.name: m.fn(pf, target) for m in forecast_metrics(channels)}
    return vals, radial_spectrum(p)[1]


def _reduce(stats: dict[str, LeadStats], truth: LeadStats, lead_orbits: dict[int, float],
            channels: list[str], n_lo: int, n_hi: int) -> dict[str, Any]:  # fmt: skip
    """Per method and lead: mean of each metric over the rows, band errors of the mean spectra,
    the correlation-0.5 lead (orbits; None = never within the leads)."""
    k = np.arange(1, truth.spec[next(iter(truth.spec))].shape[-1] + 1) if truth.spec else None
    edges = band_edges(n_lo, n_hi)
    out: dict[str, Any] = {}
    for name, st in stats.items():
        leads = sorted(st.rows)
        curve: dict[str, Any] = {"lead": leads, "lead_orbits": [lead_orbits[L] for L in leads],
                                 "n": [st.count[L] for L in leads]}  # fmt: skip
        metrics = forecast_metrics(channels)
        for metric in (m.name for m in metrics if m.per_channel):
            curve[metric] = {
                ch: [float(np.mean([r[c] for r in st.rows[L][metric]])) for L in leads]
                for c, ch in enumerate(channels)
            }
            curve[f"{metric}_mean"] = [
                float(np.mean([np.mean(r) for r in st.rows[L][metric]])) for L in leads
            ]
        for e in (m.name for m in metrics if not m.per_channel):
            if all(st.rows[L].get(e) for L in leads):
                curve[e] = [float(np.mean(st.rows[L][e])) for L in leads]
                curve[e.replace("_rel", "_abs_rel")] = [
                    float(np.mean(np.abs(st.rows[L][e]))) for L in leads
                ]
                curve[e.replace("_rel", "_max_abs_rel")] = [
                    float(np.max(np.abs(st.rows[L][e]))) for L in leads
                ]
        bands: dict[str, dict[str, list[float]]] = defaultdict(lambda: {ch: [] for ch in channels})
        for L in leads:
            if L not in truth.spec:
                continue
            e_p = st.spec[L] / st.count[L]
            e_y = truth.spec[L] / truth.count[L]
            for b, v in band_errors(e_p, e_y, k, n_lo, n_hi).items():
                if edges[b].hi > k[-1]:  # a band the grid only touches (lo grid: generated)
                    continue
                for c, ch in enumerate(channels):
                    bands[b][ch].append(float(v[c]))
        curve["band_error"] = dict(bands)
        curve["corr_lead"] = {}
        for ch in [*channels, "mean"]:
            series = curve["corr_mean"] if ch == "mean" else curve["corr"][ch]
            below = [lead_orbits[L] for L, c in zip(leads, series) if c < CORR_THRESHOLD]
            curve["corr_lead"][ch] = below[0] if below else None
        never = [ch for ch, v in curve["corr_lead"].items() if v is None]
        if never:
            curve["corr_lead"][NULL_KEY] = {
                ch: f"the correlation stays >= {CORR_THRESHOLD} at every lead with truth"
                for ch in never
            }
        out[name] = curve
    return out


# ----------------------------------------------------------------------------------------------
# Rollout files


@dataclass
class RolloutScore:
    """What one rollout file contributes (before reduction)."""

    path: Path
    sim: str
    lo_kind: str
    run_dir: str
    channels: list[str]
    dt_orbits: float
    steps: int
    lead_orbits: dict[int, float]
    stats: dict[str, LeadStats]
    truth: LeadStats
    finite_leads: int  # leads 1..finite_leads of every initial state are finite
    n_init: int
    grid: int
    init_snapshots: list[int]
    truth_snapshots: np.ndarray


def _read_rollout(path: Path) -> dict[str, Any]:
    import h5py

    need = H.ROLLOUT_DATASETS
    try:
        with h5py.File(path, "r") as f:
            missing = [n for n in need if n not in f]
            if missing:
                raise ForecastEvalError(f"{path}: not a rollout file (missing {missing})")
            if not bool(f.attrs.get(H.COMPLETE, False)):
                raise ForecastEvalError(
                    f"{path}: attribute complete is false (an unfinished rollout)"
                )
            d = {n: f[n][()] for n in need}
            d["attrs"] = {
                k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()
            }
    except ForecastEvalError:
        raise
    except Exception as e:
        raise ForecastEvalError(f"{path}: cannot read as a rollout file: {e}") from None
    return d


def check_rollout(path: Path, d: dict[str, Any]) -> None:
    """Refuse a rollout file whose initial states, previous states and truths disagree: each
    is a snapshot of one run, so two arrays of one snapshot number must be equal, per channel
    ``max|a - b| <= INPUT_RTOL * max|b|`` (:data:`mhdsr.eval.consistency.INPUT_RTOL`, 1e-4;
    both are float32 copies of the same field, equal in a file written by ``mhdsr forecast
    rollout``). Catches swapped or replaced truths and initial states.

    Raises:
        ForecastEvalError: naming the file, the snapshot and the two places.
    """
    seen: dict[int, tuple[np.ndarray, str]] = {}

    def add(snap: int, x: np.ndarray, where: str) -> None:
        if snap < 0:
            return
        if snap not in seen:
            seen[snap] = (x, where)
            return
        ref, first = seen[snap]
        with np.errstate(invalid="ignore"):
            num = np.abs(x.astype(np.float64) - ref).max(axis=(-2, -1))
            den = np.maximum(np.abs(ref.astype(np.float64)).max(axis=(-2, -1)), 1e-30)
            rel = float(np.nanmax(num / den))
        if rel > INPUT_RTOL:
            raise ForecastEvalError(
                f"{path}: snapshot {snap}: {where} differs from {first} (max|a - b| / max|b| = "
                f"{rel:.3g} > {INPUT_RTOL:g}); its initial states and truths are not one run's "
                "snapshots (swapped or replaced)"
            )

    for i, s in enumerate(d["init_snapshot"]):
        add(int(s), d["init"][i], f"the initial state {i}")
    for i, s in enumerate(d["prev_snapshot"]):
        add(int(s), d["prev"][i], f"the previous state of initial state {i}")
    for i, row in enumerate(d["truth_snapshot"]):
        for k, s in enumerate(row):
            add(int(s), d["truth"][i, k], f"the truth of initial state {i} at lead {k + 1}")


def score_rollout(path: Path) -> RolloutScore:
    """Rows of the model, persistence and linear extrapolation for every (initial state, lead)
    of one rollout file that has truth (see the module docstring).

    Raises:
        ForecastEvalError: not a complete rollout file.
    """
    d = _read_rollout(path)
    check_rollout(path, d)
    a = d["attrs"]
    channels = [str(c) for c in np.atleast_1d(a["channels"])]
    fc, truth, init, prev = d[H.FORECAST], d[H.TRUTH], d[H.INIT], d[H.PREV]
    n, steps = fc.shape[:2]
    lead_orbits = {k + 1: float(d[H.LEAD_ORBITS][k]) for k in range(steps)}
    stats = {m: LeadStats() for m in FORECAST_METHODS}
    tstats = LeadStats()
    finite = np.array([np.isfinite(fc[:, k]).all() for k in range(steps)])
    finite_leads = int(np.argmin(finite)) if not finite.all() else steps
    for i in range(n):
        has_prev = int(d[H.PREV_SNAPSHOT][i]) >= 0
        for k in range(steps):
            if int(d[H.TRUTH_SNAPSHOT][i, k]) < 0:
                continue
            lead = k + 1
            y = truth[i, k]
            tstats.add(lead, {}, radial_spectrum(y.astype(np.float64))[1])
            cands = {"model": fc[i, k], "persistence": init[i]}
            if has_prev:
                cands["linear"] = init[i] + lead * (init[i].astype(np.float64) - prev[i])
            for m, p in cands.items():
                if m == "model" and not np.isfinite(p).all():
                    continue
                vals, spec = _rows(p, y, channels)
                stats[m].add(lead, vals, spec)
    return RolloutScore(
        path=path, sim=str(a["sim"]), lo_kind=str(a["lo_kind"]), run_dir=str(a["run_dir"]),
        channels=channels, dt_orbits=float(a["dt_orbits"]), steps=steps, lead_orbits=lead_orbits,
        stats=stats, truth=tstats, finite_leads=finite_leads, n_init=n, grid=fc.shape[-1],
        init_snapshots=[int(s) for s in d[H.INIT_SNAPSHOT]], truth_snapshots=d[H.TRUTH_SNAPSHOT],
    )  # fmt: skip


def reduce_rollouts(scores: list[RolloutScore]) -> dict[str, Any]:
    """Per sim and pooled (``"all"``) curves of :func:`_reduce`.

    Raises:
        ForecastEvalError: the files have different cadences or channels (cannot be pooled).
    """
    dts = {s.dt_orbits for s in scores}
    chans = {tuple(s.channels) for s in scores}
    if len(dts) > 1 or len(chans) > 1:
        raise ForecastEvalError(
            f"rollout files with different cadences {sorted(dts)} or channels cannot be pooled: "
            + ", ".join(str(s.path) for s in scores)
        )
    channels = scores[0].channels
    out: dict[str, Any] = {"sims": {}}
    pooled = {m: LeadStats() for m in FORECAST_METHODS}
    ptruth = LeadStats()
    lead_orbits: dict[int, float] = {}
    for s in scores:
        lead_orbits.update(s.lead_orbits)
        n = s.grid
        out["sims"][s.sim] = {
            "file": str(s.path), "lo_kind": s.lo_kind, "n_init": s.n_init,
            "init_snapshots": s.init_snapshots, "steps": s.steps,
            "finite_leads": s.finite_leads, "finite_orbits": s.finite_leads * s.dt_orbits,
            "curves": _reduce(s.stats, s.truth, s.lead_orbits, channels, n, 2 * n),
        }  # fmt: skip
        for m in FORECAST_METHODS:
            pooled[m].merge(s.stats[m])
        ptruth.merge(s.truth)
    n = scores[0].grid
    out["all"] = {
        "sims": [s.sim for s in scores],
        "curves": _reduce(pooled, ptruth, lead_orbits, channels, n, 2 * n),
        "finite_orbits": min(s.finite_leads * s.dt_orbits for s in scores),
        "rollout_orbits": min(s.steps * s.dt_orbits for s in scores),
    }
    out["channels"] = channels
    out["dt_orbits"] = scores[0].dt_orbits
    return out


# ----------------------------------------------------------------------------------------------
# Chain files


def score_chain(path: Path, rollouts: dict[str, RolloutScore]) -> dict[str, Any]:
    """Hi-grid rows of the chain file ``path`` and its baselines (see the module docstring).

    Args:
        path: a chain file (``mhdsr sample`` of a rollout file).
        rollouts: rollout scores by sim (its rollout file supplies ``x(t0)`` and the run).

    Returns:
        ``{"sim", "file", "forecast_file", "curves", "skipped"}`` (``curves`` as
        :func:`_reduce`; ``skipped`` names why nothing was scored, e.g. a native lo run).

    Raises:
        ForecastEvalError: unreadable file, or its rollout file is not among the inputs.
    """
    import h5py

    from mhdsr.athenak import open_run
    from mhdsr.dataset.cadence import lo_of_hi
    from mhdsr.method.grid import avgpool2_np, upsample_np

    try:
        with h5py.File(path, "r") as f:
            a = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            samples = f[H.SAMPLES][()]
            inputs = f[H.INPUT][()]
            init_index = f[H.INIT_INDEX][()]
            lead = f[H.LEAD][()]
            snapshot = f[H.SNAPSHOT][()]
    except Exception as e:
        raise ForecastEvalError(f"{path}: cannot read as a chain file: {e}") from None
    sim = str(a["sim"])
    rs = rollouts.get(sim)
    if rs is None:
        raise ForecastEvalError(
            f"{path}: its rollout file ({a.get('forecast_file')}) for sim {sim} is not among the "
            "rollout files evaluated; put it below `samples` too"
        )
    res: dict[str, Any] = {"sim": sim, "file": str(path), "forecast_file": str(rs.path)}
    if rs.lo_kind != "avgpool2_hi":
        res["skipped"] = f"{sim} is a native lo run: no hi-grid truth to score the chain against"
        return res
    d = _read_rollout(rs.path)
    channels = [str(c) for c in np.atleast_1d(a["channels"])]
    rc = [rs.channels.index(c) for c in channels]
    for t in range(samples.shape[0]):  # each input is its rollout's forecast, each sample its own
        want = d["forecast"][int(init_index[t]), int(lead[t]) - 1][rc]
        err = float(np.max(np.abs(inputs[t].astype(np.float64) - want)
                           / np.maximum(np.abs(want).max(axis=(-2, -1), keepdims=True), 1e-30)))  # fmt: skip
        if err > INPUT_RTOL:
            raise ForecastEvalError(
                f"{path}: row {t} (initial state {int(init_index[t])}, lead {int(lead[t])}, "
                f"snapshot {int(snapshot[t])}): its input is not the forecast of {rs.path} there "
                f"(max|input - forecast| / max|forecast| = {err:.3g} > {INPUT_RTOL:g})"
            )
        if samples.shape[-1] != 2 * inputs.shape[-1]:
            continue
        try:
            check_rows(str(path), [int(x) for x in snapshot], t,
                       avgpool2_np(samples[t].astype(np.float32).mean(axis=0)), inputs)  # fmt: skip
        except EvalInputError as e:
            raise ForecastEvalError(str(e)) from None
    run = open_run(rs.run_dir)
    stats = {m: LeadStats() for m in CHAIN_METHODS}
    tstats = LeadStats()
    cache: dict[int, np.ndarray] = {}
    factor = samples.shape[-1] // inputs.shape[-1]
    for t in range(samples.shape[0]):
        s = int(snapshot[t])
        if s < 0:
            continue
        if s not in cache:
            cache[s] = run.read_snapshot(s, channels).data
        y = cache[s]
        L = int(lead[t])
        tstats.add(L, {}, radial_spectrum(y.astype(np.float64))[1])
        x0 = d[H.INIT][int(init_index[t])][rc]
        cands = {
            "chain": samples[t].astype(np.float64).mean(axis=0),
            "persistence+bicubic": upsample_np(x0, factor, "bicubic"),
            "forecast+bicubic": upsample_np(inputs[t], factor, "bicubic"),
            "truth-lo+bicubic": upsample_np(lo_of_hi(y), factor, "bicubic"),
        }
        for m, p in cands.items():
            vals, spec = _rows(p, y, channels)
            stats[m].add(L, vals, spec)
        for e in range(samples.shape[1]):
            vals, spec = _rows(samples[t, e], y, channels)
            stats["chain member"].add(L, vals, spec)
    if not tstats.count:
        res["skipped"] = f"{path}: no lead with a hi-grid truth snapshot"
        return res
    n = samples.shape[-1]
    res["curves"] = _reduce(stats, tstats, rs.lead_orbits, channels, n // factor, n)
    res["members"] = int(samples.shape[1])
    res["channels"] = channels
    return res


# ----------------------------------------------------------------------------------------------
# The energy cross-check


def energy_check(run_dir: str, snapshots: list[int], pooled: bool = False) -> dict[str, Any]:
    """Energies of the run's own fields (native grid and, with ``pooled``, avgpool2 of them) at
    ``snapshots`` against its history file at the same times (linear interpolation).

    Returns:
        ``{"history", "snapshots", "times", "ke_field", "ke_history", "me_field", "me_history",
        "ke_rel", "me_rel" (field / history - 1), "ke_max_abs_rel", "me_max_abs_rel",
        "me_lo_rel" (avgpool2 fields, hi runs only)}``, or ``{"error": ...}`` when the history
        file is missing or unreadable.
    """
    from mhdsr.athenak import open_run
    from mhdsr.athenak.history import energies_at, read_history
    from mhdsr.channels import CHANNELS
    from mhdsr.dataset.cadence import lo_of_hi
    from mhdsr.errors import AthenaKFormatError

    run = open_run(run_dir)
    hst = Path(run_dir) / f"{run.basename}.mhd.hst"
    try:
        hist = read_history(hst)
    except AthenaKFormatError as e:
        return {"history": str(hst), "error": str(e)}
    ch = list(CHANNELS)
    times, ke, me, me_lo, ke_lo = [], [], [], [], []
    for s in sorted(set(snapshots)):
        snap = run.read_snapshot(s, ch)
        times.append(float(snap.time))
        ke.append(float(kinetic_energy(snap.data, ch)))
        me.append(float(magnetic_energy(snap.data, ch)))
        if pooled:
            lo = lo_of_hi(snap.data)
            ke_lo.append(float(kinetic_energy(lo, ch)))
            me_lo.append(float(magnetic_energy(lo, ch)))
    try:
        ke_h, me_h = energies_at(hist, np.asarray(times))
    except AthenaKFormatError as e:
        return {"history": str(hst), "error": str(e)}
    ke, me = np.asarray(ke), np.asarray(me)
    out = {
        "history": str(hst),
        "snapshots": sorted(set(snapshots)),
        "times": times,
        "ke_field": ke.tolist(), "ke_history": ke_h.tolist(),
        "me_field": me.tolist(), "me_history": me_h.tolist(),
        "ke_rel": (ke / ke_h - 1).tolist(), "me_rel": (me / me_h - 1).tolist(),
        "ke_max_abs_rel": float(np.max(np.abs(ke / ke_h - 1))),
        "me_max_abs_rel": float(np.max(np.abs(me / me_h - 1))),
        "ke_avgpool2_rel": (np.asarray(ke_lo) / ke_h - 1).tolist() if pooled else [],
        "me_avgpool2_rel": (np.asarray(me_lo) / me_h - 1).tolist() if pooled else [],
    }  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------------
# Goals


def goals(fc: dict[str, Any], chains: list[dict[str, Any]], *, goal_orbits: float,
          energy_tol: float, finite_orbits: float) -> dict[str, Any]:  # fmt: skip
    """The issue's goals on the pooled held-out rollouts and the chain (met true / false /
    None = cannot be decided from these files), with the numbers.

    * ``one_step``: model NRMSE at lead 1 <= 0.5 x persistence's, every channel;
    * ``corr_lead``: correlation-0.5 lead of the model >= 2 x persistence's, every channel;
    * ``energy``: |E_model / E_truth - 1| (mean over initial states) <= ``energy_tol`` for KE
      and ME at every lead <= ``goal_orbits``;
    * ``finite``: every forecast finite for ``finite_orbits``;
    * ``chain``: the chain's (ensemble-mean) hi-grid NRMSE < persistence+bicubic's at every
      lead <= ``goal_orbits``, every channel.
    """
    curves = fc["all"]["curves"]
    chans = fc["channels"]
    m, p = curves["model"], curves["persistence"]
    out: dict[str, Any] = {}
    if m["lead"] and m["lead"][0] == 1 and p["lead"] and p["lead"][0] == 1:
        ratio = {c: m["nrmse"][c][0] / p["nrmse"][c][0] for c in chans}
        out["one_step"] = {"met": all(r <= 0.5 for r in ratio.values()), "ratio": ratio,
                           "model": {c: m["nrmse"][c][0] for c in chans},
                           "persistence": {c: p["nrmse"][c][0] for c in chans}}  # fmt: skip
    else:
        out["one_step"] = {"met": None, "why": "no truth at lead 1"}
    last = fc["all"]["rollout_orbits"]
    per, ok = {}, []
    for c in [*chans, "mean"]:
        lm, lp = m["corr_lead"][c], p["corr_lead"][c]
        if lp is None:
            verdict = None  # persistence never drops below 0.5: 2x cannot be checked
        elif lm is None:
            verdict = True if last >= 2 * lp else None
        else:
            verdict = lm >= 2 * lp
        per[c] = {"model": lm, "persistence": lp, "met": verdict}
        if c != "mean":
            ok.append(verdict)
    out["corr_lead"] = {"met": (False if False in ok else None if None in ok else True),
                        "per_channel": per, "rollout_orbits": last}  # fmt: skip
    leads = [i for i, o in enumerate(m["lead_orbits"]) if o <= goal_orbits + 1e-9]
    if "ke_abs_rel" in m and leads:
        worst = {e: max(m[f"{e}_abs_rel"][i] for i in leads) for e in ("ke", "me")}
        out["energy"] = {"met": all(v <= energy_tol for v in worst.values()),
                         "worst_mean_abs_rel": worst, "tol": energy_tol,
                         "leads_orbits": [m["lead_orbits"][i] for i in leads]}  # fmt: skip
    else:
        out["energy"] = {"met": None, "why": "no lead with truth within the goal window"}
    fo = fc["all"]["finite_orbits"]
    ro = fc["all"]["rollout_orbits"]
    out["finite"] = {"met": (fo >= finite_orbits) if ro >= finite_orbits or fo < ro else None,
                     "finite_orbits": fo, "rollout_orbits": ro, "required_orbits": finite_orbits}  # fmt: skip
    scored = [c for c in chains if "curves" in c]
    if scored:
        rows, verdicts = [], []
        for ch in scored:
            cc = ch["curves"]
            for i, o in enumerate(cc["chain"]["lead_orbits"]):
                if o > goal_orbits + 1e-9:
                    continue
                j = cc["persistence+bicubic"]["lead_orbits"].index(o)
                better = {c: cc["chain"]["nrmse"][c][i] < cc["persistence+bicubic"]["nrmse"][c][j]
                          for c in ch["channels"]}  # fmt: skip
                rows.append({"sim": ch["sim"], "lead_orbits": o, "better": better,
                             "chain_mean": cc["chain"]["nrmse_mean"][i],
                             "baseline_mean": cc["persistence+bicubic"]["nrmse_mean"][j]})  # fmt: skip
                verdicts += list(better.values())
        out["chain"] = {"met": all(verdicts) if verdicts else None, "rows": rows}
    else:
        out["chain"] = {"met": None, "why": "no chain file with hi-grid truth"}
    rules = {
        "one_step": "one-step NRMSE <= 0.5 x persistence, every channel",
        "corr_lead": "corr-0.5 lead >= 2 x persistence's, every channel",
        "energy": f"KE, ME within {energy_tol:.0%} over the first orbit",
        "finite": f"finite for {finite_orbits:g} orbits",
        "chain": f"chain NRMSE < persistence+bicubic at every lead <= {goal_orbits:g} orbit, "
        "every channel",
    }
    for name, v in out.items():  # every goal states its rule, as the SR goal does
        v["rule"] = rules[name]
    for v in out.values():  # every undecided verdict says why (metrics.json has no bare null)
        if v.get("met") is None:
            v[NULL_KEY] = {"met": v.get("why", "cannot be decided from these files")}
        for c in v.get("per_channel", {}).values():
            why = {k: "the correlation never falls below 0.5 within the rollout" for k in
                   ("model", "persistence") if c[k] is None}  # fmt: skip
            if c["met"] is None:
                why["met"] = "persistence stays above 0.5: twice its lead is not in the rollout"
            if why:
                c[NULL_KEY] = why
    return out
