"""Rank-0 monitoring: console lines, ``log.txt``, TensorBoard scalars and images.

Images (every ``log.image_every`` steps) for one fixed validation sample: a comparison panel
per channel (u = Up(lo), Heun ODE sample from the raw weights and from the EMA weights, an
Euler–Maruyama SDE sample from the EMA, truth, difference EMA - truth) and radially averaged
power spectra (truth, samples, bilinear u), all in physical units.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mhdsr.eval.spectra import radial_spectrum
from mhdsr.interpolant import avgpool2, upsample
from mhdsr.plots import close, comparison_panel, spectra_figure
from mhdsr.sample.noise import PerSampleNoise
from mhdsr.sample.samplers import sample
from mhdsr.train.config import TrainConfig
from mhdsr.train.data import Normalizer

log = logging.getLogger("mhdsr.train")


class Monitor:
    """Console + TensorBoard writer of the main rank."""

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: Path,
        env: Any,
        channels: list[str],
        norm: Normalizer,
        n_params: int,
    ) -> None:
        self.cfg, self.channels, self.norm = cfg, channels, norm
        self.writer = None
        if cfg.log.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"))
            self.writer.add_text(
                "config", "```\n" + (run_dir / "config.yaml").read_text() + "\n```", 0
            )
            self.writer.add_scalar("model/params_M", n_params / 1e6, 0)

    def scalars(self, step: int, values: dict[str, float], console: bool = True) -> None:
        if self.writer:
            for k, v in values.items():
                if v == v:  # skip NaN
                    self.writer.add_scalar(k, v, step)
        if not console:
            return
        if "train/loss" in values:
            log.info(
                "step %d/%d | loss %.4g | lr %.3g | gnorm %.3g | %.1f samples/s | %.3f s/step | data wait %.1f%% | skipped steps %d, shard errors %d",
                step, self.cfg.max_steps, values["train/loss"], values["train/lr"], values["train/grad_norm"],
                values["perf/samples_per_s"], values["perf/step_time_s"], 100 * values["perf/data_wait_frac"],
                int(values["train/skipped_steps"]), int(values["train/skipped_shards"]),
            )  # fmt: skip
        else:
            log.info("step %d | %s", step, " | ".join(f"{k} {v:.4g}" for k, v in values.items()))

    @torch.no_grad()
    def images(
        self,
        step: int,
        raw_model: torch.nn.Module,
        ema_model: torch.nn.Module,
        hi: torch.Tensor,
        keys: list[str],
    ) -> None:
        """Panels + spectra for one validation sample ``hi`` (1, C, H, W) normalized."""
        if not self.writer:
            return
        cfg, m = self.cfg, self.cfg.method
        dev = next(ema_model.parameters()).device
        x1 = hi.to(dev)
        u = upsample(avgpool2(x1), 2, m.upsample)
        n = cfg.log.image_steps

        def draw(model: torch.nn.Module, name: str, sde: bool = False) -> torch.Tensor:
            noise = PerSampleNoise.from_keys(cfg.seed, [(step, 0)], device=dev, dtype=torch.float32)
            kind = "euler_maruyama" if sde else "heun"
            return sample(
                kind,
                model,
                u,
                n_steps=2 * n if sde else n,
                noise=noise,
                sigma=m.sigma,
                t_min=m.t_min,
                t_max=m.t_max,
            ).float()

        was = raw_model.training
        raw_model.eval()
        outs = {
            "ODE raw": draw(raw_model, "raw"),
            "ODE EMA": draw(ema_model, "ema"),
            "SDE EMA": draw(ema_model, "ema", sde=True),
        }
        raw_model.train(was)
        phys = {
            k: self.norm.denormalize(v)[0].cpu().numpy()
            for k, v in {"u (bilinear)": u, **outs, "truth": x1}.items()
        }
        fig = comparison_panel(
            phys,
            self.channels,
            reference="truth",
            diffs={"EMA - truth": ("ODE EMA", "truth")},
            title=f"step {step}  {keys[0]}",
        )
        self.writer.add_figure("samples/panel", fig, step)
        close(fig)
        spectra = {name: radial_spectrum(f.astype(np.float64)) for name, f in phys.items()}
        fig = spectra_figure(
            spectra,
            self.channels,
            k_nyquist_lo=x1.shape[-1] // 4,
            title=f"step {step} power spectra",
        )
        self.writer.add_figure("samples/spectra", fig, step)
        close(fig)
        mse = {
            f"val/mse_{k.replace(' ', '_')}": float(((v - x1) ** 2).mean()) for k, v in outs.items()
        }
        self.scalars(step, mse, console=True)

    def close(self) -> None:
        if self.writer:
            self.writer.flush()
            self.writer.close()
