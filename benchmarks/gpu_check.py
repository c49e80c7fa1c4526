"""`make bench-gpu`: one command that measures the GPU path of mhdsr (issue 14).

Writes ``benchmarks/gpu-results.json`` and ``benchmarks/gpu-results.md`` (to a temporary name,
renamed when complete). On a machine with CUDA (about 8 minutes on one H100/H200; a time budget,
``--budget-s``, skips the remaining training cases and says so):

* ``train``: the gpu-40m UNet (configs/train/gpu-40m.yaml), bf16, DeepSpeed ZeRO-2, one rank,
  full 256² fields: samples/s, achieved TFLOP/s and MFU (model FLOPs counted with
  FlopCounterMode: forward + backward, :mod:`mhdsr.runtime.flops`; peak from its table) and
  peak memory, at micro-batch 8/16/32 with ``engine.compile`` off/on and
  ``engine.channels_last`` off/on. The loss is the one training runs
  (:meth:`mhdsr.method.flow.Formulation.loss`: pairs, augmentation, noise on the device) on
  random normalized fields already on the device: the network and the engine alone;
* ``data_wait``: a real ``mhdsr train`` run (the same config, its loader settings) on the
  bundled shards replicated to >= 64 train samples: data-wait fraction, samples/s and MFU from
  its summary.json;
* ``sampling``: Heun (4 steps, 8 NFE) and Euler–Maruyama (8 steps, 8 NFE) samples/s at batch
  16 and 64 (fp32 with TF32, as bulk inference runs);
* ``bf16_vs_fp32``: the same 50 optimizer steps (same weights, batches and noise) in bf16 and
  fp32: relative difference of the losses;
* ``nccl_2rank``: when two GPUs are visible, two ranks (torchrun) of the gpu-40m step: samples/s
  per rank and scaling against one rank.

Without CUDA the same code runs on a tiny UNet on the CPU (under 2 minutes; fp32 ZeRO-2 for
the sweep, micro-batch 2/4 at 16², one thread, compile on/off with the inductor backend, which needs a C++
compiler) so CI exercises it (tests/test_gpu_check.py), and the results say plainly that no GPU
was measured.

    python benchmarks/gpu_check.py [--out benchmarks/gpu-results.json] [--budget-s 420]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402

NO_GPU = (
    "NO GPU WAS MEASURED: torch.cuda.is_available() is False on this machine, so this is the "
    "CPU fallback (a tiny UNet) that checks the code path; its figures say nothing about GPU "
    "throughput."
)


def plan(cuda: bool, cpu_compile: bool = False) -> dict[str, Any]:
    """What to measure: gpu-40m on a GPU, a tiny model on the CPU (``cpu_compile``: also with
    ``engine.compile``, minutes)."""
    if cuda:
        return {
            "config": REPO / "configs/train/gpu-40m.yaml",
            "overrides": [],
            "precision": "bf16",
            "micro_batches": [8, 16, 32],
            "compile": [False, True],
            "channels_last": [False, True],
            "size": 256,
            "warmup": 5,
            "steps": 20,
            "sample_batches": [16, 64],
            "agree_steps": 50,
            "agree_batch": 4,
            "wait_steps": 60,
        }
    tiny = ["model.width=16", "model.mults=[1,2]", "model.blocks_per_level=1",
            "model.attn_levels=[1]", "model.attn_head_dim=16", "model.groups=4",
            "model.dropout=0.0"]  # fmt: skip
    return {
        "config": REPO / "configs/train/cpu-small.yaml",
        "overrides": tiny,
        "precision": "fp32",
        "micro_batches": [2, 4],
        # compiling on a 2-core CPU took 8.8 minutes for the tiny model (inductor, loaded
        # machine): only with --cpu-compile
        "compile": [False, True] if cpu_compile else [False],
        "channels_last": [False, True],
        "size": 16,
        "warmup": 2,
        "steps": 4,
        "sample_batches": [2, 4],
        "agree_steps": 50,
        "agree_batch": 2,
        "wait_steps": 6,
    }


def _cfg(p: dict[str, Any], *extra: str):
    from mhdsr.config import load_config
    from mhdsr.train.config import TrainConfig

    return load_config(TrainConfig, p["config"], [*p["overrides"], *extra])


def _formulation(cfg):
    from mhdsr.method.flow import Formulation

    r = torch.ones(cfg.model.channels) if cfg.method.formulation == "residual" else None
    return Formulation(cfg.method, r)


def _augment(cfg):
    from mhdsr.channels import CHANNELS

    return list(CHANNELS[: cfg.model.channels]) if cfg.data.augment == "symmetry" else None


class _Steps:
    """A DeepSpeed engine of ``cfg`` (the trainer's build_engine / compile_engine) stepping the
    training loss on fixed random fields on the device."""

    def __init__(self, cfg, env, precision: str, size: int, seed: int = 0) -> None:
        from mhdsr.model import UNet
        from mhdsr.runtime.engine import build_engine, compile_engine

        torch.manual_seed(seed)
        model = UNet(cfg.model)
        b, c = cfg.data.micro_batch, cfg.model.channels
        self.flops = _count(model, c, size)  # before the engine: a plain module, counted on meta
        self.engine, _ = build_engine(cfg, model, env.world_size, precision, env.device)
        if cfg.engine.compile:
            compile_engine(self.engine)
        self.form, self.augment, self.cfg = _formulation(cfg), _augment(cfg), cfg
        g = torch.Generator().manual_seed(seed + 1)
        self.hi = torch.randn(b, c, size, size, generator=g).to(env.device)
        self.i = 0

    def step(self) -> float:
        gen = torch.Generator().manual_seed(1000 + self.i)
        self.i += 1
        d = self.cfg.data
        loss, _, _ = self.form.loss(
            self.engine, self.hi, gen, crop=d.crop, roll=d.roll, augment=self.augment
        )
        self.engine.backward(loss)
        self.engine.step()
        return float(loss.detach())

    def close(self) -> None:
        self.engine.destroy() if hasattr(self.engine, "destroy") else None
        self.engine = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _count(model, c: int, size: int) -> float:
    """Training FLOPs per sample at ``size``² (forward + backward, counted)."""
    from mhdsr.runtime.flops import training_flops

    def inputs(dev):
        x = torch.empty(1, c, size, size, device=dev)
        return x, torch.empty(1, device=dev), torch.empty(1, c, size, size, device=dev)

    return training_flops(model, inputs)[1]


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def train_sweep(p, env, peak, deadline: float) -> dict[str, Any]:
    """samples/s, MFU and peak memory per (micro-batch, compile, channels_last)."""
    from mhdsr.runtime.flops import mfu

    rows, eager_loss = [], {}
    for mb in p["micro_batches"]:
        for comp in p["compile"]:
            for cl in p["channels_last"]:
                case = {"micro_batch": mb, "compile": comp, "channels_last": cl}
                if time.perf_counter() > deadline:
                    rows.append(case | {"skipped": "time budget (--budget-s) spent"})
                    continue
                cfg = _cfg(p, f"data.micro_batch={mb}", f"engine.compile={comp}",
                           f"engine.channels_last={cl}", "data.crop=0")  # fmt: skip
                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
                try:
                    s = _Steps(cfg, env, p["precision"], p["size"])
                    t_c = time.perf_counter()
                    first = s.step()  # compiles when engine.compile
                    _sync()
                    first_s = time.perf_counter() - t_c
                    for _ in range(p["warmup"] - 1):
                        s.step()
                    _sync()
                    t0 = time.perf_counter()
                    for _ in range(p["steps"]):
                        s.step()
                    _sync()
                    dt = (time.perf_counter() - t0) / p["steps"]
                except Exception as e:  # noqa: BLE001 - record and go on (e.g. out of memory)
                    rows.append(case | {"error": repr(e)[:300]})
                    continue
                sps = mb / dt
                row = case | {
                    "samples_per_s": round(sps, 2),
                    "step_s": round(dt, 4),
                    "first_step_s": round(first_s, 2),
                    "first_loss": first,
                    "tflops": float(f"{s.flops * sps / 1e12:.4g}"),
                    "mfu": float(f"{mfu(s.flops, sps, peak.flops):.4g}"),
                    "flops_per_sample": s.flops,
                }
                if torch.cuda.is_available():
                    row["peak_mem_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
                if not comp:
                    eager_loss[(mb, cl)] = first
                elif (mb, cl) in eager_loss:  # same weights, batch, noise: same first loss
                    row["first_loss_rel_diff_vs_eager"] = abs(first - eager_loss[(mb, cl)]) / abs(
                        eager_loss[(mb, cl)]
                    )
                rows.append(row)
                s.close()
    return {"cases": rows, "params": _params(p)}


def _params(p) -> int:
    from mhdsr.model import UNet

    return sum(x.numel() for x in UNet(_cfg(p).model).parameters())


def precision_agreement(p, env) -> dict[str, Any]:
    """The same steps in bf16 and fp32 (ZeRO-2 both): loss curves compared."""
    curves = {}
    for prec in ("fp32", "bf16"):
        cfg = _cfg(p, f"data.micro_batch={p['agree_batch']}", "data.crop=0", "optim.warmup_steps=0")
        try:
            s = _Steps(cfg, env, prec, p["size"], seed=7)
            curves[prec] = [s.step() for _ in range(p["agree_steps"])]
            s.close()
        except Exception as e:  # noqa: BLE001
            return {"error": f"{prec}: {e!r}"[:300]}
    a, b = curves["fp32"], curves["bf16"]
    rel = [abs(x - y) / abs(x) for x, y in zip(a, b)]
    last = slice(-10, None)
    return {
        "steps": p["agree_steps"],
        "loss_fp32_first_last": [a[0], a[-1]],
        "loss_bf16_first_last": [b[0], b[-1]],
        "median_rel_diff": statistics.median(rel),
        "max_rel_diff": max(rel),
        "rel_diff_mean_last10": abs(statistics.mean(a[last]) - statistics.mean(b[last]))
        / abs(statistics.mean(a[last])),
    }


class _DeviceNoise:
    def __init__(self, b: int, device: torch.device) -> None:
        self.b, self.device = b, device
        self.g = torch.Generator(device=device).manual_seed(0)

    def draw(self, shape):
        return torch.randn((self.b, *shape), generator=self.g, device=self.device)


@torch.no_grad()
def sampling(p, device: torch.device) -> dict[str, Any]:
    """Heun and Euler–Maruyama samples/s (fp32 model; TF32 on a GPU)."""
    from mhdsr.method.samplers import sample
    from mhdsr.model import UNet

    cfg = _cfg(p)
    torch.manual_seed(0)
    model = UNet(cfg.model).to(device).eval()
    c, n = cfg.model.channels, p["size"]
    out = {}
    for name, steps in (("heun", 4), ("euler_maruyama", 8)):
        for b in p["sample_batches"]:
            u = torch.randn(b, c, n, n, device=device)

            def run(name=name, steps=steps, b=b, u=u):
                sample(name, model, u, n_steps=steps, noise=_DeviceNoise(b, device), sigma=0.1)

            try:
                run()
                _sync()
                t0 = time.perf_counter()
                reps = 2
                for _ in range(reps):
                    run()
                _sync()
                dt = (time.perf_counter() - t0) / reps
                out[f"{name}_nfe8_batch{b}_samples_per_s"] = round(b / dt, 2)
            except Exception as e:  # noqa: BLE001
                out[f"{name}_nfe8_batch{b}_error"] = repr(e)[:300]
    return out


def replicate_shards(src: Path, dst: Path, min_samples: int = 64) -> int:
    """Copy the shard folder ``src`` to ``dst`` with its train shards repeated (new names, same
    bytes and checksums, listed in the manifest) until the train split holds ``min_samples``."""
    shutil.copytree(src, dst)
    mf = dst / "manifest.json"
    m = json.loads(mf.read_text())
    train = m["splits"]["train"]
    base = list(train["shards"])
    if not base or sum(s["samples"] for s in base) == 0:
        raise RuntimeError(f"{src}: no train samples to replicate")
    r = 1
    while train["samples"] < min_samples:
        for sh in base:
            name = f"rep{r}-{sh['name']}"
            shutil.copyfile(dst / sh["name"], dst / name)
            train["shards"].append(sh | {"name": name})
            train["samples"] += sh["samples"]
        r += 1
    mf.write_text(json.dumps(m, indent=2) + "\n")
    return train["samples"]


def data_wait(p, cuda: bool) -> dict[str, Any]:
    """A real `mhdsr train` on replicated demo shards: summary.json's perf figures."""
    # not this process's launch environment (setup() exported MASTER_PORT, RANK, ...)
    launch = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    env = {k: v for k, v in os.environ.items() if k not in launch}
    env["PYTHONPATH"] = str(REPO / "src")
    if not cuda:
        env["DS_ACCELERATOR"] = "cpu"
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        demo, shards, run = Path(tmp) / "demo", Path(tmp) / "shards", Path(tmp) / "run"
        subprocess.run([py, "-m", "mhdsr", "shard", "build", "--config",
                        str(REPO / "configs/shard/demo.yaml"), f"output_dir={demo}"],
                       check=True, capture_output=True, env=env, cwd=REPO)  # fmt: skip
        n = replicate_shards(demo, shards)
        steps = p["wait_steps"]
        extra = [] if cuda else ["data.workers=1", "data.micro_batch=2", "data.crop=32"]
        cmd = [py, "-m", "mhdsr", "train", "--config", str(p["config"]), *p["overrides"], *extra,
               f"shards={shards}", f"run_dir={run}", f"max_steps={steps}",
               f"checkpoint.every={steps}", "log.image_every=0", "log.val_every=0",
               "data.val_samples=0", f"log.every={max(1, steps // 4)}", "log.tensorboard=false"]  # fmt: skip
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
        if r.returncode != 0:
            return {"error": r.stderr[-1500:]}
        s = json.loads((run / "summary.json").read_text())
        logged = (r.stdout + r.stderr).splitlines()
        lines = [x for x in logged if "MFU" in x or "model FLOPs" in x]
    perf = s["perf"]
    return {
        "train_samples": n,
        "steps": s["steps_this_run"],
        "wall_s": round(time.perf_counter() - t0, 1),
        "data_wait_frac": perf["data_wait_frac"],
        "samples_per_s": perf["samples_per_s"],
        "mfu": perf["mfu"],
        "tflops_per_device": perf["tflops_per_device"],
        "peak_source": perf["peak_source"],
        "log_lines": lines[:1] + lines[-2:],
    }


def nccl_2rank(p, budget_s: float) -> dict[str, Any]:
    """Two ranks of the training step under torchrun (this file's ``--rank-worker`` mode)."""
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return {
            "skipped": f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} GPU(s) visible (needs 2)"
        }
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rank0.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               __file__, "--rank-worker", str(out)]  # fmt: skip
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=budget_s)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {budget_s:.0f} s"}
        if r.returncode != 0 or not out.is_file():
            return {"error": r.stderr[-1500:]}
        return json.loads(out.read_text())


