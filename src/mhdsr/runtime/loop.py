"""The training loop shared by every trainer: one flat function, phases labelled top to bottom
(in the spirit of NVlabs/edm2's ``training_loop``).

What is trained is a :class:`Task` (the super-resolution flow in :mod:`mhdsr.train.task`, the
neural operator in :mod:`mhdsr.forecast.task`): it builds the model, streams batches, computes
the loss of one micro-batch, validates and draws panels. Everything else is here, once: process
group and device, DeepSpeed engine, EMA, learning-rate schedule, checkpoints and exports,
resume, logging, fault injection.

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
import math
import os
import random
import resource
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from mhdsr import __version__
from mhdsr.config import to_dict, to_yaml
from mhdsr.errors import CheckpointError, ConfigError, PeerFailedError
from mhdsr.io_utils import make_output_dir, path_inside, write_json_atomic, write_text_atomic
from mhdsr.method.noise import seed_for
from mhdsr.runtime import checkpoint as ckpt
from mhdsr.runtime.config import check_paths
from mhdsr.runtime.distributed import (
    DistEnv,
    PeerWatch,
    all_reduce_sum,
    barrier,
    failed_peers,
    mark_failed,
    setup,
)
from mhdsr.runtime.flops import CallRecorder, device_peak, meta_copy, mfu
from mhdsr.runtime.monitor import Monitor

log = logging.getLogger("mhdsr.train")


class Task(Protocol):
    """What a trainer plugs into :func:`fit` (see :class:`mhdsr.train.task.SRTask`).

    Attributes:
        frozen_keys: top-level config keys that define the model; resuming a run whose stored
            config differs in one of them is refused.
        normalization: ``{"mean": [...], "std": [...], ...}`` recorded with every checkpoint and
            export; resuming on data with other statistics is refused.
        manifest_sha256: hash of the training shards' manifest (recorded).
        overfit: one fixed batch every step (the "overfit one batch" sanity check).
        notes: lines for the run log, logged once logging is set up (e.g. which sample the
            overfit mode uses).
    """

    frozen_keys: tuple[str, ...]
    normalization: dict[str, list[float]]
    manifest_sha256: str
    overfit: bool
    notes: list[str]

    def build_model(self) -> nn.Module:
        """A fresh model (called after ``torch.manual_seed(cfg.seed)`` on every rank)."""

    def batches(self, segment: int) -> Iterator[dict[str, Any]]:
        """The rank's infinite batch stream restarted at optimizer step ``segment``; each batch
        holds ``"x"`` (a tensor) and, from a shard stream, ``"worker"`` and ``"skipped"``."""

    def loss(
        self, model: Callable[..., Tensor], x: Tensor, gen: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(loss, per_sample (B,), t (B,) or None)`` of one micro-batch ``x`` on the device;
        all randomness from ``gen`` (keyed by step and micro-step)."""

    def validate(self, model: nn.Module, ema_model: nn.Module) -> dict[str, float]:
        """Validation scalars of the raw and EMA weights (collective: every rank calls it)."""

    def images(
        self, step: int, model: nn.Module, ema_model: nn.Module, monitor: Monitor
    ) -> dict[str, float]:
        """Draw TensorBoard panels with ``monitor.figure`` (main rank only); returns extra
        scalars to log."""

    def export_fields(self) -> dict[str, Any]:
        """Payload entries of the export beyond weights and step (model config, channels,
        normalization, method, ...): everything inference needs."""

    def describe(self) -> str:
        """One phrase for the start-up log line (e.g. the channels)."""

    # Optional: ``flops_per_sample(model) -> float``, the model FLOPs of one training sample
    # (forward + backward, :func:`mhdsr.runtime.flops.training_flops` at the training input
    # size), counted once at start-up for the MFU. A task without it is counted generically:
    # every model call of the first micro-step is recorded (:class:`~mhdsr.runtime.flops.CallRecorder`)
    # and counted on a meta copy of the model.


@dataclass
class TrainState:
    """Everything that changes while training (saved with each checkpoint)."""

    step: int = 0
    samples_seen: int = 0
    skipped_nonfinite: int = 0
    last_loss: float = float("nan")
    worker_skips: dict[int, int] = field(default_factory=dict)

    @property
    def skipped_shards(self) -> int:
        return sum(self.worker_skips.values())


