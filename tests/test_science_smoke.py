"""`make science` end to end on a tiny model (the CI smoke of the science benchmark).

Runs scripts/science.sh with SCIENCE_SMOKE=1 on the bundled data into a temporary folder: shard
build, 2-rank training, ODE and SDE sampling of the test split and of a held-out native 128^2
snapshot, evaluation against every baseline, and the goals report of benchmarks/science.py.
Asserts the report's structure and that every number it holds is finite; the values of a 4-step
model are not goals (benchmarks/science.md holds the real run).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GOALS = (
    "generated-band error <= 0.15",
    "resolved-band error <= best interpolant",
    "transition ensemble-mean coherence >= best interpolant",
    "generated ensemble-mean coherence >= best interpolant",
    "|member-member - member-truth| generated-band coherence <= 0.05",
    "every snapshot: transition coherence >= spline - 0.02",
)


def _numbers(x: object) -> list[float]:
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return []
    if isinstance(x, (int, float)):
        return [float(x)]
    if isinstance(x, dict):
        return [v for y in x.values() for v in _numbers(y)]
    if isinstance(x, list):
        return [v for y in x for v in _numbers(y)]
    return []


@pytest.mark.slow
def test_science_smoke(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PY": sys.executable,
        "SCIENCE_SMOKE": "1",
        "SCIENCE_ROOT": str(tmp_path / "science"),
        "MHDSR_SCIENCE_PORT": "29581",
        "DS_ACCELERATOR": "cpu",
        "PYTHONPATH": str(REPO / "src"),
    }
    r = subprocess.run(
        ["bash", "scripts/science.sh"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = tmp_path / "science" / "bundled-smoke"
    report = json.loads((out / "science.json").read_text())
    ds = report["datasets"]["bundled-smoke"]
    # the Heun sampler with the trained and with the val-calibrated temperature (+T), the SDE
    cal = json.loads((out / "calibration" / "calibration.json").read_text())
    assert len(cal["rounds"]) == 2 and cal["group"] == "val"
    assert cal["temperature"] in [r["temperature"] for r in cal["rounds"]]  # an evaluated round
    calibrated = any(v != 1 for v in cal["temperature"])
    want = {"ema/heun-4", "ema/euler_maruyama-8"} | ({"ema/heun-4+T"} if calibrated else set())
    assert set(ds["goals"]) == want
    channels = ["density", "velx", "vely", "velz", "Bx", "By", "Bz", "jz"]
    for method, goals in ds["goals"].items():
        for goal in GOALS:
            assert set(goals[goal]) == set(channels), (method, goal)
            for ch, entry in goals[goal].items():
                assert entry["met"] in (True, False), (method, goal, ch, entry)
    values = _numbers(ds["summary_test"])
    assert len(values) > 100 and all(math.isfinite(v) for v in values)
    # the baselines the goals are judged against are all there
    for b in ("bilinear", "bicubic", "spline", "spectral-noise", "noise"):
        assert b in ds["summary_test"], b
    md = (out / "science.md").read_text()
    assert "### Goals" in md and "ema/heun-4" in md and "spectral-noise" in md
    assert not list(out.glob("science.*.tmp"))
