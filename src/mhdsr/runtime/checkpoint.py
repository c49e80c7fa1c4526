"""DeepSpeed checkpoints of a run folder (engine state + client state) and finding the resume point.

Layout::

    run_dir/checkpoints/step_00000500/   DeepSpeed files (model/optimizer states per rank) + meta.json
    run_dir/checkpoints/latest           tag of the newest COMPLETE checkpoint (atomic rename)

A checkpoint is complete once ``meta.json`` exists in its folder (written by rank 0 after every
rank returned from ``save_checkpoint``), and only then does ``latest`` move, so a job killed
mid-save resumes from the previous one. The plain-weights export written next to each checkpoint
(``run_dir/export/``) is :mod:`mhdsr.model.export`.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mhdsr.io_utils import write_json_atomic, write_text_atomic

TAG_RE = re.compile(r"^step_(\d{8})$")


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