@dataclass
class _Window:
    """Running sums between two log lines."""

    t_bins: int
    loss: float = 0.0
    n: int = 0
    wait: float = 0.0
    steps: int = 0
    t0: float = field(default_factory=time.perf_counter)
    tbins: Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.tbins = torch.zeros(2, self.t_bins, dtype=torch.float64)

    def add(self, lv: float, per: Tensor, t: Tensor | None) -> None:
        if not math.isfinite(lv):
            return
        self.loss += lv
        self.n += 1
        if t is not None:
            b = torch.clamp((t.detach().cpu() * self.t_bins).long(), 0, self.t_bins - 1)
            self.tbins[0].index_add_(0, b, per.detach().cpu().double())
            self.tbins[1].index_add_(0, b, torch.ones_like(b, dtype=torch.float64))

    def restart_clock(self) -> None:
        """Keep panels and checkpoint saves out of the step-time statistics."""
        self.t0, self.steps, self.wait = time.perf_counter(), 0, 0.0


def _log_flops(flops_per_sample: float, peak: float, source: str) -> None:
    """The start-up line of the MFU inputs."""
    log.info(
        "model FLOPs %.4g GFLOP per training sample (forward + backward, FlopCounterMode) | "
        "peak %.4g TFLOP/s per device (%s)",
        flops_per_sample / 1e9, peak / 1e12, source,
    )  # fmt: skip


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


