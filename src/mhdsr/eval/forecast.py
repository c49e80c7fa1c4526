"""Scores of forecast rollouts and of the forecast -> super-resolve chain, per lead time
(docs/design.md "Forecast stage", docs/forecast.md "Evaluation"), and the energy cross-check
against AthenaK's history file.

Inputs (found by :func:`mhdsr.eval.run.run_eval` from the ``kind`` attribute of each HDF5 file):
rollout files of ``mhdsr forecast rollout`` (``kind = "forecast"``; deterministic operator
rollouts, or ensemble rollouts of the generative forecaster with ``members (N, E, L, C, h, w)``
and ``forecast`` = their mean) and super-resolved rollouts of ``mhdsr sample`` with
``inputs.kind=forecast`` (``kind = "chain"``).

Per rollout file, initial state ``i`` and lead ``k`` (``k dt`` after ``t0``) where the run has
the truth ``y``, every channel, in physical units on the lo grid:

* methods: the **model** forecast (an ensemble rollout: the ensemble MEAN, a fair deterministic
  estimate); **persistence** ``x(t0)``; **linear** extrapolation
  ``x(t0) + k (x(t0) - x(t0 - dt))`` (where the file has ``x(t0 - dt)``); **fno** the
  deterministic FNO rollout of the same sim and initial snapshot (``forecast.operator_rollouts``);
  **climatology** ``E`` train snapshots of an orbit window (``forecast.climatology``), the same
  ensemble at every (i, k) (its deterministic scores: of its mean);
* ``RMSE = sqrt(<(p - y)^2>)``, ``NRMSE = RMSE / std(y)`` (std over the grid of that truth);
  ``corr`` = Pearson correlation over the grid (:func:`mhdsr.analysis.energy.pearson`);
* band spectral errors (resolved ``[1, 32)``, transition ``[32, 64)`` on a 128^2 grid) of the
  mean spectrum over initial states at each lead against the truth's (docs/design.md
  "Metrics");
* domain-mean kinetic ``<rho |v|^2 / 2>`` and magnetic ``<|B|^2 / 2>`` energy: the relative
  error ``E_p / E_y - 1`` per initial state, and the energies themselves (``ke``, ``me``);
* the **correlation-0.5 lead**: the first lead at which the mean correlation over initial
  states falls below 0.5 (``None`` if it never does within the rollout);
* ensemble scores of the registry's :data:`~mhdsr.eval.registry.FORECAST_ENSEMBLE` metrics, the
  members of the model (a deterministic forecast = one member) and of climatology: fair
  ``crps`` (one member: its MAE), ``spread``, ``skill`` and ``spread_skill`` (pooled over
  initial states as mean squares, ``sqrt(1 + 1/n)`` factor: the SR eval's ``ratio_rms``),
  ``jz_pdf_w1`` (members pooled, in units of the truth's std), ``div_b`` (mean over members);
  ``crps_norm_mean`` = mean over channels of ``CRPS_c / std_c(y)`` (``std`` averaged over the
  initial states at that lead, the same for every method: a channel-comparable mean);
* per **member** of an ensemble rollout: the same deterministic rows as the model; reported
  (``members``) are each member's energies and relative errors (mean over initial states), the
  worst member's ``|.|`` and the worst member's band errors (max over members).

Values are averaged over the initial states with truth at that lead, per file ("sim") and
pooled over every rollout file ("all"; members pooled by member index). The chain is scored on
the hi grid against the hi run at ``t0 + k dt`` (rollouts of avgpool2-ed hi runs only: a native
lo run has no hi truth). Its rows are grouped by ``(init_index, lead)``: the **chain ensemble**
there is every SR sample of every row (every forecast member), scored by its mean ("chain") and
its ensemble scores, single samples ("chain member"), next to **persistence+bicubic** /
**persistence+spline** ``Up(x(t0))``, **forecast+bicubic** ``Up(forecast)`` (the ensemble mean),
**fno+spline** ``Up`` of the paired FNO forecast, and **truth-lo+bicubic** ``Up(avgpool2(y))``
(what interpolation gives with a perfect forecast), with the hi-grid bands (resolved,
transition, generated ``[64, 128]``).

metrics.json keys (kind "forecast", version 2) beyond the deterministic ones:
``forecast.sims.<sim>.{forecaster, ensemble, operator_file}``; ``curves.<method>.{crps,
crps_mean, crps_norm_mean, spread, skill, spread_skill, spread_skill_mean, jz_pdf_w1, div_b, ke,
me}`` (per lead); ``forecast.<sims.<sim> | all>.members`` (:func:`members_summary`);
``forecast.<sims.<sim> | all>.truth`` (``ke``, ``me``, ``std`` of the truth per lead);
``forecast.climatology`` (the drawn snapshots); ``chain[].groups`` (ensemble size per group);
``goals.<ensemble goal>`` (:func:`goals`).
"""

from __future__ import annotations

import glob as _glob
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mhdsr.analysis.energy import kinetic_energy, magnetic_energy
from mhdsr.analysis.spectra import band_edges, band_errors, radial_spectrum
from mhdsr.dataset import h5layout as H
from mhdsr.errors import MhdsrError
from mhdsr.eval.consistency import INPUT_RTOL, check_rows
from mhdsr.eval.fields import Fields, Target
from mhdsr.eval.inputs import EvalInputError
from mhdsr.eval.registry import FORECAST, FORECAST_ENSEMBLE, NULL_KEY, Metric, for_kinds

if TYPE_CHECKING:
    from mhdsr.eval.config import ClimatologyConfig, ForecastEvalConfig

FORECAST_KIND, CHAIN_KIND = H.KIND_FORECAST, H.KIND_CHAIN
#: methods of a rollout file (model first)
FORECAST_METHODS = ("model", "persistence", "linear", "fno", "climatology")
#: methods of a chain file (the super-resolved forecast first)
CHAIN_METHODS = ("chain", "chain member", "persistence+bicubic", "persistence+spline",
                 "forecast+bicubic", "fno+spline", "truth-lo+bicubic")  # fmt: skip
CORR_THRESHOLD = 0.5
#: ensemble metrics also scored for one member (the CRPS of a point forecast is its MAE)
ONE_MEMBER_METRICS = frozenset({"crps"})
ENERGY_CHANNELS = ("density", "velx", "vely", "velz", "Bx", "By", "Bz")


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

    def add(self, lead: int, values: dict[str, Any], spectrum: np.ndarray | None) -> None:
        for k, v in values.items():
            self.rows[lead][k].append(v)
        if spectrum is not None:
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


