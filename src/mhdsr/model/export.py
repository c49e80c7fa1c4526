"""The exported-weights format: one ``torch.save`` file per export, loadable without DeepSpeed.

Layout of a run folder::

    run_dir/export/weights_step_00000500.pt   plain raw + EMA state dicts, config, normalization
    run_dir/export/latest                     file name of the newest export

A payload is a dict with ``format`` (``"mhdsr-export-v1"``), ``step``, ``samples_seen``,
``raw`` and ``ema`` fp32 state dicts, ``ema_updates``, ``model`` (the model config dict),
``channels``, ``normalization`` (``mean``/``std`` lists in physical units, plus for residual
methods ``residual_std``), ``method`` (the method config dict), ``config`` (the whole training
config), ``manifest_sha256`` and ``version``. Exports load with ``torch.load(weights_only=True)``
(no pickled objects), at any world size (:func:`load_export`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from mhdsr.errors import CheckpointError
from mhdsr.io_utils import atomic_path, sha256_file, write_text_atomic

EXPORT_RE = re.compile(r"^weights_step_(\d{8})\.pt$")
FORMAT = "mhdsr-export-v1"


def export_name(step: int) -> str:
    """File name of the export of optimizer step ``step``."""
    return f"weights_step_{step:08d}.pt"


def write_export(run_dir: Path, step: int, payload: dict[str, Any], keep: int) -> Path:
    """Rank 0: write ``export/weights_step_XXXXXXXX.pt`` atomically, move ``export/latest``,
    keep the last ``keep`` exports."""
    exp = Path(run_dir) / "export"
    path = exp / export_name(step)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    write_text_atomic(exp / "latest", path.name + "\n")
    olds = sorted(p for p in exp.iterdir() if EXPORT_RE.match(p.name))
    for p in olds[:-keep]:
        p.unlink(missing_ok=True)
    return path


def resolve_export(path: str | Path) -> Path:
    """An exported weights file from ``path``: the file itself, or a run folder (its latest
    export), or a run's ``export/`` folder.

    Raises:
        CheckpointError: nothing exported there.
    """
    p = Path(path)
    if p.is_file():
        return p
    for d in (p / "export", p):
        ptr = d / "latest"
        if ptr.is_file():
            f = d / ptr.read_text().strip()
            if f.is_file():
                return f
        cands = sorted(q for q in d.glob("weights_step_*.pt")) if d.is_dir() else []
        if cands:
            return cands[-1]
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
        dict), ``channels``, ``normalization`` {mean, std}, ``method`` (sigma, t range,
        upsample), ``config`` (the full train config), ``step``, and ``sha256`` of the file.

    Raises:
        CheckpointError: unreadable or not an mhdsr export.
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
    payload["path"] = str(f)
    payload["sha256"] = sha256_file(f)
    return payload
