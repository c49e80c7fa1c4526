"""The per-snapshot record of one curve (:class:`Curve`) and of one sim (:class:`SimResult`).

A :class:`Curve` keeps each registered metric's per-snapshot rows, the running spectra and the
PDF histograms of one curve (a method, a baseline, the truth, the input) on one sim or pooled
over sims; :mod:`mhdsr.eval.scoring` fills them, :mod:`mhdsr.eval.reference` builds the
reference split's, :mod:`mhdsr.eval.pooling` reduces them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mhdsr.eval.fields import Fields, Target
from mhdsr.eval.registry import Metric, applies, registered

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