def ensemble_metrics(channels: list[str], n_members: int) -> list[Metric]:
    """The registered ensemble metrics of forecasts
    (:data:`~mhdsr.eval.registry.FORECAST_ENSEMBLE`) that ``channels`` support and an ensemble
    of ``n_members`` can score (``min_members``; the CRPS also for one member)."""
    return [m for m in for_kinds({FORECAST_ENSEMBLE})
            if all(c in channels for c in m.requires)
            and (n_members >= m.min_members or m.name in ONE_MEMBER_METRICS)]  # fmt: skip


def _energies(x: np.ndarray, channels: list[str]) -> dict[str, float]:
    """Domain-mean KE and ME of one field ``(C, N, N)`` (empty without their channels)."""
    if not all(c in channels for c in ENERGY_CHANNELS):
        return {}
    return {"ke": float(kinetic_energy(x, channels)), "me": float(magnetic_energy(x, channels))}


def _rows(
    pred: np.ndarray, truth: np.ndarray, channels: list[str]
) -> tuple[dict[str, Any], np.ndarray]:
    """Rows of every forecast metric of the registry for one field pair ``(C, N, N)`` (float64)
    and the prediction's spectrum ``(C, K)``; also its energies ``ke``, ``me``."""
    p = pred.astype(np.float64)
    y = truth.astype(np.float64)
    n = p.shape[-1]
    pf = Fields(p[None], channels, n_lo=n, n_hi=2 * n)
    # no spectral metric among the forecast metrics: the target needs no spectrum
    target = Target(Fields(y[None], channels, n_lo=n, n_hi=2 * n), np.empty((0, 0)))
    vals = {m.name: m.fn(pf, target) for m in forecast_metrics(channels)}
    vals.update(_energies(p, channels))
    return vals, radial_spectrum(p)[1]


def ensemble_rows(ens: np.ndarray, truth: np.ndarray, channels: list[str], n_lo: int,
                  n_hi: int) -> dict[str, Any]:  # fmt: skip
    """Rows of every :func:`ensemble_metrics` metric for one ensemble and its truth.

    Args:
        ens: ``(E, C, N, N)`` members, physical units (``E = 1``: a deterministic forecast).
        truth: ``(C, N, N)``.
        channels: the ``C`` names; ``n_lo``, ``n_hi``: the evaluation's grids.

    Returns:
        metric name -> row (``(C,)``, ``(C, 2)`` for ``spread_skill``, or a scalar), as the
        registered functions (:mod:`mhdsr.eval.metric_defs`) compute them.
    """
    e = np.asarray(ens, dtype=np.float64)
    pf = Fields(e, channels, n_lo=n_lo, n_hi=n_hi)
    target = Target.of_truth(Fields(truth.astype(np.float64)[None], channels, n_lo=n_lo,
                                    n_hi=n_hi))  # fmt: skip
    return {m.name: m.fn(pf, target) for m in ensemble_metrics(channels, e.shape[0])}


def _truth_row(y: np.ndarray, channels: list[str]) -> dict[str, Any]:
    y = y.astype(np.float64)
    return {"std": y.std(axis=(-2, -1)), **_energies(y, channels)}


def _reduce(stats: dict[str, LeadStats], truth: LeadStats, lead_orbits: dict[int, float],
            channels: list[str], n_lo: int, n_hi: int) -> dict[str, Any]:  # fmt: skip
    """Per method and lead: mean of each metric over the rows, band errors of the mean spectra,
    the correlation-0.5 lead (orbits; None = never within the leads), the ensemble metrics
    reduced as registered, the energies. Methods without rows are left out."""
    k = np.arange(1, truth.spec[next(iter(truth.spec))].shape[-1] + 1) if truth.spec else None
    edges = band_edges(n_lo, n_hi)
    out: dict[str, Any] = {}
    for name, st in stats.items():
        leads = sorted(L for L in st.rows if st.count[L])
        if not leads:
            continue
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
        for e in ("ke", "me"):
            if all(st.rows[L].get(e) for L in leads):
                curve[e] = [float(np.mean(st.rows[L][e])) for L in leads]
        _reduce_ensemble(curve, st, truth, leads, channels)
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


def _reduce_ensemble(curve: dict[str, Any], st: LeadStats, truth: LeadStats, leads: list[int],
                     channels: list[str]) -> None:  # fmt: skip
    """Add the ensemble metrics of ``st`` (reduced over initial states with each registered
    reduction) to ``curve``, and ``crps_norm_mean``."""
    for m in for_kinds({FORECAST_ENSEMBLE}):
        if not all(st.rows[L].get(m.name) for L in leads):
            continue
        red = m.reducer()
        if not m.per_channel:
            curve[m.name] = [float(red(np.asarray(st.rows[L][m.name], dtype=np.float64)))
                             for L in leads]  # fmt: skip
            continue
        vals = [red(np.stack(st.rows[L][m.name]).astype(np.float64)) for L in leads]
        chans = [c for c in channels if m.channels is None or c in m.channels]
        curve[m.name] = {ch: [float(v[channels.index(ch)]) for v in vals] for ch in chans}
        if m.channels is None:
            curve[f"{m.name}_mean"] = [float(np.mean(v)) for v in vals]
    if "crps" in curve and all(truth.rows[L].get("std") for L in leads):
        std = [np.mean(np.stack(truth.rows[L]["std"]), axis=0) for L in leads]
        curve["crps_norm_mean"] = [
            float(np.mean([curve["crps"][ch][j] / max(float(std[j][c]), 1e-300)
                           for c, ch in enumerate(channels)]))
            for j in range(len(leads))
        ]  # fmt: skip


def _truth_curve(truth: LeadStats, lead_orbits: dict[int, float],
                 channels: list[str]) -> dict[str, Any]:  # fmt: skip
    """The truth's energies and std per lead (mean over initial states)."""
    leads = sorted(L for L in truth.rows if truth.rows[L].get("std"))
    out: dict[str, Any] = {"lead": leads, "lead_orbits": [lead_orbits[L] for L in leads]}
    for e in ("ke", "me"):
        if all(truth.rows[L].get(e) for L in leads):
            out[e] = [float(np.mean(truth.rows[L][e])) for L in leads]
    out["std"] = {ch: [float(np.mean([r[c] for r in truth.rows[L]["std"]])) for L in leads]
                  for c, ch in enumerate(channels)}  # fmt: skip
    return out


