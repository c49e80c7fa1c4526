"""Ablation of the super-resolution recipe: one change at a time, measured with the real pipeline.

Each variant trains ``configs/train/cpu-small.yaml`` plus its overrides (2 gloo ranks, the same
number of optimizer steps for every variant), samples the test split with Heun (ODE) and
Euler-Maruyama (SDE), ensemble 4, evaluates against every baseline and appends one row to
``benchmarks/science_ablation.json`` (velocity-channel numbers; the full metrics stay in
``runs/ablation/<name>/eval/metrics.json``). Rows already present are kept; rerunning skips
finished variants (``--force`` redoes them).

    python benchmarks/ablation.py [--shards runs/demo/shards] [--steps 500] [--only NAME ...]

Variants form a ladder: each adds one change to the previous one (the ``base`` of each entry).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from science import read_metrics  # benchmarks/ on sys.path when run as a script

REPO = Path(__file__).resolve().parents[1]
OUT = Path(__file__).with_name("science_ablation.json")
PY = sys.executable

#: the demo recipe before the science work (interpolant, bilinear u, global units, sigma 0.03)
OLD = [
    "method.formulation=interpolant", "method.upsample=bilinear", "method.scale=global",
    "method.scale_kmin=0", "method.sigma=0.03", "method.loss_scale=100", "data.augment=none",
    "method.project=false", "method.derive_jz=false", "method.t_dist=uniform", "data.crop=64",
    "data.micro_batch=4",
]  # fmt: skip
RESIDUAL = ["method.formulation=residual", "method.sigma=1.0", "method.loss_scale=1.0"]
VARIANTS: list[dict[str, Any]] = [
    {"name": "old", "change": "the demo recipe before (interpolant, bilinear, sigma 0.03)", "train": OLD},
    {"name": "residual", "change": "+ residual target, sigma 1 (CorrDiff-style)", "train": [*OLD, *RESIDUAL]},
    {"name": "spline", "change": "+ spline u", "train": [*OLD, *RESIDUAL, "method.upsample=spline"]},
    {"name": "instance", "change": "+ instance scale (per-input level)", "train": [*OLD, *RESIDUAL, "method.upsample=spline", "method.scale=instance"]},
    {"name": "instance_k16", "change": "+ level from the shells k >= 16 of lo", "train": [*OLD, *RESIDUAL, "method.upsample=spline", "method.scale=instance", "method.scale_kmin=16"]},
    {"name": "augment", "change": "+ 8-element symmetry augmentation", "train": [*OLD, *RESIDUAL, "method.upsample=spline", "method.scale=instance", "method.scale_kmin=16", "data.augment=symmetry"]},
    {"name": "project", "change": "+ consistency projection (sampling)", "train": "augment", "sample": ["project=true"]},
    {"name": "derive_jz", "change": "+ jz = curl B (sampling)", "train": "augment", "sample": ["project=true", "derive_jz=true"]},
    {"name": "recipe", "change": "the shipped recipe: level over all shells (k_min 0), augmentation, projection, jz = curl B", "train": [*OLD, *RESIDUAL, "method.upsample=spline", "method.scale=instance", "data.augment=symmetry"], "sample": ["project=true", "derive_jz=true"]},
    {"name": "logit_t", "change": "+ logit-normal t (mean 0, std 1)", "train": [*OLD, *RESIDUAL, "method.upsample=spline", "method.scale=instance", "method.scale_kmin=16", "data.augment=symmetry", "method.t_dist=logit_normal"], "sample": ["project=true", "derive_jz=true"]},
    {"name": "crop128", "change": "+ 128² crops, batch 2 (same pixels per step)", "train": [*OLD, *RESIDUAL, "method.upsample=spline", "method.scale=instance", "method.scale_kmin=16", "data.augment=symmetry", "data.crop=128", "data.micro_batch=1"], "sample": ["project=true", "derive_jz=true"]},
]  # fmt: skip


def run(cmd: list[str], log: Path) -> float:
    """Run ``cmd`` from the repository root, output to ``log``; returns the wall time.

    Raises:
        RuntimeError: non-zero exit (the log's tail in the message).
    """
    t0 = time.perf_counter()
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if rc:
        raise RuntimeError(f"exit {rc}: {' '.join(cmd)}\n{log.read_text()[-3000:]}")
    return time.perf_counter() - t0


def values(metrics: dict[str, Any], method: str) -> dict[str, float | None]:
    """The ablation table's velocity numbers of ``method`` (test split)."""
    s = metrics["summary"]["test"][method]
    out: dict[str, float | None] = {}
    for ch in ("velx", "vely", "velz"):
        out[f"{ch}.gen"] = s[ch]["spectral_error"]["generated"]
        out[f"{ch}.res"] = s[ch]["spectral_error"]["resolved"]
        out[f"{ch}.nrmse"] = s[ch].get("nrmse_ensemble_mean")
        out[f"{ch}.crps"] = s[ch].get("crps")
    tc = (
        metrics["goals"]["transition_coherence"]["groups"]["test"]
        .get(method, {})
        .get("channels", {})
    )
    diffs = [tc[c]["min_diff"] for c in ("velx", "vely", "velz") if c in tc]
    out["vel.min_tc"] = min(diffs) if diffs else None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", default="runs/demo/shards")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--root", default="runs/ablation")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--force", action="store_true")
    ap.add_argument("--port", type=int, default=29563, help="torchrun rendezvous port")
    a = ap.parse_args(argv)
    rows = json.loads(OUT.read_text()) if OUT.is_file() else []
    done = {r["name"] for r in rows}
    root = REPO / a.root
    for v in VARIANTS:
        if a.only and v["name"] not in a.only or v["name"] in done and not a.force:
            continue
        d = root / v["name"]
        d.mkdir(parents=True, exist_ok=True)
        log = d / "log.txt"
        train_name = v["train"] if isinstance(v["train"], str) else v["name"]
        train_dir = root / train_name / "train"
        wall = 0.0
        if not isinstance(v["train"], str):
            wall += run([PY, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={a.port}",
                         "-m", "mhdsr", "train", "--config", "configs/train/cpu-small.yaml",
                         f"shards={a.shards}", f"run_dir={train_dir}", f"max_steps={a.steps}",
                         "checkpoint.every=100000", "log.image_every=0", *v["train"]], log)  # fmt: skip
        samples = d / "samples"
        for tag, extra in (
            ("ode", []),
            ("sde", ["sampler.name=euler_maruyama", "sampler.steps=8"]),
        ):
            wall += run([PY, "-m", "mhdsr", "sample", "--config", "configs/sample/demo.yaml",
                         f"checkpoint={train_dir}", f"shards={a.shards}", "ensemble=4", "progress=false",
                         f"output_dir={samples}/{tag}", *extra, *v.get("sample", [])], log)  # fmt: skip
        wall += run([PY, "-m", "mhdsr", "eval", "--config", "configs/eval/demo.yaml",
                     f"samples={samples}", f"shards={a.shards}", f"output_dir={d}/eval",
                     "max_panels=0", "progress=false"], log)  # fmt: skip
        m = read_metrics(d / "eval" / "metrics.json")
        summary = json.loads((train_dir / "summary.json").read_text())
        row = {
            "name": v["name"], "change": v["change"], "steps": summary["step"],
            "train_wall_s": summary["wall_s"], "wall_s": wall,
            "train_samples_per_s": summary["samples_seen"] / max(summary["wall_s"], 1e-9),
            "train": v["train"], "sample": v.get("sample", []),
            "values": values(m, "ema/heun-4"), "values_sde": values(m, "ema/euler_maruyama-8"),
        }  # fmt: skip
        rows = [r for r in rows if r["name"] != v["name"]] + [row]
        order = [x["name"] for x in VARIANTS]
        rows.sort(key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
        tmp = OUT.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(rows, indent=1) + "\n")
        tmp.replace(OUT)  # a killed run never leaves a half-written table
        print(f"{v['name']}: done in {wall:.0f} s -> {OUT}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
