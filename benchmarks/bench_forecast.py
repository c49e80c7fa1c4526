"""Forecast-step benchmark (issue 20): what one rollout step costs per ensemble member.

A generative forecast step draws ``x(t + dt) | x(t)`` with a flow sampler: NFE evaluations of
the UNet plus, with the operator source, one FNO evaluation for the source mean. Measured on
this machine, fp32, 128^2, 8 channels, random weights (speed does not depend on them), the
shipped sizes (``configs/forecast/flow-cpu-small.yaml``: cpu-small UNet conditioned on 16
channels; ``configs/forecast/cpu-small.yaml``: the FNO), a batch of 8 members of one initial
state (what ``mhdsr forecast rollout`` does with ``ensemble: 8``):

* ``ms_per_member_step_nfe{4,8,16}``: Heun with 2, 4, 8 steps (4, 8, 16 NFE), operator source;
* ``ms_per_member_step_fno``: the deterministic FNO's step (one member);
* ``ratio_nfe8_over_fno``: what the generative step costs against the operator's.

Quality against NFE (CRPS, spread/skill, energies per lead with 4, 8, 16 NFE) needs a trained
model and is in benchmarks/forecast.md (``make forecast-bench``).
"""

from __future__ import annotations

import torch

from common import REPO, interleaved
from mhdsr.config import load_config
from mhdsr.dataset.normalize import Normalizer
from mhdsr.forecast.config import FlowForecastTrainConfig, ForecastTrainConfig
from mhdsr.forecast.models import FlowForecaster, ForecastModel
from mhdsr.method.config import SamplerConfig
from mhdsr.method.flow import Formulation
from mhdsr.method.noise import PerSampleNoise
from mhdsr.model import UNet
from mhdsr.model.fno import ForecastFNO


def run(quick: bool) -> dict:
    torch.manual_seed(0)
    fcfg = load_config(ForecastTrainConfig, str(REPO / "configs/forecast/cpu-small.yaml"), [])
    gcfg = load_config(
        FlowForecastTrainConfig, str(REPO / "configs/forecast/flow-cpu-small.yaml"), []
    )
    norm = Normalizer(torch.zeros(8).numpy(), torch.ones(8).numpy())
    fno = ForecastFNO(fcfg.model).eval().requires_grad_(False)
    op = ForecastModel(fno, list(gcfg.channel_names), norm, 0.1, 1, (128, 128), "-", "-", 0, "ema")
    net = UNet(gcfg.model).eval().requires_grad_(False)
    form = Formulation(gcfg.method, torch.ones(8))
    fm = FlowForecaster(net, form, list(gcfg.channel_names), norm, 0.1, (128, 128), "operator",
                        "-", "-", 0, "ema", operator=op)  # fmt: skip
    e = 8
    x = torch.randn(e, 8, 128, 128)
    keys = [(m,) for m in range(e)]
    repeat = 2 if quick else 3

    def flow(k: int):
        s = SamplerConfig(name="heun", steps=k)
        return lambda: fm.step_once(x, PerSampleNoise.from_keys(0, keys), s)

    def fno_step():
        with torch.no_grad():
            return fno(x[:1, None], torch.full((1,), 0.1))

    fns = {"nfe4": flow(2), "nfe8": flow(4), "fno": fno_step}
    if not quick:
        fns["nfe16"] = flow(8)
    t = interleaved(fns, repeat=repeat)
    out = {f"ms_per_member_step_{k}": 1e3 * v / e for k, v in t.items() if k != "fno"}
    out["ms_per_member_step_fno"] = 1e3 * t["fno"]
    out["ratio_nfe8_over_fno"] = out["ms_per_member_step_nfe8"] / out["ms_per_member_step_fno"]
    out["threads"] = torch.get_num_threads()
    return out