def members_summary(members: list[LeadStats], truth: LeadStats, lead_orbits: dict[int, float],
                    channels: list[str], n_lo: int, n_hi: int) -> dict[str, Any]:  # fmt: skip
    """What the members of an ensemble rollout score, per lead (leads every member has).

    Args:
        members: one :class:`LeadStats` per member index (rows of :func:`_rows`).
        truth, lead_orbits, channels, n_lo, n_hi: as :func:`_reduce`.

    Returns:
        ``{"n_members", "lead", "lead_orbits", "ke", "me" (E x L: each member's energy, mean
        over initial states), "ke_rel", "me_rel" (E x L: mean over initial states of
        E_member / E_truth - 1), "ke_worst_abs_rel", "me_worst_abs_rel" (L: max over members of
        |ke_rel|), "ke_max_abs_rel", "me_max_abs_rel" (L: max over members AND initial states
        of |E / E_truth - 1|), "band_error" (band -> channel -> E x L), "band_error_worst" (band
        -> channel -> L: max over members), "nrmse_mean" (E x L)}``.
    """
    curves = [
        _reduce({"m": st}, truth, lead_orbits, channels, n_lo, n_hi).get("m") for st in members
    ]
    if any(c is None for c in curves):
        return {"n_members": len(members), NULL_KEY: {"lead": "a member has no finite lead"}}
    leads = sorted(set.intersection(*(set(c["lead"]) for c in curves)))
    idx = [[c["lead"].index(L) for L in leads] for c in curves]
    out: dict[str, Any] = {"n_members": len(members), "lead": leads,
                           "lead_orbits": [lead_orbits[L] for L in leads]}  # fmt: skip
    for key in ("ke", "me", "ke_rel", "me_rel", "nrmse_mean", "ke_max_abs_rel", "me_max_abs_rel"):
        if all(key in c for c in curves):
            out[key] = [[c[key][j] for j in ix] for c, ix in zip(curves, idx)]
    for e in ("ke", "me"):
        if f"{e}_rel" in out:
            out[f"{e}_worst_abs_rel"] = np.max(np.abs(out[f"{e}_rel"]), axis=0).tolist()
            out[f"{e}_max_abs_rel"] = np.max(out[f"{e}_max_abs_rel"], axis=0).tolist()
    bands = curves[0]["band_error"]
    out["band_error"] = {b: {ch: [[c["band_error"][b][ch][j] for j in ix]
                                  for c, ix in zip(curves, idx)] for ch in channels}
                         for b in bands}  # fmt: skip
    out["band_error_worst"] = {b: {ch: np.max(v, axis=0).tolist() for ch, v in d.items()}
                               for b, d in out["band_error"].items()}  # fmt: skip
    return out


# ----------------------------------------------------------------------------------------------
# Rollout files


@dataclass
class OperatorRollout:
    """A deterministic FNO rollout file (baseline "fno")."""

    path: Path
    sim: str
    dt_orbits: float
    channels: list[str]
    init_snapshots: list[int]
    forecast: np.ndarray  # (N, L, C, h, w) float32
    init: np.ndarray | None = None  # (N, C, h, w) x(t0), checked against the paired file's


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
    finite_leads: int  # leads 1..finite_leads of every initial state (and member) are finite
    n_init: int
    grid: int
    init_snapshots: list[int]
    truth_snapshots: np.ndarray
    forecaster: str = H.FORECASTER_OPERATOR
    ensemble: int = 1
    members: list[LeadStats] = field(default_factory=list)  # per member index (ensembles)
    operator: OperatorRollout | None = None
    operator_index: list[int] = field(default_factory=list)  # initial state -> operator's


def _attrs(f: Any) -> dict[str, Any]:
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


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
            d["attrs"] = _attrs(f)
            d["members_shape"] = f[H.MEMBERS].shape if H.MEMBERS in f else None
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


def read_operator_rollouts(pattern: str) -> dict[str, OperatorRollout]:
    """The deterministic FNO rollouts matching the glob ``pattern``, by sim.

    Raises:
        ForecastEvalError: no file matches; a file is not a complete rollout file, is an
            ensemble rollout (attribute ``forecaster`` other than ``operator``), or repeats a sim.
    """
    paths = sorted(Path(p) for p in _glob.glob(pattern, recursive=True))
    if not paths:
        raise ForecastEvalError(f"forecast.operator_rollouts: no file matches {pattern!r}")
    out: dict[str, OperatorRollout] = {}
    for p in paths:
        d = _read_rollout(p)
        a = d["attrs"]
        kind = str(a.get(H.FORECASTER, H.FORECASTER_OPERATOR))
        if kind != H.FORECASTER_OPERATOR or d["members_shape"] is not None:
            raise ForecastEvalError(f"{p}: forecast.operator_rollouts needs deterministic FNO "
                                    f"rollouts (forecaster = operator), this one is {kind!r}")  # fmt: skip
        sim = str(a["sim"])
        if sim in out:
            raise ForecastEvalError(f"forecast.operator_rollouts: {out[sim].path} and {p} both "
                                    f"hold sim {sim}")  # fmt: skip
        out[sim] = OperatorRollout(
            path=p, sim=sim, dt_orbits=float(a["dt_orbits"]),
            channels=[str(c) for c in np.atleast_1d(a["channels"])],
            init_snapshots=[int(s) for s in d[H.INIT_SNAPSHOT]], forecast=d[H.FORECAST],
            init=d[H.INIT],
        )  # fmt: skip
    return out


def pair_operator(path: Path, sim: str, dt_orbits: float, channels: list[str],
                  init_snapshots: list[int], operators: dict[str, OperatorRollout],
                  init: np.ndarray | None = None) -> tuple[OperatorRollout, list[int]]:  # fmt: skip
    """The FNO rollout of the same sim, cadence and channels as the rollout file ``path``, and
    for each of its initial states the index of the same initial snapshot in it.

    Raises:
        ForecastEvalError: naming ``path`` (and the FNO file): no FNO rollout of ``sim``, a
            different ``dt_orbits`` or channels, an initial snapshot it lacks, or (with
            ``init`` ``(N, C, h, w)``) an initial state that differs from its (another run).
    """
    op = operators.get(sim)
    if op is None:
        raise ForecastEvalError(
            f"{path}: no FNO rollout of sim {sim} among forecast.operator_rollouts (sims "
            f"{sorted(operators)}: " + ", ".join(str(o.path) for o in operators.values()) + ")"
        )
    if abs(op.dt_orbits - dt_orbits) > 1e-9 * max(1.0, abs(dt_orbits)):
        raise ForecastEvalError(f"{path}: its step dt = {dt_orbits:g} orbits differs from the FNO "
                                f"rollout {op.path} (dt = {op.dt_orbits:g} orbits)")  # fmt: skip
    if op.channels != channels:
        raise ForecastEvalError(f"{path}: channels {channels} differ from the FNO rollout "
                                f"{op.path} ({op.channels})")  # fmt: skip
    missing = [s for s in init_snapshots if s not in op.init_snapshots]
    if missing:
        raise ForecastEvalError(f"{path}: the FNO rollout {op.path} has no initial snapshot "
                                f"{missing} (it has {op.init_snapshots})")  # fmt: skip
    idx = [op.init_snapshots.index(s) for s in init_snapshots]
    if init is not None and op.init is not None:
        for i, j in enumerate(idx):
            a, b = init[i].astype(np.float64), op.init[j].astype(np.float64)
            den = np.maximum(np.abs(b).max(axis=(-2, -1)), 1e-30)
            rel = float(np.max(np.abs(a - b).max(axis=(-2, -1)) / den))
            if rel > INPUT_RTOL:
                raise ForecastEvalError(
                    f"{path}: initial snapshot {init_snapshots[i]} differs from the FNO rollout "
                    f"{op.path}'s (max rel. difference {rel:.3g} > {INPUT_RTOL:g}): not the same run"
                )
    return op, idx


