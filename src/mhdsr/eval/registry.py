"""The metric registry of ``mhdsr eval``: one function plus one registration per metric.

A :class:`Metric` says how to compute one per-snapshot row from a curve's fields and the
snapshot's target (:mod:`mhdsr.eval.fields`), what it needs, how the rows of many snapshots
reduce to the reported value, and how it is labelled and defined in the report. Everything
downstream is generated from the registry: the per-channel entries of ``metrics.json``
(:func:`mhdsr.eval.pooling.curve_metrics`), the report's definition list, its tables and their
automatic reading, the summary table and the per-snapshot time series.

Adding a metric::

    from mhdsr.eval.registry import Metric, register

    def _max_error(pred, target):          # pred: Fields (M, C, N, N); target: Target
        d = np.abs(pred.x - target.fields.x)   # physical units
        return d.max(axis=(-2, -1)).mean(axis=0)  # (C,): mean over members of the grid max

    register(Metric("max_error", "max |error|", "max over the grid of |pred - truth|, mean "
                    "over members and snapshots (physical units).", _max_error))

The built-in metrics are registered by :mod:`mhdsr.eval.metric_defs` (loaded on first use).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:
    from mhdsr.eval.fields import Fields, Target

#: What a metric needs: pixel truth (sims with truth in the shards), a target distribution
#: (the truth's snapshot, or for held-out sims the reference split), or nothing.
Needs = Literal["pixels", "target", "none"]
#: Which value is better, for the report's reading: lower, higher, closest to 1, closest to the
#: truth's own value (the truth or reference column of the same metric), or no ranking.
Better = Literal["lower", "higher", "one", "truth", "none"]
#: Built-in reductions of the per-snapshot rows ``(T, C)`` (or ``(T, C, P)``) to ``(C,)``:
#: ``mean`` / ``min`` / ``max`` over snapshots, ``rms`` = ``sqrt(mean(row**2))``, ``ratio_rms`` =
#: ``sqrt(mean(row[..., 0]**2)) / sqrt(mean(row[..., 1]**2))``, ``log_ratio_of_means`` =
#: ``mean_k |log10(mean_t row[..., 0, k] / mean_t row[..., 1, k])|`` (band spectral error of
#: snapshot-averaged spectra, both floored at 1e-30).
ReduceName = Literal["mean", "rms", "min", "max", "ratio_rms", "log_ratio_of_means"]
Reducer = Callable[[np.ndarray], np.ndarray]
#: ``fn(pred, target) -> row``: ``(C,)`` (per-channel metric) or ``()`` (field metric), or with a
#: trailing axis for the reductions that need one; ``None`` = not applicable to these fields.
MetricFn = Callable[["Fields", "Target"], "np.ndarray | float | None"]
CurveKind = Literal["method", "baseline", "truth", "input", "forecast", "forecast_ensemble"]

#: Curve kinds a metric applies to by default: predictions (methods and baselines).
PREDICTIONS: frozenset[str] = frozenset({"method", "baseline"})
#: Curve kind of the forecast methods (model, persistence, linear; the chain and its baselines),
#: scored per initial state and lead time (:mod:`mhdsr.eval.forecast`).
FORECAST = "forecast"
#: Curve kind of forecast ENSEMBLES per initial state and lead (members of a generative rollout,
#: the chain ensemble, climatology; deterministic forecasts as one-member ensembles): the
#: ensemble scores (CRPS, spread/skill, jz PDF, div B) of :mod:`mhdsr.eval.forecast`.
FORECAST_ENSEMBLE = "forecast_ensemble"
#: Curve kinds of super-resolution evaluation.
SR_KINDS: frozenset[str] = frozenset({"method", "baseline", "truth", "input"})
SPECTRAL_FLOOR = 1e-30
#: Key of the ``{key: reason}`` dict next to every null value in metrics.json.
NULL_KEY = "null_reasons"


def _log_ratio_of_means(rows: np.ndarray) -> np.ndarray:
    m = rows.mean(axis=0)
    ratio = np.maximum(m[..., 0, :], SPECTRAL_FLOOR) / np.maximum(m[..., 1, :], SPECTRAL_FLOOR)
    return np.mean(np.abs(np.log10(ratio)), axis=-1)


def _ratio_rms(rows: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(np.mean(rows[..., 0] ** 2, axis=0)) / np.sqrt(
            np.mean(rows[..., 1] ** 2, axis=0)
        )


REDUCERS: dict[str, Reducer] = {
    "mean": lambda r: r.mean(axis=0),
    "rms": lambda r: np.sqrt(np.mean(r**2, axis=0)),
    "min": lambda r: r.min(axis=0),
    "max": lambda r: r.max(axis=0),
    "ratio_rms": _ratio_rms,
    "log_ratio_of_means": _log_ratio_of_means,
}


@dataclass(frozen=True)
class Metric:
    """One registered metric.

    Attributes:
        name: key in metrics.json; a dot nests (``"coherence.transition"`` is written as
            ``{"coherence": {"transition": value}}`` under each channel).
        label: short label for table rows/columns.
        definition: one line for report.md (formula, units, source).
        fn: the per-snapshot function (:data:`MetricFn`).
        needs: ``"pixels"``, ``"target"`` or ``"none"`` (:data:`Needs`).
        min_members: ensemble size it needs; curves with fewer members (methods of one member)
            get ``null`` with the reason.
        ensemble: only for ensembles (methods and stochastic baselines), not for
            deterministic baselines, the truth or the input.
        reduce: a :data:`ReduceName` or a callable ``rows (T, ...) -> (C,)``; the per-snapshot
            value (time series) is the reduction of that snapshot's row alone.
        kinds: curve kinds it applies to (default methods and baselines).
        per_channel: ``(C,)`` rows reported per channel; ``False``: a scalar per field,
            reported in the ``physics`` section.
        channels: report only these channels (``None`` = all present).
        requires: channels the function needs (skipped, with a note, when absent).
        better: :data:`Better`, for the automatic reading.
        table: report table it is listed in (:data:`TABLES`).
        summary: shown in summary.md / stdout.
        timeseries: per-snapshot values kept in metrics.json (``sims.<sim>.per_snapshot``)
            and drawn against time in orbits.
    """

    name: str
    label: str
    definition: str
    fn: MetricFn
    needs: Needs = "pixels"
    min_members: int = 1
    ensemble: bool = False
    reduce: ReduceName | Reducer = "mean"
    kinds: frozenset[str] = PREDICTIONS
    per_channel: bool = True
    channels: tuple[str, ...] | None = None
    requires: tuple[str, ...] = ()
    better: Better = "lower"
    table: str = "pixel"
    summary: bool = False
    timeseries: bool = False

    def reducer(self) -> Reducer:
        """The reduction as a callable."""
        return self.reduce if callable(self.reduce) else REDUCERS[self.reduce]

    def path(self) -> tuple[str, ...]:
        """The nested key path of :attr:`name`."""
        return tuple(self.name.split("."))


#: Report tables, in order: key -> title.
TABLES: dict[str, str] = {
    "pixel": "Pixel errors",
    "ensemble": "Ensemble scores",
    "spectral": "Band spectral errors",
    "coherence": "Band coherence",
    "pdf": "PDFs and intermittency",
    "physics": "Physics consistency",
    "forecast": "Forecast scores per lead time",
}

_REGISTRY: dict[str, Metric] = {}
_BUILTINS_LOADED = False


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        import mhdsr.eval.metric_defs  # noqa: F401  (registers the built-in metrics)


def register(metric: Metric) -> Metric:
    """Add ``metric`` (after the built-ins); returns it.

    Raises:
        ValueError: the name is taken, the table or reduction is unknown, or a dotted name
            clashes with a plain one (``"a"`` and ``"a.b"``).
    """
    _load_builtins()
    if metric.name in _REGISTRY:
        raise ValueError(f"metric {metric.name!r} is already registered")
    if metric.table not in TABLES:
        raise ValueError(f"metric {metric.name!r}: table must be one of {list(TABLES)}")
    if not callable(metric.reduce) and metric.reduce not in REDUCERS:
        raise ValueError(f"metric {metric.name!r}: reduce must be one of {list(REDUCERS)}")
    head = metric.path()[0]
    for other in _REGISTRY.values():
        if (other.name == head) or (other.path()[0] == metric.name):
            raise ValueError(f"metric {metric.name!r} clashes with {other.name!r}")
    _REGISTRY[metric.name] = metric
    return metric


def unregister(name: str) -> None:
    """Remove a metric (a no-op if it is not registered)."""
    _REGISTRY.pop(name, None)


def registered() -> list[Metric]:
    """Every registered metric, in registration order (built-ins first)."""
    _load_builtins()
    return list(_REGISTRY.values())


def get(name: str) -> Metric:
    """The metric called ``name``.

    Raises:
        KeyError: not registered.
    """
    _load_builtins()
    return _REGISTRY[name]


def in_table(table: str) -> list[Metric]:
    """The registered metrics of one report table, in order."""
    return [m for m in registered() if m.table == table]


def for_kinds(kinds: frozenset[str] | set[str]) -> list[Metric]:
    """The registered metrics that apply to some curve kind in ``kinds`` (``SR_KINDS`` for
    super-resolution, ``{FORECAST}`` for forecasts), in order."""
    return [m for m in registered() if m.kinds & set(kinds)]


def applies(metric: Metric, kind: str, *, stochastic: bool, has_pixels: bool) -> bool:
    """Whether ``metric`` is computed for a curve of ``kind`` (``stochastic`` = an ensemble:
    a method or a stochastic baseline) on a sim with or without pixel truth."""
    if kind not in metric.kinds:
        return False
    if metric.ensemble and not stochastic:
        return False
    return not (metric.needs == "pixels" and not has_pixels)
