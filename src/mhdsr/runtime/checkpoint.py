"""Checkpoints of a run folder: saving, finding the resume point, resuming, and the run lock.

Layout::

    run_dir/checkpoints/step_00000500/   DeepSpeed files (model/optimizer states per rank) + meta.json
    run_dir/checkpoints/latest           tag of the newest COMPLETE checkpoint (atomic rename)
    run_dir/.run.lock                    held (flock) by the trainer using run_dir

A checkpoint is written into ``step_XXXXXXXX.partial`` and renamed to ``step_XXXXXXXX`` once every
rank wrote its files and rank 0 wrote ``meta.json``; only then does ``latest`` move, so a job
killed (or a disk that fills) mid-save leaves nothing that resume would pick up. The
plain-weights export written next to each checkpoint (``run_dir/export/``) is
:mod:`mhdsr.model.export`.

Nothing on disk is trusted (issue 19): every checkpoint file is loaded with
``torch.load(weights_only=True)`` and an allow-list of the types DeepSpeed writes before
DeepSpeed reads it (a pickle that would run code is refused, naming the file); an unreadable
``meta.json``, a truncated file, a step folder that is a symbolic link out of ``run_dir`` or a
run folder whose exports outlive its checkpoints stop resume with an error naming the path;
a second trainer on the same ``run_dir`` is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import re
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mhdsr import __version__
from mhdsr.config import to_dict
from mhdsr.errors import CheckpointError, ConfigError
from mhdsr.io_utils import folder_lock, path_inside, write_json_atomic, write_text_atomic

if TYPE_CHECKING:
    from mhdsr.runtime.config import TrainerConfig
    from mhdsr.runtime.distributed import DistEnv
    from mhdsr.runtime.ema import EMA
    from mhdsr.runtime.task import Task, TrainState

TAG_RE = re.compile(r"^step_(\d{8})$")
PARTIAL = ".partial"
LOCK_NAME = ".run.lock"


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


# ---------------------------------------------------------------------------- finding checkpoints


def _read_meta(d: Path) -> CheckpointInfo:
    meta = d / "meta.json"
    try:
        js = json.loads(meta.read_text())
        m = TAG_RE.match(d.name)
        if m and js["step"] != int(m.group(1)):
            raise ValueError(f"its step {js['step']!r} is not the folder's step {int(m.group(1))}")
        return CheckpointInfo(
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
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise CheckpointError(
            f"{meta}: unreadable checkpoint record ({type(e).__name__}: {e}); repair or remove "
            f"the folder {d} (resume never starts afresh over a run folder with checkpoints)"
        ) from None


def _complete(ckpt_root: Path) -> list[CheckpointInfo]:
    """Every complete checkpoint under ``ckpt_root`` (a step folder holding ``meta.json``),
    by step. A step folder must lie inside the run folder (no symbolic link out)."""
    out = []
    if not ckpt_root.is_dir():
        return out
    for d in ckpt_root.iterdir():
        if not TAG_RE.match(d.name):
            continue
        path_inside(ckpt_root, d.name, f"checkpoint folder {d}", CheckpointError)
        if d.is_symlink():
            raise CheckpointError(
                f"{d}: a checkpoint folder is a symbolic link (to {os.readlink(d)}); refused: "
                "a run resumes only from checkpoints inside its own run_dir"
            )
        if d.is_dir() and (d / "meta.json").exists():
            out.append(_read_meta(d))
    return sorted(out, key=lambda c: c.step)


def _published_export_step(run_dir: Path) -> int | None:
    """The step ``export/latest`` names (None without one)."""
    ptr = run_dir / "export" / "latest"
    if not ptr.is_file():
        return None
    m = re.match(r"^weights_step_(\d{8})\.pt$", ptr.read_text().strip())
    return int(m.group(1)) if m else None


def find_latest(run_dir: str | Path) -> CheckpointInfo | None:
    """The newest complete checkpoint: the ``latest`` pointer if it names a complete one, else
    the highest complete step (a pointer write could have been the part that was interrupted).

    Returns None only for a run folder without checkpoints and without a published export.

    Raises:
        CheckpointError: an unreadable ``meta.json``, a step folder that is a symbolic link,
            ``latest`` naming a missing checkpoint, or exports newer than every checkpoint
            (checkpoints deleted): never a silent fresh start.
    """
    run_dir = Path(run_dir)
    root = run_dir / "checkpoints"
    done = _complete(root)
    ptr = root / "latest"
    tag = ptr.read_text().strip() if ptr.is_file() else None
    if tag is not None and not any(c.tag == tag for c in done) and not (root / tag).is_dir():
        raise CheckpointError(
            f"{ptr} names the checkpoint {tag!r}, but {root / tag} is missing; restore it or "
            f"start a new run_dir"
        )
    exported = _published_export_step(run_dir)
    if exported is not None and (not done or done[-1].step < exported):
        have = f"the newest checkpoint is {done[-1].tag}" if done else "no checkpoint is left"
        raise CheckpointError(
            f"{run_dir}: export/latest names step {exported} but {have} in {root}; the "
            "checkpoints were deleted or lost: restore them or start a new run_dir"
        )
    if not done:
        return None
    for c in done:
        if c.tag == tag and c.step == done[-1].step:
            return c
    return done[-1]


# ---------------------------------------------------------------------------- safe loading

#: what DeepSpeed's checkpoint files hold beyond tensors and plain containers (the types of
#: ``torch.load(weights_only=True)``), by module and name, each added when importable: the
#: ZeRO optimizer states hold a LossScaler, a ZeroStageEnum and fragment_address tuples
#: (DeepSpeed 0.19, fp32 and bf16); a model-states file of an engine given ``args`` holds them
_DS_GLOBALS = (
    ("argparse", "Namespace"),
    ("collections", "OrderedDict"),
    ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
    ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
    ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
    ("deepspeed.utils.tensor_fragment", "fragment_address"),
)


def _safe_globals() -> list[Any]:
    import importlib

    out = []
    for mod, name in _DS_GLOBALS:
        with contextlib.suppress(Exception):
            obj = getattr(importlib.import_module(mod), name)
            if isinstance(obj, type):
                out.append(obj)
    return out


def check_file(path: Path) -> None:
    """Load one checkpoint file with ``torch.load(weights_only=True)`` and the allow-list of
    the types DeepSpeed writes: nothing in it can run code.

    Raises:
        CheckpointError: the file holds another global (e.g. a pickle whose ``__reduce__``
            runs a command), or it is truncated or unreadable; the message names the file.
    """
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"{path}: refused: this checkpoint file holds something other than the types "
            f"DeepSpeed writes ({first}); nothing in it was run"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"{path}: unreadable checkpoint file (truncated or corrupt: {type(e).__name__}: "
            f"{first})"
        ) from None


def check_files(folder: Path) -> None:
    """:func:`check_file` of every ``*.pt`` file in a checkpoint folder."""
    for f in sorted(folder.rglob("*.pt")):
        check_file(f)


# ---------------------------------------------------------------------------- run lock


@contextlib.contextmanager
def run_lock(run_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Hold ``run_dir/.run.lock`` (an exclusive ``flock``, so a killed trainer leaves none)
    for the block; the holder's pid and host are written into it.

    Raises:
        ConfigError: another trainer holds it (names run_dir and, if recorded, the holder).
    """
    if not enabled:
        yield
        return
    path = Path(run_dir) / LOCK_NAME
    holder = ""
    with contextlib.suppress(OSError):
        holder = path.read_text().strip()
    busy = (
        f"run_dir {run_dir} is in use by another trainer"
        + (f" ({holder})" if holder else "")
        + f" (lock {path}); wait for it to end or use another run_dir"
    )
    with folder_lock(path, busy, ConfigError):
        with contextlib.suppress(OSError):
            path.write_text(f"pid {os.getpid()} on {socket.gethostname()}\n")
        yield


