"""The level-free shape error of held-out native-128 sims, its every-seed reference and the
leave-one-out realization floor (mhdsr.analysis.shape, mhdsr.eval.native_shape): known answers,
the orbit window and equal seed weights on a stub shard folder, the science goal, and one
``mhdsr eval`` run on the demo shards (metrics.json ``native_shape`` and the report's table).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from eval_helpers import read_split, shared_demo_shards, truth_of_sim, up, write_samples
from mhdsr.analysis.shape import generated_error, leave_one_out, shape_error, transition_power
from mhdsr.analysis.spectra import power_spectrum
from mhdsr.channels import CHANNELS
from mhdsr.cli import main
from mhdsr.config import ConfigError
from mhdsr.eval.config import EvalConfig
from mhdsr.eval.curve import Curve
from mhdsr.eval.native_shape import FLOOR_FACTOR, SHAPE_BAR, seed_spectra, shape_block

N_LO, N_HI = 128, 256
K = np.arange(1, N_HI // 2 + 1)
GEN = K >= 64  # generated band [64, 128]


def _spectrum(c: int = 2) -> np.ndarray:
    """A smooth (C, K) power law with a different slope per channel."""
    return np.stack([K.astype(np.float64) ** -(1.5 + 0.5 * i) for i in range(c)])


# ---------------------------------------------------------------------------------------------
# known answers of the pure functions


def test_a_spectrum_times_a_constant_has_zero_shape_error_but_plain_error_log_c() -> None:
    e = _spectrum()
    for c in (0.1, 3.0, 250.0):
        np.testing.assert_allclose(shape_error(c * e, e, K, N_LO, N_HI), 0.0, atol=1e-12)
        np.testing.assert_allclose(generated_error(c * e, e, K, N_LO, N_HI), abs(math.log10(c)),
                                   rtol=1e-12)  # fmt: skip


def test_a_generated_band_times_10_has_shape_error_exactly_1() -> None:
    e = _spectrum()
    m = e.copy()
    m[:, GEN] *= 10.0
    np.testing.assert_allclose(shape_error(m, e, K, N_LO, N_HI), 1.0, rtol=1e-12)
    # the transition band [32, 64) is untouched: its power (the normalizer) is the same
    np.testing.assert_array_equal(transition_power(m, K, N_LO, N_HI),
                                  transition_power(e, K, N_LO, N_HI))  # fmt: skip
    # and a level change on top does not move the shape error
    np.testing.assert_allclose(shape_error(0.01 * m, e, K, N_LO, N_HI), 1.0, rtol=1e-12)
    np.testing.assert_allclose(generated_error(0.01 * m, e, K, N_LO, N_HI), 1.0, atol=1e-12)


def test_transition_power_sums_k_32_to_63() -> None:
    e = np.ones((1, K.size))
    assert transition_power(e, K, N_LO, N_HI)[0] == 32.0  # k = 32 .. 63
    with pytest.raises(ValueError, match="transition band"):
        transition_power(e[:, :20], K[:20], N_LO, N_HI)
    with pytest.raises(ValueError, match="last axis"):
        transition_power(e, K[:-1], N_LO, N_HI)


def test_leave_one_out_floor_known_values() -> None:
    e = _spectrum()
    same = leave_one_out(np.stack([e, e, e]), K, N_LO, N_HI)
    np.testing.assert_allclose(same["shape"], 0.0, atol=1e-12)
    np.testing.assert_allclose(same["plain"], 0.0, atol=1e-12)
    assert same["shape"].shape == (3, 2)
    f = 4.0
    b = e.copy()
    b[:, GEN] *= f
    two = leave_one_out(np.stack([e, b]), K, N_LO, N_HI)
    np.testing.assert_allclose(two["shape"], math.log10(f), rtol=1e-12)  # each vs the other
    np.testing.assert_allclose(two["plain"], math.log10(f), rtol=1e-12)
    # three seeds: e, e, f*e (generated band); seed 0 and 1 see the mean (1 + f)/2 of the others
    three = leave_one_out(np.stack([e, e, b]), K, N_LO, N_HI)
    want = [math.log10((1 + f) / 2)] * 2 + [math.log10(f)]
    np.testing.assert_allclose(three["shape"][:, 0], want, rtol=1e-12)
    np.testing.assert_allclose(three["shape"].mean(axis=0), sum(want) / 3, rtol=1e-12)
    # a seed that is only more energetic everywhere: floor 0 in shape, not in plain
    lvl = leave_one_out(np.stack([e, 10 * e]), K, N_LO, N_HI)
    np.testing.assert_allclose(lvl["shape"], 0.0, atol=1e-12)
    np.testing.assert_allclose(lvl["plain"], 1.0, rtol=1e-12)
    with pytest.raises(ValueError, match=">= 2 seeds"):
        leave_one_out(e[None], K, N_LO, N_HI)


# ---------------------------------------------------------------------------------------------
# the every-seed reference on a stub shard folder


class _StubTruth:
    """The part of :class:`mhdsr.eval.inputs.ShardTruth` that seed_spectra reads."""

    def __init__(self, samples: dict[str, list[tuple[str, float, np.ndarray]]]) -> None:
        self.root = Path("stub")
        self.channels = ["density", "velx"]
        self.hi_shape = (2, 16, 16)
        self._data = {s: {f"k{i:03d}": rec for i, rec in enumerate(v)} for s, v in samples.items()}
        self.manifest = {
            "channels": self.channels,
            "splits": {
                **{s: {"source": "hi", "samples": len(v)} for s, v in samples.items()},
                "heldout": {"source": "native_lo", "samples": 1},
            },
            "provenance": {"sims": {}},
        }

    def has_split(self, split: str) -> bool:
        return self.manifest["splits"].get(split, {}).get("source") == "hi"

    def index(self, split: str) -> dict[str, dict[str, object]]:
        return {k: {"hi.npy": None, "json": None} for k in self._data[split]}

    def record(self, split: str, key: str) -> dict[str, object]:
        sim, t, _ = self._data[split][key]
        return {"sim": sim, "time": t}

    def hi(self, split: str, key: str) -> np.ndarray:
        return self._data[split][key][2]


def _field(seed: int, amp: float = 1.0) -> np.ndarray:
    return (amp * np.random.default_rng(seed).standard_normal((2, 16, 16))).astype(np.float32)


def _orb(o: float) -> float:
    return o * 2 * math.pi  # orbit -> code time (omega0 = 1)


def test_seed_spectra_window_and_equal_seed_weights() -> None:
    a1, a2, b1 = _field(1), _field(2), _field(3)
    base = {
        "train": [("A", _orb(1.0), a1), ("A", _orb(2.0), a2)],
        "test": [("B", _orb(1.5), b1)],
    }
    got = seed_spectra(_StubTruth(base), ["velx", "density"], (1.0, 2.0), 1e-6)
    assert got.splits == ["train", "test"] and got.sims == ["A", "B"] and got.counts == [2, 1]
    ea = (power_spectrum(a1[[1, 0]]) + power_spectrum(a2[[1, 0]]))[:, 1:9] / 2
    eb = power_spectrum(b1[[1, 0]])[:, 1:9]
    np.testing.assert_allclose(got.spectra, np.stack([ea, eb]), rtol=1e-12)
    # each seed weighs the same: not the pooled mean of 3 snapshots
    np.testing.assert_allclose(got.reference, (ea + eb) / 2, rtol=1e-12)
    # snapshots outside the window (a loud one, a third seed) change nothing; inside the
    # tolerance counts
    more = {
        "train": [*base["train"], ("A", _orb(5.0), _field(4, 100.0))],
        "test": [*base["test"], ("C", _orb(0.5), _field(5, 100.0)),
                 ("B", _orb(2.0 + 1e-3), _field(6, 100.0))],
        "val": [("C", _orb(2.0 + 5e-7), b1)],
    }  # fmt: skip
    got2 = seed_spectra(_StubTruth(more), ["velx", "density"], (1.0, 2.0), 1e-6)
    assert got2.sims == ["A", "B", "C"] and got2.counts == [2, 1, 1] and got2.outside == 3
    np.testing.assert_allclose(got2.spectra[:2], got.spectra, rtol=1e-12)
    np.testing.assert_allclose(got2.spectra[2], eb, rtol=1e-12)


def test_shape_block_floor_bar_and_verdicts() -> None:
    e = _spectrum()
    b = e.copy()
    b[:, GEN] *= 4.0
    truth = _StubTruth({"train": []})
    seeds = seed_spectra(truth, ["density", "velx"], (0.0, 1.0), 1e-6)
    seeds.sims, seeds.counts, seeds.spectra = ["A", "B"], [3, 2], np.stack([e, b])
    ref = (e + b) / 2
    good, bad = Curve("m", "method"), Curve("spline", "baseline")
    good.spec_sum, good.spec_n = 0.5 * ref, 1  # only less energetic: shape 0
    low = ref.copy()
    low[:, GEN] /= 100.0  # two decades short in the generated band
    bad.spec_sum, bad.spec_n = low, 1
    lo_input = Curve("input", "input")
    lo_input.spec_sum, lo_input.spec_n = np.ones((2, 64)), 1  # lo grid: left out
    block = shape_block({"m": good, "spline": bad, "input": lo_input}, ["m", "spline"], seeds,
                        ["density", "velx"], N_LO, N_HI)  # fmt: skip
    assert block["available"] and block["floor"]["available"]
    assert set(block["curves"]) == {"m", "spline"}
    floor = math.log10(4.0)  # two seeds: each vs the other
    for ch in ("density", "velx"):
        assert block["floor"]["channels"][ch]["shape"] == pytest.approx(floor, rel=1e-12)
        assert block["floor"]["per_seed"]["A"][ch]["plain"] == pytest.approx(floor, rel=1e-12)
        m = block["curves"]["m"][ch]
        assert m["shape_error"] == pytest.approx(0.0, abs=1e-12)
        assert m["generated_error"] == pytest.approx(math.log10(2), rel=1e-12)
        assert m["bar"] == pytest.approx(max(SHAPE_BAR, FLOOR_FACTOR * floor)) and m["met"]
        s = block["curves"]["spline"][ch]
        assert s["shape_error"] == pytest.approx(2.0, rel=1e-12) and not s["met"]
    assert block["reference"]["seeds"] == {"A": 3, "B": 2}
    # one seed: no floor (a reason), the 0.15 bar alone
    seeds.sims, seeds.counts, seeds.spectra = ["A"], [3], e[None]
    one = shape_block({"m": good}, ["m"], seeds, ["density", "velx"], N_LO, N_HI)
    assert not one["floor"]["available"] and ">= 2" in one["floor"]["reason"]
    assert one["curves"]["m"]["velx"]["bar"] == SHAPE_BAR
    # no seed: unavailable, with a reason
    seeds.sims, seeds.counts, seeds.spectra = [], [], None
    none = shape_block({"m": good}, ["m"], seeds, ["density", "velx"], N_LO, N_HI)
    assert none["available"] is False and "orbit window" in none["reason"]


def test_native_reference_split_and_unavailable_blocks_say_why() -> None:
    from mhdsr.eval.assemble import _native_shape
    from mhdsr.eval.report import _native_shape_table

    cfg = EvalConfig(native_reference="split", baselines=["spline"])
    block = _native_shape(cfg, {}, None, ["velx"], N_LO, N_HI)
    assert block["available"] is False and "native_reference is 'split'" in block["reason"]
    text = _native_shape_table({"native_shape": {"heldout": block}}, "heldout")
    assert text is not None and "Not computed: config key native_reference is 'split'" in text
    assert _native_shape_table({"native_shape": {}}, "heldout") is None
    block = _native_shape(EvalConfig(), {}, None, ["velx"], N_LO, N_HI)
    assert block["available"] is False and "no orbit window" in block["reason"]


def test_config_key_native_reference() -> None:
    assert EvalConfig().native_reference == "all"
    EvalConfig(native_reference="split").validate()
    with pytest.raises(ConfigError, match="native_reference"):
        EvalConfig(native_reference="every").validate()
    demo = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs/eval/demo.yaml")
                          .read_text())  # fmt: skip
    assert demo["native_reference"] == "all"


def test_science_goal_reads_the_block() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import science

    rec = {"shape_error": 0.3, "generated_error": 0.5, "bar": 0.45, "met": True}
    metrics = {
        "summary": {"test": {"m": {}}},
        "channels": ["velx"],
        "methods": [{"name": "m"}],
        "baselines": [],
        "native_shape": {
            "heldout": {
                "available": True,
                "floor": {"available": True, "channels": {"velx": {"shape": 0.3}}},
                "curves": {"m": {"velx": rec}},
            }
        },
    }
    g = science.goals_of(metrics)["m"][science.NATIVE_SHAPE]["velx"]
    assert g == {"value": 0.3, "bar": 0.45, "vs": "held-out; floor 0.3", "met": True}
    metrics["native_shape"]["heldout"] = {"available": False, "reason": "x"}
    assert science.NATIVE_SHAPE not in science.goals_of(metrics)["m"]


# ---------------------------------------------------------------------------------------------
# end to end: mhdsr eval on the demo shards

HELD = "mri128_nu3e-5/seed_0002"
CHS = ("density", "velx", "By")
IDX = [CHANNELS.index(c) for c in CHS]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    shards = shared_demo_shards(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("native_shape")
    keys, lo, snaps, times, seed = truth_of_sim(shards, "heldout", HELD, 2, member="lo.npy")
    lo = lo[:, IDX]
    ens = np.stack([up(lo, "bicubic")] * 2, 1)
    write_samples(tmp / "samples" / "held.h5", ens, lo, snapshots=snaps, times=times, sim=HELD,
                  sim_seed=seed, keys=keys, lo_kind="native", source="shards:heldout",
                  channels=CHS)  # fmt: skip
    cfg = {
        "samples": str(tmp / "samples"),
        "shards": str(shards),
        "output_dir": str(tmp / "eval"),
        "baselines": ["spline", "spectral-noise"],
        "max_panels": 0,
        "progress": False,
        "hist_max_values": 10_000,
        "train_max_snapshots": 2,
        "reference_pdf_snapshots": 1,
    }
    path = tmp / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(["eval", "--config", str(path)])
    assert rc == 0
    out = tmp / "eval"
    return {
        "metrics": json.loads((out / "metrics.json").read_text()),
        "report": (out / "report.md").read_text(),
        "shards": shards,
        "lo": lo,
        "times": times,
    }


def _direct_reference(shards: Path, window: tuple[float, float]) -> dict[str, np.ndarray]:
    """Per-seed mean spectra of every hi split in the window, read with tarfile."""
    manifest = json.loads((shards / "manifest.json").read_text())
    sums: dict[str, list] = {}
    for split, rec in manifest["splits"].items():
        if rec.get("source") != "hi":
            continue
        for arr, r in read_split(shards, split).values():
            o = r["time"] / (2 * math.pi)
            if window[0] - 1e-6 <= o <= window[1] + 1e-6:
                e = power_spectrum(arr[IDX])[:, 1 : N_HI // 2 + 1]
                s = sums.setdefault(r["sim"], [0.0, 0])
                s[0], s[1] = s[0] + e, s[1] + 1
    return {sim: s / n for sim, (s, n) in sorted(sums.items())}


def test_eval_writes_the_native_shape_block(run) -> None:
    m = run["metrics"]
    block = m["native_shape"]["heldout"]
    assert block["available"] is True and block["floor"]["available"] is True
    window = (min(run["times"]) / (2 * math.pi), max(run["times"]) / (2 * math.pi))
    ref = block["reference"]
    assert ref["orbit_window"] == pytest.approx(list(window))
    assert ref["splits"] == ["train", "val", "test"]
    per_seed = _direct_reference(run["shards"], window)
    assert ref["seeds"] and len(ref["seeds"]) >= 2
    assert sorted(ref["seeds"]) == sorted(per_seed)
    assert set(block["curves"]) == {"ema/heun-8", "spline", "spectral-noise"}  # input: lo grid
    # the spline curve's numbers against a direct computation
    spec = power_spectrum(up(run["lo"], "spline").astype(np.float64))[..., 1 : N_HI // 2 + 1]
    spec = spec.mean(axis=0)
    e_ref = np.mean(np.stack(list(per_seed.values())), axis=0)
    want = shape_error(spec, e_ref, K, N_LO, N_HI)
    want_plain = generated_error(spec, e_ref, K, N_LO, N_HI)
    loo = leave_one_out(np.stack(list(per_seed.values())), K, N_LO, N_HI)
    for c, ch in enumerate(CHS):
        got = block["curves"]["spline"][ch]
        assert got["shape_error"] == pytest.approx(float(want[c]), rel=1e-4, abs=1e-6)
        assert got["generated_error"] == pytest.approx(float(want_plain[c]), rel=1e-4, abs=1e-6)
        fl = block["floor"]["channels"][ch]
        assert fl["shape"] == pytest.approx(float(loo["shape"][:, c].mean()), rel=1e-6)
        assert fl["plain"] == pytest.approx(float(loo["plain"][:, c].mean()), rel=1e-6)
        for name, per in block["curves"].items():
            r = per[ch]
            assert math.isfinite(r["shape_error"]) and math.isfinite(r["generated_error"]), name
            assert r["met"] == (r["shape_error"] <= max(SHAPE_BAR, FLOOR_FACTOR * fl["shape"]))
    # the reference_split entries are kept as they were
    assert m["targets"]["heldout"]["name"] == "reference ('test' split)"
    assert "reference" in m["spectra"]["heldout"]["curves"]


def test_report_has_the_shape_table(run) -> None:
    rep = run["report"]
    assert "### Level-free spectral shape error against every hi seed" in rep
    assert "The floor is the shape error a real 256² run itself scores" in rep
    head = "| channel | floor | ema/heun-8 | spline | spectral-noise | verdict |"
    assert head in rep
    rows = rep.split(head, 1)[1].splitlines()[2 : 2 + len(CHS)]
    block = run["metrics"]["native_shape"]["heldout"]
    for ch, row in zip(CHS, rows):
        cells = [x.strip() for x in row.strip("|").split("|")]
        assert cells[0] == ch
        assert float(cells[1]) == pytest.approx(block["floor"]["channels"][ch]["shape"], rel=1e-2)
        assert float(cells[3]) == pytest.approx(
            block["curves"]["spline"][ch]["shape_error"], rel=1e-2
        )
        assert cells[-1] == ("met" if block["curves"]["ema/heun-8"][ch]["met"] else "not met")
