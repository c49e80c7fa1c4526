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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mhdsr.eval.baselines import BASELINES, BaselineInputs, make_baseline
from mhdsr.eval.fields import Fields, Target
from mhdsr.eval.inputs import EvalInputError, ShardTruth, read_samples
from mhdsr.eval.planning import HELDOUT, SimJob, orbits, panel_baselines, union_inputs
from mhdsr.eval.reference import Reference
from mhdsr.eval.registry import TABLES, Metric, applies, registered
from mhdsr.method.grid import avgpool2_np

#: Relative tolerance of the check ``input == avgpool2(truth)`` for derived inputs.
INPUT_CHECK_RTOL = 1e-4
#: PDF histograms kept for the figures: (variable, channel), each normalized by its own rms.
HIST_KEYS: tuple[tuple[str, str], ...] = (
    ("value", "jz"),
    ("dx1", "velx"),
    ("dx1", "vely"),
    ("dx1", "velz"),
    ("dy1", "velx"),
    ("dy1", "vely"),
    ("dy1", "velz"),
)
#: Bin edges of those histograms, in units of the variable's rms.
HIST_EDGES = np.linspace(-12.0, 12.0, 97)


def hist_label(var: str, channel: str) -> str:
    """Figure / metrics.json label of a histogram variable (``"jz/rms"``, ``"δvelx dx1/rms"``)."""
    return f"{channel}/rms" if var == "value" else f"δ{channel} {var}/rms"


def hist_counts(values: np.ndarray) -> np.ndarray:
    """Counts of ``values / rms(values)`` in :data:`HIST_EDGES` (int64)."""
    v = np.asarray(values, np.float64)
    rms = np.sqrt(np.mean(v * v))
    return np.histogram(v / rms if rms > 0 else v, bins=HIST_EDGES)[0].astype(np.int64)