# ---------------------------------------------------------------------------- resume


def _leaf_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs between two nested dicts."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += _leaf_diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [f"{prefix}: {a!r} -> {b!r}"]


def check_frozen(cfg: TrainerConfig, stored: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Refuse to resume when a setting that defines the model changed.

    Raises:
        ConfigError: naming every differing key (``model.width: 8 -> 12``).
    """
    now = to_dict(cfg)
    diff = [d for k in keys for d in _leaf_diff(stored.get(k), now.get(k), k)]
    if diff:
        raise ConfigError(
            f"run_dir {cfg.run_dir} holds a checkpoint trained with different settings ({'; '.join(diff)}); "
            "use a new run_dir or restore the original settings"
        )


def check_normalization(
    cfg: TrainerConfig,
    stored: dict[str, Any] | None,
    now: dict[str, Any],
    msha: str,
    stored_sha: str | None,
) -> None:
    """The data normalization is part of the model: resuming on shards whose train statistics
    differ would silently change what the network sees. Same statistics but another manifest
    (e.g. rebuilt shards) is allowed with a warning.

    Raises:
        ConfigError: the statistics differ.
    """
    import logging

    if stored is None:
        return
    for k, v in now.items():
        if k in stored and not np.allclose(stored[k], v, rtol=1e-9, atol=0):
            raise ConfigError(
                f"shards={cfg.shards}: the train statistics (normalization {k}) differ from those the "
                f"checkpoint in {cfg.run_dir} was trained with ({stored[k]} -> {np.asarray(v, float).tolist()}); "
                "resume with the original shards or start a new run_dir"
            )
    if stored_sha and stored_sha != msha:
        logging.getLogger("mhdsr.train").warning(
            "shards=%s: manifest differs from the checkpoint's (same normalization): continuing",
            cfg.shards,
        )


@dataclass
class ResumePoint:
    """Where a run resumes: ``mode`` "deepspeed" (same world size, ZeRO stage and precision:
    the engine state loads) or "export" (another layout: the exported raw + EMA weights of the
    same step, optimizer restarted)."""

    info: CheckpointInfo
    mode: str
    export: dict[str, Any] | None = None


def resume_point(
    cfg: TrainerConfig, task: Task, env: DistEnv, model: torch.nn.Module
) -> ResumePoint | None:
    """Find and check the resume point of ``cfg.run_dir`` before the engine is built (None:
    a fresh run). In "export" mode the exported raw weights are loaded into ``model`` here.

    Raises:
        CheckpointError: an unreadable checkpoint or export (:func:`find_latest`).
        ConfigError: the model settings or the data normalization changed.
    """
    run_dir = Path(cfg.run_dir)
    info = find_latest(run_dir)
    if info is None:
        return None
    if info.config is not None:
        check_frozen(cfg, info.config, task.frozen_keys)
    check_normalization(
        cfg, info.normalization, task.normalization, task.manifest_sha256, info.manifest_sha256
    )
    if (info.world_size, info.zero_stage, info.precision) == (
        env.world_size,
        cfg.engine.zero_stage,
        env.precision,
    ):
        check_files(info.path)
        return ResumePoint(info, "deepspeed")
    # ZeRO optimizer partitions do not load at another world size: restart the optimizer from
    # the exported raw + EMA weights of the same step (stated in the log)
    if not info.export:
        raise CheckpointError(
            f"{info.path}: no export recorded; cannot resume at world size {env.world_size}"
        )
    from mhdsr.model.export import load_export

    where = f"{info.path / 'meta.json'}: key 'export'"
    payload = load_export(path_inside(run_dir / "export", info.export, where, CheckpointError))
    check_frozen(cfg, payload["config"], task.frozen_keys)
    model.load_state_dict(payload["raw"])
    return ResumePoint(info, "export", payload)


def resume(
    point: ResumePoint | None,
    cfg: TrainerConfig,
    task: Task,
    engine: Any,
    ema: EMA,
    state: TrainState,
) -> None:
    """Load the resume point into the engine (DeepSpeed mode), the EMA and ``state``."""
    if point is None:
        return
    if point.mode == "deepspeed":
        try:
            _, client = engine.load_checkpoint(
                str(Path(cfg.run_dir) / "checkpoints"),
                tag=point.info.tag,
                load_optimizer_states=True,
                load_lr_scheduler_states=False,
            )
        except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as e:
            first = (str(e).strip().splitlines() or [""])[0]
            raise CheckpointError(
                f"{point.info.path}: DeepSpeed could not load this checkpoint "
                f"({type(e).__name__}: {first})"
            ) from None
        if client is None:
            raise CheckpointError(f"{point.info.path}: DeepSpeed could not load this checkpoint")
        check_frozen(cfg, client["config"], task.frozen_keys)
        state.step, state.samples_seen = int(client["step"]), int(client["samples_seen"])
        state.skipped_nonfinite = int(client.get("skipped_nonfinite", 0))
        ema.load_state_dict(client["ema"])
        engine.skipped_steps = int(client.get("skipped_steps", engine.skipped_steps))
    else:
        p = point.export
        assert p is not None
        state.step, state.samples_seen = int(p["step"]), int(p["samples_seen"])
        ema.load_state_dict({"weights": p["ema"], "updates": p["ema_updates"]})


# ---------------------------------------------------------------------------- save


def _rng_states() -> dict[str, Any]:
    np_state = np.random.get_state()
    st: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()[1:2]],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])},
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state()
    return st


def save(
    cfg: TrainerConfig, task: Task, env: DistEnv, engine: Any, ema: EMA, state: TrainState
) -> None:
    """Collective: the DeepSpeed checkpoint (+ client state) and the plain-weights export of
    ``state.step``, both built here and nowhere else. Order: the export file (refused if it
    holds NaN/inf), then the checkpoint, which moves ``checkpoints/latest`` once complete, then
    ``export/latest``: both pointers name the same complete step, and a job killed in between
    resumes from the previous checkpoint with the previous export.

    Raises:
        CheckpointError: writing failed (e.g. the disk is full), naming the path; nothing that
            resume would pick up is left behind.
    """
    from mhdsr.model.export import FORMAT, export_name, publish_export, write_export
    from mhdsr.runtime.ema import full_fp32_params

    run_dir = Path(cfg.run_dir)
    raw = full_fp32_params(engine.module, env.precision)  # collective in bf16
    rng = [None] * env.world_size
    if env.world_size > 1:
        torch.distributed.all_gather_object(rng, _rng_states())
    else:
        rng = [_rng_states()]
    common = {
        "config": to_dict(cfg),
        "manifest_sha256": task.manifest_sha256,
        "version": __version__,
    }
    name = export_name(state.step)
    if env.is_main:
        with _disk_errors(run_dir / "export" / name):
            write_export(run_dir, state.step, {
                "format": FORMAT, "step": state.step, "samples_seen": state.samples_seen,
                "raw": {k: v.detach().cpu().clone() for k, v in raw.items()},
                "ema": ema.state_dict()["weights"], "ema_updates": ema.updates,
                **task.export_fields(), **common,
            })  # fmt: skip
    client = {
        "step": state.step, "samples_seen": state.samples_seen,
        "skipped_nonfinite": state.skipped_nonfinite, "skipped_steps": int(engine.skipped_steps),
        "ema": ema.state_dict(), "rng": rng, **common,
    }  # fmt: skip
    meta = {
        "world_size": env.world_size, "zero_stage": cfg.engine.zero_stage, "precision": env.precision,
        "samples_seen": state.samples_seen, "export": name, "time": time.time(),
        "normalization": task.normalization, **common,
    }  # fmt: skip
    write_checkpoint(engine, run_dir, state.step, client, meta, cfg.checkpoint.keep, env.is_main)
    if env.is_main:
        with _disk_errors(run_dir / "export" / "latest"):
            publish_export(run_dir, state.step, cfg.checkpoint.keep)
    import logging

    logging.getLogger("mhdsr.train").info(
        "checkpoint %s saved (export %s)", tag_for(state.step), name
    )


@contextlib.contextmanager
def _disk_errors(path: Path) -> Iterator[None]:
    """An OSError (or torch.save's RuntimeError on a full disk) while writing ``path`` as a
    :class:`CheckpointError` naming it."""
    try:
        yield
    except (OSError, RuntimeError) as e:
        import errno
        import shutil

        first = (str(e).strip().splitlines() or [""])[0]
        code = getattr(e, "errno", None)
        hint = ""
        if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or isinstance(e, RuntimeError):
            # torch.save's zip writer reports a full disk as "unexpected pos" without an errno
            with contextlib.suppress(OSError):
                free = shutil.disk_usage(path.parent if path.parent.exists() else path).free
                hint = f"; {free / 2**20:.1f} MiB free on that file system (disk full?)"
        raise CheckpointError(
            f"writing {path} failed ({type(e).__name__}: {first}){hint}; the partial checkpoint "
            "was removed and resume uses the previous one"
        ) from None


def write_checkpoint(
    engine: Any,
    run_dir: Path,
    step: int,
    client_state: dict[str, Any],
    meta: dict[str, Any],
    keep: int,
    is_main: bool,
) -> Path:
    """Collective: every rank writes its DeepSpeed files into ``step_XXXXXXXX.partial``; rank 0
    then writes ``meta.json``, renames the folder to ``step_XXXXXXXX``, moves ``latest`` and
    prunes to the last ``keep``. A failed write removes the partial folder.

    Raises:
        CheckpointError: writing failed (names the folder).
    """
    root = Path(run_dir) / "checkpoints"
    tag = tag_for(step)
    partial, final = root / (tag + PARTIAL), root / tag
    if is_main and partial.exists():
        shutil.rmtree(partial, ignore_errors=True)
    try:
        with _disk_errors(partial):
            engine.save_checkpoint(
                str(root), tag=tag + PARTIAL, client_state=client_state, save_latest=False
            )
    except CheckpointError:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    if is_main:
        try:
            with _disk_errors(partial / "meta.json"):
                write_json_atomic(partial / "meta.json", {"step": step, **meta})
                if final.exists():  # a leftover of an older run of this step: replaced
                    shutil.rmtree(final)
                partial.rename(final)
        except CheckpointError:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        with _disk_errors(root / "latest"):
            write_text_atomic(root / "latest", tag + "\n")
        done = _complete(root)
        for c in done[:-keep]:
            shutil.rmtree(c.path, ignore_errors=True)
        # leftovers of interrupted saves (an older version's incomplete folder, a partial one)
        for d in root.iterdir():
            m = re.match(r"^step_(\d{8})(\.partial)?$", d.name)
            if m and d.is_dir() and not (d / "meta.json").exists() and int(m.group(1)) < step:
                shutil.rmtree(d, ignore_errors=True)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return final