def _rank_worker(out: str) -> None:
    from mhdsr.runtime.distributed import setup

    p = plan(True)
    env = setup("cuda", "nccl", "bf16")
    cfg = _cfg(p, "data.micro_batch=16", "data.crop=0")
    s = _Steps(cfg, env, "bf16", p["size"])
    for _ in range(p["warmup"]):
        s.step()
    _sync()
    t0 = time.perf_counter()
    for _ in range(p["steps"]):
        s.step()
    _sync()
    dt = (time.perf_counter() - t0) / p["steps"]
    if env.rank == 0:
        Path(out).write_text(json.dumps({"world_size": env.world_size, "micro_batch": 16,
                                         "samples_per_s_per_rank": round(16 / dt, 2)}))  # fmt: skip


def markdown(res: dict[str, Any]) -> str:
    """The results as a readable page."""
    lines = ["# bench-gpu results (benchmarks/gpu_check.py)", ""]
    if not res["gpu_measured"]:
        lines += [f"**{NO_GPU}**", ""]
    m = res["meta"]
    lines += [f"device: {m['device']} | peak {m['peak_tflops']} TFLOP/s ({m['peak_source']}) | "
              f"{m['time']} | {m['wall_s']} s", ""]  # fmt: skip
    t = res["train"]
    lines += [f"## Training step ({m['model']}, {t['params'] / 1e6:.2f}M params, {m['precision']}, "
              "ZeRO-2, 1 rank)", "",
              "| micro-batch | compile | channels_last | samples/s | TFLOP/s | MFU | peak GiB | first step s |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in t["cases"]:
        if "samples_per_s" in r:
            mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] == r["mfu"] else "n/a"
            lines.append(f"| {r['micro_batch']} | {r['compile']} | {r['channels_last']} | "
                         f"{r['samples_per_s']} | {r['tflops']} | {mfu} | "
                         f"{r.get('peak_mem_GiB', '-')} | {r['first_step_s']} |")  # fmt: skip
        else:
            lines.append(f"| {r['micro_batch']} | {r['compile']} | {r['channels_last']} | "
                         f"{r.get('skipped') or r.get('error')} | | | | |")  # fmt: skip
    for key in ("data_wait", "sampling", "bf16_vs_fp32", "nccl_2rank"):
        lines += ["", f"## {key}", "", "```", json.dumps(res[key], indent=2), "```"]
    return "\n".join(lines) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "benchmarks/gpu-results.json"))
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="seconds for the training sweep before the remaining cases are skipped")  # fmt: skip
    ap.add_argument("--cpu-compile", action="store_true",
                    help="CPU fallback: also measure engine.compile (minutes on a small CPU)")  # fmt: skip
    ap.add_argument("--rank-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rank_worker:
        _rank_worker(args.rank_worker)
        return 0
    t_start = time.perf_counter()
    cuda = torch.cuda.is_available()
    if not cuda:
        os.environ["DS_ACCELERATOR"] = "cpu"
        torch.set_num_threads(1)  # a shared small CPU: more threads only wait on each other
        print(NO_GPU, flush=True)
    from mhdsr.runtime.distributed import setup
    from mhdsr.runtime.engine import set_tf32
    from mhdsr.runtime.flops import device_peak

    p = plan(cuda, args.cpu_compile)
    env = setup("cuda" if cuda else "cpu", "nccl" if cuda else "gloo", p["precision"])
    if cuda:
        set_tf32(True)
    peak = device_peak(env.device, p["precision"])
    dev_name = (
        torch.cuda.get_device_name(env.device)
        if cuda
        else f"CPU ({platform.processor() or platform.machine()})"
    )
    res: dict[str, Any] = {
        "gpu_measured": cuda,
        "note": "" if cuda else NO_GPU,
        "meta": {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "host": platform.node(),
                 "device": dev_name, "torch": torch.__version__,
                 "model": "gpu-40m" if cuda else "tiny UNet (cpu-small recipe)",
                 "precision": p["precision"], "size": p["size"],
                 "peak_tflops": round(peak.flops / 1e12, 4), "peak_source": peak.source,
                 "load_avg": list(os.getloadavg())},
    }  # fmt: skip
    deadline = t_start + args.budget_s
    parts = (
        ("train", lambda: train_sweep(p, env, peak, deadline)),
        ("bf16_vs_fp32", lambda: precision_agreement(p, env)),
        ("sampling", lambda: sampling(p, env.device)),
        ("data_wait", lambda: data_wait(p, cuda)),
        ("nccl_2rank", lambda: nccl_2rank(p, budget_s=120.0)),
    )
    res["seconds"] = {}
    for key, fn in parts:
        print(f"== {key}", flush=True)
        t0 = time.perf_counter()
        res[key] = fn()
        res["seconds"][key] = round(time.perf_counter() - t0, 1)
    res["meta"]["wall_s"] = round(time.perf_counter() - t_start, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(out, json.dumps(res, indent=2, default=float) + "\n")
    md = markdown(res)
    _atomic_write(out.with_suffix(".md"), md)
    print(md)
    print(f"wrote {out} and {out.with_suffix('.md')}")
    with contextlib.suppress(Exception):
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
