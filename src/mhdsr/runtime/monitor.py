"""Rank-0 monitoring of a training run: console lines, ``log.txt`` and TensorBoard.

The trainer (:func:`mhdsr.runtime.loop.fit`) logs scalars here; a task draws its own figures
(sample panels, spectra) and hands them to :meth:`Monitor.figure`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("mhdsr.train")


class Monitor:
    """Console + TensorBoard writer of the main rank.

    Args:
        cfg: the training config (``log.tensorboard``, ``max_steps``).
        run_dir: the run folder (TensorBoard events go to ``run_dir/tb``; the resolved
            ``config.yaml`` there is recorded as text).
        n_params: model parameter count (recorded).
    """

    def __init__(self, cfg: Any, run_dir: Path, n_params: int) -> None:
        self.cfg = cfg
        self.writer = None
        if cfg.log.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"))
            self.writer.add_text(
                "config", "```\n" + (run_dir / "config.yaml").read_text() + "\n```", 0
            )
            self.writer.add_scalar("model/params_M", n_params / 1e6, 0)

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