def check_frozen(cfg: Any, stored: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Refuse to resume when a setting that defines the model changed.

    Raises:
        ConfigError: naming every differing key (``model.width: 8 -> 12``).
    """
    now = to_dict(cfg)
    diff = [d for k in keys for d in _leaf_diff(stored.get(k), now.get(k), k)]
    if diff:
        raise ConfigError(
            f"run_dir {cfg.run_dir} holds a checkpoint trained with different settings ({'; '.join(diff)}); "
            "use a new run_dir or restore the original settings"
        )


def check_normalization(
    cfg: Any, stored: dict[str, Any] | None, now: dict[str, Any], msha: str, stored_sha: str | None
) -> None:
    """The data normalization is part of the model: resuming on shards whose train statistics
    differ would silently change what the network sees. Same statistics but another manifest
    (e.g. rebuilt shards) is allowed with a warning.

    Raises:
        ConfigError: the statistics differ.
    """
    if stored is None:
        return
    for k, v in now.items():
        if k in stored and not np.allclose(stored[k], v, rtol=1e-9, atol=0):
            raise ConfigError(
                f"shards={cfg.shards}: the train statistics (normalization {k}) differ from those the "
                f"checkpoint in {cfg.run_dir} was trained with ({stored[k]} -> {list(map(float, v))}); "
                "resume with the original shards or start a new run_dir"
            )
    if stored_sha and stored_sha != msha:
        log.warning(
            "shards=%s: manifest differs from the checkpoint's (same normalization): continuing",
            cfg.shards,
        )


def fit(cfg: Any, make_task: Callable[[Any, DistEnv], Task]) -> dict[str, Any]:
    """Train (or resume) ``make_task(cfg, env)`` according to ``cfg``.

    Args:
        cfg: a training config with the shared sections of :mod:`mhdsr.runtime.config`
            (``optim``, ``engine``, ``ema``, ``checkpoint``, ``log``, ``debug``) and ``run_dir``,
            ``shards``, ``max_steps``, ``seed``, ``data.micro_batch``.
        make_task: builds the task once the process group exists (it reads the shards'
            description and checks them before anything is written to ``run_dir``).

    Returns:
        The run summary (rank 0's view), also written to ``run_dir/summary.json``.

    Failure: whatever goes wrong on one rank, that rank stops its loader workers (the batch
    stream is closed in a ``finally``) and leaves its error in the process group's store before
    it exits; a rank that then fails in a collective reports :class:`PeerFailedError` naming
    the failed rank instead of its own symptom, one still stuck in a collective is ended by its
    :class:`~mhdsr.runtime.distributed.PeerWatch` thread with that message, and a rank that
    waits on a hung (not failed) one gives up after ``engine.dist_timeout_s``. So an error
    ends every rank within a bounded time.

    Raises:
        ConfigError, ShardError, CheckpointError: bad settings, data or run folder.
        PeerFailedError: another rank failed (the message names it and its error).
    """
    check_paths(cfg)  # before DeepSpeed is imported: a wrong path is reported in seconds
    env = setup(
        cfg.engine.device, cfg.engine.backend, cfg.engine.precision, cfg.engine.dist_timeout_s
    )
    state, stream = TrainState(), _BatchStream()
    watch = PeerWatch(env.rank, env.world_size).start()
    try:
        return _fit(cfg, make_task, env, state, stream)
    except Exception as e:
        stream.shutdown()
        peer = _on_failure(env, state.step, e)
        if peer is None:
            raise
        raise peer from e
    finally:
        stream.shutdown()
        watch.stop()


class _BatchStream:
    """The task's open batch iterator. :meth:`close` closes it at the end of a segment, which
    stops its loader workers (:class:`mhdsr.dataset.stream.Loader`) at once, without waiting for
    garbage collection, unless they are persistent; :meth:`shutdown` (however training ends)
    also stops persistent workers (the ``shutdown()`` of the last iterator that had one)."""

    def __init__(self) -> None:
        self.it: Iterator[dict[str, Any]] | None = None
        self._shutdown: Callable[[], None] | None = None

    def open(self, it: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        self.close()
        self.it = it
        self._shutdown = getattr(it, "shutdown", self._shutdown)
        return it

    def close(self) -> None:
        it, self.it = self.it, None
        if it is not None and hasattr(it, "close"):
            it.close()

    def shutdown(self) -> None:
        self.close()
        fn, self._shutdown = self._shutdown, None
        if fn is not None:
            fn()


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


def _fit(
    cfg: Any,
    make_task: Callable[[Any, DistEnv], Task],
    env: DistEnv,
    state: TrainState,
    stream: _BatchStream,
) -> dict[str, Any]:
    """:func:`fit` once the process group exists; ``state`` is filled in as training goes and
    the batch iterator is held by ``stream`` (closed by :func:`fit`, however it ends)."""
    # ------------------------------------------------------------------ processes and devices
    from mhdsr.runtime.ema import EMA, full_fp32_params
    from mhdsr.runtime.engine import (
        build_engine,
        compile_engine,
        grad_norm,
        lr_at,
        set_lr,
        set_tf32,
    )

    task = make_task(cfg, env)  # reads and checks the data description
    run_dir = Path(cfg.run_dir)
    if env.is_main:
        make_output_dir(run_dir, "run_dir")
    barrier()
    _setup_logging(run_dir, env)
    device = env.device
    if device.type == "cpu":
        local_world = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if device.type == "cuda":
        set_tf32(cfg.engine.tf32)

    # ------------------------------------------------------------------ model and resume point
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = task.build_model()
    n_params = sum(p.numel() for p in model.parameters())
    # model FLOPs per training sample, for the MFU (counted on a meta copy: seconds, no memory)
    count_flops = getattr(task, "flops_per_sample", None)
    flops_per_sample = float(count_flops(model)) if count_flops is not None else float("nan")
    flops_model = None if count_flops is not None else meta_copy(model)  # counted at step 1
    resume = ckpt.find_latest(run_dir)
    mode, export_payload = "fresh", None
    if resume is not None:
        if resume.config is not None:
            check_frozen(cfg, resume.config, task.frozen_keys)
        check_normalization(
            cfg,
            resume.normalization,
            task.normalization,
            task.manifest_sha256,
            resume.manifest_sha256,
        )
        same_layout = (resume.world_size, resume.zero_stage, resume.precision) == (
            env.world_size,
            cfg.engine.zero_stage,
            env.precision,
        )
        if same_layout:
            mode = "deepspeed"
        else:
            # ZeRO optimizer partitions do not load at another world size: restart the optimizer
            # from the exported raw + EMA weights of the same step (stated in the log).
            if not resume.export:
                raise CheckpointError(
                    f"{resume.path}: no export recorded; cannot resume at world size {env.world_size}"
                )
            from mhdsr.model.export import load_export

            where = f"{resume.path / 'meta.json'}: key 'export'"
            export_payload = load_export(
                path_inside(run_dir / "export", resume.export, where, CheckpointError)
            )
            check_frozen(cfg, export_payload["config"], task.frozen_keys)
            model.load_state_dict(export_payload["raw"])
            mode = "export"
    engine, ds_cfg = build_engine(cfg, model, env.world_size, env.precision, device)
    e = cfg.ema
    ema = EMA(model, decay=e.decay, start_step=e.start_step, warmup=e.warmup, every=e.every)
    if mode == "deepspeed":
        _, client = engine.load_checkpoint(
            str(run_dir / "checkpoints"),
            tag=resume.tag,
            load_optimizer_states=True,
            load_lr_scheduler_states=False,
        )
        if client is None:
            raise CheckpointError(f"{resume.path}: DeepSpeed could not load this checkpoint")
        check_frozen(cfg, client["config"], task.frozen_keys)
        state.step, state.samples_seen = int(client["step"]), int(client["samples_seen"])
        state.skipped_nonfinite = int(client.get("skipped_nonfinite", 0))
        ema.load_state_dict(client["ema"])
        engine.skipped_steps = int(client.get("skipped_steps", engine.skipped_steps))
    elif mode == "export":
        state.step, state.samples_seen = (
            int(export_payload["step"]),
            int(export_payload["samples_seen"]),
        )
        ema.load_state_dict(
            {"weights": export_payload["ema"], "updates": export_payload["ema_updates"]}
        )
    ema.model.to(device)
    if cfg.engine.compile:  # after the EMA copy: a copy of a compiled module runs the original
        compile_engine(engine)
    peak = device_peak(device, env.precision, cfg.engine.peak_tflops, cfg.engine.tf32)
    global_batch = cfg.data.micro_batch * cfg.optim.grad_accum * env.world_size

    # ------------------------------------------------------------------ record the run
    if env.is_main:
        write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))
        write_json_atomic(run_dir / "deepspeed_config.json", ds_cfg)
    log.info(
        "mhdsr %s | %s | world %d (%s) | %s %s | ZeRO-%d | model %.3fM params | global batch %d = %d micro x %d accum x %d ranks | %s",
        __version__, f"resume from {resume.tag} ({mode})" if resume else "fresh run", env.world_size, env.launcher,
        device, env.precision, cfg.engine.zero_stage, n_params / 1e6, global_batch, cfg.data.micro_batch,
        cfg.optim.grad_accum, env.world_size, task.describe(),
    )  # fmt: skip
    if mode == "export":
        log.info(
            "resumed at world size %d from exported weights of step %d (checkpoint had world size %d): optimizer state restarted",
            env.world_size, state.step, resume.world_size,
        )  # fmt: skip
    if flops_model is None:
        _log_flops(flops_per_sample, peak.flops, peak.source)
    for note in task.notes:
        log.info("%s", note)
    if state.step >= cfg.max_steps:
        log.info(
            "step %d >= max_steps %d: nothing to train (raise max_steps to continue)",
            state.step, cfg.max_steps,
        )  # fmt: skip
    monitor = Monitor(cfg, run_dir, n_params) if env.is_main else None

    def save_checkpoint() -> None:
        """Collective: DeepSpeed checkpoint (+ client state) and the plain-weights export, both
        built from ``state`` here and nowhere else. Order: the export file (refused if it holds
        NaN/inf), then the checkpoint, which moves ``checkpoints/latest`` once complete, then
        ``export/latest``: both pointers name the same complete step, and a job killed in
        between resumes from the previous checkpoint with the previous export."""
        from mhdsr.model.export import FORMAT, export_name, publish_export, write_export

        raw = full_fp32_params(engine.module, env.precision)  # collective in bf16
        rng = [None] * env.world_size
        if env.world_size > 1:
            torch.distributed.all_gather_object(rng, _rng_states())
        else:
            rng = [_rng_states()]
        common = {
            "config": to_dict(cfg),
            "manifest_sha256": task.manifest_sha256,
            "version": __version__,
        }
        name = export_name(state.step)
        if env.is_main:
            write_export(run_dir, state.step, {
                "format": FORMAT, "step": state.step, "samples_seen": state.samples_seen,
                "raw": {k: v.detach().cpu().clone() for k, v in raw.items()},
                "ema": ema.state_dict()["weights"], "ema_updates": ema.updates,
                **task.export_fields(), **common,
            })  # fmt: skip
        client = {
            "step": state.step, "samples_seen": state.samples_seen,
            "skipped_nonfinite": state.skipped_nonfinite, "skipped_steps": int(engine.skipped_steps),
            "ema": ema.state_dict(), "rng": rng, **common,
        }  # fmt: skip
        meta = {
            "world_size": env.world_size, "zero_stage": cfg.engine.zero_stage, "precision": env.precision,
            "samples_seen": state.samples_seen, "export": name, "time": time.time(),
            "normalization": task.normalization, **common,
        }  # fmt: skip
        ckpt.save(engine, run_dir, state.step, client, meta, cfg.checkpoint.keep, env.is_main)
        if env.is_main:
            publish_export(run_dir, state.step, cfg.checkpoint.keep)
        log.info("checkpoint %s saved (export %s)", ckpt.tag_for(state.step), name)

    # ------------------------------------------------------------------ main loop
    batches: Iterator[dict[str, Any]] | None = None
    window = _Window(cfg.log.t_bins)
    steps_here, run_wait, run_t0, run_steps0 = 0, 0.0, time.perf_counter(), state.step
    timed = {"s": 0.0, "steps": 0, "wait_s": 0.0}  # the log windows' step time over the run
    recorder: CallRecorder | None = None
    while state.step < cfg.max_steps:
        step = state.step
        if batches is None:
            batches = stream.open(task.batches(step))
        set_lr(engine, lr_at(cfg, step))
        if (
            cfg.debug.raise_at_step
            and step == cfg.debug.raise_at_step
            and cfg.debug.raise_on_rank in (-1, env.rank)
        ):
            raise RuntimeError(f"debug.raise_at_step={step}: injected failure on rank {env.rank}")

        # ---- accumulate gradients over micro-batches
        for micro in range(cfg.optim.grad_accum):
            t0 = time.perf_counter()
            batch = next(batches)
            if "worker" in batch:
                state.worker_skips[batch["worker"]] = batch["skipped"]
            wait = time.perf_counter() - t0
            window.wait += wait
            run_wait += wait
            # overfit mode repeats ONE fixed batch (same crops, noise and t every step): the
            # classic "overfit a single batch" check that the whole path can fit to ~0
            key = 0 if task.overfit else step
            gen = torch.Generator().manual_seed(seed_for(cfg.seed, env.rank, key, micro))
            torch.manual_seed(seed_for(cfg.seed, env.rank, key, micro, 1))  # dropout
            if flops_model is not None and micro == 0:  # generic FLOP count: the first micro-step
                recorder = CallRecorder(engine)
            loss, per, t = task.loss(engine, batch["x"].to(device, non_blocking=True), gen)
            if recorder is not None:
                recorder.stop()
                flops_per_sample = recorder.training_flops(flops_model) / max(1, len(batch["x"]))
                flops_model = recorder = None
                _log_flops(flops_per_sample, peak.flops, peak.source)
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
            window.add(float(loss.detach()), per, t)

        # ---- after the optimizer step
        if (
            not engine.was_step_applied()
        ):  # non-finite gradient norm: DeepSpeed / the guard skipped it
            state.skipped_nonfinite += 1
        state.step += 1
        step = state.step
        steps_here += 1
        window.steps += 1
        state.samples_seen += global_batch

        # ---- update EMA (full fp32 weights; collective in bf16 mode)
        if step % cfg.ema.every == 0 or step <= cfg.ema.start_step:
            ema.update(step, full_fp32_params(engine.module, env.precision))

        # ---- maintenance: logging, validation, panels, checkpoints
        last = step >= cfg.max_steps
        if step % cfg.log.every == 0 or last:
            stats = torch.tensor([window.loss, window.n, window.wait], dtype=torch.float64)
            tb = window.tbins.clone()
            all_reduce_sum(stats)
            all_reduce_sum(tb)
            now = time.perf_counter()
            dt = (now - window.t0) / max(1, window.steps)
            timed["s"] += now - window.t0
            timed["steps"] += window.steps
            timed["wait_s"] += stats[2].item() / env.world_size
            per_device = global_batch / max(dt, 1e-9) / env.world_size  # samples/s per device
            # the mean over ranks and micro-batches since the last line: what the console shows
            state.last_loss = stats[0].item() / stats[1].item() if stats[1].item() else float("nan")
            if monitor:
                monitor.scalars(step, {
                    "train/loss": state.last_loss,
                    **{f"train/loss_t{i}": (tb[0, i] / tb[1, i]).item() for i in range(cfg.log.t_bins) if tb[1, i] > 0},
                    "train/lr": lr_at(cfg, step - 1), "train/grad_norm": grad_norm(engine),
                    "train/skipped_steps": float(state.skipped_nonfinite), "train/skipped_shards": float(state.skipped_shards),
                    "perf/step_time_s": dt, "perf/samples_per_s": global_batch / max(dt, 1e-9),
                    "perf/tflops_per_device": flops_per_sample * per_device / 1e12,
                    "perf/mfu": mfu(flops_per_sample, per_device, peak.flops),
                    "perf/data_wait_frac": stats[2].item() / env.world_size / max(now - window.t0, 1e-9),
                    "perf/max_rss_GiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                    **({"perf/cuda_max_alloc_GiB": torch.cuda.max_memory_allocated() / 2**30} if device.type == "cuda" else {}),
                    "progress/samples_seen": float(state.samples_seen),
                })  # fmt: skip
            window = _Window(cfg.log.t_bins)
        if cfg.log.val_every and (step % cfg.log.val_every == 0 or last):
            engine.module.eval()
            vals = task.validate(engine.module, ema.model)
            engine.module.train()
            if monitor and vals:
                monitor.scalars(step, vals)
        if monitor and cfg.log.image_every and (step % cfg.log.image_every == 0 or last):
            was = engine.module.training
            engine.module.eval()
            extra = task.images(step, engine.module, ema.model, monitor)
            engine.module.train(was)
            if extra:
                monitor.scalars(step, extra)
            window.restart_clock()
        if step % cfg.checkpoint.every == 0 or last:
            save_checkpoint()
            stream.close()  # the data stream restarts at every checkpoint (exact resume)
            batches = None
            window.restart_clock()
        if cfg.debug.stop_after and steps_here >= cfg.debug.stop_after and not last:
            log.info(
                "debug.stop_after=%d reached at step %d: exiting without a final checkpoint",
                cfg.debug.stop_after, step,
            )  # fmt: skip
            break

    # ------------------------------------------------------------------ summary
    rank_steps = [state.step] * env.world_size
    if env.world_size > 1:  # every rank must have taken the same steps
        torch.distributed.all_gather_object(rank_steps, state.step)
    run_sps = global_batch * timed["steps"] / timed["s"] if timed["s"] > 0 else float("nan")
    run_mfu = mfu(flops_per_sample, run_sps / env.world_size, peak.flops)

    def finite(x: float) -> float | None:
        return x if math.isfinite(x) else None

    summary = {
        "step": state.step, "rank_steps": rank_steps, "samples_seen": state.samples_seen,
        "skipped_nonfinite": state.skipped_nonfinite, "skipped_shards": state.skipped_shards,
        "world_size": env.world_size, "n_params": n_params,
        "resumed_from": resume.tag if resume else None, "resume_mode": mode, "last_loss": state.last_loss,
        "export": None, "wall_s": time.perf_counter() - run_t0, "steps_this_run": state.step - run_steps0,
        "data_wait_s": run_wait,
        # throughput over the logged windows of this run (checkpoints and panels excluded)
        "perf": {
            "timed_steps": timed["steps"], "samples_per_s": finite(run_sps),
            "step_time_s": finite(timed["s"] / timed["steps"]) if timed["steps"] else None,
            "data_wait_frac": timed["wait_s"] / timed["s"] if timed["s"] > 0 else None,
            "flops_per_sample": finite(flops_per_sample),
            "tflops_per_device": finite(flops_per_sample * run_sps / env.world_size / 1e12),
            "peak_tflops_per_device": finite(peak.flops / 1e12), "peak_source": peak.source,
            "mfu": finite(run_mfu),
        },
    }  # fmt: skip
    if (run_dir / "export").is_dir():
        from mhdsr.model.export import resolve_export

        with contextlib.suppress(CheckpointError):
            summary["export"] = str(resolve_export(run_dir))
    if monitor:
        monitor.close()
        write_json_atomic(run_dir / "summary.json", summary)
    barrier()
    return summary
