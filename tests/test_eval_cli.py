"""``mhdsr eval`` end to end on the real demo shards, with fabricated sample files.

One run covers both kinds of sims: the test sim (pixel truth; an ODE ensemble and an SDE
single-member method in sibling folders) and a held-out native-128 sim (spectra vs the test
split's mean spectrum, domain gap), with all five baselines, and a toy metric registered for
the run (it must reach metrics.json, the report's definitions and its tables). Exit status 2
with a clear message for bad inputs.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from eval_helpers import pool, shared_demo_shards, truth_of_sim, up, write_samples
from mhdsr.analysis.scores import histogram_distance
from mhdsr.analysis.spectra import band_errors, radial_spectrum
from mhdsr.channels import CHANNELS
from mhdsr.cli import main
from mhdsr.eval.baselines import BASELINE_NAMES
from mhdsr.eval.registry import Metric, register, registered, unregister
from mhdsr.eval.report import METRICS_VERSION, check_clean

SIM = "mri256_nu3e-5/seed_0001"
HELD = "mri128_nu3e-5/seed_0002"
# a model trained on a subset of the channels (fewer panels to draw keeps the test fast); Bx, By
# and jz are what the physics checks need, velx the velocity increments
CHS = ("density", "velx", "Bx", "By", "jz")
IDX = [CHANNELS.index(c) for c in CHS]
CURVES = ("ema/euler_maruyama-16", "ema/heun-8", *BASELINE_NAMES)
TOY = "toy_max_abs_error"


def _toy(pred, target):
    """The toy metric: max over the grid of |pred - truth|, mean over members, per channel."""
    return np.abs(pred.x - target.fields.x).max(axis=(-2, -1)).mean(axis=0)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return shared_demo_shards(tmp_path_factory)


def _config(tmp: Path, samples: Path, shards: Path, **over) -> Path:
    cfg = {
        "samples": str(samples),
        "shards": str(shards),
        "output_dir": str(tmp / "eval"),
        "max_panels": 1,
        "progress": False,
        "hist_max_values": 100_000,
        **over,
    }
    p = tmp / "eval.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.fixture(scope="module")
def run(shards, tmp_path_factory):
    """Fabricate sample files, run ``mhdsr eval`` once, return what it wrote."""
    tmp = tmp_path_factory.mktemp("eval_cli")
    samples = tmp / "samples"
    keys, hi, snaps, times, seed = truth_of_sim(shards, "test", SIM, 2)
    hi = hi[:, IDX]
    lo = pool(hi)
    rng = np.random.default_rng(0)
    scale = 0.05 * hi.std(axis=(0, 2, 3))[:, None, None]
    ens = np.stack([hi + scale * rng.standard_normal(hi.shape) for _ in range(2)], 1)
    common = dict(snapshots=snaps, times=times, sim=SIM, sim_seed=seed, keys=keys, channels=CHS)
    write_samples(samples / "ode" / "test.h5", ens, lo, **common)
    write_samples(
        samples / "sde" / "test.h5",
        up(lo, "bicubic")[:, None],
        lo,
        sampler="euler_maruyama",
        steps=16,
        **common,
    )
    hkeys, hlo, hsnaps, htimes, hseed = truth_of_sim(shards, "heldout", HELD, 2, member="lo.npy")
    hlo = hlo[:, IDX]
    write_samples(
        samples / "ode" / "held.h5",
        np.stack([up(hlo, "bicubic")] * 2, 1),
        hlo,
        snapshots=hsnaps,
        times=htimes,
        sim=HELD,
        sim_seed=hseed,
        keys=hkeys,
        lo_kind="native",
        source="shards:heldout",
        channels=CHS,
    )
    cfg = _config(tmp, samples, shards)
    buf = io.StringIO()
    register(Metric(TOY, "toy max|err|", "toy: max over the grid of |pred - truth|.", _toy))
    try:
        with contextlib.redirect_stdout(buf):
            rc = main(["eval", "--config", str(cfg)])
    finally:
        unregister(TOY)
    return {
        "rc": rc,
        "stdout": buf.getvalue(),
        "out": tmp / "eval",
        "hi": hi,
        "hlo": hlo,
        "ens": ens,
    }


def test_exit_status_and_outputs(run, capsys) -> None:
    assert run["rc"] == 0
    out = run["out"]
    assert (out / "metrics.json").is_file() and (out / "report.md").is_file()
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name]  # atomic writes left no temp file


def _walk_numbers(obj, path="m"):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk_numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk_numbers(v, f"{path}[{i}]")
    elif isinstance(obj, float):
        yield path, obj


def test_metrics_json_structure_and_finite_values(run) -> None:
    m = json.loads((run["out"] / "metrics.json").read_text())
    for k in ("version", "config", "methods", "sims", "summary", "domain_gap", "physics", "grids"):
        assert k in m, k
    assert [x["name"] for x in m["methods"]] == ["ema/euler_maruyama-16", "ema/heun-8"]
    assert set(m["sims"]) == {SIM, HELD}
    assert m["grids"]["bands"] == {
        "resolved": [1, 32],
        "transition": [32, 64],
        "generated": [64, 128],
    }
    assert list(m["summary"]) == ["test", "heldout"]
    assert list(m["summary"]["test"]) == list(CURVES)
    assert list(m["summary"]["heldout"]) == ["ema/heun-8", *BASELINE_NAMES]
    for k in ("metric_definitions", "baseline_definitions", "targets", "pdfs", "goals", "readings"):
        assert k in m, k
    assert (m["version"], m["kind"]) == (METRICS_VERSION, "sr") and METRICS_VERSION == 2
    assert "corr" not in m["metric_definitions"]  # forecast-only metrics stay in forecast files
    check_clean(m)  # nulls only with a reason
    numbers = list(_walk_numbers(m))
    assert m["channels"] == list(CHS)
    assert len(numbers) > 500 and all(math.isfinite(v) for _, v in numbers)
    heun = m["summary"]["test"]["ema/heun-8"]["jz"]
    for k in ("rmse", "nrmse", "rmse_ensemble_mean", "crps", "spread_skill", "jz_pdf_w1"):
        assert isinstance(heun[k], float) and heun[k] > 0, k
    for k in ("spectral_error", "coherence", "coherence_ensemble_mean"):
        assert set(heun[k]) == {"resolved", "transition", "generated"}, k
    # stochastic baselines get the methods' ensemble size (2), so ensemble scores exist
    for b in ("spectral-noise", "noise"):
        assert m["baseline_definitions"][b]["ensemble_size"] == {SIM: 2, HELD: 2}
        assert m["summary"]["test"][b]["jz"]["crps"] > 0
        assert m["summary"]["test"][b]["velx"]["spread_skill"] > 0
    # deterministic baselines have no ensemble scores at all (not nulls)
    assert "crps" not in m["summary"]["test"]["spline"]["jz"]
    # per-snapshot series and orbits (t / 2 pi, omega0 = 1 in the decks)
    rec = m["sims"][SIM]
    assert rec["orbits"] == pytest.approx([t / (2 * math.pi) for t in rec["times"]])
    ts = rec["per_snapshot"]["ema/heun-8"]
    assert ts["snapshots"] == rec["snapshots"] and len(ts["coherence.transition"]["jz"]) == 2
    # the goal check: per snapshot, method minus spline transition coherence
    goal = m["goals"]["transition_coherence"]
    assert goal["available"] and goal["margin"] == 0.02
    g = goal["groups"]["test"]["ema/heun-8"]
    d = g["per_snapshot"][0]["diff"]["jz"]
    want = ts["coherence.transition"]["jz"][0] - rec["per_snapshot"]["spline"][
        "coherence.transition"]["jz"][0]  # fmt: skip
    assert d == pytest.approx(want, abs=1e-12)
    # ... and of the ensemble mean; the goal's min_diff is the worse of the two over snapshots
    dm = [s["diff_mean"]["jz"] for s in g["per_snapshot"]]
    assert all(math.isfinite(v) for v in dm) and dm != [s["diff"]["jz"] for s in g["per_snapshot"]]
    worst = min(min(s["diff"]["jz"], s["diff_mean"]["jz"]) for s in g["per_snapshot"])
    assert g["channels"]["jz"]["min_diff"] == pytest.approx(worst, abs=1e-12)
    assert "test" in m["targets"] and m["targets"]["heldout"]["name"].startswith("reference")
    # one-member SDE method: ensemble scores are null, each with its reason
    em = m["summary"]["test"]["ema/euler_maruyama-16"]["jz"]
    assert em["crps"] is None and "needs >= 2" in em["null_reasons"]["crps"]
    # held-out sims have no pixel scores
    assert "rmse" not in m["summary"]["heldout"]["ema/heun-8"]["jz"]


def test_a_registered_metric_reaches_metrics_json_and_the_report(run) -> None:
    """The toy metric registered for the run (one function + one registration)."""
    m = json.loads((run["out"] / "metrics.json").read_text())
    assert TOY in m["metric_definitions"]
    assert m["metric_definitions"][TOY]["label"] == "toy max|err|"
    hi, ens = run["hi"], run["ens"].astype(np.float32)  # as stored in the sample file
    want = np.abs(ens - hi[:, None]).max(axis=(-2, -1)).mean(axis=(0, 1), dtype=np.float64)
    for i, ch in enumerate(CHS):
        assert m["summary"]["test"]["ema/heun-8"][ch][TOY] == pytest.approx(want[i], rel=1e-6)
        assert TOY in m["summary"]["test"]["bicubic"][ch]  # every prediction curve has it
        assert TOY not in m["summary"]["heldout"]["ema/heun-8"][ch]  # needs pixel truth
    report = (run["out"] / "report.md").read_text()
    assert f"**toy max|err|** (`{TOY}`): toy: max over the grid of |pred - truth|." in report
    assert "| jz | toy max|err| |" in report  # a row of the pixel-errors table
    assert "**toy max|err|** (lower is better): a method beats every baseline" in report
    assert TOY not in [x.name for x in registered()]  # unregistered again


def test_summary_values_match_direct_computation(run) -> None:
    m = json.loads((run["out"] / "metrics.json").read_text())
    hi = run["hi"].astype(np.float64)
    u = up(pool(run["hi"]), "bicubic").astype(np.float64)
    rmse = np.sqrt(((u - hi) ** 2).mean(axis=(-2, -1))).mean(axis=0)
    k, e_y = radial_spectrum(hi)
    gen = band_errors(radial_spectrum(u)[1].mean(0), e_y.mean(0), k, 128, 256)["generated"]
    for i, ch in enumerate(CHS):
        for name in ("bicubic", "ema/euler_maruyama-16"):  # the SDE "method" is bicubic itself
            got = m["summary"]["test"][name][ch]
            assert got["rmse"] == pytest.approx(rmse[i], rel=1e-6)
            assert got["spectral_error"]["generated"] == pytest.approx(gen[i], rel=1e-6)


def test_heldout_spectra_against_the_test_split_mean(run, shards) -> None:
    m = json.loads((run["out"] / "metrics.json").read_text())
    _, hi_all, _, _, _ = truth_of_sim(shards, "test", SIM)  # the whole test split (one sim)
    k, e_ref = radial_spectrum(hi_all[:, IDX].astype(np.float64))
    e_ref = e_ref.mean(axis=0)
    u = up(run["hlo"], "bicubic").astype(np.float64)
    errs = band_errors(radial_spectrum(u)[1].mean(0), e_ref, k, 128, 256)
    for i, ch in enumerate(CHS):
        for name in ("ema/heun-8", "bicubic"):
            got = m["summary"]["heldout"][name][ch]["spectral_error"]
            for b in ("resolved", "transition", "generated"):
                assert got[b] == pytest.approx(errs[b][i], rel=1e-6), (name, ch, b)
        ref = m["spectra"]["heldout"]["curves"]["reference"][ch]
        np.testing.assert_allclose(ref, e_ref[i], rtol=1e-10)
    # physics: the native input's jz is AthenaK's curl of its own B; the upsampled fields' is not
    phys = m["physics"]["groups"]["heldout"]
    assert phys["input"]["jz_curl_b"] < 1e-5
    assert phys["bicubic"]["jz_curl_b"] > 1e-3


def test_domain_gap_matches_direct_computation(run, shards) -> None:
    m = json.loads((run["out"] / "metrics.json").read_text())
    dg = m["domain_gap"]
    assert dg["available"] and "'test' split" in dg["reference"]
    _, hi_all, _, _, _ = truth_of_sim(shards, "test", SIM)
    ref_lo = pool(hi_all[:, IDX])
    native = run["hlo"]
    k, e_nat = radial_spectrum(native.astype(np.float64))
    errs = band_errors(
        e_nat.mean(0), radial_spectrum(ref_lo.astype(np.float64))[1].mean(0), k, 128, 256
    )
    for i, ch in enumerate(CHS):
        want = histogram_distance(native[:, i], ref_lo[:, i])
        got = dg["channels"][ch]
        for key in ("w1", "w1_norm", "ks"):
            assert got[key] == pytest.approx(want[key], rel=1e-9), (ch, key)
        assert got["mean_native"] == pytest.approx(
            float(native[:, i].mean(dtype=np.float64)), rel=1e-9
        )
        assert set(got["spectral_error"]) == {"resolved", "transition"}
        assert got["spectral_error"]["resolved"] == pytest.approx(errs["resolved"][i], rel=1e-9)


def test_figures_and_report(run) -> None:
    figs = run["out"] / "figures"
    names = sorted(p.name for p in figs.glob("*.png"))
    for want in (
        "spectra_test.png",
        "spectra_heldout.png",
        "band_errors_test.png",
        "band_errors_heldout.png",
        "spread_skill_test.png",
        "domain_gap_spectra.png",
        "domain_gap_hist.png",
        "coherence_test.png",
        "generated_error_vs_orbit_test.png",
        "transition_coherence_vs_orbit_test.png",
        "generated_error_vs_orbit_heldout.png",
        "pdfs_test.png",
        "pdfs_heldout.png",
    ):
        assert want in names, (want, names)
    panels = [n for n in names if n.startswith("panel_")]
    assert panels == [
        "panel_00_mri256_nu3e-5-seed_0001_n00016.png"
    ]  # max_panels=1: middle snapshot
    for p in figs.glob("*.png"):
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, p
    report = (run["out"] / "report.md").read_text()
    assert "resolved [1, 32), transition [32, 64), generated [64, 128]" in report
    assert "| channel | " + " | ".join(CURVES) + " |" in report
    for n in names:
        assert f"(figures/{n})" in report, n
    # the automatic reading: winners, dispersion, physics floor, domain-gap floor, orbits
    assert "Reading:" in report and "a method beats every baseline on" in report
    assert "spread/skill < 0.8" in report or "calibrated (0.8–1.2)" in report
    assert "The truth's div B is NOT 0" in report and "face-centred" in report
    assert "Domain-gap floor" in report
    assert "orbits" in report and "Transition-band coherence minus spline's" in report


def test_stdout_table(run) -> None:
    """One compact table per summary metric, every method next to every baseline."""
    out = run["stdout"]
    assert "### test:" in out and "### heldout" in out and "orbits" in out
    for label in ("NRMSE ens. mean", "CRPS", "generated err", "transition coh.", "jz PDF W1/σ"):
        assert f"**{label}**" in out, label
    header = "| channel | " + " | ".join(CURVES) + " |"
    assert out.count(header) == 4  # test: NRMSE, generated err, coherence, jz PDF
    # CRPS: only ensembles (the one-member SDE method shows — with its reason in metrics.json)
    assert "| channel | ema/euler_maruyama-16 | ema/heun-8 | spectral-noise | noise |" in out
    rows = [r for r in out.splitlines() if r.startswith("| jz |")]
    assert len(rows) == 5 + 2  # test: 5 summary metrics; heldout: generated err and jz PDF
    assert len(rows[0].split("|")) == 2 + 1 + len(CURVES)
    first = [r.split("|")[1].strip() for r in out.splitlines() if r.startswith("| ")]
    assert first[1 : 1 + len(CHS)] == list(CHS)
    assert "**" in rows[0]  # the best value of a row is bold


@pytest.mark.parametrize("case", ["missing", "empty", "no_truth", "bad_reference"])
def test_bad_inputs_exit_2_with_a_clear_message(case, shards, tmp_path, capsys) -> None:
    samples = tmp_path / "samples"
    if case == "empty":
        samples.mkdir()
        (samples / "notes.txt").write_text("no sample files here")
        want = "holds no .h5 file"
    elif case == "missing":
        want = "does not exist"
    elif case == "bad_reference":
        hkeys, hlo, hsnaps, htimes, hseed = truth_of_sim(
            shards, "heldout", HELD, 1, member="lo.npy"
        )
        hlo = hlo[:, IDX]
        write_samples(
            samples / "held.h5", up(hlo, "bicubic")[:, None], hlo, snapshots=hsnaps, times=htimes,
            sim=HELD, sim_seed=hseed, keys=hkeys, lo_kind="native", source="shards:heldout",
            channels=CHS,
        )  # fmt: skip
        want = "no hi split 'nope' for the held-out reference"
    else:
        hi = np.zeros((1, 8, 256, 256), np.float32)
        write_samples(
            samples / "x.h5",
            hi[:, None],
            pool(hi),
            snapshots=np.array([5]),
            times=np.array([1.0]),
            sim="mri256_nu3e-5/seed_0042",
            sim_seed=42,
            keys=["s0042_n00005"],
        )
        want = "sim 'mri256_nu3e-5/seed_0042' has no truth in the shards"
    over = {"reference_split": "nope"} if case == "bad_reference" else {}
    cfg = _config(tmp_path, samples, shards, **over)
    assert main(["eval", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and want in err, err
    assert not (tmp_path / "eval").exists()  # nothing written before the error
