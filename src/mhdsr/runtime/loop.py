"""The training loop shared by every trainer: one flat function, phases labelled top to bottom
(in the spirit of NVlabs/edm2's ``training_loop``).

What is trained is a :class:`Task` (the super-resolution flow in :mod:`mhdsr.train.task`, the
neural operator in :mod:`mhdsr.forecast.task`): it builds the model, streams batches, computes
the loss of one micro-batch, validates and draws panels. :func:`fit` holds everything else, in
the order it happens: process group and device, DeepSpeed engine, EMA, learning-rate schedule,
the optimizer steps, logging, validation, checkpoints. Resume and saving are
:mod:`mhdsr.runtime.checkpoint` (``resume_point``/``resume``, ``save``); FLOPs, throughput and
the run summary :class:`~mhdsr.runtime.monitor.Monitor`; fault injection for tests (``debug``)
the named hooks of :mod:`mhdsr.runtime.faults`.

Rerunning the same command resumes from the newest complete checkpoint in ``run_dir``. The same
function runs as a single process, under torchrun / the deepspeed launcher, or under srun /
submitit (see :mod:`mhdsr.runtime.distributed`).

Randomness is keyed, not stateful: the data stream by ``(seed, rank, worker, segment)`` (the
stream restarts at every checkpoint step), and the noise, times, crops, augmentation and dropout
of optimizer step ``s`` by ``(seed, rank, s, micro)``. So a run stopped at a checkpoint and
rerun produces the same weights as an uninterrupted run (fp32), and no RNG state must be
restored (the RNG states of every rank are still saved in the checkpoint for inspection).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from mhdsr import __version__
from mhdsr.config import to_yaml
from mhdsr.errors import CheckpointError, PeerFailedError
from mhdsr.io_utils import make_output_dir, write_json_atomic, write_text_atomic
from mhdsr.method.noise import seed_for
from mhdsr.runtime import checkpoint as ckpt
from mhdsr.runtime import faults
from mhdsr.runtime.config import TrainerConfig, check_paths
from mhdsr.runtime.distributed import (
    DistEnv,
    PeerWatch,
    barrier,
    failed_peers,
    mark_failed,
    setup,
)
from mhdsr.runtime.flops import meta_copy
from mhdsr.runtime.monitor import Monitor
from mhdsr.runtime.task import Task, TrainState

log = logging.getLogger("mhdsr.train")


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


def _set_threads(env: DistEnv, tf32: bool) -> None:
    """CPU threads per rank (the cores shared by the node's ranks); TF32 on CUDA."""
    from mhdsr.runtime.engine import set_tf32

    if env.device.type == "cpu":
        local_world = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if env.device.type == "cuda":
        set_tf32(tf32)


def _end_segment(state: TrainState, shutdown: bool = False) -> None:
    """Close the segment's batch iterator: its loader workers stop at once (unless persistent,
    :class:`mhdsr.dataset.stream.Loader`); ``shutdown`` also stops persistent ones."""
    it = state.batches
    if it is not None and hasattr(it, "close"):
        it.close()
    if shutdown and it is not None and hasattr(it, "shutdown"):
        state.batches = None
        it.shutdown()


@contextlib.contextmanager
def _failures(env: DistEnv, state: TrainState) -> Iterator[None]:
    """However training ends, the batch iterator is shut down and the peer watch stopped; an
    error on this rank becomes :class:`PeerFailedError` when another rank failed first."""
    watch = PeerWatch(env.rank, env.world_size).start()
    try:
        yield
    except Exception as e:
        _end_segment(state, shutdown=True)
        peer = _on_failure(env, state.step, e)
        if peer is None:
            raise
        raise peer from e
    finally:
        _end_segment(state, shutdown=True)
        watch.stop()


def _log_start(cfg: TrainerConfig, env: DistEnv, task: Task, point: Any, n_params: int) -> None:
    """The start-up lines: layout, resume point, task notes."""
    mode = point.mode if point else "fresh"
    log.info(
        "mhdsr %s | %s | world %d (%s) | %s %s | ZeRO-%d | model %.3fM params | global batch %d = %d micro x %d accum x %d ranks | %s",
        __version__, f"resume from {point.info.tag} ({mode})" if point else "fresh run", env.world_size, env.launcher,
        env.device, env.precision, cfg.engine.zero_stage, n_params / 1e6,
        cfg.data.micro_batch * cfg.optim.grad_accum * env.world_size, cfg.data.micro_batch,
        cfg.optim.grad_accum, env.world_size, task.describe(),
    )  # fmt: skip


def _log_resumed(cfg: TrainerConfig, state: TrainState, point: Any, env: DistEnv) -> None:
    if point is not None and point.mode == "export":
        log.info(
            "resumed at world size %d from exported weights of step %d (checkpoint had world size %d): optimizer state restarted",
            env.world_size, state.step, point.info.world_size,
        )  # fmt: skip
    if state.step >= cfg.max_steps:
        log.info(
            "step %d >= max_steps %d: nothing to train (raise max_steps to continue)",
            state.step, cfg.max_steps,
        )  # fmt: skip


def _every(step: int, n: int, last: bool) -> bool:
    return bool(n) and (step % n == 0 or last)


def fit(cfg: TrainerConfig, make_task: Callable[[Any, DistEnv], Task]) -> dict[str, Any]:
    """Train (or resume) ``make_task(cfg, env)`` according to ``cfg`` (a
    :class:`~mhdsr.runtime.config.TrainerConfig`); ``make_task`` builds the task once the
    process group exists (it reads and checks the shards before anything is written).

    Returns:
        The run summary (rank 0's view), also written to ``run_dir/summary.json``.

    Failure: a failing rank shuts its batch iterator down (its loader workers stop) and leaves
    its error in the process group's store; a rank that then fails in a collective reports
    :class:`PeerFailedError` naming the failed rank, one stuck in a collective is ended by its
    :class:`~mhdsr.runtime.distributed.PeerWatch`, and one waiting on a hung rank gives up
    after ``engine.dist_timeout_s``: an error ends every rank within a bounded time.

    Raises:
        ConfigError, ShardError, CheckpointError: bad settings, data or run folder (another
            trainer on ``run_dir`` included).
        PeerFailedError: another rank failed (the message names it and its error).
    """
    from mhdsr.runtime.ema import EMA, full_fp32_params
    from mhdsr.runtime.engine import build_engine, compile_engine, grad_norm, lr_at, set_lr

    # ------------------------------------------------------------------ setup
    check_paths(cfg)  # before DeepSpeed is imported: a wrong path is reported in seconds
    e = cfg.engine
    env = setup(e.device, e.backend, e.precision, e.dist_timeout_s)
    state, run_dir, device = TrainState(), Path(cfg.run_dir), env.device
    with _failures(env, state), contextlib.ExitStack() as held:
        task = make_task(cfg, env)  # reads and checks the data description
        if env.is_main:
            make_output_dir(run_dir, "run_dir")
            held.enter_context(ckpt.run_lock(run_dir))  # one trainer per run_dir
        barrier()
        _setup_logging(run_dir, env)
        _set_threads(env, e.tf32)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        model = task.build_model()
        n_params = sum(p.numel() for p in model.parameters())
        # model FLOPs per training sample, for the MFU (on a meta copy: seconds, no memory)
        count = getattr(task, "flops_per_sample", None)
        fps = float(count(model)) if count is not None else float("nan")

        # ------------------------------------------------------------------ resume
        point = ckpt.resume_point(cfg, task, env, model)  # None: a fresh run
        engine, ds_cfg = build_engine(cfg, model, env.world_size, env.precision, device)
        m = cfg.ema
        ema = EMA(model, decay=m.decay, start_step=m.start_step, warmup=m.warmup, every=m.every)
        ckpt.resume(point, cfg, task, engine, ema, state)
        ema.model.to(device)
        if e.compile:  # after the EMA copy: a copy of a compiled module runs the original
            compile_engine(engine)
        if env.is_main:
            write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))
            write_json_atomic(run_dir / "deepspeed_config.json", ds_cfg)
        _log_start(cfg, env, task, point, n_params)
        monitor = Monitor(
            cfg, run_dir, n_params, is_main=env.is_main, world_size=env.world_size,
            device=device, precision=env.precision, flops_per_sample=fps,
            flops_model=None if count is not None else meta_copy(model), step0=state.step,
        )  # fmt: skip
        if count is not None:
            monitor.log_flops()
        for note in task.notes:
            log.info("%s", note)
        _log_resumed(cfg, state, point, env)

        # ------------------------------------------------------------------ loop
        new_segment = True
        while state.step < cfg.max_steps:
            step = state.step
            if new_segment:  # the data stream restarts at every checkpoint (exact resume)
                state.batches, new_segment = task.batches(step), False
            set_lr(engine, lr_at(cfg, step))
            faults.before_step(cfg.debug, step, env.rank)
            for micro in range(cfg.optim.grad_accum):
                # ---- data
                batch = monitor.next_batch(state.batches)
                if "worker" in batch:
                    state.worker_skips[batch["worker"]] = batch["skipped"]
                # ---- loss: all randomness keyed by (seed, rank, step, micro); overfit mode
                # repeats ONE fixed batch (same crops, noise and t every step)
                key = 0 if task.overfit else step
                gen = torch.Generator().manual_seed(seed_for(cfg.seed, env.rank, key, micro))
                torch.manual_seed(seed_for(cfg.seed, env.rank, key, micro, 1))  # dropout
                x = batch["x"].to(device, non_blocking=True)
                with monitor.count_flops(engine, micro, len(batch["x"])):
                    loss, per, t = task.loss(engine, x, gen)
                loss = faults.loss(cfg.debug, step, env.is_main, loss)
                # ---- step
                with faults.backward(cfg.debug, step, env.is_main, engine.module):
                    engine.backward(loss)
                engine.step()
                monitor.add_loss(float(loss.detach()), per, t)
            if not engine.was_step_applied():  # non-finite gradient norm: skipped
                state.skipped_nonfinite += 1
            state.step += 1
            step = state.step
            state.samples_seen += monitor.global_batch
            monitor.step_done()

            # ---- EMA (full fp32 weights; collective in bf16 mode)
            if step % cfg.ema.every == 0 or step <= cfg.ema.start_step:
                ema.update(step, full_fp32_params(engine.module, env.precision))

            # ---- log (collective)
            last = step >= cfg.max_steps
            if _every(step, cfg.log.every, last):
                lr = lr_at(cfg, step - 1)
                state.last_loss = monitor.log_train(step, state, lr, grad_norm(engine))

            # ---- validate (collective), then panels (main rank)
            if _every(step, cfg.log.val_every, last):
                engine.module.eval()
                vals = task.validate(engine.module, ema.model)
                engine.module.train()
                if env.is_main and vals:
                    monitor.scalars(step, vals)
            if env.is_main and _every(step, cfg.log.image_every, last):
                was = engine.module.training
                engine.module.eval()
                extra = task.images(step, engine.module, ema.model, monitor)
                engine.module.train(was)
                if extra:
                    monitor.scalars(step, extra)
                monitor.restart_clock()

            # ---- save (collective): checkpoint + export; the segment ends
            if _every(step, cfg.checkpoint.every, last):
                ckpt.save(cfg, task, env, engine, ema, state)
                _end_segment(state)
                new_segment = True
                monitor.restart_clock()
            if faults.stop_now(cfg.debug, monitor.steps_here, step, last):
                break

        # ------------------------------------------------------------------ summary
        summary = monitor.summary(
            state, n_params, point.info.tag if point else None, point.mode if point else "fresh"
        )
        if (run_dir / "export").is_dir():
            from mhdsr.model.export import resolve_export

            with contextlib.suppress(CheckpointError):
                summary["export"] = str(resolve_export(run_dir))
        if env.is_main:
            monitor.close()
            write_json_atomic(run_dir / "summary.json", summary)
        barrier()
    return summary


def _on_failure(env: DistEnv, step: int, e: Exception) -> PeerFailedError | None:
    """After an error on this rank: when another rank reported a failure first, the error to
    raise instead (this rank's error is then a consequence); else None, after leaving this
    rank's error in the store for the others (:func:`mhdsr.runtime.distributed.mark_failed`)."""
    if env.world_size <= 1:
        return None
    first = (str(e).strip().splitlines() or [""])[0][:500]
    peers = failed_peers(env.rank, env.world_size)
    if peers:
        r = min(peers)
        return PeerFailedError(
            f"rank {r} failed ({peers[r]}); rank {env.rank} stopped waiting for it at step "
            f"{step} ({type(e).__name__}: {first})"
        )
    msg = f"at step {step}: {type(e).__name__}: {first}"
    mark_failed(env.rank, msg)
    log.error("rank %d failed %s", env.rank, msg)
    return None
