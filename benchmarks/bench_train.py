"""Trainer benchmarks (issue 4).

* engine overhead: step time of the DeepSpeed engine (ZeRO-0, 1 and 2, fp32, one rank, gloo)
  divided by a plain PyTorch AdamW loop on the same model (cpu-small), same batch (cpu-small's
  micro batch of normalized 256^2 fields), same loss (cpu-small's recipe: Formulation.loss with its
  formulation, crop, roll and augmentation); measured in alternating blocks in one process, the
  ratio is the median over adjacent block pairs, so load drifts on a shared machine cancel
  (goal <= 1.1; the headline is the shipped stage of configs/train/cpu-small.yaml);
* samples/s of cpu-small under the engine;
* data-wait fraction and MFU of a real `mhdsr train` run on the demo shards (goal < 5%; the MFU
  as fit() logs it: FlopCounterMode model FLOPs, against a CPU matmul peak measured at start-up);
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
from mhdsr.model import UNet
from mhdsr.train.config import TrainConfig


def _hi(cfg: TrainConfig, g: torch.Generator) -> torch.Tensor:
    """One micro-batch of normalized full hi fields (the loader's output): (B, C, 256, 256)."""
    return torch.randn(cfg.data.micro_batch, cfg.model.channels, 256, 256, generator=g)


def engine_overhead(quick: bool) -> dict:
    """DeepSpeed step / plain AdamW step at ZeRO-0, 1 and 2 (fp32, one rank), cpu-small's
    recipe (its loss: :meth:`mhdsr.method.flow.Formulation.loss` with the config's formulation,
    crop, roll and augmentation), alternating blocks."""
    from mhdsr.channels import CHANNELS
    from mhdsr.method.flow import Formulation
    from mhdsr.runtime.distributed import setup
    from mhdsr.runtime.engine import build_engine

    cfg = load_config(TrainConfig, REPO / "configs/train/cpu-small.yaml")
    env = setup("cpu", "gloo", "fp32")
    torch.manual_seed(0)
    plain = UNet(cfg.model)
    for p in plain.parameters():  # non-zero weights so every layer does real work
        p.data.normal_(0, 0.02)
    opt = torch.optim.AdamW(plain.parameters(), lr=1e-4, betas=(0.9, 0.99))
    engines = {}
    for stage in (0, 1, 2):
        c = load_config(TrainConfig, REPO / "configs/train/cpu-small.yaml",
                        [f"engine.zero_stage={stage}"])  # fmt: skip
        m = UNet(c.model)
        m.load_state_dict(plain.state_dict())
        engines[stage] = build_engine(c, m, env.world_size, "fp32", env.device)[0]
    r = torch.ones(cfg.model.channels) if cfg.method.formulation == "residual" else None
    form = Formulation(cfg.method, r)
    augment = list(CHANNELS) if cfg.data.augment == "symmetry" else None
    d = cfg.data
    hi = _hi(cfg, torch.Generator().manual_seed(0))

    def loss_of(model):
        gen = torch.Generator().manual_seed(1)
        return form.loss(model, hi, gen, crop=d.crop, roll=d.roll, augment=augment)[0]

    def plain_step():
        loss_of(plain).backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), cfg.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    def ds_step(engine):
        engine.backward(loss_of(engine))
        engine.step()

    fns = {"plain": plain_step} | {f"zero{k}": (lambda e=e: ds_step(e)) for k, e in engines.items()}
    for fn in fns.values():
        fn()
    blocks, per_block = (3, 2) if quick else (8, 3)
    ts: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(blocks):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(per_block):
                fn()
            ts[k].append((time.perf_counter() - t0) / per_block)
    med = {k: statistics.median(v) for k, v in ts.items()}
    ratios = {
        k: statistics.median([a / b for a, b in zip(ts[k], ts["plain"])])
        for k in fns
        if k != "plain"
    }
    shipped = cfg.engine.zero_stage
    return {
        "plain_step_s": med["plain"],
        **{f"deepspeed_{k}_step_s": med[k] for k in ratios},
        **{f"ratio_{k}_over_plain": v for k, v in ratios.items()},
        "ratio_deepspeed_over_plain": ratios[f"zero{shipped}"],
        "shipped_zero_stage": shipped,
        "fastest_stage": min(ratios, key=ratios.get),
        "goal": "<= 1.1",
        "cpu_small_samples_per_s": cfg.data.micro_batch / med[f"zero{shipped}"],
        "batch": [cfg.data.micro_batch, cfg.model.channels, cfg.data.crop, cfg.data.crop],
        "recipe": f"{cfg.method.formulation}/{cfg.method.upsample}/{cfg.method.scale}/"
        f"augment={cfg.data.augment}",
        "blocks": blocks,
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
    perf = s["perf"]
    return {
        "steps": s["steps_this_run"],
        "data_wait_frac": s["data_wait_s"] / s["wall_s"],
        "goal": "< 0.05",
        "samples_per_s_end_to_end": s["samples_seen"] / s["wall_s"],  # one rank, fresh run
        # what fit() logs (summary.json "perf"): model FLOPs counted at start-up, CPU peak
        # measured (a matmul) at start-up, over the logged windows
        "flops_per_sample": perf["flops_per_sample"],
        "tflops_per_device": perf["tflops_per_device"],
        "mfu": perf["mfu"],
        "peak_source": perf["peak_source"],
    }


def gpu40m_fwd_bwd() -> dict:
    from mhdsr.model import count_parameters, preset

    torch.manual_seed(0)
    cfg = preset("gpu-40m")
    model = UNet(cfg)
    x = torch.randn(1, 8, 256, 256)
    t0 = time.perf_counter()
    model(x, torch.rand(1), x).square().mean().backward()
    dt = time.perf_counter() - t0
    from mhdsr.runtime.flops import training_flops

    def inputs(n):
        return lambda d: (torch.empty(1, 8, n, n, device=d), torch.empty(1, device=d),
                          torch.empty(1, 8, n, n, device=d))  # fmt: skip

    fwd256, train256 = training_flops(model, inputs(256))
    fwd128, _ = training_flops(model, inputs(128))
    return {
        "params": count_parameters(model),
        "fwd_bwd_s_cpu_fp32_256sq_batch1": dt,
        # FlopCounterMode counts (training = forward + backward of one 256^2 sample)
        "forward_GFLOP_256sq": fwd256 / 1e9,
        "forward_GFLOP_128sq": fwd128 / 1e9,
        "training_TFLOP_per_sample_256sq": train256 / 1e12,
        "training_over_forward": train256 / fwd256,
    }


def run(quick: bool = False) -> dict:
    out = {"engine_overhead": engine_overhead(quick), "data_wait": data_wait(quick)}
    if not quick:
        out["gpu_40m"] = gpu40m_fwd_bwd()
    return out


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
