"""Monitoring of a training run: console lines, ``log.txt``, TensorBoard, and the run's FLOPs,
throughput and summary, in one object (:class:`Monitor`, one per rank; only the main rank
writes).

The trainer (:func:`mhdsr.runtime.loop.fit`) hands it each batch wait, micro-batch loss and
optimizer step; it logs the scalars every ``log.every`` steps (a collective) and builds the run
summary. A task draws its own figures (sample panels, spectra) and hands them to
:meth:`Monitor.figure`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from mhdsr.runtime.config import TrainerConfig

log = logging.getLogger("mhdsr.train")


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


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


class Monitor:
    """Console + TensorBoard writer (main rank) and the FLOP / throughput bookkeeping (every
    rank: the log line's sums are all-reduced).

    Args:
        cfg: the training config (``log``, ``max_steps``, ``engine``, ``data.micro_batch``,
            ``optim.grad_accum``).
        run_dir: the run folder (TensorBoard events go to ``run_dir/tb``; the resolved
            ``config.yaml`` there is recorded as text).
        n_params: model parameter count (recorded).
        is_main: this rank writes (console lines, TensorBoard, summary).
        world_size, device, precision: the run's layout (throughput per device, peak).
        flops_per_sample: model FLOPs of one training sample (NaN: counted generically from
            the first micro-step's model calls, on ``flops_model``).
        flops_model: a meta copy of the model for the generic count, or None.
        step0: the step this process starts at.
    """

    def __init__(
        self,
        cfg: TrainerConfig,
        run_dir: Path,
        n_params: int,
        *,
        is_main: bool = True,
        world_size: int = 1,
        device: torch.device | None = None,
        precision: str = "fp32",
        flops_per_sample: float = float("nan"),
        flops_model: Any = None,
        step0: int = 0,
    ) -> None:
        from mhdsr.runtime.flops import device_peak

        self.cfg = cfg
        self.is_main = is_main
        self.world_size = world_size
        self.device = device or torch.device("cpu")
        self.global_batch = cfg.data.micro_batch * cfg.optim.grad_accum * world_size
        self.flops_per_sample = flops_per_sample
        self.flops_model = flops_model
        self.peak = device_peak(self.device, precision, cfg.engine.peak_tflops, cfg.engine.tf32)
        self.window = _Window(cfg.log.t_bins)
        self.steps_here, self.run_wait, self.run_t0, self.step0 = 0, 0.0, time.perf_counter(), step0
        self.timed = {"s": 0.0, "steps": 0, "wait_s": 0.0}  # the log windows' time over the run
        self.writer = None
        if is_main and cfg.log.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"))
            self.writer.add_text(
                "config", "```\n" + (run_dir / "config.yaml").read_text() + "\n```", 0
            )
            self.writer.add_scalar("model/params_M", n_params / 1e6, 0)

    # ------------------------------------------------------------------ FLOPs and throughput

    def log_flops(self) -> None:
        """The start-up line of the MFU inputs (once the FLOPs per sample are known)."""
        log.info(
            "model FLOPs %.4g GFLOP per training sample (forward + backward, FlopCounterMode) | "
            "peak %.4g TFLOP/s per device (%s)",
            self.flops_per_sample / 1e9, self.peak.flops / 1e12, self.peak.source,
        )  # fmt: skip

    def next_batch(self, batches: Iterator[dict[str, Any]]) -> dict[str, Any]:
        """``next(batches)``, timed as data wait."""
        t0 = time.perf_counter()
        batch = next(batches)
        wait = time.perf_counter() - t0
        self.window.wait += wait
        self.run_wait += wait
        return batch

    @contextlib.contextmanager
    def count_flops(self, engine: Any, micro: int, n: int) -> Iterator[None]:
        """Around a micro-step's loss: the generic FLOP count records the model calls of the
        first micro-step of the run (``n`` samples), then never again."""
        if self.flops_model is None or micro != 0:
            yield
            return
        from mhdsr.runtime.flops import CallRecorder

        recorder = CallRecorder(engine)
        try:
            yield
        finally:
            recorder.stop()
        self.flops_per_sample = recorder.training_flops(self.flops_model) / max(1, n)
        self.flops_model = None
        self.log_flops()

    def add_loss(self, loss: float, per: Tensor, t: Tensor | None) -> None:
        """One micro-batch's loss (``per``-sample losses at times ``t`` for the t-bins)."""
        self.window.add(loss, per, t)

    def step_done(self) -> None:
        self.steps_here += 1
        self.window.steps += 1

    def restart_clock(self) -> None:
        """Keep panels and checkpoint saves out of the step-time statistics."""
        w = self.window
        w.t0, w.steps, w.wait = time.perf_counter(), 0, 0.0

    def log_train(self, step: int, state: Any, lr: float, grad_norm: float) -> float:
        """Collective: the training line of the window since the last one (mean loss over
        ranks and micro-batches, per-t-bin loss, lr, throughput, MFU, memory); starts a new
        window. Returns the mean loss."""
        from mhdsr.runtime.distributed import all_reduce_sum
        from mhdsr.runtime.flops import mfu

        w, ws, fps = self.window, self.world_size, self.flops_per_sample
        stats = torch.tensor([w.loss, w.n, w.wait], dtype=torch.float64)
        tb = w.tbins.clone()
        all_reduce_sum(stats)
        all_reduce_sum(tb)
        now = time.perf_counter()
        dt = (now - w.t0) / max(1, w.steps)
        self.timed["s"] += now - w.t0
        self.timed["steps"] += w.steps
        self.timed["wait_s"] += stats[2].item() / ws
        per_device = self.global_batch / max(dt, 1e-9) / ws  # samples/s per device
        loss = stats[0].item() / stats[1].item() if stats[1].item() else float("nan")
        if self.is_main:
            self.scalars(step, {
                "train/loss": loss,
                **{f"train/loss_t{i}": (tb[0, i] / tb[1, i]).item() for i in range(w.t_bins) if tb[1, i] > 0},
                "train/lr": lr, "train/grad_norm": grad_norm,
                "train/skipped_steps": float(state.skipped_nonfinite), "train/skipped_shards": float(state.skipped_shards),
                "perf/step_time_s": dt, "perf/samples_per_s": self.global_batch / max(dt, 1e-9),
                "perf/tflops_per_device": fps * per_device / 1e12,
                "perf/mfu": mfu(fps, per_device, self.peak.flops),
                "perf/data_wait_frac": stats[2].item() / ws / max(now - w.t0, 1e-9),
                "perf/max_rss_GiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                **({"perf/cuda_max_alloc_GiB": torch.cuda.max_memory_allocated() / 2**30} if self.device.type == "cuda" else {}),
                "progress/samples_seen": float(state.samples_seen),
            })  # fmt: skip
        self.window = _Window(w.t_bins)
        return loss

    def summary(
        self, state: Any, n_params: int, resumed_from: str | None, mode: str
    ) -> dict[str, Any]:
        """Collective: the run summary (every rank's step is gathered)."""
        from mhdsr.runtime.flops import mfu

        ws, fps, timed, peak = self.world_size, self.flops_per_sample, self.timed, self.peak
        rank_steps = [state.step] * ws
        if ws > 1:  # every rank must have taken the same steps
            torch.distributed.all_gather_object(rank_steps, state.step)
        sps = self.global_batch * timed["steps"] / timed["s"] if timed["s"] > 0 else float("nan")
        return {
            "step": state.step, "rank_steps": rank_steps, "samples_seen": state.samples_seen,
            "skipped_nonfinite": state.skipped_nonfinite, "skipped_shards": state.skipped_shards,
            "world_size": ws, "n_params": n_params,
            "resumed_from": resumed_from, "resume_mode": mode, "last_loss": state.last_loss,
            "export": None, "wall_s": time.perf_counter() - self.run_t0, "steps_this_run": state.step - self.step0,
            "data_wait_s": self.run_wait,
            # throughput over the logged windows of this run (checkpoints and panels excluded)
            "perf": {
                "timed_steps": timed["steps"], "samples_per_s": _finite(sps),
                "step_time_s": _finite(timed["s"] / timed["steps"]) if timed["steps"] else None,
                "data_wait_frac": timed["wait_s"] / timed["s"] if timed["s"] > 0 else None,
                "flops_per_sample": _finite(fps),
                "tflops_per_device": _finite(fps * sps / ws / 1e12),
                "peak_tflops_per_device": _finite(peak.flops / 1e12), "peak_source": peak.source,
                "mfu": _finite(mfu(fps, sps / ws, peak.flops)),
            },
        }  # fmt: skip

    # ------------------------------------------------------------------ console and TensorBoard

    def scalars(self, step: int, values: dict[str, float], console: bool = True) -> None:
        """Log ``values`` at ``step`` (NaN values are skipped in TensorBoard). A dict holding
        ``train/loss`` prints the training line; any other dict prints ``key value`` pairs."""
        if self.writer:
            for k, v in values.items():
                if v == v:  # skip NaN
                    self.writer.add_scalar(k, v, step)
        if not console:
            return
        if "train/loss" in values:
            tflops = values.get("perf/tflops_per_device", float("nan"))
            mfu = values.get("perf/mfu", float("nan"))
            log.info(
                "step %d/%d | loss %.4g | lr %.3g | gnorm %.3g | %.1f samples/s | %.3f s/step | %s TFLOP/s/device | MFU %s | data wait %.1f%% | skipped steps %d, shard errors %d",
                step, self.cfg.max_steps, values["train/loss"], values["train/lr"], values["train/grad_norm"],
                values["perf/samples_per_s"], values["perf/step_time_s"],
                f"{tflops:.3g}" if tflops == tflops else "n/a", f"{100 * mfu:.1f}%" if mfu == mfu else "n/a",
                100 * values["perf/data_wait_frac"],
                int(values["train/skipped_steps"]), int(values["train/skipped_shards"]),
            )  # fmt: skip
        else:
            log.info("step %d | %s", step, " | ".join(f"{k} {v:.4g}" for k, v in values.items()))

    def figure(self, tag: str, fig: Any, step: int) -> None:
        """Add a matplotlib figure to TensorBoard (then close it)."""
        from mhdsr.plots import close

        if self.writer:
            self.writer.add_figure(tag, fig, step)
        close(fig)

    @property
    def enabled(self) -> bool:
        """Whether figures are recorded at all (TensorBoard on)."""
        return self.writer is not None

    def close(self) -> None:
        if self.writer:
            self.writer.flush()
            self.writer.close()
