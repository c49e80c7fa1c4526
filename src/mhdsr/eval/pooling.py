"""Pooling of per-snapshot rows into reported values, per sim or over the sims of a group.

Every value comes from the registry (:mod:`mhdsr.eval.registry`): a metric's rows ``(T, ...)``
over the curve's snapshots are reduced with its reduction. A sim's value, its group's pooled
value and its per-snapshot time series are therefore the same computation on different row
sets: a group pools the snapshots of all its sims (each snapshot weighs the same).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mhdsr.eval.curve import Curve, SimResult
from mhdsr.eval.registry import NULL_KEY, Metric, registered


def pool_curves(results: Sequence[SimResult]) -> dict[str, dict[str, Curve]]:
    """``group -> curve name -> Curve`` pooled over the group's sims (in result order)."""
    out: dict[str, dict[str, Curve]] = {}
    for r in results:
        g = out.setdefault(r.group, {})
        for name, cur in r.curves.items():
            if name not in g:
                g[name] = Curve(name, cur.kind, cur.n_members, cur.stochastic)
            g[name].merge(cur)
    return out


def set_path(d: dict[str, Any], path: Sequence[str], value: Any, reason: str | None = None) -> None:
    """``d[p0][p1]...[pn] = value`` creating dicts on the way; a ``reason`` goes into the
    innermost dict's ``null_reasons`` (so a null always carries its reason)."""
    for p in path[:-1]:
        d = d.setdefault(p, {})
    d[path[-1]] = value
    if reason is not None:
        d.setdefault(NULL_KEY, {})[path[-1]] = reason


def _reported_channels(m: Metric, channels: Sequence[str]) -> list[tuple[int, str]]:
    return [(c, ch) for c, ch in enumerate(channels) if m.channels is None or ch in m.channels]


def curve_metrics(cur: Curve, channels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per-channel values of every registered per-channel metric the curve has.

    Returns:
        ``{channel: {name: value}}``, dotted names nested (``spectral_error.generated`` ->
        ``{"spectral_error": {"generated": v}}``). Plain floats (``nan`` where undefined:
        :func:`mhdsr.eval.report.clean` turns them into nulls with a reason); ``None`` with a
        reason where the curve cannot have the metric (e.g. one member). Metrics that do not
        apply to the curve (pixel metrics without truth, ensemble metrics of deterministic
        curves, the generated band of the lo input) are absent.
    """
    out: dict[str, dict[str, Any]] = {ch: {} for ch in channels}
    for m in registered():
        if not m.per_channel:
            continue
        if m.name in cur.nulls:
            for _, ch in _reported_channels(m, channels):
                set_path(out[ch], m.path(), None, cur.nulls[m.name])
            continue
        rows = cur.table(m.name)
        if rows is None:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            vals = np.asarray(m.reducer()(rows), dtype=np.float64)
        for c, ch in _reported_channels(m, channels):
            set_path(out[ch], m.path(), float(vals[c]))
    return out


def physics_metrics(cur: Curve) -> dict[str, float] | None:
    """Values of the per-field (non per-channel) metrics, e.g. ``{"div_b", "jz_curl_b"}``;
    ``None`` if the curve has none."""
    out = {}
    for m in registered():
        rows = cur.table(m.name) if not m.per_channel else None
        if rows is not None:
            out[m.name] = float(m.reducer()(rows))
    return out or None


def per_snapshot(cur: Curve, channels: Sequence[str]) -> dict[str, dict[str, list[float]]]:
    """Time series of the ``timeseries`` metrics: ``{name: {channel: [value per snapshot]}}``,
    aligned with ``cur.snapshots`` (each value the reduction of that snapshot's row alone)."""
    out: dict[str, dict[str, list[float]]] = {}
    for m in registered():
        rows = cur.table(m.name) if m.timeseries and m.per_channel else None
        if rows is None:
            continue
        red = m.reducer()
        with np.errstate(divide="ignore", invalid="ignore"):
            vals = np.stack([np.asarray(red(rows[t : t + 1])) for t in range(len(rows))])
        out[m.name] = {ch: vals[:, c].tolist() for c, ch in _reported_channels(m, channels)}
    return out


def spread_skill_points(cur: Curve, channels: Sequence[str]) -> dict[str, Any] | None:
    """Per-snapshot ``skill`` and ``spread_calibrated`` per channel (the spread/skill figure),
    from the rows of ``spread_skill``; ``None`` without them."""
    rows = cur.table("spread_skill")
    if rows is None:
        return None
    return {
        "n_members": cur.n_members,
        "skill": {ch: rows[:, c, 1].tolist() for c, ch in enumerate(channels)},
        "spread_calibrated": {ch: rows[:, c, 0].tolist() for c, ch in enumerate(channels)},
    }
