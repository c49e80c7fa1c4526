"""The metric registry (mhdsr.eval.registry) and the automatic reading (mhdsr.eval.reading).

The end-to-end check that a registered metric reaches metrics.json and report.md is in
tests/test_eval_cli.py (it needs a full run); here: the API, the reductions with known answers,
which curves a metric applies to, and the reading of hand-made metrics.
"""

from __future__ import annotations

import numpy as np
import pytest

from mhdsr.eval.reading import (
    coherence_reading,
    dispersion_reading,
    fmt_pair,
    metric_reading,
    physics_reading,
    readings,
)
from mhdsr.eval.registry import (
    REDUCERS,
    TABLES,
    Metric,
    applies,
    get,
    in_table,
    register,
    registered,
    unregister,
)


def _fn(pred, target):
    return np.zeros(len(pred.channels))


def test_builtins_are_registered_in_tables():
    names = [m.name for m in registered()]
    for n in (
        "rmse", "nrmse", "rmse_ensemble_mean", "nrmse_ensemble_mean", "crps", "spread", "skill",
        "spread_skill", "spectral_error.generated", "coherence.transition",
        "coherence_ensemble_mean.resolved", "coherence_member_member.generated", "jz_pdf_w1",
        "jz_flatness", "increment_w1.dx1", "increment_flatness.dy4", "div_b", "jz_curl_b",
    ):  # fmt: skip
        assert n in names, n
    assert {m.table for m in registered()} <= set(TABLES)
    assert [m.name for m in in_table("physics")] == ["div_b", "jz_curl_b"]
    summary = [m.name for m in registered() if m.summary]
    for n in ("spectral_error.generated", "coherence.transition", "nrmse_ensemble_mean", "crps"):
        assert n in summary, n


def test_register_and_unregister():
    m = register(Metric("toy_zero", "toy", "always zero", _fn))
    try:
        assert get("toy_zero") is m and registered()[-1] is m
        with pytest.raises(ValueError, match="already registered"):
            register(Metric("toy_zero", "toy", "again", _fn))
    finally:
        unregister("toy_zero")
    assert "toy_zero" not in [x.name for x in registered()]
    unregister("toy_zero")  # a no-op
    with pytest.raises(ValueError, match="clashes"):
        register(Metric("coherence", "x", "a plain name over a nested one", _fn))
    with pytest.raises(ValueError, match="clashes"):
        register(Metric("rmse.sub", "x", "nested under a plain name", _fn))
    with pytest.raises(ValueError, match="table"):
        register(Metric("toy_bad_table", "x", "x", _fn, table="nope"))
    with pytest.raises(ValueError, match="reduce"):
        register(Metric("toy_bad_reduce", "x", "x", _fn, reduce="median"))  # type: ignore[arg-type]
    assert Metric("a.b.c", "x", "x", _fn).path() == ("a", "b", "c")


def test_reductions_known_answers():
    rows = np.array([[1.0, 4.0], [3.0, 0.0]])  # (T=2, C=2)
    np.testing.assert_allclose(REDUCERS["mean"](rows), [2.0, 2.0])
    np.testing.assert_allclose(REDUCERS["rms"](rows), [np.sqrt(5.0), np.sqrt(8.0)])
    np.testing.assert_allclose(REDUCERS["min"](rows), [1.0, 0.0])
    pair = np.stack([rows, 2 * rows], axis=-1)  # (T, C, 2): spread = skill / 2
    np.testing.assert_allclose(REDUCERS["ratio_rms"](pair), [0.5, 0.5])
    # band error of the snapshot-averaged spectra: means 10 and 1 -> |log10(10)| = 1
    spec = np.array([[[[5.0, 5.0], [1.0, 1.0]]], [[[15.0, 15.0], [1.0, 1.0]]]])  # (T, C, 2, K)
    np.testing.assert_allclose(REDUCERS["log_ratio_of_means"](spec), [1.0])


def test_which_curves_a_metric_applies_to():
    crps = get("crps")
    assert applies(crps, "method", stochastic=True, has_pixels=True)
    assert applies(crps, "baseline", stochastic=True, has_pixels=True)
    assert not applies(crps, "baseline", stochastic=False, has_pixels=True)
    assert not applies(crps, "method", stochastic=True, has_pixels=False)  # held-out
    gen = get("spectral_error.generated")
    assert applies(gen, "input", stochastic=False, has_pixels=False)
    assert not applies(gen, "truth", stochastic=False, has_pixels=True)
    flat = get("jz_flatness")
    assert applies(flat, "truth", stochastic=False, has_pixels=False)
    assert not applies(get("coherence.transition"), "method", stochastic=True, has_pixels=False)


