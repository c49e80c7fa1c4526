"""The training loop: one flat function, phases labelled (after NVlabs/edm2's training_loop).

Rerunning the same command resumes from the newest complete checkpoint in ``run_dir``. The
same function runs as a single process, under torchrun / the deepspeed launcher, or under
srun / submitit (see :mod:`mhdsr.train.distributed`).

Randomness is keyed, not stateful: the data stream by ``(seed, rank, worker, segment)`` (the
stream restarts at every checkpoint step), and the noise, times, crops and dropout of optimizer
step ``s`` by ``(seed, rank, s, micro)``. So a run stopped at a checkpoint and rerun produces
the same weights as an uninterrupted run (fp32), and no RNG state must be restored (the RNG
states of every rank are still saved in the checkpoint for inspection).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import resource
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mhdsr import __version__
from mhdsr.config import from_dict, to_dict, to_yaml
from mhdsr.errors import CheckpointError, ConfigError
from mhdsr.interpolant import avgpool2, flow_matching_loss, sample_time, upsample
from mhdsr.io_utils import make_output_dir, write_json_atomic, write_text_atomic
from mhdsr.sample.noise import seed_for
from mhdsr.train import checkpoint as ckpt
from mhdsr.train.config import TrainConfig
from mhdsr.train.distributed import DistEnv, all_reduce_sum, barrier, setup

log = logging.getLogger("mhdsr.train")

#: keys of the train config that must not change when a run is resumed
FROZEN_KEYS = ("model", "method", "channels", "seed")


def _setup_logging(run_dir: Path, env: DistEnv) -> None:
    warnings.filterwarnings(
        "ignore", message=".*all_gather_into_tensor.*is deprecated", category=FutureWarning
    )
    fmt = logging.Formatter(f"%(asctime)s [rank {env.rank}] %(message)s", "%H:%M:%S")
    root = logging.getLogger("mhdsr")
    root.setLevel(logging.INFO if env.is_main else logging.WARNING)
    root.handlers.clear()
    h = logging.StreamHandler(sys.stdout)
    h.setFormatter(fmt)
    root.addHandler(h)
    if env.is_main:
        fh = logging.FileHandler(run_dir / "log.txt")
        fh.setFormatter(fmt)
        root.addHandler(fh)
    root.propagate = False
    # We hand DeepSpeed a torch.optim.AdamW subclass (GuardedAdamW); its type check calls that
    # "untested". The ZeRO wrapper treats it exactly like AdamW: drop that one warning.
    logging.getLogger("DeepSpeed").addFilter(lambda r: "untested optimizer" not in r.getMessage())


def _rng_states() -> dict[str, Any]:
    np_state = np.random.get_state()
    st: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()[1:2]],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])},
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state()
    return st


def _leaf_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _leaf_diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [f"{prefix}: {a!r} -> {b!r}"]


def _check_frozen(cfg: TrainConfig, stored: dict[str, Any]) -> None:
    """Refuse to resume when a setting that defines the model changed (model, method, channels, seed)."""
    now = to_dict(cfg)
    diff = [d for k in FROZEN_KEYS for d in _leaf_diff(stored.get(k), now.get(k), k)]
    if diff:
        raise ConfigError(
            f"run_dir {cfg.run_dir} holds a checkpoint trained with different settings ({'; '.join(diff)}); "
            "use a new run_dir or restore the original settings"
        )


def _check_normalization(
    cfg: TrainConfig,
    stored: dict[str, Any] | None,
    mean: Any,
    std: Any,
    msha: str,
    stored_sha: str | None,
) -> None:
    """The data normalization is part of the model: resuming on shards whose train statistics
    differ would silently change what the network sees. Same statistics but another manifest
    (e.g. rebuilt shards) is allowed with a warning."""
    if stored is None:
        return
    same = np.allclose(stored["mean"], mean, rtol=1e-9, atol=0) and np.allclose(
        stored["std"], std, rtol=1e-9, atol=0
    )
    if not same:
        raise ConfigError(
            f"shards={cfg.shards}: the train statistics (normalization) differ from those the checkpoint in "
            f"{cfg.run_dir} was trained with (mean {stored['mean']} -> {list(map(float, mean))}); resume with the "
            "original shards or start a new run_dir"
        )
    if stored_sha and stored_sha != msha:
        log.warning(
            "shards=%s: manifest differs from the checkpoint's (same normalization): continuing",
            cfg.shards,
        )


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or resume) according to ``cfg``; returns a summary dict (rank 0's view)."""
    # ------------------------------------------------------------------ processes and devices
    env = setup(cfg.engine.device, cfg.engine.backend, cfg.engine.precision)
    from mhdsr.model import UNet, count_parameters
    from mhdsr.shard_builder.manifest import manifest_sha256, normalization, read_manifest
    from mhdsr.train import data as D
    from mhdsr.train.ema import EMA, full_fp32_params
    from mhdsr.train.engine import build_engine, grad_norm, lr_at, set_lr
    from mhdsr.train.monitor import Monitor

    # ------------------------------------------------------------------ data description
    # (checked before anything is written to run_dir)
    manifest = read_manifest(cfg.shards)
    msha = manifest_sha256(cfg.shards)
    channels = cfg.channel_names
    ch_idx = [manifest["channels"].index(c) for c in channels]
    mean, std = normalization(manifest, "hi", channels)
    norm = D.Normalizer(np.asarray(mean, np.float32), np.asarray(std, np.float32))
    hi_shape = tuple(manifest["shapes"]["hi"])
    train_urls = D.shard_list(cfg.shards, manifest, "train")

    run_dir = Path(cfg.run_dir)
    if env.is_main:
        make_output_dir(run_dir, "run_dir")
    barrier()
    _setup_logging(run_dir, env)
    device = env.device
    if device.type == "cpu":
        torch.set_num_threads(
            max(1, (os.cpu_count() or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
        )

    # ------------------------------------------------------------------ model, resume point
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = UNet(cfg.model)
    n_params = count_parameters(model)
    resume = ckpt.find_latest(run_dir)
    mode = "fresh"
    export_payload = None
    if resume is not None:
        if resume.config is not None:
            _check_frozen(cfg, resume.config)
        _check_normalization(cfg, resume.normalization, mean, std, msha, resume.manifest_sha256)
        if (
            resume.world_size == env.world_size
            and resume.zero_stage == cfg.engine.zero_stage
            and resume.precision == env.precision
        ):
            mode = "deepspeed"
        else:
            # ZeRO optimizer partitions do not load at another world size: restart the optimizer
            # from the exported raw + EMA weights of the same step (stated in the log).
            if not resume.export:
                raise CheckpointError(
                    f"{resume.path}: no export recorded; cannot resume at world size {env.world_size}"
                )
            export_payload = ckpt.load_export(run_dir / "export" / resume.export)
            _check_frozen(cfg, export_payload["config"])
            model.load_state_dict(export_payload["raw"])
            mode = "export"
    engine, ds_cfg = build_engine(cfg, model, env.world_size, env.precision, device)
    ema = EMA(
        model,
        decay=cfg.ema.decay,
        start_step=cfg.ema.start_step,
        warmup=cfg.ema.warmup,
        every=cfg.ema.every,
    )
    ema.model.to(device)
    step, samples_seen, skipped_nonfinite = 0, 0, 0
    if mode == "deepspeed":
        _, client = engine.load_checkpoint(
            str(run_dir / "checkpoints"),
            tag=resume.tag,
            load_optimizer_states=True,
            load_lr_scheduler_states=False,
        )
        if client is None:
            raise CheckpointError(f"{resume.path}: DeepSpeed could not load this checkpoint")
        _check_frozen(cfg, client["config"])
        step, samples_seen = int(client["step"]), int(client["samples_seen"])
        skipped_nonfinite = int(client.get("skipped_nonfinite", 0))
        ema.load_state_dict(client["ema"])
        ema.model.to(device)
        engine.skipped_steps = int(client.get("skipped_steps", engine.skipped_steps))
    elif mode == "export":
        step, samples_seen = int(export_payload["step"]), int(export_payload["samples_seen"])
        ema.load_state_dict(
            {"weights": export_payload["ema"], "updates": export_payload["ema_updates"]}
        )
        ema.model.to(device)
    global_batch = cfg.data.micro_batch * cfg.optim.grad_accum * env.world_size

    # ------------------------------------------------------------------ record the run
    if env.is_main:
        write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))
        write_json_atomic(run_dir / "deepspeed_config.json", ds_cfg)
    log.info(
        "mhdsr %s | %s | world %d (%s) | %s %s | ZeRO-%d | model %.3fM params | global batch %d = %d micro x %d accum x %d ranks | channels %s",
        __version__, "resume from " + resume.tag + f" ({mode})" if resume else "fresh run", env.world_size, env.launcher,
        device, env.precision, cfg.engine.zero_stage, n_params / 1e6, global_batch, cfg.data.micro_batch,
        cfg.optim.grad_accum, env.world_size, ",".join(channels),
    )  # fmt: skip
    if mode == "export":
        log.info(
            "resumed at world size %d from exported weights of step %d (checkpoint had world size %d): optimizer state restarted",
            env.world_size,
            step,
            resume.world_size,
        )
    if step >= cfg.max_steps:
        log.info(
            "step %d >= max_steps %d: nothing to train (raise max_steps to continue)",
            step,
            cfg.max_steps,
        )
    monitor = Monitor(cfg, run_dir, env, channels, norm, n_params) if env.is_main else None

    # ------------------------------------------------------------------ fixed validation set
    val_keys, val_hi = [], None
    if (
        cfg.data.val_samples > 0
        and manifest["splits"].get(cfg.data.val_split, {}).get("samples", 0) > 0
    ):
        keys, arrays, _ = D.read_samples(
            D.shard_list(cfg.shards, manifest, cfg.data.val_split), cfg.data.val_samples, hi_shape
        )
        val_keys = keys
        val_hi = torch.from_numpy(np.stack([norm.normalize_np(a[ch_idx]) for a in arrays]))

    overfit_batch = None
    if cfg.data.overfit:
        keys, arrays, metas = D.read_samples(train_urls, 1, hi_shape)
        overfit_batch = torch.from_numpy(norm.normalize_np(arrays[0][ch_idx]))[None].repeat(
            cfg.data.micro_batch, 1, 1, 1
        )
        log.info(
            "overfit mode: one sample %s (seed %s, snapshot %s), channels %s",
            keys[0],
            metas[0].get("seed"),
            metas[0].get("snapshot"),
            channels,
        )

    def loss_of(
        model_fn, x1: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flow-matching loss with keyed noise/time (DESIGN.md, "The method")."""
        x1, u = D.make_pair(
            x1,
            crop=cfg.data.crop,
            roll=cfg.data.roll,
            upsample_mode=cfg.method.upsample,
            generator=gen,
        )
        eps = torch.randn(x1.shape, generator=gen).to(device)
        m = cfg.method
        t = sample_time(
            x1.shape[0],
            kind=m.t_dist,
            t_min=m.t_min,
            t_max=m.t_max,
            logit_mean=m.logit_mean,
            logit_std=m.logit_std,
            generator=gen,
        ).to(device)
        loss, per = flow_matching_loss(
            model_fn, x1, u, eps, t, sigma=m.sigma, loss_scale=m.loss_scale
        )
        return loss, per, t

    @torch.no_grad()
    def validate() -> dict[str, float]:
        """Mean flow-matching loss of raw and EMA weights over the fixed validation samples
        (rank r takes samples r, r + world, ...; fixed per-sample noise and t; full fields)."""
        if val_hi is None:
            return {}
        engine.module.eval()
        sums = torch.zeros(3, dtype=torch.float64)
        m = cfg.method
        for i in range(env.rank, len(val_keys), env.world_size):
            gen = torch.Generator().manual_seed(seed_for(cfg.seed, 999, i))
            x1 = val_hi[i : i + 1].to(device)
            u = upsample(avgpool2(x1), 2, m.upsample)
            eps = torch.randn(x1.shape, generator=gen).to(device)
            t = sample_time(1, kind=m.t_dist, t_min=m.t_min, t_max=m.t_max, generator=gen).to(
                device
            )
            raw, _ = flow_matching_loss(
                engine.module, x1, u, eps, t, sigma=m.sigma, loss_scale=m.loss_scale
            )
            emal, _ = flow_matching_loss(
                ema.model, x1, u, eps, t, sigma=m.sigma, loss_scale=m.loss_scale
            )
            sums += torch.tensor([float(raw), float(emal), 1.0], dtype=torch.float64)
        engine.module.train()
        all_reduce_sum(sums)
        n = max(sums[2].item(), 1.0)
        return {"val/loss": sums[0].item() / n, "val/loss_ema": sums[1].item() / n}

    def save_checkpoint() -> None:
        """Collective: DeepSpeed checkpoint (+ client state) and the plain-weights export."""
        raw = full_fp32_params(engine.module, env.precision)  # collective in bf16
        rng = [None] * env.world_size
        if env.world_size > 1:
            torch.distributed.all_gather_object(rng, _rng_states())
        else:
            rng = [_rng_states()]
        export_name = f"weights_step_{step:08d}.pt"
        if env.is_main:
            ckpt.write_export(run_dir, step, {
                "format": "mhdsr-export-v1", "step": step, "samples_seen": samples_seen,
                "raw": {k: v.detach().cpu().clone() for k, v in raw.items()},
                "ema": ema.state_dict()["weights"], "ema_updates": ema.updates,
                "model": to_dict(cfg.model), "channels": channels,
                "normalization": {"mean": [float(x) for x in norm.mean], "std": [float(x) for x in norm.std]},
                "method": to_dict(cfg.method), "config": to_dict(cfg),
                "manifest_sha256": msha, "version": __version__,
            }, cfg.checkpoint.keep)  # fmt: skip
        client = {
            "step": step, "samples_seen": samples_seen, "skipped_nonfinite": skipped_nonfinite,
            "skipped_steps": int(engine.skipped_steps), "ema": ema.state_dict(), "rng": rng,
            "config": to_dict(cfg), "manifest_sha256": msha, "version": __version__,
        }  # fmt: skip
        meta = {"world_size": env.world_size, "zero_stage": cfg.engine.zero_stage, "precision": env.precision,
                "samples_seen": samples_seen, "export": export_name, "time": time.time(), "config": to_dict(cfg),
                "normalization": {"mean": [float(x) for x in mean], "std": [float(x) for x in std]},
                "manifest_sha256": msha}  # fmt: skip
        ckpt.save(engine, run_dir, step, client, meta, cfg.checkpoint.keep, env.is_main)
        log.info("checkpoint %s saved (export %s)", ckpt.tag_for(step), export_name)

    # ------------------------------------------------------------------ main loop
    loader_iter = None
    steps_here = 0
    t_last = time.perf_counter()
    acc = {
        "loss": 0.0,
        "n": 0,
        "wait": 0.0,
        "tbins": torch.zeros(2, cfg.log.t_bins, dtype=torch.float64),
    }
    steps_since_log = 0
    run_wait, run_t0, run_steps0 = 0.0, time.perf_counter(), step
    worker_skips: dict[int, int] = {}
    last_loss = float("nan")
    while step < cfg.max_steps:
        if loader_iter is None and overfit_batch is None:
            stream = D.TrainStream(
                train_urls,
                ch_idx,
                norm,
                hi_shape,
                cfg.data.micro_batch,
                seed=cfg.seed,
                rank=env.rank,
                segment=step,
                shuffle_buffer=cfg.data.shuffle_buffer,
            )
            loader_iter = iter(D.make_loader(stream, cfg.data.workers, cfg.data.prefetch))
        set_lr(engine, lr_at(cfg, step))

        # ---- accumulate gradients over micro-batches
        for micro in range(cfg.optim.grad_accum):
            t0 = time.perf_counter()
            if overfit_batch is not None:
                hi = overfit_batch
            else:
                batch = next(loader_iter)
                hi = batch["hi"]
                worker_skips[batch["worker"]] = batch["skipped"]
            acc["wait"] += time.perf_counter() - t0
            run_wait += time.perf_counter() - t0
            # overfit mode repeats ONE fixed batch (same crops, noise and t every step): the
            # classic "overfit a single batch" check that the whole path can fit to ~0
            key = 0 if cfg.data.overfit else step
            gen = torch.Generator().manual_seed(seed_for(cfg.seed, env.rank, key, micro))
            torch.manual_seed(seed_for(cfg.seed, env.rank, key, micro, 1))  # dropout
            loss, per, t = loss_of(engine, hi.to(device, non_blocking=True), gen)
            if step in cfg.debug.nonfinite_loss_steps and env.is_main:
                loss = loss * float("nan")
            if step in cfg.debug.zero_grad_steps:
                loss = loss * 0.0
            hook = None
            if step in cfg.debug.nonfinite_grad_steps and env.is_main:
                p0 = next(engine.module.parameters())
                hook = p0.register_hook(lambda g: torch.full_like(g, float("inf")))
            engine.backward(loss)
            if hook is not None:
                hook.remove()
            engine.step()
            lv = float(loss.detach())
            if math.isfinite(lv):
                acc["loss"] += lv
                acc["n"] += 1
                b = torch.clamp((t.detach().cpu() * cfg.log.t_bins).long(), 0, cfg.log.t_bins - 1)
                acc["tbins"][0].index_add_(0, b, per.detach().cpu().double())
                acc["tbins"][1].index_add_(0, b, torch.ones_like(b, dtype=torch.float64))
            last_loss = lv

        # ---- after the optimizer step
        if (
            not engine.was_step_applied()
        ):  # non-finite gradient norm: DeepSpeed / the guard skipped it
            skipped_nonfinite += 1
        step += 1
        steps_here += 1
        steps_since_log += 1
        samples_seen += global_batch

        # ---- update EMA (full fp32 weights; collective in bf16 mode)
        if step % cfg.ema.every == 0 or step <= cfg.ema.start_step:
            ema.update(step, full_fp32_params(engine.module, env.precision))

        # ---- maintenance: logging, validation, images, checkpoints
        last = step >= cfg.max_steps
        if step % cfg.log.every == 0 or last:
            stats = torch.tensor([acc["loss"], acc["n"], acc["wait"]], dtype=torch.float64)
            tb = acc["tbins"].clone()
            all_reduce_sum(stats)
            all_reduce_sum(tb)
            now = time.perf_counter()
            dt = (now - t_last) / max(1, steps_since_log)
            data_skips = sum(worker_skips.values())
            if monitor:
                monitor.scalars(step, {
                    "train/loss": stats[0].item() / max(stats[1].item(), 1),
                    **{f"train/loss_t{i}": (tb[0, i] / tb[1, i]).item() for i in range(cfg.log.t_bins) if tb[1, i] > 0},
                    "train/lr": lr_at(cfg, step - 1), "train/grad_norm": grad_norm(engine),
                    "train/skipped_steps": float(skipped_nonfinite), "train/skipped_shards": float(data_skips),
                    "perf/step_time_s": dt, "perf/samples_per_s": global_batch / max(dt, 1e-9),
                    "perf/data_wait_frac": stats[2].item() / env.world_size / max(now - t_last, 1e-9),
                    "perf/max_rss_GiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                    **({"perf/cuda_max_alloc_GiB": torch.cuda.max_memory_allocated() / 2**30} if device.type == "cuda" else {}),
                    "progress/samples_seen": float(samples_seen),
                })  # fmt: skip
            acc = {
                "loss": 0.0,
                "n": 0,
                "wait": 0.0,
                "tbins": torch.zeros(2, cfg.log.t_bins, dtype=torch.float64),
            }
            t_last, steps_since_log = time.perf_counter(), 0
        if cfg.log.val_every and (step % cfg.log.val_every == 0 or last):
            vals = validate()
            if monitor and vals:
                monitor.scalars(step, vals, console=True)
        if (
            monitor
            and cfg.log.image_every
            and (step % cfg.log.image_every == 0 or last)
            and val_hi is not None
        ):
            monitor.images(step, engine.module, ema.model, val_hi[:1], val_keys[:1])
            t_last, steps_since_log, acc["wait"] = (
                time.perf_counter(),
                0,
                0.0,
            )  # keep image time out of step statistics
        if step % cfg.checkpoint.every == 0 or last:
            save_checkpoint()
            loader_iter = None  # the data stream restarts at every checkpoint (exact resume)
            t_last, steps_since_log, acc["wait"] = time.perf_counter(), 0, 0.0
        if cfg.debug.stop_after and steps_here >= cfg.debug.stop_after and not last:
            log.info(
                "debug.stop_after=%d reached at step %d: exiting without a final checkpoint",
                cfg.debug.stop_after,
                step,
            )
            break

    rank_steps = [step] * env.world_size
    if env.world_size > 1:
        torch.distributed.all_gather_object(
            rank_steps, step
        )  # every rank must have taken the same steps
    summary = {
        "step": step, "rank_steps": rank_steps, "samples_seen": samples_seen, "skipped_nonfinite": skipped_nonfinite,
        "skipped_shards": sum(worker_skips.values()), "world_size": env.world_size, "n_params": n_params,
        "resumed_from": resume.tag if resume else None, "resume_mode": mode, "last_loss": last_loss,
        "export": str(ckpt.resolve_export(run_dir)) if (run_dir / "export").is_dir() else None,
        "wall_s": time.perf_counter() - run_t0, "steps_this_run": step - run_steps0,
        "data_wait_s": run_wait,
    }  # fmt: skip
    if monitor:
        monitor.close()
        write_json_atomic(run_dir / "summary.json", summary)
    barrier()
    return summary


def config_from_checkpoint(run_dir: str | Path) -> TrainConfig:
    """The resolved config recorded with a run (its ``config.yaml`` or latest export)."""
    payload = ckpt.load_export(run_dir)
    return from_dict(TrainConfig, payload["config"])


def dump_summary(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2)
