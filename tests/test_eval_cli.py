"""``mhdsr eval`` end to end on the real demo shards, with fabricated sample files.

One run covers both kinds of sims: the test sim (pixel truth; an ODE ensemble and an SDE
single-member method in sibling folders) and a held-out native-128 sim (spectra vs the test
split's mean spectrum, domain gap). Exit status 2 with a clear message for bad inputs.
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
from mhdsr.channels import CHANNELS
from mhdsr.cli import main
from mhdsr.eval.metrics import histogram_distance
from mhdsr.eval.report import check_clean
from mhdsr.eval.spectra import band_errors, radial_spectrum

SIM = "mri256_nu3e-5/seed_0001"
HELD = "mri128_nu3e-5/seed_0002"
# a model trained on a subset of the channels (fewer panels to draw keeps the test fast); Bx, By
# and jz are what the physics checks need
CHS = ("density", "Bx", "By", "jz")
IDX = [CHANNELS.index(c) for c in CHS]


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
    with contextlib.redirect_stdout(buf):
        rc = main(["eval", "--config", str(cfg)])
    return {"rc": rc, "stdout": buf.getvalue(), "out": tmp / "eval", "hi": hi, "hlo": hlo}


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
    assert set(m["summary"]["test"]) == {
        "ema/euler_maruyama-16",
        "ema/heun-8",
        "bilinear",
        "bicubic",
    }
    assert set(m["summary"]["heldout"]) == {"ema/heun-8", "bilinear", "bicubic"}
    check_clean(m)  # nulls only with a reason
    numbers = list(_walk_numbers(m))
    assert m["channels"] == list(CHS)
    assert len(numbers) > 500 and all(math.isfinite(v) for _, v in numbers)
    heun = m["summary"]["test"]["ema/heun-8"]["jz"]
    for k in ("rmse", "nrmse", "rmse_ensemble_mean", "crps", "spread_skill"):
        assert isinstance(heun[k], float) and heun[k] > 0, k
    assert set(heun["spectral_error"]) == {"resolved", "transition", "generated"}
    # one-member SDE method: ensemble scores are null, each with its reason
    em = m["summary"]["test"]["ema/euler_maruyama-16"]["jz"]
    assert em["crps"] is None and "needs >= 2" in em["null_reasons"]["crps"]
    # held-out sims have no pixel scores
    assert "rmse" not in m["summary"]["heldout"]["ema/heun-8"]["jz"]


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
    assert (
        "| channel | RMSE ema/euler_maruyama-16 | RMSE ema/heun-8 | RMSE bilinear | RMSE bicubic |"
        in report
    )
    for n in names:
        assert f"(figures/{n})" in report, n


def test_stdout_table(run) -> None:
    out = run["stdout"]
    header = (
        "| channel | RMSE ema/euler_maruyama-16 | RMSE ema/heun-8 | RMSE bilinear | RMSE bicubic |"
    )
    assert header in out and "### heldout" in out
    assert "| gen. err ema/heun-8 | gen. err bilinear | gen. err bicubic |" in out
    rows = [r for r in out.splitlines() if r.startswith("| jz |")]
    assert len(rows) == 2  # test and heldout tables
    assert len(rows[0].split("|")) == 2 + 1 + 8  # channel + 4 RMSE + 4 generated-band errors
    assert [r.split("|")[1].strip() for r in out.splitlines() if r.startswith("| ")][1:5] == list(
        CHS
    )


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
