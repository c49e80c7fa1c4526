"""The exported-weights format: one ``torch.save`` file per export, loadable without DeepSpeed.

Layout of a run folder::

    run_dir/export/weights_step_00000500.pt   plain raw + EMA state dicts, config, normalization
    run_dir/export/latest                     file name of the newest export

A payload is a dict with ``format`` (``"mhdsr-export-v1"``), ``step``, ``samples_seen``,
``raw`` and ``ema`` fp32 state dicts, ``ema_updates``, ``model`` (the model config dict),
``channels``, ``normalization`` (``mean``/``std`` lists in physical units, plus for residual
methods ``residual_std`` and for ``method.degrade`` the ``(C, K)`` transfer function
``degrade_transfer``), ``method`` (the method config dict), ``config`` (the whole training
config), ``manifest_sha256`` and ``version``. Exports load with ``torch.load(weights_only=True)``
(no pickled objects), at any world size (:func:`load_export`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from mhdsr.errors import CheckpointError, NonFiniteError
from mhdsr.io_utils import atomic_path, path_inside, sha256_file, write_text_atomic

EXPORT_RE = re.compile(r"^weights_step_(\d{8})\.pt$")
FORMAT = "mhdsr-export-v1"


def export_name(step: int) -> str:
    """File name of the export of optimizer step ``step``."""
    return f"weights_step_{step:08d}.pt"


def nonfinite_entries(obj: Any, prefix: str = "") -> list[str]:
    """``"key: n of m values"`` for every floating-point tensor or number inside ``obj``
    (nested dicts and lists, keys joined with ``.``) that holds NaN/inf; empty if all finite."""
    out: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += nonfinite_entries(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            out += nonfinite_entries(v, f"{prefix}[{i}]")
    elif isinstance(obj, torch.Tensor):
        if obj.is_floating_point() or obj.is_complex():
            n = int(obj.numel() - torch.isfinite(obj).sum())
            if n:
                out.append(f"{prefix}: {n} of {obj.numel()} values")
    elif isinstance(obj, float) and not math.isfinite(obj):
        out.append(f"{prefix}: {obj}")
    return out


def write_export(run_dir: Path, step: int, payload: dict[str, Any]) -> Path:
    """Rank 0: write ``export/weights_step_XXXXXXXX.pt`` atomically. ``export/latest`` does not
    move here: :func:`publish_export` moves it once the matching checkpoint is complete.

    Raises:
        NonFiniteError: some weight, EMA weight or normalization value is NaN/inf (nothing is
            written; the message names the entries).
    """
    bad = nonfinite_entries(payload)
    if bad:
        raise NonFiniteError(
            f"refusing to export step {step} to {Path(run_dir) / 'export'}: non-finite values in "
            + "; ".join(bad[:8])
            + (f"; and {len(bad) - 8} more" if len(bad) > 8 else "")
        )
    exp = Path(run_dir) / "export"
    path = exp / export_name(step)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def publish_export(run_dir: Path, step: int, keep: int) -> Path:
    """Rank 0: point ``export/latest`` at the export of ``step`` (atomically) and keep the last
    ``keep`` exports. Called after the checkpoint of ``step`` is complete, so both pointers
    name the same complete step."""
    exp = Path(run_dir) / "export"
    path = exp / export_name(step)
    write_text_atomic(exp / "latest", path.name + "\n")
    olds = sorted(p for p in exp.iterdir() if EXPORT_RE.match(p.name))
    for p in olds[:-keep]:
        p.unlink(missing_ok=True)
    return path


def resolve_export(path: str | Path) -> Path:
    """An exported weights file from ``path``: the file itself, or a run folder (its latest
    export), or a run's ``export/`` folder.

    The name in ``latest`` must stay inside its folder (no folder part, no ``..``, no symbolic
    link out: :func:`mhdsr.io_utils.path_inside`), as must a ``weights_step_*.pt`` found there.

    Raises:
        CheckpointError: nothing exported there, a ``latest`` naming a missing file, or a name
            that leaves the folder.
    """
    p = Path(path)
    if p.is_file():
        return p
    for d in (p / "export", p):
        ptr = d / "latest"
        if ptr.is_file():
            f = path_inside(d, ptr.read_text().strip(), f"{ptr}", CheckpointError)
            if f.is_file():
                return f
            raise CheckpointError(
                f"{ptr} names {f.name}, which is missing; restore it, or name a weights file "
                "explicitly (never a silent fall-back to another export)"
            )
        cands = sorted(q for q in d.glob("weights_step_*.pt")) if d.is_dir() else []
        if cands:
            return path_inside(d, cands[-1].name, f"{cands[-1]}", CheckpointError)
    raise CheckpointError(
        f"{p}: no exported weights (expected a weights_step_*.pt file or a run folder with export/latest)"
    )


EXPORT_KEYS = (
    "format",
    "step",
    "raw",
    "ema",
    "model",
    "channels",
    "normalization",
    "method",
    "config",
)


def load_export(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load an exported weights file (``torch.load(weights_only=True)``, no DeepSpeed needed).

    Returns:
        The payload dict with ``raw`` and ``ema`` state dicts (fp32), ``model`` (ModelConfig
        dict), ``channels``, ``normalization`` {mean, std}, ``method`` (the MethodConfig dict
        as stored; :func:`mhdsr.model.inference.method_of_export` reads it), ``config`` (the full train config), ``step``, and ``sha256`` of the file.

    Raises:
        CheckpointError: unreadable or not an mhdsr export.
        NonFiniteError: its weights or normalization hold NaN/inf (names the entries).
    """
    f = resolve_export(path)
    try:
        payload = torch.load(f, map_location=map_location, weights_only=True)
    except Exception as e:  # not a torch file, or one holding objects we never write
        # the first sentence only: torch appends advice (weights_only=False) that does not apply
        line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        first = line.split(". ", 1)[0].rstrip(".")[:200]
        raise CheckpointError(
            f"{f}: not an mhdsr weights export (expected a weights_step_*.pt written by `mhdsr train`; "
            f"torch.load(weights_only=True) said: {first})"
        ) from None
    missing = (
        [k for k in EXPORT_KEYS if k not in payload]
        if isinstance(payload, dict)
        else list(EXPORT_KEYS)
    )
    if missing or payload.get("format") != FORMAT:
        raise CheckpointError(f"{f}: not an mhdsr weights export (missing {missing or ['format']})")
    bad = nonfinite_entries({k: payload[k] for k in ("raw", "ema", "normalization")})
    if bad:
        raise NonFiniteError(f"{f}: non-finite values in " + "; ".join(bad[:8]))
    payload["path"] = str(f)
    payload["sha256"] = sha256_file(f)
    return payload


