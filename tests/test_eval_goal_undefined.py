"""The per-snapshot transition-coherence goal when a snapshot's truth has no power in the band.

A uniform field (the initial density of an MRI run) has no transition-band power, so its
coherence is undefined (NaN): the goal must skip that snapshot for that channel, count it, and
still judge the defined ones — not crash, and not count NaN as met or failed.
"""

from __future__ import annotations

import numpy as np

from mhdsr.eval.assemble import transition_goal
from mhdsr.eval.curve import Curve, SimResult
from mhdsr.eval.reading import goal_reading


def _curve(name: str, kind: str, rows: list[list[float]]) -> Curve:
    c = Curve(name=name, kind=kind, snapshots=[0, 5, 9], orbits=[0.0, 1.0, 2.0])
    c.rows["coherence.transition"] = [np.array(r) for r in rows]
    return c


def _result(method_rows: list[list[float]]) -> SimResult:
    spline = _curve("spline", "baseline", [[np.nan, 0.9], [0.95, 0.9], [0.95, 0.9]])
    model = _curve("ema/heun-4", "method", method_rows)
    return SimResult(
        sim="mri256/seed_0001", group="test", has_truth=True, snapshots=[0, 5, 9],
        times=[0.0, 6.28, 12.6], orbits=[0.0, 1.0, 2.0], omega=1.0, files={},
        curves={"spline": spline, "ema/heun-4": model},
    )  # fmt: skip


def test_undefined_snapshot_is_skipped_and_the_rest_judged():
    # density (channel 0) undefined at snapshot 0; at snapshot 9 the model is 0.05 below spline
    g = transition_goal([_result([[np.nan, 0.91], [0.96, 0.92], [0.90, 0.93]])], ["spline"],
                        ["density", "velx"])  # fmt: skip
    m = g["groups"]["test"]["ema/heun-4"]
    dens, velx = m["channels"]["density"], m["channels"]["velx"]
    assert dens["undefined"] == 1 and dens["at"]["snapshot"] == 9
    assert np.isclose(dens["min_diff"], -0.05) and dens["pass"] is False
    assert velx["undefined"] == 0 and np.isclose(velx["min_diff"], 0.01) and velx["pass"] is True
    assert m["pass"] is False
    line = goal_reading({"goals": {"transition_coherence": g}}, "test")[0]
    assert "misses it on density" in line and "1 channel-snapshot(s) without power" in line


def test_channel_undefined_everywhere_is_neither_met_nor_failed():
    res = _result([[np.nan, 0.95], [np.nan, 0.95], [np.nan, 0.95]])
    for row in res.curves["spline"].rows["coherence.transition"]:
        row[0] = np.nan
    g = transition_goal([res], ["spline"], ["density", "velx"])
    m = g["groups"]["test"]["ema/heun-4"]
    assert m["channels"]["density"] == {
        "min_diff": None, "at": None, "pass": None, "undefined": 3,
    }  # fmt: skip
    assert m["channels"]["velx"]["pass"] is True and m["pass"] is True
    assert "meets the goal" in goal_reading({"goals": {"transition_coherence": g}}, "test")[0]
