"""Load an exported model for sampling and check that inputs fit it.

An export (:func:`mhdsr.model.export.load_export`, ``torch.load(weights_only=True)``)
carries everything sampling needs: raw and EMA weights, the :class:`ModelConfig`, the trained
channel names, the per-channel normalization (physical units, training-split ``hi``
statistics, std floored) and the method (its whole ``MethodConfig``; fields an earlier version did
not store are read as they were meant then, :func:`method_of_export`). The model works in
ONE normalized space: ``lo`` and ``hi`` are normalized with the same ``(mean, std)``
(docs/design.md, "The method"; :mod:`mhdsr.dataset.stream`).

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

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mhdsr.channels import CHANNELS
from mhdsr.dataset.normalize import Normalizer
from mhdsr.errors import CheckpointError, ConfigError, MhdsrError
from mhdsr.method.config import MethodConfig
from mhdsr.method.flow import Formulation


@dataclass
class LoadedModel:
    """A velocity network ready for sampling, with what the export says about it.

    Attributes:
        model: the UNet in eval mode on its device (``model(x, t, u) -> v``).
        channels: trained channel names (canonical names, training order).
        norm: the per-channel normalization ``(C,)`` float32 in physical units.
        form: the method (:class:`~mhdsr.method.flow.Formulation`: sigma, time range,
            upsampling, interpolant or residual target, projection, and the degradation-matching
            transfer function ``form.transfer`` of a ``method.degrade`` model), as trained.
        size_multiple: H and W of the model input must be multiples of this.
        trained_hi_shape: ``(H, W)`` of the training fields, or ``None`` if no manifest of the
            training shards could be read.
        trained_from: the manifest the shape came from.
        path, sha256, step, weights: the export file, its hash, its step, ``ema`` | ``raw``.
    """

    model: nn.Module
    channels: list[str]
    norm: Normalizer
    form: Formulation
    size_multiple: int
    trained_hi_shape: tuple[int, int] | None
    trained_from: str | None
    path: str
    sha256: str
    step: int
    weights: str

    @property
    def sigma(self) -> float:
        return float(self.form.method.sigma)

    @property
    def t_min(self) -> float:
        return float(self.form.method.t_min)

    @property
    def t_max(self) -> float:
        return float(self.form.method.t_max)

    @property
    def upsample(self) -> str:
        return str(self.form.method.upsample)

    @property
    def mean(self) -> np.ndarray:
        """``(C,)`` float32 channel means (physical units)."""
        return self.norm.mean

    @property
    def std(self) -> np.ndarray:
        """``(C,)`` float32 channel stds (physical units, floored)."""
        return self.norm.std

    def normalize(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` physical -> normalized, ``(x - mean) / std``."""
        return self.norm.normalize(x)

    def denormalize(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` normalized -> physical, ``x * std + mean``."""
        return self.norm.denormalize(x)


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
    from mhdsr.dataset.manifest import read_manifest

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
    from mhdsr.model.export import export_normalization, load_weights, open_export

    payload = open_export(checkpoint, forecast=False)
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
    channels, mean, std = export_normalization(payload, mcfg.channels)
    model = load_weights(UNet(mcfg), payload, weights, device)
    batch_invariant_linears(model)
    try:
        form = Formulation(
            method_of_export(payload["method"]),
            norm.get("residual_std"),
            norm.get("degrade_transfer"),
        )
    except ConfigError as e:
        raise CheckpointError(f"{where}: method: {e}") from None
    shape, src = _trained_hi_shape(payload, shards)
    return LoadedModel(
        model=model,
        channels=channels,
        norm=Normalizer(mean, std),
        form=form,
        size_multiple=mcfg.size_multiple,
        trained_hi_shape=shape,
        trained_from=src,
        path=where,
        sha256=payload["sha256"],
        step=int(payload["step"]),
        weights=weights,
    )


def method_of_export(stored: Mapping[str, Any]) -> MethodConfig:
    """The :class:`~mhdsr.method.config.MethodConfig` of an export's ``method`` dict, upgraded:
    a field the export lacks was written before the field existed, when the method did what
    :data:`~mhdsr.method.config.ORIGINAL_RECIPE` says (interpolant, bilinear, global scale,
    sigma 0.1, ...), so it takes that value, not today's default; an old export therefore
    samples as it did when it was written. (No field has been renamed so far; a rename would be
    mapped here.)

    Raises:
        ConfigError: a stored value or key that the config does not accept.
    """
    from mhdsr.config import from_dict
    from mhdsr.method.config import ORIGINAL_RECIPE

    return from_dict(MethodConfig, {**ORIGINAL_RECIPE, **dict(stored)})


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