def _check_mean(path: Path, fc: np.ndarray, mem: np.ndarray, i: int) -> None:
    """``forecast[i]`` must be the mean of ``members[i]`` over E (max rel. error 1e-4)."""
    m = mem.astype(np.float64).mean(axis=0)
    with np.errstate(invalid="ignore"):
        num = np.abs(fc.astype(np.float64) - m).max(axis=(-2, -1))
        den = np.maximum(np.abs(m).max(axis=(-2, -1)), 1e-30)
        rel = float(np.nanmax(num / den))
    if rel > INPUT_RTOL:
        raise ForecastEvalError(f"{path}: forecast of initial state {i} is not the mean of its "
                                f"members (max rel. difference {rel:.3g} > {INPUT_RTOL:g})")  # fmt: skip


def score_rollout(path: Path, *, operators: dict[str, OperatorRollout] | None = None,
                  climatology: np.ndarray | None = None) -> RolloutScore:  # fmt: skip
    """Rows of the model, persistence, linear extrapolation, the paired FNO (``operators``) and
    ``climatology`` for every (initial state, lead) of one rollout file that has truth, and of
    each member of an ensemble rollout (see the module docstring).

    Args:
        path: a rollout file.
        operators: FNO rollouts by sim (:func:`read_operator_rollouts`), or ``None``.
        climatology: ``(E, C, h, w)`` climatology members on the rollout's grid, or ``None``.

    Raises:
        ForecastEvalError: not a complete rollout file; members inconsistent with ``forecast``
            or the ``ensemble`` attribute; no FNO pairing (:func:`pair_operator`); a
            climatology of another grid.
    """
    import h5py

    d = _read_rollout(path)
    check_rollout(path, d)
    a = d["attrs"]
    channels = [str(c) for c in np.atleast_1d(a["channels"])]
    fc, truth, init, prev = d[H.FORECAST], d[H.TRUTH], d[H.INIT], d[H.PREV]
    n, steps = fc.shape[:2]
    grid = fc.shape[-1]
    forecaster = str(a.get(H.FORECASTER, H.FORECASTER_OPERATOR))
    ms = d["members_shape"]
    n_mem = int(ms[1]) if ms is not None else 1
    if ms is not None and (tuple(ms[:1]) + tuple(ms[2:]) != fc.shape
                           or int(a.get(H.ENSEMBLE, n_mem)) != n_mem):  # fmt: skip
        raise ForecastEvalError(f"{path}: members {tuple(ms)} do not fit forecast {fc.shape} and "
                                f"attribute ensemble = {a.get(H.ENSEMBLE)}")  # fmt: skip
    if climatology is not None and climatology.shape[1:] != fc.shape[2:]:
        raise ForecastEvalError(f"{path}: the climatology members {climatology.shape[1:]} are not "
                                f"on this rollout's grid {fc.shape[2:]}")  # fmt: skip
    init_snaps = [int(s) for s in d[H.INIT_SNAPSHOT]]
    op, op_idx = (None, [])
    if operators is not None:
        op, op_idx = pair_operator(path, str(a["sim"]), float(a["dt_orbits"]), channels,
                                   init_snaps, operators, init)  # fmt: skip
    lead_orbits = {k + 1: float(d[H.LEAD_ORBITS][k]) for k in range(steps)}
    stats = {m: LeadStats() for m in FORECAST_METHODS}
    members = [LeadStats() for _ in range(n_mem)] if ms is not None else []
    tstats = LeadStats()
    finite = np.array([np.isfinite(fc[:, k]).all() for k in range(steps)])
    clim_mean = climatology.astype(np.float64).mean(axis=0) if climatology is not None else None
    with h5py.File(path, "r") as f:
        for i in range(n):
            mem = f[H.MEMBERS][i] if ms is not None else None  # (E, L, C, h, w)
            if mem is not None:
                _check_mean(path, fc[i], mem, i)
                finite &= np.isfinite(mem).all(axis=(0, 2, 3, 4))
            has_prev = int(d[H.PREV_SNAPSHOT][i]) >= 0
            for k in range(steps):
                if int(d[H.TRUTH_SNAPSHOT][i, k]) < 0:
                    continue
                lead = k + 1
                y = truth[i, k]
                tstats.add(lead, _truth_row(y, channels), radial_spectrum(y.astype(np.float64))[1])
                cands = {"model": fc[i, k], "persistence": init[i]}
                if has_prev:
                    cands["linear"] = init[i] + lead * (init[i].astype(np.float64) - prev[i])
                if op is not None and k < op.forecast.shape[1]:
                    cands["fno"] = op.forecast[op_idx[i], k]
                if clim_mean is not None:
                    cands["climatology"] = clim_mean
                for m, p in cands.items():
                    if m in ("model", "fno") and not np.isfinite(p).all():
                        continue
                    vals, spec = _rows(p, y, channels)
                    if m == "model" and mem is not None:
                        ens = mem[:, k]
                        if not np.isfinite(ens).all():
                            ens = None
                    elif m == "climatology":
                        ens = climatology
                    else:
                        ens = np.asarray(p)[None]
                    if ens is not None:
                        vals.update(ensemble_rows(ens, y, channels, grid, 2 * grid))
                    stats[m].add(lead, vals, spec)
                for e, st in enumerate(members):
                    if np.isfinite(mem[e, k]).all():
                        st.add(lead, *_rows(mem[e, k], y, channels))
    finite_leads = int(np.argmin(finite)) if not finite.all() else steps
    return RolloutScore(
        path=path, sim=str(a["sim"]), lo_kind=str(a["lo_kind"]), run_dir=str(a["run_dir"]),
        channels=channels, dt_orbits=float(a["dt_orbits"]), steps=steps, lead_orbits=lead_orbits,
        stats=stats, truth=tstats, finite_leads=finite_leads, n_init=n, grid=grid,
        init_snapshots=init_snaps, truth_snapshots=d[H.TRUTH_SNAPSHOT], forecaster=forecaster,
        ensemble=n_mem, members=members, operator=op, operator_index=op_idx,
    )  # fmt: skip