def open_export(checkpoint: str | Path, forecast: bool) -> dict[str, Any]:
    """Load the export ``checkpoint`` names for a super-resolution (``forecast=False``) or a
    forecast (``forecast=True``) model; every error names the config key ``checkpoint`` and the
    command that writes the right kind (``mhdsr train`` / ``mhdsr forecast train``).

    Returns:
        The :func:`load_export` payload.

    Raises:
        CheckpointError: nothing there, not an export, or an export of the other kind.
    """
    trainer = "`mhdsr forecast train`" if forecast else "`mhdsr train`"
    if not Path(checkpoint).exists():
        raise CheckpointError(
            f"config key 'checkpoint': {checkpoint!r} does not exist (cwd {Path.cwd()})"
        )
    try:
        payload = load_export(checkpoint)
    except CheckpointError as e:
        raise CheckpointError(
            f"config key 'checkpoint': {str(e).replace('`mhdsr train`', trainer)}"
        ) from None
    if (payload.get("kind") == "forecast") != forecast:
        what = (
            "is not a forecast model (a super-resolution export of `mhdsr train`?)"
            if forecast
            else "is a forecast model (`mhdsr forecast train`)"
        )
        raise CheckpointError(
            f"config key 'checkpoint': {payload['path']} {what}; this command needs an export "
            f"of {trainer}"
        )
    return payload


def export_normalization(
    payload: dict[str, Any], model_channels: int
) -> tuple[list[str], Any, Any]:
    """``(channels, mean, std)`` of an export: names and float32 ``(C,)`` arrays in physical
    units, checked against the model config's channel count.

    Raises:
        CheckpointError: counts that disagree, or a std that is not finite and > 0 (names the
            file).
    """
    import numpy as np

    where = payload["path"]
    channels = list(payload["channels"])
    norm = payload["normalization"]
    mean = np.asarray(norm["mean"], dtype=np.float32)
    std = np.asarray(norm["std"], dtype=np.float32)
    if not (model_channels == len(channels) == mean.size == std.size):
        raise CheckpointError(
            f"{where}: model.channels={model_channels}, {len(channels)} channel name(s) "
            f"{channels} and {mean.size}/{std.size} normalization entries must agree"
        )
    if not (np.all(np.isfinite(std)) and np.all(std > 0)):
        raise CheckpointError(
            f"{where}: normalization std must be finite and > 0, got {std.tolist()}"
        )
    return channels, mean, std


def load_weights(
    model: torch.nn.Module, payload: dict[str, Any], weights: str, device: str | torch.device
) -> torch.nn.Module:
    """``model`` with the export's ``ema`` or ``raw`` weights, fp32, eval mode, no gradients.

    Raises:
        ConfigError: ``weights`` is not ``ema`` / ``raw`` (names the config key).
        CheckpointError: the weights do not fit the model config (names the file).
    """
    from mhdsr.errors import ConfigError

    if weights not in ("ema", "raw"):
        raise ConfigError(f"config key 'weights': expected ema | raw, got {weights!r}")
    try:
        model.load_state_dict(payload[weights])
    except (RuntimeError, KeyError) as e:
        raise CheckpointError(
            f"{payload['path']}: {weights} weights do not fit the model config: {e}"
        ) from None
    return model.to(device=device, dtype=torch.float32).eval().requires_grad_(False)