def _metrics(summ, targets=None, methods=("m1",), baselines=("spline", "noise")):
    return {
        "channels": ["a", "b"],
        "methods": [{"name": n} for n in methods],
        "baselines": list(baselines),
        "summary": {"test": summ},
        "targets": {"test": {"metrics": targets or {}}},
        "groups": {"test": {}},
    }


def test_reading_names_the_winner_per_channel():
    summ = {
        "m1": {"a": {"crps": 1.0}, "b": {"crps": 5.0}},
        "spline": {"a": {}, "b": {}},
        "noise": {"a": {"crps": 2.0}, "b": {"crps": 4.0}},
    }
    text = metric_reading(_metrics(summ), "test", get("crps"))
    assert "a method beats every baseline on 1/2 channels" in text
    assert "Baseline ahead on b (noise 4 vs m1 5)" in text
    # higher is better for coherence; nested names
    summ = {
        "m1": {"a": {"coherence": {"transition": 0.99991}}},
        "spline": {"a": {"coherence": {"transition": 0.99993}}},
    }
    text = metric_reading(
        _metrics(summ, baselines=("spline",)), "test", get("coherence.transition")
    )
    assert "0/1 channels" in text and "(spline 0.99993 vs m1 0.99991)" in text  # digits to tell
    assert fmt_pair(0.99991, 0.99993) == ("0.99991", "0.99993")
    # "closest to the truth" uses the target's value
    summ = {"m1": {"a": {"jz_flatness": 9.0}}, "spline": {"a": {"jz_flatness": 5.5}}}
    targets = {"a": {"jz_flatness": 10.0}}
    text = metric_reading(
        _metrics(summ, targets, baselines=("spline",)), "test", get("jz_flatness")
    )
    assert "1/1 channels" in text and "closer to the truth's" in text
    assert metric_reading(_metrics(summ), "test", get("spread")) is None  # no ranking


def test_dispersion_reading_flags_under_and_over_dispersion():
    summ = {
        "m1": {"a": {"spread_skill": 0.5}, "b": {"spread_skill": 1.0}},
        "noise": {"a": {"spread_skill": 1.5}, "b": {"spread_skill": 1.3}},
    }
    lines = dispersion_reading(_metrics(summ), "test")
    assert lines[0] == (
        "m1: under-dispersed (spread/skill < 0.8) on a 0.5; calibrated (0.8–1.2) on 1 channel(s)."
    )
    assert lines[1] == "noise: over-dispersed (> 1.2) on a 1.5, b 1.3."


def test_physics_reading_uses_the_truths_floor_and_says_divb_is_not_zero():
    m = {
        "physics": {
            "groups": {
                "test": {
                    "truth": {"div_b": 0.04, "jz_curl_b": 5e-8},
                    "m1": {"div_b": 0.08, "jz_curl_b": 0.1},
                }
            }
        }
    }
    lines = physics_reading(m)
    assert "div B is NOT 0" in lines[0] and "face-centred" in lines[0]
    assert "floor (truth) div B = 0.04" in lines[1] and "m1 div B 2×" in lines[1]


def test_coherence_reading_compares_the_ensemble_mean_and_member_pairs():
    def coh(t, g):
        return {"transition": t, "generated": g}

    summ = {
        "m1": {
            "a": {
                "coherence": coh(0.7, 0.3),
                "coherence_ensemble_mean": coh(0.95, 0.5),
                "coherence_member_member": coh(0.7, 0.32),
            },
            "b": {
                "coherence": coh(0.7, 0.2),
                "coherence_ensemble_mean": coh(0.8, 0.4),
                "coherence_member_member": coh(0.9, 0.6),
            },
        },
        "spline": {"a": {"coherence": coh(0.9, 0.45)}, "b": {"coherence": coh(0.9, 0.45)}},
        "noise": {"a": {"coherence": coh(0.99, 0.99)}, "b": {"coherence": coh(0.99, 0.99)}},
    }
    m = _metrics(summ)
    ens, mm = coherence_reading(m, "test")
    # the stochastic noise baseline is not an interpolant; >= counts
    assert ens == (
        "m1: ensemble-mean coherence >= the best interpolant's on 1/2 channels in the "
        "transition band and 1/2 channels in the generated band; furthest behind b "
        "(transition: 0.8 vs spline 0.9)."
    )
    assert mm == (
        "m1: member-member generated-band coherence is within 0.05 of member-truth "
        "(calibrated phases) on 1/2 channels; members agree more with each other than with "
        "the truth (under-dispersed) on b 0.6 vs 0.2."
    )
    assert mm in readings(m)["test"]["coherence"]
    # one-member methods (nulls) and missing interpolants: nothing to say
    summ["m1"] = {"a": {"coherence_member_member": {"generated": None}}}
    assert coherence_reading(_metrics(summ, baselines=("noise",)), "test") == []
