"""Bulk inference: every selected snapshot of every input sim, ``ensemble`` members each, to one
HDF5 file per sim (docs/design.md "Formats"; layout in :mod:`mhdsr.dataset.h5layout`).

Per snapshot (docs/design.md "The method"): ``lo`` in physical units (:mod:`mhdsr.sample.inputs`;
for a model trained with ``method.degrade``, an ``avgpool2(hi)`` input of a shard split is
filtered with the export's transfer function first, :func:`mhdsr.method.degrade.degrade`, and
that degraded ``lo`` is the file's stored input; native lo runs are used as they are),
``u = Up((lo - mean) / std)`` with the export's normalization and upsampling mode, ``x`` from
the sampler started at ``u + sigma * eps``, output ``x * std + mean`` (physical units).

Reproducibility: member ``m`` of snapshot ``n`` of the sim named ``sim`` with seed ``s`` draws all
its noise (the start and, for the SDE, every step) from its own generator keyed
``(seed, crc32(sim), s, n, m)`` (the name tells 128^2 and 256^2 sims of one seed id apart)
(:class:`~mhdsr.method.noise.PerSampleNoise`), and the network evaluates each sample
independently of its batch (:func:`~mhdsr.model.inference.batch_invariant_linears`). So the
samples do not depend on ``batch_size``, the order of work or the number of tasks. On the CPU
they are bit-identical across task splits always, and across batch sizes at the tested field
sizes (128^2, 256^2); at tiny fields (16^2) oneDNN picks batch-size-dependent convolution
kernels, a float32 rounding-level difference. On GPUs cuDNN may do the same.

Parallelism is over SIMS: the work unit is one sim (one output file). The sorted sim list is
dealt round-robin: task ``k`` of ``n`` takes sims ``k, k + n, k + 2n, ...``. Under torchrun /
srun the task is the rank (``RANK``/``WORLD_SIZE`` or ``SLURM_PROCID``/``SLURM_NTASKS``, read by
:func:`mhdsr.runtime.distributed.detect_launch` without starting a process group: no collectives
are needed); a SLURM job array passes ``task_index``/``num_tasks`` to :func:`run_sample`. On
CUDA each process uses its local rank's GPU. With more tasks than sims some tasks idle: the
held-out use case has hundreds of seeds.

Restart: a complete output file is skipped (when it was made with the same settings; different
settings are an error, see :func:`prepare`), so rerunning a killed job recomputes only the
missing sims and gives the same files as an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mhdsr.config import to_yaml
from mhdsr.dataset.h5layout import SETTINGS
from mhdsr.errors import CheckpointError, ConfigError, MhdsrError, ShardError
from mhdsr.io_utils import make_output_dir, sim_lock
from mhdsr.model.inference import LoadedModel, load_model, resolve_device
from mhdsr.sample.config import SampleConfig
from mhdsr.sample.h5out import SimWriter, output_path, read_settings, settings_diff
from mhdsr.sample.inputs import LO_DERIVED, SimInput, index_inputs

log = logging.getLogger("mhdsr.sample")

CONFIG_NAME = "sample_config.yaml"


@dataclass
class Plan:
    """Everything validated, ready to sample.

    Attributes:
        cfg: the config.
        lm: the loaded model.
        sims: all selected sims (sorted by name; the same list on every task).
        hi_shapes: output ``(H, W)`` per sim name.
        settings: per sim name, everything that determines its numbers (stored in the file).
        device: where the model runs.
    """

    cfg: SampleConfig
    lm: LoadedModel
    sims: list[SimInput]
    hi_shapes: dict[str, tuple[int, int]]
    settings: dict[str, dict[str, Any]]
    device: torch.device


# ----------------------------------------------------------------------------------------------
# Work list and status (no model needed)


def list_work(cfg: SampleConfig) -> list[str]:
    """Names of the sims ``cfg`` selects, in work order (sorted); task ``k`` of ``n`` takes
    entries ``k, k + n, ...``.

    Raises:
        ConfigError, ShardError, AthenaKFormatError: missing or empty inputs.
    """
    return [s.name for s in index_inputs(cfg)]


def status(cfg: SampleConfig, names: list[str] | None = None) -> dict[str, list[str]]:
    """``{"done": [...], "pending": [...]}``: sims with / without a complete output file.

    Args:
        names: the sims to check (default: :func:`list_work`, which indexes the inputs).
    """
    out: dict[str, list[str]] = {"done": [], "pending": []}
    for name in list_work(cfg) if names is None else names:
        done = read_settings(output_path(cfg.output_dir, name)) is not None
        out["done" if done else "pending"].append(name)
    return out


def assigned(names: list[str], task_index: int, num_tasks: int) -> list[str]:
    """Round-robin share of task ``task_index`` of ``num_tasks``: ``names[k::n]``."""
    return names[task_index::num_tasks]


# ----------------------------------------------------------------------------------------------
# Validation


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


def sampler_spec(cfg: SampleConfig, lm: LoadedModel) -> dict[str, Any]:
    """The sampler settings recorded in every file (``attrs["sampler"]``)."""
    from mhdsr.method.samplers import expected_nfe

    s = cfg.sampler
    return {
        "name": s.name,
        "steps": int(s.steps),
        "grid": s.grid,
        "rho": float(s.rho),
        "options": dict(s.options),
        "temperature": [float(v) for v in s.temperature],
        "nfe": expected_nfe(s.name, int(s.steps)),
        "t_min": lm.t_min,
        "t_max": lm.t_max,
    }


def _check_sampler(cfg: SampleConfig, lm: LoadedModel) -> None:
    """Run the sampler once with a zero velocity on a 1x1x1x1 field, so bad options fail now."""
    from mhdsr.method.noise import PerSampleNoise
    from mhdsr.method.samplers import sample

    s = cfg.sampler
    s.check_channels(lm.channels)
    try:
        sample(
            s.name,
            lambda x, t, u: torch.zeros_like(x),
            torch.zeros(1, 1, 1, 1),
            n_steps=s.steps,
            grid=s.grid,
            noise=PerSampleNoise.from_keys(0, [(0,)]),
            sigma=lm.sigma,
            t_min=lm.t_min,
            t_max=lm.t_max,
            rho=s.rho,
            **s.options,
        )
    except ConfigError as e:
        raise ConfigError(f"config key 'sampler': {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config key 'sampler.options' = {dict(s.options)}: {e}") from None


def _degrades(lm: LoadedModel, sim: SimInput) -> bool:
    """Whether the inputs of ``sim`` are degraded before sampling: the model was trained with
    ``method.degrade`` and the input is ``avgpool2(hi)`` of a shard split (native lo runs and
    forecasts are used as they are)."""
    return lm.form.transfer is not None and sim.lo_kind == LO_DERIVED


def _settings(
    cfg: SampleConfig, lm: LoadedModel, sim: SimInput, hi: tuple[int, int]
) -> dict[str, Any]:
    return {
        "checkpoint_sha256": lm.sha256,
        "weights": lm.weights,
        "sampler": sampler_spec(cfg, lm),
        "sigma": lm.sigma,
        "upsample": lm.upsample,
        "project": lm.form.project,
        "derive_jz": bool(lm.form.method.derive_jz),
        "channels": list(lm.channels),
        "ensemble": int(cfg.ensemble),
        "seed": int(cfg.seed),
        "sim_seed": int(sim.seed),
        "source": sim.source,
        "lo_kind": sim.lo_kind,
        **({"degrade": True} if _degrades(lm, sim) else {}),  # absent: as before degrade existed
        "snapshots": [s.snapshot for s in sim.snaps],
        "hi_shape": list(hi),
        **sim.extra_attrs,
    }


def prepare(cfg: SampleConfig, device: torch.device | str = "cpu") -> Plan:
    """Check everything before any sample is drawn.

    Loads the export, indexes the inputs, checks channels, resolutions and sampler options, and
    that every existing complete output file was made with the same settings.

    Raises:
        CheckpointError: missing/invalid checkpoint (names the key ``checkpoint``).
        ConfigError: empty selection, wrong resolution, bad sampler options, or an existing
            output made with other settings (names the keys / files).
        ShardError, AthenaKFormatError: missing or malformed inputs.
    """
    lm = load_model(cfg.checkpoint, cfg.weights, device, shards=cfg.shards or None)
    for key in ("project", "derive_jz"):  # sampling-time overrides of the post-processing
        if getattr(cfg, key) is not None:
            setattr(lm.form.method, key, bool(getattr(cfg, key)))
    if lm.form.transfer is not None and lm.form.project:
        raise ConfigError(
            f"config key 'project': {lm.path} was trained with method.degrade (degradation "
            "matching); projecting its samples onto the input's block means would undo the "
            "de-filtering it learned; set project=false or leave it null"
        )
    sims = index_inputs(cfg, lm.channels)
    hi_shapes, settings = {}, {}
    for sim in sims:
        missing = [c for c in lm.channels if c not in sim.stored_channels]
        if missing:
            raise ShardError(
                f"sim {sim.name}: the model ({lm.path}) needs channel(s) {missing}, the inputs store "
                f"only {list(sim.stored_channels)}"
            )
        hi = check_resolution(
            sim.lo_shape, lm, allow_other=cfg.allow_other_resolution, sim=sim.name
        )
        hi_shapes[sim.name] = hi
        settings[sim.name] = _settings(cfg, lm, sim, hi)
    _check_sampler(cfg, lm)
    for sim in sims:
        path = output_path(cfg.output_dir, sim.name)
        old = read_settings(path)
        if old is not None and old != settings[sim.name]:
            diff = "; ".join(settings_diff(old, settings[sim.name]))
            raise ConfigError(
                f"{path} exists and was made with other settings ({diff}); use another "
                "output_dir or delete it"
            )
    return Plan(
        cfg=cfg,
        lm=lm,
        sims=sims,
        hi_shapes=hi_shapes,
        settings=settings,
        device=torch.device(device),
    )


def ema_warnings(cfg: SampleConfig, plan: Plan) -> list[str]:
    """``weights=ema`` from a run whose EMA never started averaging (its ``config.yaml``, next
    to the ``export/`` folder of the weights, has ``ema.start_step`` >= the exported step): the
    EMA weights then equal the raw weights. One line per finding (empty: nothing to say)."""
    import yaml

    if cfg.weights != "ema":
        return []
    conf_file = Path(plan.lm.path).resolve().parent.parent / "config.yaml"
    try:
        conf = yaml.safe_load(conf_file.read_text()) or {}
        start = int((conf.get("ema") or {}).get("start_step", 0))
    except (OSError, ValueError, TypeError, AttributeError, yaml.YAMLError):
        return []
    if int(plan.lm.step) <= start:
        return [
            f"weights=ema but {plan.lm.path} is from step {plan.lm.step} <= ema.start_step="
            f"{start} ({conf_file}): its EMA weights equal the raw weights"
        ]
    return []


# ----------------------------------------------------------------------------------------------
# Sampling one sim


def _attrs(plan: Plan, sim: SimInput) -> dict[str, Any]:
    from mhdsr import __version__

    lm, cfg = plan.lm, plan.cfg
    return {
        "channels": list(lm.channels),
        "sampler": json.dumps(sampler_spec(cfg, lm), sort_keys=True),
        "checkpoint": lm.path,
        "checkpoint_sha256": lm.sha256,
        "checkpoint_step": lm.step,
        "weights": lm.weights,
        "sigma": lm.sigma,
        "t_min": lm.t_min,
        "t_max": lm.t_max,
        "seed": int(cfg.seed),
        "ensemble": int(cfg.ensemble),
        "code_version": __version__,
        "sim": sim.name,
        "sim_seed": int(sim.seed),
        "source": sim.source,
        "lo_kind": sim.lo_kind,
        "upsample": lm.upsample,
        "formulation": lm.form.kind,
        "project": lm.form.project,
        "scale": lm.form.scale,
        "scale_kmin": int(getattr(lm.form.method, "scale_kmin", 0)),
        "scale_floor": float(getattr(lm.form.method, "scale_floor", 1e-4)),
        "residual_kmin": int(lm.form.method.residual_kmin),
        "degrade": _degrades(lm, sim),
        **(
            {"degrade_transfer": json.dumps(lm.form.transfer.tolist())}
            if lm.form.transfer is not None
            else {}
        ),
        "derive_jz": bool(lm.form.method.derive_jz),
        "norm_mean": [float(x) for x in lm.mean],
        "norm_std": [float(x) for x in lm.std],
        **(
            {"residual_std": [float(x) for x in lm.form.residual_std]}
            if lm.form.residual_std is not None
            else {}
        ),
        "units": "physical (denormalized with the export's per-channel mean/std)",
        SETTINGS: json.dumps(plan.settings[sim.name], sort_keys=True),
        **sim.extra_attrs,
    }


@torch.inference_mode()
def sample_sim(plan: Plan, sim: SimInput, on_batch: Any = None) -> Path:
    """Sample every member of every snapshot of ``sim`` and write its file atomically.

    Work items ``(t, m)`` are taken in order ``t`` major, ``m`` minor, ``batch_size`` at a time;
    each snapshot's ``u`` is computed once (a batch of one) and reused for its members.

    Args:
        plan: from :func:`prepare`.
        sim: one of ``plan.sims``.
        on_batch: optional callback ``on_batch(n_samples)`` after each batch (progress).

    Returns:
        The output path.
    """
    from mhdsr.method.degrade import degrade
    from mhdsr.method.flow import derive_current
    from mhdsr.method.noise import PerSampleNoise, name_word

    cfg, lm, dev = plan.cfg, plan.lm, plan.device
    degraded = _degrades(lm, sim)
    n_snap, n_mem = len(sim.snaps), int(cfg.ensemble)
    items = [(t, m) for t in range(n_snap) for m in range(n_mem)]
    path = output_path(cfg.output_dir, sim.name)
    s = cfg.sampler
    with SimWriter(
        path,
        n_snap=n_snap,
        ensemble=n_mem,
        channels=list(lm.channels),
        hi_shape=plan.hi_shapes[sim.name],
        lo_shape=sim.lo_shape,
        with_keys=True,  # every output has `key` (runs: the shard-style key of the snapshot)
        attrs=_attrs(plan, sim),
    ) as w:
        for name, arr in sim.datasets.items():  # forecast inputs: init_index, lead
            w.f[name] = arr
        u_cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for b0 in range(0, len(items), cfg.batch_size):
            batch = items[b0 : b0 + cfg.batch_size]
            for t in sorted({t for t, _ in batch} - set(u_cache)):
                lo, t_sim, cycle = sim.load_lo(t, lm.channels)
                if tuple(lo.shape[-2:]) != tuple(sim.lo_shape):
                    raise ShardError(
                        f"sim {sim.name} snapshot {sim.snaps[t].snapshot}: lo has shape "
                        f"{lo.shape}, expected (C, {sim.lo_shape[0]}, {sim.lo_shape[1]})"
                    )
                if degraded:  # the input the model was trained on; stored as the file's input
                    lo = degrade(torch.from_numpy(lo), lm.form.transfer).numpy()
                w.write_input(
                    t,
                    lo,
                    time=t_sim,
                    snapshot=sim.snaps[t].snapshot,
                    cycle=cycle,
                    key=sim.snaps[t].key or f"s{sim.seed:04d}_n{sim.snaps[t].snapshot:05d}",
                )
                lo_n = lm.normalize(torch.from_numpy(lo).to(dev)[None])
                u_cache[t] = (lo_n[0], lm.form.up(lo_n)[0])
            for t in [t for t in u_cache if t < batch[0][0]]:
                del u_cache[t]
            lo_n = torch.stack([u_cache[t][0] for t, _ in batch])
            u = torch.stack([u_cache[t][1] for t, _ in batch])
            keys = [(name_word(sim.name), sim.seed, *sim.snaps[t].noise_key, m) for t, m in batch]
            noise = s.noise(
                PerSampleNoise.from_keys(cfg.seed, keys, device=dev, dtype=torch.float32)
            )
            x = lm.form.sample(
                s.name, lm.model, lo_n, noise,
                n_steps=s.steps, grid=s.grid, rho=s.rho, options=s.options, u=u,
            )  # fmt: skip
            phys = lm.denormalize(x)
            if lm.form.method.derive_jz:
                phys = derive_current(phys, lm.channels)
            out = phys.float().cpu().numpy()
            i = 0
            while i < len(batch):  # contiguous runs of one snapshot -> one slice write
                t, m0 = batch[i]
                j = i
                while j < len(batch) and batch[j][0] == t:
                    j += 1
                w.write_samples(t, m0, out[i:j])
                i = j
            if on_batch is not None:
                on_batch(len(batch))
        w.commit()
    return path


# ----------------------------------------------------------------------------------------------
# The entry point


def _launch_env() -> tuple[int, int, int, int]:
    """``(rank, world_size, local_rank, local_world_size)`` via ``detect_launch``, with the
    environment restored afterwards (it exports RANK/MASTER_* for DeepSpeed; sampling needs no
    process group)."""
    from mhdsr.runtime.distributed import detect_launch

    keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    saved = {k: os.environ.get(k) for k in keys}
    try:
        os.environ.setdefault("MASTER_PORT", "29500")  # never used: no process group here
        rank, world, local, _ = detect_launch()
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return rank, world, local, max(1, local_world)


def write_config(cfg: SampleConfig, plan: Plan) -> Path:
    """Write ``output_dir/sample_config.yaml``: the resolved config (after overrides) with the
    resolved checkpoint file and hash in a header comment."""
    from mhdsr import __version__
    from mhdsr.io_utils import write_text_atomic

    head = (
        f"# mhdsr {__version__} sample config (resolved)\n"
        f"# checkpoint file: {plan.lm.path}\n# checkpoint sha256: {plan.lm.sha256} (step {plan.lm.step})\n"
    )
    path = Path(cfg.output_dir) / CONFIG_NAME
    write_text_atomic(path, head + to_yaml(cfg))
    return path


def run_sample(
    cfg: SampleConfig, *, task_index: int | None = None, num_tasks: int | None = None
) -> dict[str, Any]:
    """Sample this task's share of the sims (see the module docstring).

    Args:
        cfg: validated config.
        task_index, num_tasks: this task's share, sims ``task_index, task_index + num_tasks,
            ...``; default from the launch environment (rank / world size; 0 / 1 alone).

    Returns:
        ``{"done", "skipped", "failed", "busy"}`` (lists of sim names of this task; ``busy``:
        being written by another live task, which holds its lock), ``errors``
        ({sim: message}), ``samples``, ``seconds``, ``samples_per_s``, ``nfe_per_sample``,
        ``task_index``, ``num_tasks``, ``device``, ``output_dir``.

    Raises:
        MhdsrError: any validation failure of :func:`prepare` (before any work). A failure
            while sampling one sim (unreadable snapshot, ...) is logged, recorded in
            ``failed``/``errors``, and the other sims continue.
    """
    rank, world, local, local_world = _launch_env()
    if task_index is None and num_tasks is None:
        task_index, num_tasks = rank, world
    elif task_index is None or num_tasks is None:
        raise ConfigError("run_sample: give both task_index and num_tasks, or neither")
    if not (num_tasks >= 1 and 0 <= task_index < num_tasks):
        raise ConfigError(
            f"run_sample: need 0 <= task_index < num_tasks, got {task_index}, {num_tasks}"
        )
    device = resolve_device(cfg.device, local)
    if device.type == "cpu" and local_world > 1:  # share the node's cores between its ranks
        share = max(1, (os.cpu_count() or 1) // local_world)
        torch.set_num_threads(min(torch.get_num_threads(), share))
    plan = prepare(cfg, device)
    for w in ema_warnings(cfg, plan):
        log.warning("%s", w)
    make_output_dir(cfg.output_dir, "output_dir")
    if task_index == 0:
        write_config(cfg, plan)

    mine = set(assigned([s.name for s in plan.sims], task_index, num_tasks))
    todo, skipped = [], []
    for sim in plan.sims:
        if sim.name not in mine:
            continue
        if read_settings(output_path(cfg.output_dir, sim.name)) is not None:
            skipped.append(sim.name)
        else:
            todo.append(sim)
    total = sum(len(s.snaps) for s in todo) * cfg.ensemble
    nfe = sampler_spec(cfg, plan.lm)["nfe"]
    log.info(
        "task %d/%d on %s: %d sim(s) to sample (%d samples, %d NFE each), %d already complete",
        task_index, num_tasks, device, len(todo), total, nfe, len(skipped),
    )  # fmt: skip

    from tqdm import tqdm

    bar = tqdm(
        total=total,
        unit="sample",
        desc=f"sample {cfg.sampler.name}x{cfg.sampler.steps}",
        disable=not (cfg.progress and rank == 0),
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=1.0,
        # always samples/s (tqdm would switch to s/sample below 1/s)
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]",
    )
    done, failed, busy, errors = [], [], [], {}
    n_samples, t0 = 0, time.perf_counter()
    with bar:
        for sim in todo:
            bar.set_postfix_str(sim.name, refresh=False)
            ts = time.perf_counter()
            out_file = output_path(cfg.output_dir, sim.name)
            with sim_lock(out_file) as held:  # one writer per sim, even across submissions
                if not held:
                    busy.append(sim.name)
                    log.info("%s: another live task is writing it: left to that task", sim.name)
                    continue
                if read_settings(out_file) is not None:  # completed meanwhile by another task
                    skipped.append(sim.name)
                    continue
                try:
                    path = sample_sim(plan, sim, on_batch=bar.update)
                except (MhdsrError, OSError) as e:
                    failed.append(sim.name)
                    errors[sim.name] = str(e)
                    log.error("%s: failed: %s", sim.name, e)
                    continue
            k = len(sim.snaps) * cfg.ensemble
            n_samples += k
            dt = time.perf_counter() - ts
            done.append(sim.name)
            log.info(
                "%s: %d samples in %.1f s (%.3g samples/s) -> %s", sim.name, k, dt, k / dt, path
            )
    seconds = time.perf_counter() - t0
    return {
        "done": done,
        "skipped": skipped,
        "failed": failed,
        "busy": busy,
        "errors": errors,
        "samples": n_samples,
        "seconds": seconds,
        "samples_per_s": n_samples / seconds if n_samples else 0.0,
        "nfe_per_sample": nfe,
        "task_index": task_index,
        "num_tasks": num_tasks,
        "device": str(device),
        "output_dir": str(cfg.output_dir),
    }


def format_summary(res: dict[str, Any], cfg: SampleConfig) -> str:
    """The end-of-run summary printed by the CLI."""
    lines = [
        f"mhdsr sample (task {res['task_index']}/{res['num_tasks']}, {res['device']}): "
        f"{len(res['done'])} sim(s) written, {len(res['skipped'])} already complete, "
        f"{len(res['failed'])} failed -> {res['output_dir']}",
    ]
    if res["samples"]:
        lines.append(
            f"  {res['samples']} samples in {res['seconds']:.1f} s = {res['samples_per_s']:.3g} "
            f"samples/s ({cfg.sampler.name}, {cfg.sampler.steps} steps, "
            f"{res['nfe_per_sample']} NFE/sample, ensemble {cfg.ensemble}, batch {cfg.batch_size})"
        )
    elif not res["failed"]:
        lines.append("  nothing to sample: every sim of this task is complete")
    for sim, msg in res["errors"].items():
        lines.append(f"  FAILED {sim}: {msg}")
    return "\n".join(lines)