@dataclass
class Curve:
    """Per-snapshot records of one curve on one sim (or pooled over sims).

    Attributes:
        name: ``"ema/heun-8"``, ``"spline"``, ``"truth"``, ``"input"``.
        kind: ``"method"``, ``"baseline"``, ``"truth"`` or ``"input"``.
        n_members: ensemble size (1 for deterministic baselines, truth and input).
        stochastic: an ensemble (a method or a stochastic baseline).
        rows: metric name -> per-snapshot rows (aligned with ``snapshots``).
        nulls: metric name -> why it is null for this curve (e.g. one member).
        snapshots, sims, times, orbits: what each row position is.
        spec_sum / spec_min_sum / spec_max_sum: sums over snapshots of the member-mean,
            member-min and member-max spectra ``(C, K)``, ``k = 1 .. N/2``; ``spec_n`` the count.
        hist: :data:`HIST_KEYS` label -> counts in :data:`HIST_EDGES`.
    """

    name: str
    kind: str
    n_members: int = 1
    stochastic: bool = False
    rows: dict[str, list[np.ndarray]] = field(default_factory=lambda: defaultdict(list))
    nulls: dict[str, str] = field(default_factory=dict)
    snapshots: list[int] = field(default_factory=list)
    sims: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    orbits: list[float] = field(default_factory=list)
    spec_sum: np.ndarray | None = None
    spec_min_sum: np.ndarray | None = None
    spec_max_sum: np.ndarray | None = None
    spec_n: int = 0
    hist: dict[str, np.ndarray] = field(default_factory=dict)
    metrics: list[Metric] | None = None

    def plan(self, channels: Sequence[str], has_pixels: bool) -> list[Metric]:
        """Choose the registered metrics that apply (once); returns those skipped for lack of
        a channel they require."""
        skipped: list[Metric] = []
        self.metrics = []
        for m in registered():
            if not applies(m, self.kind, stochastic=self.stochastic, has_pixels=has_pixels):
                continue
            if any(c not in channels for c in m.requires):
                skipped.append(m)
                continue
            if m.channels is not None and not set(m.channels) & set(channels):
                continue
            if self.n_members < m.min_members:
                self.nulls[m.name] = (
                    f"ensemble of {self.n_members} member: needs >= {m.min_members}"
                )
                continue
            self.metrics.append(m)
        return skipped

    def add(
        self, pred: Fields, target: Target, *, sim: str, snapshot: int, time: float, orbit: float
    ) -> None:
        """Score one snapshot: every planned metric's row, the spectra and the histograms."""
        assert self.metrics is not None, "call plan() first"
        for m in list(self.metrics):
            row = m.fn(pred, target)
            if row is None:
                if not self.rows.get(m.name):
                    self.metrics.remove(m)  # not applicable to these fields (e.g. the lo grid)
                    continue
                row = np.full_like(self.rows[m.name][0], np.nan)
            self.rows[m.name].append(np.asarray(row, dtype=np.float64))
        self.snapshots.append(snapshot)
        self.sims.append(sim)
        self.times.append(time)
        self.orbits.append(orbit)
        e = pred.power[..., 1 : pred.n // 2 + 1]
        for attr, v in (
            ("spec_sum", e.mean(axis=0)),
            ("spec_min_sum", e.min(axis=0)),
            ("spec_max_sum", e.max(axis=0)),
        ):
            cur = getattr(self, attr)
            setattr(self, attr, v.copy() if cur is None else cur + v)
        self.spec_n += 1
        if self.kind in ("method", "baseline", "truth"):
            for var, ch in HIST_KEYS:
                if ch in pred.channels:
                    label = hist_label(var, ch)
                    c = hist_counts(pred.pdf(var, ch).values)
                    self.hist[label] = self.hist[label] + c if label in self.hist else c

    def table(self, name: str) -> np.ndarray | None:
        """``(T, ...)`` rows of a metric, ``None`` if never recorded."""
        rows = self.rows.get(name)
        return np.stack(rows) if rows else None

    @property
    def spectrum(self) -> np.ndarray | None:
        """Mean spectrum ``(C, K)`` over snapshots and members, ``k = 1 .. N/2``."""
        return None if self.spec_sum is None else self.spec_sum / self.spec_n

    @property
    def spectrum_band(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Ensemble spread band of the spectrum: the member min and max, averaged over
        snapshots, ``(C, K)`` each."""
        if self.spec_min_sum is None:
            return None
        return self.spec_min_sum / self.spec_n, self.spec_max_sum / self.spec_n

    def merge(self, other: Curve) -> None:
        """Pool ``other`` (the same curve on another sim) into this record."""
        for k, v in other.rows.items():
            self.rows[k].extend(v)
        for k, v in other.nulls.items():
            self.nulls.setdefault(k, v)
        for attr in ("snapshots", "sims", "times", "orbits"):
            getattr(self, attr).extend(getattr(other, attr))
        for attr in ("spec_sum", "spec_min_sum", "spec_max_sum"):
            o = getattr(other, attr)
            if o is not None:
                mine = getattr(self, attr)
                setattr(self, attr, o.copy() if mine is None else mine + o)
        self.spec_n += other.spec_n
        for k, v in other.hist.items():
            self.hist[k] = self.hist[k] + v if k in self.hist else v.copy()
        self.n_members = max(self.n_members, other.n_members)
        self.stochastic = self.stochastic or other.stochastic
        if self.metrics is None:
            self.metrics = list(other.metrics or [])


@dataclass
class SimResult:
    """Everything computed for one sim (all its method files, baselines, truth and input)."""

    sim: str
    group: str  # split with pixel truth ("test", "val", ...) or "heldout"
    has_truth: bool
    snapshots: list[int]
    times: list[float]
    orbits: list[float]
    omega: float
    files: dict[str, str]  # method -> file (relative to the samples folder)
    curves: dict[str, Curve]
    notes: list[str] = field(default_factory=list)
    baseline_members: int = 1


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
    check_num = np.zeros(len(channels))
    check_den = np.zeros(len(channels))

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
            y = truth.hi(job.split, key)[idx]
            if factor == 2:  # per channel: max |input - avgpool2(truth)| vs max |avgpool2(truth)|
                pooled = avgpool2_np(y)
                check_num = np.maximum(check_num, np.abs(pooled - lo).max(axis=(1, 2)))
                check_den = np.maximum(check_den, np.abs(pooled).max(axis=(1, 2)))
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

    if has_truth and factor == 2:
        d = float((check_num / np.maximum(check_den, 1e-30)).max())
        if d > INPUT_CHECK_RTOL:
            notes.append(
                f"sim {job.sim}: input differs from avgpool2(truth) by {d:.3g} (relative max); "
                "the sample files may not come from these shards"
            )
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