def _sim_entry(s: RolloutScore, channels: list[str]) -> dict[str, Any]:
    n = s.grid
    e = {
        "file": str(s.path), "lo_kind": s.lo_kind, "n_init": s.n_init,
        "init_snapshots": s.init_snapshots, "steps": s.steps,
        "finite_leads": s.finite_leads, "finite_orbits": s.finite_leads * s.dt_orbits,
        "forecaster": s.forecaster, "ensemble": s.ensemble,
        "operator_file": str(s.operator.path) if s.operator is not None else None,
        "curves": _reduce(s.stats, s.truth, s.lead_orbits, channels, n, 2 * n),
        "truth": _truth_curve(s.truth, s.lead_orbits, channels),
    }  # fmt: skip
    if s.operator is None:
        e[NULL_KEY] = {"operator_file": "forecast.operator_rollouts is not set"}
    if s.members:
        e["members"] = members_summary(s.members, s.truth, s.lead_orbits, channels, n, 2 * n)
    return e


def reduce_rollouts(scores: list[RolloutScore]) -> dict[str, Any]:
    """Per sim and pooled (``"all"``) curves of :func:`_reduce`, the truth's energies and, for
    ensemble rollouts, :func:`members_summary` (pooled by member index).

    Raises:
        ForecastEvalError: the files have different cadences, channels or ensemble sizes
            (cannot be pooled).
    """
    dts = {s.dt_orbits for s in scores}
    chans = {tuple(s.channels) for s in scores}
    ens = {(s.forecaster, s.ensemble) for s in scores}
    if len(dts) > 1 or len(chans) > 1 or len(ens) > 1:
        raise ForecastEvalError(
            f"rollout files with different cadences {sorted(dts)}, channels or forecasters / "
            f"ensemble sizes {sorted(ens)} cannot be pooled: "
            + ", ".join(str(s.path) for s in scores)
        )
    channels = scores[0].channels
    out: dict[str, Any] = {"sims": {}}
    pooled = {m: LeadStats() for m in FORECAST_METHODS}
    pmembers = [LeadStats() for _ in scores[0].members]
    ptruth = LeadStats()
    lead_orbits: dict[int, float] = {}
    for s in scores:
        lead_orbits.update(s.lead_orbits)
        out["sims"][s.sim] = _sim_entry(s, channels)
        for m in FORECAST_METHODS:
            pooled[m].merge(s.stats[m])
        for e, st in enumerate(s.members):
            pmembers[e].merge(st)
        ptruth.merge(s.truth)
    n = scores[0].grid
    out["all"] = {
        "sims": [s.sim for s in scores],
        "curves": _reduce(pooled, ptruth, lead_orbits, channels, n, 2 * n),
        "truth": _truth_curve(ptruth, lead_orbits, channels),
        # how long every rollout stays finite: a file finite to its own (shorter) end does not
        # shorten it; the longest rollout sets how far that can be judged
        "finite_orbits": min(
            [s.finite_leads * s.dt_orbits for s in scores if s.finite_leads < s.steps],
            default=max(s.steps * s.dt_orbits for s in scores),
        ),
        "rollout_orbits": max(s.steps * s.dt_orbits for s in scores),
        "forecaster": scores[0].forecaster,
        "ensemble": scores[0].ensemble,
    }
    if pmembers:
        out["all"]["members"] = members_summary(pmembers, ptruth, lead_orbits, channels, n, 2 * n)
    out["channels"] = channels
    out["dt_orbits"] = scores[0].dt_orbits
    return out


# ----------------------------------------------------------------------------------------------
# Climatology


def climatology_members(cfg: ClimatologyConfig, channels: list[str],
                        grid: int) -> tuple[np.ndarray, list[dict[str, Any]]]:  # fmt: skip
    """The climatology ensemble: ``cfg.members`` snapshots drawn without replacement from every
    snapshot of the runs ``cfg.runs`` (globs, sorted) whose time lies in
    ``[orbit_start, orbit_end]`` orbits (``time * omega0 / 2 pi``, omega0 from the deck), with
    ``numpy.random.default_rng(SeedSequence([seed, members]))`` over the candidates in (run,
    snapshot) order: the same draw for the same config.

    Args:
        cfg: ``forecast.climatology``; ``channels``: the rollout's; ``grid``: its lo grid ``h``.

    Returns:
        ``(members (E, C, grid, grid) float32 physical units, picks [{"run", "snapshot",
        "orbits"}])``: a run on the lo grid as is, a run of twice the grid avgpool2-ed
        (:func:`mhdsr.dataset.cadence.lo_of_hi`).

    Raises:
        ForecastEvalError: no run matches, a run of another grid, fewer candidates than members.
    """
    from mhdsr.athenak import open_run
    from mhdsr.dataset.cadence import lo_of_hi
    from mhdsr.units import orbits

    dirs = sorted({Path(p) for g in cfg.runs for p in _glob.glob(g)})
    if not dirs:
        raise ForecastEvalError(f"forecast.climatology.runs: no run folder matches {cfg.runs}")
    cands: list[tuple[Any, str, int, float]] = []
    for dr in dirs:
        run = open_run(dr)
        nx, ny = run.resolution[:2]
        if (nx, ny) not in ((grid, grid), (2 * grid, 2 * grid)):
            raise ForecastEvalError(f"forecast.climatology.runs: {dr} is {nx}x{ny}, the rollouts "
                                    f"are {grid}x{grid} (a run of that grid or twice it)")  # fmt: skip
        omega0 = float(run.params.get("omega0", 1.0) or 1.0)
        for s in run.snapshots(channels):
            o = orbits(run.snapshot_time(s)[0], omega0)
            if cfg.orbit_start - 1e-9 <= o <= cfg.orbit_end + 1e-9:
                cands.append((run, str(dr), s, o))
    if len(cands) < cfg.members:
        raise ForecastEvalError(
            f"forecast.climatology: {len(cands)} snapshot(s) of {[str(d) for d in dirs]} in "
            f"[{cfg.orbit_start:g}, {cfg.orbit_end:g}] orbits, fewer than members = {cfg.members}"
        )
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, cfg.members]))
    pick = rng.choice(len(cands), size=cfg.members, replace=False)
    out, picks = [], []
    for j in pick:
        run, dr, s, o = cands[int(j)]
        x = run.read_snapshot(s, channels).data
        out.append(x if x.shape[-1] == grid else lo_of_hi(x))
        picks.append({"run": dr, "snapshot": int(s), "orbits": float(o)})
    return np.stack(out).astype(np.float32), picks


