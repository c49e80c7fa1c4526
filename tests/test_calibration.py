"""Temperature calibration on the validation split (mhdsr.eval.calibration): known answers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mhdsr.errors import ConfigError
from mhdsr.eval.calibration import T_MAX, main, next_temperature, select, spread_skill

CH = ["a", "b", "c"]


def _metrics(ratios: list[float], group: str = "val") -> dict:
    return {
        "channels": CH,
        "summary": {group: {
            "ema/heun-4": {c: {"spread_skill": r} for c, r in zip(CH, ratios)},
            "spline": {c: {"nrmse": 1.0} for c in CH},
        }},
    }  # fmt: skip


def test_step_divides_by_the_ratio_and_clips() -> None:
    assert next_temperature([1.0], {"a": 0.5, "b": 2.0, "c": 1.0}, CH) == [2.0, 0.5, 1.0]
    assert next_temperature([2.0, 0.5, 1.0], {"a": 1.0, "b": 0.5, "c": 0.01}, CH) == [
        2.0,
        1.0,
        T_MAX,
    ]
    with pytest.raises(ConfigError, match="2 values for 3"):
        next_temperature([1.0, 1.0], {"a": 1, "b": 1, "c": 1}, CH)
    with pytest.raises(ConfigError, match=r"\['c'\]"):
        next_temperature([1.0], {"a": 1, "b": 1}, CH)


def test_spread_proportional_to_t_converges_in_one_step() -> None:
    """If spread = T * s0 and the skill is fixed, one step lands on spread/skill = 1 exactly."""
    s0 = {"a": 0.6, "b": 1.7, "c": 1.0}
    t1 = next_temperature([1.0], s0, CH)
    assert all(math.isclose(t * s0[c], 1.0) for t, c in zip(t1, CH))


def test_reads_the_method_and_selects_the_best_evaluated_round(tmp_path: Path) -> None:
    m = _metrics([0.5, 1.0, 2.0])
    assert spread_skill(m, "val") == ("ema/heun-4", {"a": 0.5, "b": 1.0, "c": 2.0})
    with pytest.raises(ConfigError, match="no group 'test'"):
        spread_skill(m, "test")
    with pytest.raises(ConfigError, match="no method"):
        spread_skill(m, "val", "ema/euler-8")
    bad = _metrics([0.5, float("nan"), 2.0])
    with pytest.raises(ConfigError, match="channel 'b'"):
        spread_skill(bad, "val")
    recs = [{"spread_skill": [0.5, 1, 1], "temperature": [1, 1, 1]},
            {"spread_skill": [0.9, 1.15, 1.05], "temperature": [2, 1, 1]},
            {"spread_skill": [1.0, 1.0, 1.3], "temperature": [2, 1, 0.8]}]  # fmt: skip
    assert select(recs)["temperature"] == [2, 1, 1]

    f = tmp_path / "metrics.json"
    f.write_text(json.dumps(m))
    out = tmp_path / "r1.json"
    assert main(["--metrics", str(f), "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["next_temperature"] == [2.0, 1.0, 0.5] and rec["converged"] is False
    assert main(["--out", str(tmp_path / "best.json"), "--select", str(out)]) == 0
    assert json.loads((tmp_path / "best.json").read_text())["temperature"] == [1.0, 1.0, 1.0]


def test_bad_inputs_exit_2_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    f = tmp_path / "metrics.json"
    f.write_text("{not json")
    assert main(["--metrics", str(f), "--out", str(tmp_path / "o.json")]) == 2
    assert str(f) in capsys.readouterr().err
    f.write_text(json.dumps(_metrics([1, 1, 1])))
    assert (
        main(["--metrics", str(f), "--temperature", "hot", "--out", str(tmp_path / "o.json")]) == 2
    )
    assert (
        main(["--out", str(tmp_path / "o.json"), "--select", str(tmp_path / "missing.json")]) == 2
    )
    assert not (tmp_path / "o.json").exists()
