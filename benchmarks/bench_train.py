"""Trainer benchmarks (issue 4).

* engine overhead: step time of the DeepSpeed engine (ZeRO-2, fp32, one rank, gloo) divided by
  a plain PyTorch AdamW loop on the same model (cpu-small), same batch (cpu-small's micro batch,
  8 channels, 64 x 64 crops), same loss; measured in alternating blocks in one process, the
  ratio is the median over adjacent block pairs, so load drifts on a shared machine cancel
  (goal <= 1.1);
* samples/s of cpu-small under the engine;
* data-wait fraction of a real `mhdsr train` run on the demo shards (goal < 5%);
* forward+backward time of gpu-40m at 256^2, batch 1, fp32 on this CPU (for the record).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import REPO
from mhdsr.config import load_config
from mhdsr.method.interpolant import flow_matching_loss
from mhdsr.model import UNet
from mhdsr.train.config import TrainConfig


def _batch(cfg: TrainConfig, g: torch.Generator):
    b, c, n = cfg.data.micro_batch, cfg.model.channels, cfg.data.crop or 256
    x1 = torch.randn(b, c, n, n, generator=g)
    u = torch.randn(b, c, n, n, generator=g)
    eps = torch.randn(b, c, n, n, generator=g)
    t = torch.rand(b, generator=g)
    return x1, u, eps, t


def engine_overhead(quick: bool) -> dict:
    from mhdsr.runtime.distributed import setup
    from mhdsr.runtime.engine import build_engine

    cfg = load_config(TrainConfig, REPO / "configs/train/cpu-small.yaml", ["engine.zero_stage=2"])
    env = setup("cpu", "gloo", "fp32")
    torch.manual_seed(0)
    plain = UNet(cfg.model)
    for p in plain.parameters():  # non-zero weights so every layer does real work
        p.data.normal_(0, 0.02)
    ds_model = UNet(cfg.model)
    ds_model.load_state_dict(plain.state_dict())
    opt = torch.optim.AdamW(plain.parameters(), lr=1e-4, betas=(0.9, 0.99))
    engine, _ = build_engine(cfg, ds_model, env.world_size, "fp32", env.device)
    g = torch.Generator().manual_seed(0)
    x1, u, eps, t = _batch(cfg, g)
    m = cfg.method

    def plain_step():
        loss, _ = flow_matching_loss(plain, x1, u, eps, t, sigma=m.sigma, loss_scale=m.loss_scale)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), cfg.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def ds_step():
        loss, _ = flow_matching_loss(engine, x1, u, eps, t, sigma=m.sigma, loss_scale=m.loss_scale)
        engine.backward(loss)
        engine.step()

    plain_step(), ds_step()
    blocks, per_block = (3, 3) if quick else (10, 4)
    tp, td = [], []
    for _ in range(blocks):
        for fn, acc in ((plain_step, tp), (ds_step, td)):
            t0 = time.perf_counter()
            for _ in range(per_block):
                fn()
            acc.append((time.perf_counter() - t0) / per_block)
    p_med, d_med = statistics.median(tp), statistics.median(td)
    pair_ratios = [d / p for d, p in zip(td, tp)]
    return {
        "plain_step_s": p_med,
        "deepspeed_step_s": d_med,
        "ratio_deepspeed_over_plain": statistics.median(pair_ratios),
        "ratio_range_over_block_pairs": [min(pair_ratios), max(pair_ratios)],
        "goal": "<= 1.1",
        "cpu_small_samples_per_s": cfg.data.micro_batch / d_med,
        "batch": [cfg.data.micro_batch, cfg.model.channels, cfg.data.crop, cfg.data.crop],
    }


def data_wait(quick: bool) -> dict:
    """A real training run (cpu-small, demo shards, default loader settings)."""
    with tempfile.TemporaryDirectory() as tmp:
        shards, run = Path(tmp) / "shards", Path(tmp) / "run"
        env = {"PYTHONPATH": str(REPO / "src"), "DS_ACCELERATOR": "cpu", "PATH": "/usr/bin:/bin"}
        py = sys.executable
        subprocess.run([py, "-m", "mhdsr", "shard", "build", "--config", str(REPO / "configs/shard/demo.yaml"), f"output_dir={shards}"],
                       check=True, capture_output=True, env=env, cwd=REPO)  # fmt: skip
        steps = 10 if quick else 30
        subprocess.run([py, "-m", "mhdsr", "train", "--config", str(REPO / "configs/train/cpu-small.yaml"), f"shards={shards}",
                        f"run_dir={run}", f"max_steps={steps}", f"checkpoint.every={steps}", "log.image_every=0", "log.val_every=0"],
                       check=True, capture_output=True, env=env, cwd=REPO)  # fmt: skip
        s = json.loads((run / "summary.json").read_text())
    return {
        "steps": s["steps_this_run"],
        "data_wait_frac": s["data_wait_s"] / s["wall_s"],
        "goal": "< 0.05",
        "samples_per_s_end_to_end": s["samples_seen"] / s["wall_s"],  # one rank, fresh run
    }


def gpu40m_fwd_bwd() -> dict:
    from mhdsr.model import count_parameters, preset

    torch.manual_seed(0)
    cfg = preset("gpu-40m")
    model = UNet(cfg)
    x = torch.randn(1, 8, 256, 256)
    t0 = time.perf_counter()
    model(x, torch.rand(1), x).square().mean().backward()
    return {
        "params": count_parameters(model),
        "fwd_bwd_s_cpu_fp32_256sq_batch1": time.perf_counter() - t0,
    }


def run(quick: bool = False) -> dict:
    out = {"engine_overhead": engine_overhead(quick), "data_wait": data_wait(quick)}
    if not quick:
        out["gpu_40m"] = gpu40m_fwd_bwd()
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