# ----------------------------------------------------------------------------------------------
# Chain files


def score_chain(path: Path, rollouts: dict[str, RolloutScore]) -> dict[str, Any]:
    """Hi-grid rows of the chain file ``path`` and its baselines (see the module docstring).

    Rows are grouped by ``(init_index, lead)``: the chain ensemble of a group is every SR
    sample of every row there (all forecast members).

    Args:
        path: a chain file (``mhdsr sample`` of a rollout file).
        rollouts: rollout scores by sim (its rollout file supplies ``x(t0)``, the run and the
            paired FNO rollout).

    Returns:
        ``{"sim", "file", "forecast_file", "curves", "members", "groups", "skipped"}``
        (``curves`` as :func:`_reduce`; ``members`` the SR samples per row; ``groups``
        ``[{"init_index", "lead", "rows", "members"}]``; ``skipped`` names why nothing was
        scored, e.g. a native lo run).

    Raises:
        ForecastEvalError: unreadable file, its rollout file is not among the inputs, a row's
            input is not the forecast (member) it names, or the rows of a group name different
            truth snapshots.
    """
    import h5py

    from mhdsr.athenak import open_run
    from mhdsr.dataset.cadence import lo_of_hi
    from mhdsr.method.grid import avgpool2_np, upsample_np

    try:
        with h5py.File(path, "r") as f:
            a = _attrs(f)
            samples = f[H.SAMPLES][()]
            inputs = f[H.INPUT][()]
            init_index = f[H.INIT_INDEX][()]
            lead = f[H.LEAD][()]
            snapshot = f[H.SNAPSHOT][()]
            member = f[H.MEMBER][()] if H.MEMBER in f else np.zeros_like(lead)
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
    with h5py.File(rs.path, "r") as f:
        for t in range(samples.shape[0]):  # each input is its forecast (member)
            i, k, e = int(init_index[t]), int(lead[t]) - 1, int(member[t])
            if H.MEMBERS in f:
                if not 0 <= e < f[H.MEMBERS].shape[1]:
                    raise ForecastEvalError(f"{path}: row {t} names member {e}, {rs.path} has "
                                            f"{f[H.MEMBERS].shape[1]}")  # fmt: skip
                want = f[H.MEMBERS][i, e, k][rc]
                what = f"member {e} of the forecast"
            else:
                want = d[H.FORECAST][i, k][rc]
                what = "the forecast"
            err = float(np.max(np.abs(inputs[t].astype(np.float64) - want)
                               / np.maximum(np.abs(want).max(axis=(-2, -1), keepdims=True), 1e-30)))  # fmt: skip
            if err > INPUT_RTOL:
                raise ForecastEvalError(
                    f"{path}: row {t} (initial state {i}, lead {k + 1}, member {e}, snapshot "
                    f"{int(snapshot[t])}): its input is not {what} of {rs.path} there "
                    f"(max|input - forecast| / max|forecast| = {err:.3g} > {INPUT_RTOL:g})"
                )
            if samples.shape[-1] != 2 * inputs.shape[-1]:
                continue
            try:
                check_rows(str(path), [int(x) for x in snapshot], t,
                           avgpool2_np(samples[t].astype(np.float32).mean(axis=0)), inputs)  # fmt: skip
            except EvalInputError as err_:
                raise ForecastEvalError(str(err_)) from None
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for t in range(samples.shape[0]):
        groups[(int(init_index[t]), int(lead[t]))].append(t)
    run = open_run(rs.run_dir)
    stats = {m: LeadStats() for m in CHAIN_METHODS}
    tstats = LeadStats()
    cache: dict[int, np.ndarray] = {}
    factor = samples.shape[-1] // inputs.shape[-1]
    n = samples.shape[-1]
    res["groups"] = []
    for (i, L), rows in sorted(groups.items()):
        snaps = {int(snapshot[t]) for t in rows}
        if len(snaps) > 1:
            raise ForecastEvalError(f"{path}: rows {rows} of initial state {i}, lead {L} name "
                                    f"different truth snapshots {sorted(snaps)}")  # fmt: skip
        s = snaps.pop()
        if s < 0:
            continue
        if s not in cache:
            cache[s] = run.read_snapshot(s, channels).data
        y = cache[s]
        tstats.add(L, _truth_row(y, channels), radial_spectrum(y.astype(np.float64))[1])
        ens = np.concatenate([samples[t] for t in rows], axis=0)
        res["groups"].append({"init_index": i, "lead": L, "rows": len(rows),
                              "members": int(ens.shape[0])})  # fmt: skip
        x0 = d[H.INIT][i][rc]
        cands = {
            "chain": ens.astype(np.float64).mean(axis=0),
            "persistence+bicubic": upsample_np(x0, factor, "bicubic"),
            "persistence+spline": upsample_np(x0, factor, "spline"),
            "forecast+bicubic": upsample_np(d[H.FORECAST][i, L - 1][rc], factor, "bicubic"),
            "truth-lo+bicubic": upsample_np(lo_of_hi(y), factor, "bicubic"),
        }
        op = rs.operator
        if op is not None and op.forecast.shape[1] > L - 1:
            cands["fno+spline"] = upsample_np(
                op.forecast[rs.operator_index[i], L - 1][rc], factor, "spline"
            )
        for m, p in cands.items():
            vals, spec = _rows(p, y, channels)
            e = ens if m == "chain" else np.asarray(p)[None]
            vals.update(ensemble_rows(e, y, channels, n // factor, n))
            stats[m].add(L, vals, spec)
        for e in range(ens.shape[0]):
            vals, spec = _rows(ens[e], y, channels)
            stats["chain member"].add(L, vals, spec)
    if not tstats.count:
        res["skipped"] = f"{path}: no lead with a hi-grid truth snapshot"
        return res
    res["curves"] = _reduce(stats, tstats, rs.lead_orbits, channels, n // factor, n)
    res["members"] = int(samples.shape[1])
    res["ensemble"] = max(g["members"] for g in res["groups"])
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
        ratio = {c: _safe_ratio(m["nrmse"][c][0], p["nrmse"][c][0]) for c in chans}
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


# ----------------------------------------------------------------------------------------------
# Goals of ensemble forecasts


def _lead_ratios(a: dict[str, Any], b: dict[str, Any] | None, metric: str, chans: list[str],
                 keep: Any) -> tuple[float | None, str]:  # fmt: skip
    """max over the leads kept (``keep(orbits)``) and channels of ``a[metric] / b[metric]``
    (aligned by lead), and where it is; ``None`` with the reason when nothing is comparable."""
    if not a or not b or metric not in a or metric not in b:
        return None, f"no {metric} of both"
    worst, where = -np.inf, ""
    for j, L in enumerate(a["lead"]):
        if L not in b["lead"] or not keep(a["lead_orbits"][j]):
            continue
        jb = b["lead"].index(L)
        for c in chans:
            num, den = a[metric][c][j], b[metric][c][jb]
            r = _safe_ratio(num, den)
            if not np.isfinite(r) and not r > 0:  # 0 / 0: both exact, nothing to rank
                continue
            if r > worst:
                worst, where = float(r), f"{c} at {a['lead_orbits'][j]:g} orbits"
    if worst == -np.inf:
        return None, "no common lead in the goal window"
    return worst, where


def ensemble_goals(fc: dict[str, Any], chains: list[dict[str, Any]],
                   cfg: ForecastEvalConfig) -> dict[str, Any]:  # fmt: skip
    """The ensemble-forecast goals on the pooled rollouts (``fc`` of :func:`reduce_rollouts`)
    and the chains (:func:`score_chain`), judged at every lead ``<= cfg.ensemble_goal_orbits``
    and every channel. Each goal: ``{"rule", "value", "threshold", "where", "met"}``, ``met``
    true / false / ``None`` (not measured, the reason under ``null_reasons``); never judged on
    fewer leads or channels than its rule names.

    Goals (thresholds from ``cfg``, defaults the issue's): ``ensemble_size``;
    ``member_energy`` (every member's mean KE and ME relative error, worst member, <= energy_tol);
    ``member_spectra`` (every member's band errors <= spectral_tol dex); ``finite_bounded``
    (members finite for finite_orbits and every member's |E/E_y - 1| <= bounded_rel there);
    ``crps_persistence``, ``crps_fno`` (CRPS < theirs); ``crps_climatology_early`` (< at leads <=
    climatology_orbits); ``crps_climatology`` (<= climatology_factor x at every lead);
    ``nrmse_persistence``, ``nrmse_fno`` (ensemble-mean NRMSE <= theirs); ``spread_skill`` (in
    spread_skill_range at leads >= spread_skill_orbits); ``corr_lead`` (ensemble mean's
    correlation-0.5 lead >= 2 x persistence's, channel mean); ``chain_spectra`` (chain member
    band errors <= chain_spectral_tol at chain_leads_orbits); ``chain_crps_persistence``,
    ``chain_crps_fno`` (chain CRPS < persistence+spline's, fno+spline's).
    """
    allc = fc["all"]
    curves, chans = allc["curves"], fc["channels"]
    m = curves.get("model", {})
    top = cfg.ensemble_goal_orbits + 1e-9
    in_window = lambda o: o <= top  # noqa: E731
    mem = allc.get("members")
    no_mem = "not an ensemble rollout (no members dataset)"
    out: dict[str, Any] = {}

    def goal(name: str, rule: str, threshold: str, value: Any, met: bool | None,
             why: str = "", where: str = "") -> None:  # fmt: skip
        out[name] = {"rule": rule, "threshold": threshold, "value": value, "where": where,
                     "met": met}  # fmt: skip
        why = why or "cannot be decided from these files"
        reasons = {k: why for k in ("met", "value") if out[name][k] is None}
        if isinstance(value, dict):
            value = dict(value)
            nulls = {k: "never below 0.5 within the rollout" for k, v in value.items() if v is None}
            if nulls:
                value[NULL_KEY] = nulls
            out[name]["value"] = value
        if reasons:
            out[name][NULL_KEY] = reasons

    n_ens = int(allc.get("ensemble", 1))
    goal("ensemble_size", "ensemble size", f">= {cfg.min_members}", n_ens, n_ens >= cfg.min_members)
    # 1. members' energies, spectra, finite and bounded
    rule = "every member's KE and ME within the tolerance of the truth's (mean over initial states)"
    if mem and "ke_worst_abs_rel" in mem:
        idx = [j for j, o in enumerate(mem["lead_orbits"]) if in_window(o)]
        vals = [(max(mem[f"{e}_worst_abs_rel"][j] for e in ("ke", "me")), j) for j in idx]
        if vals:
            v, j = max(vals)
            goal("member_energy", rule, f"<= {cfg.energy_tol:g}", v, v <= cfg.energy_tol,
                 where=f"{mem['lead_orbits'][j]:g} orbits")  # fmt: skip
        else:
            goal("member_energy", rule, f"<= {cfg.energy_tol:g}", None, None, "no lead in window")
    else:
        goal("member_energy", rule, f"<= {cfg.energy_tol:g}", None, None, no_mem)
    rule = "every member's band spectral error (mean spectrum over initial states) vs truth"
    if mem and mem.get("band_error_worst"):
        worst, where = -np.inf, ""
        for b, d in mem["band_error_worst"].items():
            for c, series in d.items():
                for j, v in enumerate(series):
                    if in_window(mem["lead_orbits"][j]) and v > worst:
                        worst, where = v, f"{b} {c} at {mem['lead_orbits'][j]:g} orbits"
        ok = worst != -np.inf
        goal("member_spectra", rule, f"<= {cfg.spectral_tol:g} dex", float(worst) if ok else None,
             (worst <= cfg.spectral_tol) if ok else None, "no lead in window", where)  # fmt: skip
    else:
        goal("member_spectra", rule, f"<= {cfg.spectral_tol:g} dex", None, None, no_mem)
    rule = (f"members finite for {cfg.finite_orbits:g} orbits and every member's |E / E_y - 1| "
            "bounded (every initial state)")  # fmt: skip
    if mem and "ke_max_abs_rel" in mem:
        fo, ro = allc["finite_orbits"], allc["rollout_orbits"]
        idx = [j for j, o in enumerate(mem["lead_orbits"]) if o <= cfg.finite_orbits + 1e-9]
        b = max((mem[f"{e}_max_abs_rel"][j] for e in ("ke", "me") for j in idx), default=None)
        if ro < cfg.finite_orbits and fo >= ro:
            met, why = None, f"rolled out {ro:g} < {cfg.finite_orbits:g} orbits"
        else:
            met, why = fo >= cfg.finite_orbits and b is not None and b <= cfg.bounded_rel, ""
        goal("finite_bounded", rule, f"finite >= {cfg.finite_orbits:g} orbits, |E/E_y - 1| <= "
             f"{cfg.bounded_rel:g}", f"finite {fo:g} of {ro:g} orbits; max |E/E_y - 1| = "
             f"{_fmt(b)}", met, why)  # fmt: skip
    else:
        goal("finite_bounded", rule, f"finite >= {cfg.finite_orbits:g} orbits", None, None, no_mem)
    # 2. CRPS and NRMSE against the baselines
    why_fno = "forecast.operator_rollouts is not set (no FNO baseline)"
    why_clim = "forecast.climatology.runs is not set (no climatology baseline)"
    for name, metric, base, lim, keep, rule, why in (
        ("crps_persistence", "crps", "persistence", 1.0, in_window,
         "CRPS < persistence's at every lead, every channel", ""),
        ("crps_fno", "crps", "fno", 1.0, in_window, "CRPS < the FNO's at every lead, every channel",
         why_fno),
        ("crps_climatology_early", "crps", "climatology", 1.0,
         lambda o: o <= cfg.climatology_orbits + 1e-9,
         f"CRPS < climatology's at leads <= {cfg.climatology_orbits:g} orbit, every channel",
         why_clim),
        ("crps_climatology", "crps", "climatology", cfg.climatology_factor, in_window,
         f"CRPS <= {cfg.climatology_factor:g} x climatology's at every lead, every channel",
         why_clim),
        ("nrmse_persistence", "nrmse", "persistence", 1.0, in_window,
         "ensemble-mean NRMSE <= persistence's at every lead, every channel", ""),
        ("nrmse_fno", "nrmse", "fno", 1.0, in_window,
         "ensemble-mean NRMSE <= the FNO's at every lead, every channel", why_fno),
    ):  # fmt: skip
        strict = metric == "crps" and lim == 1.0
        thr = f"{'<' if strict else '<='} {lim:g} (ratio, worst lead and channel)"
        if base not in curves:
            goal(name, rule, thr, None, None, why or f"no {base} scores")
            continue
        r, where = _lead_ratios(m, curves[base], metric, chans, keep)
        met = None if r is None else (r < lim if strict else r <= lim)
        goal(name, rule, thr, r, met, where if r is None else "", where if r is not None else "")
    # 3. spread/skill
    lo, hi = cfg.spread_skill_range
    rule = f"spread/skill in [{lo:g}, {hi:g}] at every lead >= {cfg.spread_skill_orbits:g} orbit"
    if "spread_skill" in m:
        vals = [(m["spread_skill"][c][j], f"{c} at {o:g} orbits") for j, o in
                enumerate(m["lead_orbits"]) for c in chans
                if o >= cfg.spread_skill_orbits - 1e-9 and in_window(o)]  # fmt: skip
        if vals:
            vmin, vmax = min(vals), max(vals)
            goal("spread_skill", rule, f"[{lo:g}, {hi:g}]", [vmin[0], vmax[0]],
                 lo <= vmin[0] and vmax[0] <= hi, where=f"min {vmin[1]}, max {vmax[1]}")  # fmt: skip
        else:
            goal("spread_skill", rule, f"[{lo:g}, {hi:g}]", None, None, "no lead in window")
    else:
        goal("spread_skill", rule, f"[{lo:g}, {hi:g}]", None, None, no_mem)
    # 4. correlation-0.5 lead of the ensemble mean (channel mean; per channel: goals.corr_lead)
    rule = "correlation-0.5 lead of the ensemble mean >= 2 x persistence's (channel mean)"
    p = curves.get("persistence", {})
    lm, lp = m.get("corr_lead", {}).get("mean"), p.get("corr_lead", {}).get("mean")
    last = allc["rollout_orbits"]
    val = {"model": lm, "persistence": lp}
    if lp is None:
        goal("corr_lead", rule, ">= 2 x persistence's", val, None,
             "persistence stays above 0.5 within the rollout")  # fmt: skip
    elif lm is None:
        met = True if last >= 2 * lp else None
        goal("corr_lead", rule, f">= {2 * lp:g} orbits", val, met,
             f"the model stays above 0.5 for the {last:g} orbits rolled out")  # fmt: skip
    else:
        goal("corr_lead", rule, f">= {2 * lp:g} orbits", val, lm >= 2 * lp)
    # 5. the chain
    scored = [c for c in chains if "curves" in c]
    want = list(cfg.chain_leads_orbits)
    rule = f"chain member band spectral errors (hi grid) at leads {want} orbits, every band"
    vals, missing = [], []
    for ch in scored:
        cm = ch["curves"].get("chain member", {})
        for o in want:
            js = [j for j, x in enumerate(cm.get("lead_orbits", [])) if abs(x - o) < 1e-6]
            if not js:
                missing.append(f"{ch['sim']} {o:g}")
                continue
            for b, d in cm["band_error"].items():
                for c, series in d.items():
                    vals.append((series[js[0]], f"{ch['sim']} {b} {c} at {o:g} orbits"))
    thr = f"<= {cfg.chain_spectral_tol:g} dex"
    if not scored:
        goal("chain_spectra", rule, thr, None, None, "no chain file with hi-grid truth")
    elif missing or not vals:
        goal("chain_spectra", rule, thr, max(vals)[0] if vals else None, None,
             f"no chain lead at {missing}")  # fmt: skip
    else:
        v = max(vals)
        goal("chain_spectra", rule, thr, v[0], v[0] <= cfg.chain_spectral_tol, where=v[1])
    for name, base in (("chain_crps_persistence", "persistence+spline"),
                       ("chain_crps_fno", "fno+spline")):  # fmt: skip
        rule = f"chain CRPS < {base}'s at every lead, every channel (hi grid)"
        thr = "< 1 (ratio, worst lead and channel)"
        if not scored:
            goal(name, rule, thr, None, None, "no chain file with hi-grid truth")
            continue
        rs = [_lead_ratios(ch["curves"]["chain"], ch["curves"].get(base), "crps", ch["channels"],
                           in_window) + (ch["sim"],) for ch in scored]  # fmt: skip
        if any(r is None for r, _, _ in rs):
            why = "; ".join(f"{s}: {w}" for r, w, s in rs if r is None)
            goal(name, rule, thr, None, None, why_fno if base == "fno+spline" else why)
            continue
        r, where, s = max(rs)
        goal(name, rule, thr, r, r < 1.0, where=f"{s} {where}")
    return out


def _safe_ratio(num: float, den: float) -> float:
    """``num / den``; ``inf`` for ``x / 0`` (x > 0), ``nan`` for ``0 / 0`` (undefined)."""
    if den > 0:
        return num / den
    return float("inf") if num > 0 else float("nan")


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3g}"
