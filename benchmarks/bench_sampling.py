"""Sampling benchmarks (issue 5).

* ``throughput``: inference samples/s at 256^2 of a cpu-small-sized UNet (random weights:
  speed does not depend on them), fp32, on this machine's device: the network time per sample
  at batch 1, 2 and 4 (on a 2-core CPU batch 1 is the fastest per sample), and end-to-end
  ``mhdsr sample`` (``run_sample``: read shards, sample, write HDF5) with Heun, 4 steps
  (8 NFE), ensemble 2, batch 1, on one 256^2 test snapshot.
* ``nfe_table``: generated-band spectral error vs NFE for Euler (10, 20, 50, 100 steps) and
  Heun (5, 10, 20 steps), linear time grid, with ONE trained model and the same noise for every
  solver (member ``m`` of snapshot ``n`` keyed ``(seed, n, m)``, as in bulk inference). Errors
  (docs/design.md "Metrics", :mod:`mhdsr.analysis.spectra`): per channel, the ensemble-mean shell
  spectrum of the samples against the truth's over the test snapshots, mean over the band
  ``[k_n, N/2]`` of ``|log10(E_pred / E_true)|``, then averaged over the 8 channels:
  ``gen_err_vs_truth``; the same against Euler 100 (``gen_err_vs_euler100``, pure solver error)
  and the pixel RMSE against Euler 100 in normalized units (``rmse_vs_euler100``). The bilinear
  input ``u`` (NFE 0) is listed for scale. Goal: Heun at <= 20 NFE matches Euler at 100.

The model for the table, in order: the ``checkpoint`` argument (run folder or weights file); an
existing ``runs/demo/train`` export; else one trained here on the demo shards (quick: a tiny
width-8 UNet for 30 steps, ~1 min; full: cpu-small for 300 steps, several minutes on 2 cores).
Data: the test split of ``runs/demo/shards`` when present, else demo shards built in a
temporary folder (~5 s). Quick mode uses one test snapshot and one member; full mode two
snapshots and two members. Cost: 250 network evaluations per sample for the table (~0.5-1.5 s
each for cpu-small at 256^2 on a 2-core CPU: ~2-6 min per sample). A briefly trained model has large errors against the truth; the
solver comparison (columns vs Euler 100) is what the table is for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import REPO
from mhdsr.analysis.spectra import band_errors, radial_spectrum
from mhdsr.channels import CHANNELS
from mhdsr.config import load_config, to_dict
from mhdsr.method.config import original_recipe
from mhdsr.method.grid import avgpool2, upsample
from mhdsr.method.noise import PerSampleNoise
from mhdsr.method.samplers import expected_nfe, sample
from mhdsr.model import UNet, cpu_small
from mhdsr.model.inference import load_model
from mhdsr.sample.config import SampleConfig

TABLE = [
    ("euler", 10),
    ("euler", 20),
    ("euler", 50),
    ("euler", 100),
    ("heun", 5),
    ("heun", 10),
    ("heun", 20),
]
REFERENCE = ("euler", 100)


def _shards(tmp: Path) -> Path:
    """The demo shards (``make demo``'s, else built here with the shipped demo config)."""
    demo = REPO / "runs" / "demo" / "shards"
    if (demo / "manifest.json").is_file():
        return demo
    from mhdsr.cli import main

    out, data = tmp / "shards", REPO / "data" / "athenak"
    cfg = str(REPO / "configs" / "shard" / "demo.yaml")
    runs = [
        f"hi_runs=[{data}/mri256_nu3e-5/seed_*]",
        f'lo_runs=["{data}/mri128_nu3e-5/seed_000[23]"]',
    ]
    if main(["shard", "build", "--config", cfg, *runs, f"output_dir={out}", "progress=false"]):
        raise RuntimeError("building the demo shards failed")
    return out


def _model(checkpoint: str | None, shards: Path, tmp: Path, quick: bool) -> tuple[str, str]:
    """(checkpoint path, where it came from)."""
    if checkpoint:
        return checkpoint, "argument"
    demo = REPO / "runs" / "demo" / "train"
    if (demo / "export").is_dir() and any((demo / "export").glob("weights_step_*.pt")):
        return str(demo), "runs/demo/train"
    run_dir = tmp / "train"
    over = [
        f"shards={shards}",
        f"run_dir={run_dir}",
        "log.image_every=0",
        "log.val_every=0",
        "data.workers=0",
    ]
    if quick:
        what = "tiny UNet (width 8, 2 levels), 30 steps on 32^2 crops"
        over += ["max_steps=30", "checkpoint.every=30", "model.width=8", "model.mults=[1,2]",
                 "model.attn_levels=[]", "model.groups=4", "data.crop=32", "data.micro_batch=4",
                 "optim.warmup_steps=5", "ema.start_step=0"]  # fmt: skip
    else:
        what = "cpu-small, 300 steps"
        over += ["max_steps=300", "checkpoint.every=300"]
    cmd = [
        sys.executable,
        "-m",
        "mhdsr",
        "train",
        "--config",
        str(REPO / "configs/train/cpu-small.yaml"),
        *over,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "DS_ACCELERATOR": "cpu"}
    subprocess.run(cmd, check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    return str(run_dir), f"trained here: {what}"


def _random_cpu_small_export(path: Path, shards: Path) -> Path:
    from mhdsr.dataset.manifest import normalization, read_manifest

    torch.manual_seed(0)
    net = UNet(cpu_small())
    with torch.no_grad():
        for p in net.parameters():  # non-zero weights: every layer does real work
            p.normal_(0, 0.02)
    mean, std = normalization(read_manifest(shards), "hi", list(CHANNELS))
    sd = net.state_dict()
    payload = {
        "format": "mhdsr-export-v1", "step": 0, "raw": sd, "ema": sd, "model": to_dict(cpu_small()),
        "channels": list(CHANNELS), "normalization": {"mean": mean.tolist(), "std": std.tolist()},
        "method": to_dict(original_recipe()), "config": {"shards": str(shards)},
    }  # fmt: skip
    torch.save(payload, path)
    return path


def throughput(shards: Path, tmp: Path, quick: bool) -> dict:
    """Network seconds per 256^2 sample (batch 1 and 4) and end-to-end run_sample samples/s."""
    from mhdsr.sample.bulk import run_sample

    exp = _random_cpu_small_export(tmp / "cpu_small_random.pt", shards)
    lm = load_model(str(exp), device="cuda" if torch.cuda.is_available() else "cpu")
    dev = next(lm.model.parameters()).device
    out: dict = {
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "model": "cpu-small (random weights)",
    }
    reps = 2 if quick else 5
    with torch.inference_mode():
        for b in (1, 2, 4):
            x = torch.randn(b, 8, 256, 256, device=dev)
            t = torch.full((b,), 0.5, device=dev)
            lm.model(x, t, x)  # warm-up
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                lm.model(x, t, x)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                ts.append(time.perf_counter() - t0)
            out[f"forward_s_per_sample_b{b}"] = round(float(np.median(ts)) / b, 4)
    cfg = load_config(
        SampleConfig,
        None,
        [f"checkpoint={exp}", f"shards={shards}", f"output_dir={tmp / 'tp'}", "inputs.snap_end=13",
         "sampler.name=heun", "sampler.steps=4", "ensemble=2", "batch_size=1", "progress=false"],
    )  # fmt: skip
    res = run_sample(cfg)
    out["end_to_end"] = {
        "sampler": "heun 4 steps (8 NFE), ensemble 2, batch 1, one 256^2 snapshot",
        "samples": res["samples"],
        "seconds": round(res["seconds"], 2),
        "samples_per_s": round(res["samples_per_s"], 4),
    }
    best = min(out[f"forward_s_per_sample_b{b}"] for b in (1, 2, 4))
    out["samples_per_s_at_8_nfe"] = round(1 / (8 * best), 4)
    # (snapshots x members x NFE) x forward time for the three runs of configs/sample/demo.yaml
    out["demo_estimate_s"] = {
        "ode_test": round(4 * 2 * 8 * best, 1),
        "heldout": round(6 * 2 * 8 * best, 1),
        "sde_test": round(4 * 2 * 8 * best, 1),
    }
    return out


def _test_fields(shards: Path, n: int) -> tuple[list[str], np.ndarray, list[int], int]:
    """First ``n`` test samples (sorted by key): keys, hi (n, 8, H, W), snapshots, sim seed."""
    from mhdsr.dataset.manifest import read_manifest, shard_paths
    from mhdsr.dataset.stream import read_samples

    m = read_manifest(shards)
    keys, arrays, metas = read_samples(shard_paths(shards, m, "test"), 10**6, m["shapes"]["hi"])
    order = sorted(range(len(keys)), key=lambda i: keys[i])[:n]
    return (
        [keys[i] for i in order],
        np.stack([arrays[i] for i in order]),
        [int(metas[i]["snapshot"]) for i in order],
        int(metas[order[0]]["seed"]),
    )


def _mean_spectra(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(k, E) with E (C, K): shell spectra averaged over all leading axes of (..., C, N, N)."""
    k, e = radial_spectrum(x.astype(np.float64))
    return k, e.reshape(-1, *e.shape[-2:]).mean(axis=0)


def _gen_err(e_pred: np.ndarray, e_true: np.ndarray, k: np.ndarray, n_lo: int, n_hi: int) -> float:
    per_ch = band_errors(e_pred, e_true, k, n_lo, n_hi)["generated"]
    return float(np.mean(per_ch))


def nfe_table(checkpoint: str, shards: Path, quick: bool) -> dict:
    """Spectral errors of each solver setting (see module docstring)."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    lm = load_model(checkpoint, device=dev, shards=str(shards))
    n_snap, n_mem = (1, 1) if quick else (2, 2)
    keys, hi, snaps, seed = _test_fields(shards, n_snap)
    idx = [CHANNELS.index(c) for c in lm.channels]
    hi_t = torch.from_numpy(hi[:, idx]).to(dev)
    lo = avgpool2(hi_t)
    u1 = upsample(lm.normalize(lo), 2, lm.upsample)
    u = u1.repeat_interleave(n_mem, dim=0)  # (n_snap * n_mem, C, H, W), snapshot major
    noise_keys = [(seed, n, m) for n in snaps for m in range(n_mem)]
    n_hi, n_lo = hi.shape[-1], hi.shape[-1] // 2
    k, e_true = _mean_spectra(hi[:, idx])

    def run(name: str, steps: int) -> torch.Tensor:
        out = []
        with torch.inference_mode():
            for i in range(0, len(u), 4):  # batches of 4; fresh generators: same noise every run
                noise = PerSampleNoise.from_keys(0, noise_keys[i : i + 4], device=dev)
                out.append(sample(name, lm.model, u[i : i + 4], n_steps=steps, noise=noise,
                                  sigma=lm.sigma, t_min=lm.t_min, t_max=lm.t_max))  # fmt: skip
        return torch.cat(out)

    t0 = time.perf_counter()
    ref = run(*REFERENCE)
    ref_phys = lm.denormalize(ref).cpu().numpy()
    _, e_ref = _mean_spectra(ref_phys)
    rows = []
    base = lm.denormalize(u).cpu().numpy()
    _, e_base = _mean_spectra(base)
    rows.append({"sampler": "bilinear input u", "steps": 0, "nfe": 0,
                 "gen_err_vs_truth": round(_gen_err(e_base, e_true, k, n_lo, n_hi), 4),
                 "gen_err_vs_euler100": round(_gen_err(e_base, e_ref, k, n_lo, n_hi), 4),
                 "rmse_vs_euler100": round(float((u - ref).square().mean().sqrt()), 5)})  # fmt: skip
    for name, steps in TABLE:
        x = ref if (name, steps) == REFERENCE else run(name, steps)
        _, e = _mean_spectra(lm.denormalize(x).cpu().numpy())
        rows.append({
            "sampler": name, "steps": steps, "nfe": expected_nfe(name, steps),
            "gen_err_vs_truth": round(_gen_err(e, e_true, k, n_lo, n_hi), 4),
            "gen_err_vs_euler100": round(_gen_err(e, e_ref, k, n_lo, n_hi), 4),
            "rmse_vs_euler100": round(float((x - ref).square().mean().sqrt()), 5),
        })  # fmt: skip
    return {
        "model": {"path": lm.path, "step": lm.step, "channels": len(lm.channels)},
        "data": {"test_keys": keys, "members": n_mem, "grid": "linear"},
        "rows": rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def format_table(t: dict) -> str:
    """Markdown table of :func:`nfe_table`'s rows."""
    head = "| sampler | steps | NFE | gen. band err vs truth | vs Euler 100 | RMSE vs Euler 100 |"
    lines = [head, "|---|---|---|---|---|---|"]
    for r in t["rows"]:
        lines.append(
            f"| {r['sampler']} | {r['steps']} | {r['nfe']} | {r['gen_err_vs_truth']:.4f} | "
            f"{r['gen_err_vs_euler100']:.4f} | {r['rmse_vs_euler100']:.5f} |"
        )
    return "\n".join(lines)


def run(quick: bool = False, checkpoint: str | None = None) -> dict:
    """Benchmark results (JSON-able). ``quick``: one snapshot, one member, tiny model if none
    exists; ``checkpoint``: model for the NFE table (run folder or weights file)."""
    results: dict = {"load_avg_before": list(os.getloadavg())}
    with tempfile.TemporaryDirectory(prefix="bench_sampling_") as tmp_s:
        tmp = Path(tmp_s)
        shards = _shards(tmp)
        results["throughput"] = throughput(shards, tmp, quick)
        ckpt, source = _model(checkpoint, shards, tmp, quick)
        table = nfe_table(ckpt, shards, quick)
        table["model"]["source"] = source
        results["nfe_table"] = table
        results["nfe_table_md"] = format_table(table)
    results["load_avg_after"] = list(os.getloadavg())
    return results


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--checkpoint", default=None, help="run folder or weights file for the NFE table"
    )
    a = ap.parse_args()
    res = run(quick=a.quick, checkpoint=a.checkpoint)
    print(res["nfe_table_md"])
    print(json.dumps({k: v for k, v in res.items() if k != "nfe_table_md"}, indent=2))
