"""Load an exported model for sampling and check that inputs fit it.

An export (:func:`mhdsr.train.checkpoint.load_export`, ``torch.load(weights_only=True)``)
carries everything sampling needs: raw and EMA weights, the :class:`ModelConfig`, the trained
channel names, the per-channel normalization (physical units, training-split ``hi``
statistics, std floored) and the method (sigma, t range, upsampling mode). The model works in
ONE normalized space: ``lo`` and ``hi`` are normalized with the same ``(mean, std)``
(DESIGN.md, "The method"; :mod:`mhdsr.train.data`).

Batch invariance. BLAS picks a different GEMM kernel by row count (on the development CPU rows
1-3 and >= 4 differ by about one ulp), so the time-embedding ``nn.Linear`` layers of the UNet,
fed with ``B`` identical rows (the samplers pass one time to the whole batch), would make a
sample depend on its batch size by ~1e-6. :func:`batch_invariant_linears` evaluates such a layer
on the single row and broadcasts it: the result is what a batch of one computes, whatever ``B``.
GroupNorm and attention compute each sample independently; oneDNN's convolutions do too at
the field sizes of real use (checked at 128^2 and 256^2), so there the samples are
bit-identical for every batch size; at tiny fields (<= 64^2 in some layer of a width-8 net) it
may pick batch-dependent kernels (float32 rounding-level differences).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mhdsr.channels import CHANNELS
from mhdsr.errors import CheckpointError, ConfigError, MhdsrError


@dataclass
class LoadedModel:
    """A velocity network ready for sampling, with what the export says about it.

    Attributes:
        model: the UNet in eval mode on its device (``model(x, t, u) -> v``).
        channels: trained channel names (canonical names, training order).
        mean, std: ``(C,)`` float32 normalization in physical units.
        sigma, t_min, t_max: source noise level and time range of the method.
        upsample: ``bilinear`` | ``bicubic`` (``u = Up(lo)``).
        size_multiple: H and W of the model input must be multiples of this.
        trained_hi_shape: ``(H, W)`` of the training fields, or ``None`` if no manifest of the
            training shards could be read.
        trained_from: the manifest the shape came from.
        path, sha256, step, weights: the export file, its hash, its step, ``ema`` | ``raw``.
    """

    model: nn.Module
    channels: list[str]
    mean: np.ndarray
    std: np.ndarray
    sigma: float
    t_min: float
    t_max: float
    upsample: str
    size_multiple: int
    trained_hi_shape: tuple[int, int] | None
    trained_from: str | None
    path: str
    sha256: str
    step: int
    weights: str

    def normalize(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` physical -> normalized, ``(x - mean) / std``."""
        m, s = self._stats(x)
        return (x - m) / s

    def denormalize(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` normalized -> physical, ``x * std + mean``."""
        m, s = self._stats(x)
        return x * s + m

    def _stats(self, x: Tensor) -> tuple[Tensor, Tensor]:
        m = torch.as_tensor(self.mean, device=x.device, dtype=x.dtype)[:, None, None]
        s = torch.as_tensor(self.std, device=x.device, dtype=x.dtype)[:, None, None]
        return m, s


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> the local rank's GPU if one is visible, else the CPU.

    Raises:
        ConfigError: ``cuda`` requested but no GPU is visible (names the key ``device``).
    """
    has_cuda = torch.cuda.is_available()
    if name == "cuda" and not has_cuda:
        raise ConfigError(
            "config key 'device': cuda requested but no GPU is visible (use device=cpu)"
        )
    if name == "cpu" or not has_cuda:
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def _trained_hi_shape(
    payload: dict[str, Any], shards: str | None
) -> tuple[tuple[int, int] | None, str | None]:
    """``(H, W)`` of the training fields from the manifest of the training shards (the export's
    ``config.shards``), else of ``shards``; ``(None, None)`` when neither is readable."""
    from mhdsr.shard_builder.manifest import read_manifest

    cands = [(payload.get("config") or {}).get("shards"), shards]
    for c in cands:
        if not c:
            continue
        try:
            m = read_manifest(c)
        except MhdsrError:
            continue
        hi = m["shapes"]["hi"]
        return (int(hi[-2]), int(hi[-1])), str(Path(c) / "manifest.json")
    return None, None


def load_model(
    checkpoint: str,
    weights: str = "ema",
    device: torch.device | str = "cpu",
    *,
    shards: str | None = None,
) -> LoadedModel:
    """Load an export for sampling (``torch.load(weights_only=True)``).

    Args:
        checkpoint: run folder (its latest export), its ``export/`` folder, or a weights file.
        weights: ``ema`` or ``raw``.
        device: where the model runs.
        shards: a shard folder to read the trained resolution from when the training shards
            named in the export are not readable here.

    Returns:
        A :class:`LoadedModel` (fp32, eval mode, batch-invariant linears).

    Raises:
        CheckpointError: nothing exported there (message names the key ``checkpoint``), not an
            mhdsr export, channels not a subset of the 8 canonical ones, inconsistent channel /
            normalization counts, or weights that do not fit the model config.
    """
    from mhdsr.config import from_dict
    from mhdsr.model import ModelConfig, UNet
    from mhdsr.train.checkpoint import load_export

    if not Path(checkpoint).exists():
        raise CheckpointError(
            f"config key 'checkpoint': {checkpoint!r} does not exist (cwd {Path.cwd()})"
        )
    try:
        payload = load_export(checkpoint)
    except CheckpointError as e:
        raise CheckpointError(f"config key 'checkpoint': {e}") from None
    where = payload["path"]
    channels = list(payload["channels"])
    bad = [c for c in channels if c not in CHANNELS]
    if bad or len(set(channels)) != len(channels) or not channels:
        raise CheckpointError(
            f"{where}: trained channels {channels} are not distinct names among the canonical "
            f"{list(CHANNELS)} (unknown: {bad}); the inputs cannot provide them"
        )
    try:
        mcfg = from_dict(ModelConfig, payload["model"])
    except ConfigError as e:
        raise CheckpointError(f"{where}: model config: {e}") from None
    norm = payload["normalization"]
    mean = np.asarray(norm["mean"], dtype=np.float32)
    std = np.asarray(norm["std"], dtype=np.float32)
    if not (mcfg.channels == len(channels) == mean.size == std.size):
        raise CheckpointError(
            f"{where}: model.channels={mcfg.channels}, {len(channels)} channel name(s) {channels} "
            f"and {mean.size}/{std.size} normalization entries must agree"
        )
    if not (np.all(np.isfinite(std)) and np.all(std > 0)):
        raise CheckpointError(
            f"{where}: normalization std must be finite and > 0, got {std.tolist()}"
        )
    if weights not in ("ema", "raw"):
        raise ConfigError(f"config key 'weights': expected ema | raw, got {weights!r}")
    model = UNet(mcfg)
    try:
        model.load_state_dict(payload[weights])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(
            f"{where}: {weights} weights do not fit the model config: {e}"
        ) from None
    model = model.to(device=device, dtype=torch.float32).eval()
    model.requires_grad_(False)
    batch_invariant_linears(model)
    method = payload["method"]
    shape, src = _trained_hi_shape(payload, shards)
    return LoadedModel(
        model=model,
        channels=channels,
        mean=mean,
        std=std,
        sigma=float(method["sigma"]),
        t_min=float(method.get("t_min", 1e-4)),
        t_max=float(method.get("t_max", 1 - 1e-4)),
        upsample=str(method.get("upsample", "bilinear")),
        size_multiple=mcfg.size_multiple,
        trained_hi_shape=shape,
        trained_from=src,
        path=where,
        sha256=payload["sha256"],
        step=int(payload["step"]),
        weights=weights,
    )


def check_resolution(
    lo_shape: tuple[int, int], lm: LoadedModel, *, allow_other: bool, sim: str
) -> tuple[int, int]:
    """The hi grid ``(2h, 2w)`` for a lo field of ``lo_shape``, if the model can take it.

    Raises:
        ConfigError: ``2h`` or ``2w`` is not a multiple of the model's ``size_multiple`` (always
            an error), or differs from the trained resolution while
            ``allow_other_resolution`` is false.
        CheckpointError: the trained resolution is unknown (no readable training manifest)
            while ``allow_other_resolution`` is false.
    """
    hi = (2 * int(lo_shape[0]), 2 * int(lo_shape[1]))
    m = lm.size_multiple
    if hi[0] % m or hi[1] % m:
        raise ConfigError(
            f"sim {sim}: lo {lo_shape[0]}x{lo_shape[1]} gives a {hi[0]}x{hi[1]} output, not a "
            f"multiple of {m} (the model's size_multiple); the UNet cannot take it"
        )
    if allow_other:
        return hi
    if lm.trained_hi_shape is None:
        raise CheckpointError(
            f"{lm.path}: cannot tell the resolution the model was trained at (the training shards' "
            "manifest is not readable here); set shards=<a shard folder of the training data> or "
            "allow_other_resolution=true"
        )
    if hi != lm.trained_hi_shape:
        th, tw = lm.trained_hi_shape
        raise ConfigError(
            f"sim {sim}: lo {lo_shape[0]}x{lo_shape[1]} -> {hi[0]}x{hi[1]}, but the model was trained "
            f"on {th}x{tw} fields ({lm.trained_from}); set allow_other_resolution=true to run the "
            "fully-convolutional network anyway (other grid spacing: out of distribution)"
        )
    return hi


def batch_invariant_linears(model: nn.Module) -> list[Any]:
    """Make every ``nn.Linear`` of ``model`` that receives ``B > 1`` IDENTICAL rows compute one
    row and broadcast it (see the module docstring). Rows that differ go through unchanged.

    Returns:
        The hook handles (``.remove()`` undoes it).
    """
    pending: dict[int, int] = {}

    def pre(mod: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        x = args[0]
        pending.pop(id(mod), None)
        if (
            isinstance(x, Tensor)
            and x.ndim >= 2
            and x.shape[0] > 1
            and torch.equal(x, x[:1].expand_as(x))
        ):
            pending[id(mod)] = x.shape[0]
            return (x[:1], *args[1:])
        return None

    def post(mod: nn.Module, args: tuple[Any, ...], out: Tensor) -> Tensor | None:
        b = pending.pop(id(mod), None)
        return None if b is None else out.expand(b, *out.shape[1:]).contiguous()

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Linear):
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    return handles
