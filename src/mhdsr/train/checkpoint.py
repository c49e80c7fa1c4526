"""Checkpoints (DeepSpeed engine state + client state), exported weights, resume.

Layout of a run folder::

    run_dir/checkpoints/step_00000500/   DeepSpeed files (model/optimizer states per rank) + meta.json
    run_dir/checkpoints/latest           tag of the newest COMPLETE checkpoint (atomic rename)
    run_dir/export/weights_step_00000500.pt   plain raw + EMA state dicts, config, normalization
    run_dir/export/latest                file name of the newest export

A checkpoint is complete once ``meta.json`` exists in its folder (written by rank 0 after every
rank returned from ``save_checkpoint``), and only then does ``latest`` move, so a job killed
mid-save resumes from the previous one. Exports load with ``torch.load(weights_only=True)``
without DeepSpeed, at any world size (:func:`load_export`).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mhdsr.errors import CheckpointError
from mhdsr.io_utils import atomic_path, sha256_file, write_json_atomic, write_text_atomic

TAG_RE = re.compile(r"^step_(\d{8})$")
EXPORT_RE = re.compile(r"^weights_step_(\d{8})\.pt$")


def tag_for(step: int) -> str:
    return f"step_{step:08d}"


@dataclass(frozen=True)
class CheckpointInfo:
    """A complete checkpoint on disk (from its ``meta.json``)."""

    path: Path
    tag: str
    step: int
    world_size: int
    zero_stage: int
    precision: str
    export: str | None
    config: dict[str, Any] | None
    normalization: dict[str, list[float]] | None = None
    manifest_sha256: str | None = None


def _complete(ckpt_root: Path) -> list[CheckpointInfo]:
    out = []
    if not ckpt_root.is_dir():
        return out
    for d in ckpt_root.iterdir():
        m = TAG_RE.match(d.name)
        meta = d / "meta.json"
        if not (m and d.is_dir() and meta.is_file()):
            continue
        try:
            js = json.loads(meta.read_text())
            out.append(
                CheckpointInfo(
                    d,
                    d.name,
                    int(js["step"]),
                    int(js["world_size"]),
                    int(js["zero_stage"]),
                    js["precision"],
                    js.get("export"),
                    js.get("config"),
                    js.get("normalization"),
                    js.get("manifest_sha256"),
                )
            )
        except (ValueError, KeyError, OSError):
            continue
    return sorted(out, key=lambda c: c.step)


def find_latest(run_dir: str | Path) -> CheckpointInfo | None:
    """The newest complete checkpoint: the ``latest`` pointer if it names a complete one, else
    the highest complete step (a pointer write could have been the part that was interrupted)."""
    root = Path(run_dir) / "checkpoints"
    done = _complete(root)
    if not done:
        return None
    ptr = root / "latest"
    if ptr.is_file():
        tag = ptr.read_text().strip()
        for c in done:
            if c.tag == tag and c.step == done[-1].step:
                return c
    return done[-1]


def save(
    engine: Any,
    run_dir: Path,
    step: int,
    client_state: dict[str, Any],
    meta: dict[str, Any],
    keep: int,
    is_main: bool,
) -> Path:
    """Collective: every rank writes its DeepSpeed shard; rank 0 then marks the checkpoint
    complete, moves ``latest`` and prunes to the last ``keep``."""
    root = Path(run_dir) / "checkpoints"
    tag = tag_for(step)
    engine.save_checkpoint(str(root), tag=tag, client_state=client_state, save_latest=False)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    if is_main:
        write_json_atomic(root / tag / "meta.json", {"step": step, **meta})
        write_text_atomic(root / "latest", tag + "\n")
        done = _complete(root)
        for c in done[:-keep]:
            shutil.rmtree(c.path, ignore_errors=True)
        # incomplete leftovers of interrupted saves, older than the newest complete one
        for d in root.iterdir():
            m = TAG_RE.match(d.name)
            if m and d.is_dir() and not (d / "meta.json").exists() and int(m.group(1)) < step:
                shutil.rmtree(d, ignore_errors=True)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return root / tag


def write_export(run_dir: Path, step: int, payload: dict[str, Any], keep: int) -> Path:
    """Rank 0: write ``export/weights_step_XXXXXXXX.pt`` atomically, move ``export/latest``,
    keep the last ``keep`` exports."""
    exp = Path(run_dir) / "export"
    path = exp / f"weights_step_{step:08d}.pt"
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
    if missing or payload.get("format") != "mhdsr-export-v1":
        raise CheckpointError(f"{f}: not an mhdsr weights export (missing {missing or ['format']})")
    payload["path"] = str(f)
    payload["sha256"] = sha256_file(f)
    return payload
