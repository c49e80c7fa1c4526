"""``mhdsr shard build``: plan, reuse what is done, build the rest in parallel, write the manifest.

Phases:

1. **plan** (:func:`~mhdsr.shard_builder.plan.make_plan`): check config and inputs, split by
   seed, shuffle, cut shards. Nothing is written before it succeeds.
2. **compare** with an existing output: its ``manifest.json`` (complete build) or
   ``.build/config.json`` (interrupted build). A differing config is refused with the differing
   keys (keys that do not change the output, e.g. ``workers``, are ignored); changed inputs are
   refused too. An unfinished build (no manifest) is completed by any config: only shards whose
   sidecar carries the new plan's hash are kept. Identical config + inputs + complete output = nothing to do (no file touched;
   only sizes are checked, ``mhdsr shard inspect --verify`` re-hashes). ``overwrite`` deletes
   the builder's own files first (never anything else in the folder).
3. **resume**: leftover ``.*.tmp`` files are removed; a shard is reused when its sidecar
   ``.build/{name}.json`` has the planned hash and the tar's size and sha256 match; every other
   shard is (re)built.
4. **build** whole shards in worker processes (``forkserver``; in-process when one worker),
   progress bar in samples and MB/s. An error, Ctrl-C or SIGTERM stops every worker
   (:class:`~mhdsr.shard_builder.pool.WorkerPool`) and removes the half-written files; the
   finished shards are kept, so rerunning the same command resumes.
5. **manifest**: train statistics merged in shard order (Chan et al.), written last, atomically.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mhdsr import __version__
from mhdsr.channels import CHANNELS
from mhdsr.config import to_dict
from mhdsr.dataset.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    STD_FLOOR,
    read_manifest,
)
from mhdsr.errors import ShardError
from mhdsr.io_utils import folder_lock, make_output_dir, sha256_file, write_json_atomic
from mhdsr.shard_builder.config import NON_OUTPUT_KEYS, SPLITS, ShardBuildConfig
from mhdsr.shard_builder.plan import BuildPlan, ShardPlan, make_plan
from mhdsr.shard_builder.pool import WorkerPool
from mhdsr.shard_builder.stats import ChannelStats, merge_all
from mhdsr.shard_builder.worker import BUILD_DIR, build_shard, sidecar_path

SHARD_RE = re.compile(r"^(train|val|test|heldout)-\d{6}\.tar$")
CONFIG_RECORD = "config.json"
LOCK_NAME = ".build.lock"


def output_config(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that determines the output (drops workers, progress...;
    for super-resolution builds also the forecast keys, so folders built before they existed
    still match)."""
    out = {k: v for k, v in cfg_dict.items() if k not in NON_OUTPUT_KEYS}
    if out.get("task", "sr") == "sr":
        out.pop("task", None)
        out.pop("forecast", None)
    return out


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``["key: old -> new", ...]`` for dotted keys whose values differ (output keys only)."""
    a, b = _flatten(output_config(old)), _flatten(output_config(new))
    return [
        f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k, "<absent>") != b.get(k, "<absent>")
    ]


def clean_output(out: Path) -> None:
    """Remove the builder's files from ``out`` (manifest, shards, temporaries, .build/)."""
    if not out.is_dir():
        return
    for p in out.iterdir():
        if p.is_file() and (
            p.name == MANIFEST_NAME
            or SHARD_RE.match(p.name)
            or (p.name.startswith(".") and ".tmp" in p.name)
        ):
            p.unlink()
    shutil.rmtree(out / BUILD_DIR, ignore_errors=True)


def _remove_temporaries(out: Path) -> list[str]:
    """Remove half-written files (``.*.tmp*``) in ``out`` and ``out/.build`` (names relative to
    ``out``). Only called with the folder's lock held, so none belongs to a running build."""
    gone = []
    for d in (out, out / BUILD_DIR):
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if p.is_file() and p.name.startswith(".") and ".tmp" in p.name:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                gone.append(str(p.relative_to(out)))
    return gone


def _reusable(out: Path, sp: ShardPlan) -> dict[str, Any] | None:
    """The sidecar record of a complete, checksum-verified shard matching the plan, else None."""
    side = sidecar_path(out, sp.name)
    try:
        rec = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    if rec.get("plan_hash") != sp.plan_hash or rec.get("name") != sp.name:
        return None
    tar = out / sp.name
    if rec.get("samples", 0) == 0:  # every sample skipped: no tar expected
        return rec if not tar.exists() else None
    try:
        if tar.stat().st_size != rec["bytes"] or sha256_file(tar) != rec["sha256"]:
            return None
    except (OSError, KeyError):
        return None
    return rec


def _is_complete(out: Path, manifest: dict[str, Any]) -> bool:
    for s in manifest["splits"].values():
        for sh in s["shards"]:
            p = out / sh["name"]
            if not p.is_file() or p.stat().st_size != sh["bytes"]:
                return False
    return True


def _default_workers() -> int:
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        n = os.cpu_count() or 1
    return max(1, min(16, n))


def _job(out: Path, sp: ShardPlan, on_bad: str) -> dict[str, Any]:
    return {
        "out_dir": str(out),
        "name": sp.name,
        "split": sp.split,
        "items": sp.items,
        "stats": sp.stats,
        "plan_hash": sp.plan_hash,
        "on_bad": on_bad,
    }


def _run_jobs(jobs: list[dict[str, Any]], workers: int, bar: Any) -> dict[str, dict[str, Any]]:
    """Build shards (in-process for one worker); returns results by shard name."""
    results: dict[str, dict[str, Any]] = {}
    t0, nbytes = time.perf_counter(), 0

    def done(r: dict[str, Any], planned: int) -> None:
        nonlocal nbytes
        results[r["name"]] = r
        nbytes += r["bytes"]
        if bar is not None:
            bar.update(planned)
            bar.set_postfix_str(f"{nbytes / 1e6 / max(time.perf_counter() - t0, 1e-9):.0f} MB/s")

    if workers <= 1 or len(jobs) <= 1:
        for j in jobs:
            done(build_shard(j), len(j["items"]))
        return results
    # forkserver: workers fork from a server that imported the worker code once (webdataset
    # pulls in torch: ~2 s). WorkerPool (pool.py) guarantees that every worker is gone when the
    # block is left, however it is left (error, Ctrl-C, SIGTERM).
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(
        ["__main__", "mhdsr.shard_builder.worker", "mhdsr.shard_builder.build", "webdataset.writer"]
    )
    n = min(workers, len(jobs))
    with WorkerPool(build_shard, n, ctx, describe=lambda j: f"shard {j['name']}") as pool:
        pool.run(jobs, lambda i, r: done(r, len(jobs[i]["items"])))
    return results


def _manifest(
    cfg_dict: dict[str, Any], plan: BuildPlan, records: dict[str, dict[str, Any]], t_start: float
) -> dict[str, Any]:
    """Assemble manifest.json from the plan and the per-shard records."""
    c = len(CHANNELS)
    hi_res = plan.hi_resolution
    assert hi_res is not None
    splits: dict[str, Any] = {}
    skipped = list(plan.skipped)
    train_hi, train_lo = [], []
    for k in SPLITS:
        shards, seeds, sims, n, paired = [], set(), set(), 0, 0
        for sp in plan.shards:
            if sp.split != k:
                continue
            rec = records[sp.name]
            skipped += rec["skipped"]
            if rec["samples"] == 0:
                continue
            bad = {(s["sim"], s["snapshot"]) for s in rec["skipped"]}
            for it in sp.items:
                if (it["sim"], it["snapshot"]) not in bad:
                    seeds.add(it["seed"])
                    sims.add(it["sim"])
            n += rec["samples"]
            paired += rec.get("paired", 0)
            shards.append({key: rec[key] for key in ("name", "samples", "bytes", "sha256")})
            if rec["stats"]:
                train_hi.append(ChannelStats.from_state(rec["stats"]["hi"]))
                train_lo.append(ChannelStats.from_state(rec["stats"]["lo"]))
        splits[k] = {
            "seeds": sorted(seeds),
            "sims": sorted(sims),
            "samples": n,
            "source": "native_lo" if k == "heldout" else "hi",
            "samples_per_shard_max": plan.samples_per_shard.get(k, 0),
            "shards": shards,
        }
        if k == "heldout":
            splits[k]["paired_hi"] = paired
    runs = [r for k in SPLITS for r in plan.splits[k]] + plan.unassigned
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "channels": list(CHANNELS),
        "dtype": "float32",
        "byte_order": "little",
        "shapes": {"hi": [c, hi_res[1], hi_res[0]], "lo": [c, hi_res[1] // 2, hi_res[0] // 2]},
        "splits": splits,
        "stats": {
            "hi": merge_all(train_hi, c).table(CHANNELS),
            "lo": merge_all(train_lo, c).table(CHANNELS),
        },
        "std_floor": dict(STD_FLOOR),
        "skipped": skipped,
        "provenance": {
            "builder": f"mhdsr {__version__}",
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "hostname": socket.gethostname(),
            "build_seconds": round(time.perf_counter() - t_start, 3),
            "hi_runs": list(cfg_dict["hi_runs"]),
            "lo_runs": list(cfg_dict["lo_runs"]),
            "window": dict(cfg_dict["window"]),
            "stats_split": "train",
            "lo_stats": "avgpool2 of the train hi fields, computed in float64",
            "pairing": "heldout lo snapshot + hi of the same seed id from a hi run in no split, "
            "nearest time within pair_time_tol mean timesteps; pixel_aligned false",
            "unassigned_hi": [r.sim for r in plan.unassigned],
            "plan_sha256": plan.fingerprint,
            "sims": {
                r.sim: {
                    "path": r.path,
                    "seed": r.seed,
                    "resolution": list(r.resolution),
                    "layout": r.layout,
                    "n_ranks": r.n_ranks,
                    "snapshots": r.snapshots,
                    "params": r.params,
                }
                for r in runs
            },
        },
        "config": cfg_dict,
    }
    if plan.task == "forecast":
        from mhdsr.shard_builder.windows import forecast_manifest

        return forecast_manifest(manifest, plan, merge_all(train_lo, c).table(CHANNELS))
    return manifest


def build(cfg: ShardBuildConfig, overwrite: bool = False, log: Any = None) -> dict[str, Any]:
    """Build (or complete) the shard folder ``cfg.output_dir``.

    Args:
        cfg: a validated :class:`ShardBuildConfig`.
        overwrite: delete the builder's existing files in ``output_dir`` first.
        log: callable taking one message string (default: print to stderr).

    Returns:
        Summary ``{"noop", "output_dir", "manifest", "built", "reused", "removed_tmp",
        "samples": {split: n}, "bytes_written", "seconds"}``.

    Raises:
        ConfigError / ShardError / AthenaKFormatError: bad config or input (nothing written when
            raised by the planning phase); an existing output built with a different config.
    """
    say = log or (lambda m: print(m, file=sys.stderr))
    t0 = time.perf_counter()
    plan = make_plan(cfg)
    out = make_output_dir(cfg.output_dir, "output_dir")
    with _exclusive(out):
        return _build_in(out, cfg, plan, overwrite, say, t0)


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out/.build.lock`` (two builds must not share a folder),
    removed when the build ends (:func:`mhdsr.io_utils.folder_lock`). File systems without
    flock support (some NFS mounts) are built without the lock."""
    busy = f"{out}: another `mhdsr shard build` is writing here"
    with folder_lock(out / LOCK_NAME, busy, ShardError):
        yield


def _build_in(
    out: Path,
    cfg: ShardBuildConfig,
    plan: BuildPlan,
    overwrite: bool,
    say: Callable[[str], None],
    t0: float,
) -> dict[str, Any]:
    """:func:`build` once the output folder is locked."""
    cfg_dict = to_dict(cfg)
    mpath = out / MANIFEST_NAME
    if overwrite:
        clean_output(out)

    # ---- compare with what is there
    prev: dict[str, Any] | None = None
    if mpath.exists():
        try:
            prev = read_manifest(mpath)
        except ShardError as e:
            raise ShardError(f"{e}; use --overwrite to rebuild {out}") from None
        diff = config_diff(prev["config"], cfg_dict)
        if diff:
            raise ShardError(
                f"{out} was built with a different config ({len(diff)} key(s) differ: "
                + "; ".join(diff)
                + "). Use --overwrite to rebuild it, or another output_dir."
            )
        if prev["provenance"].get("plan_sha256") != plan.fingerprint:
            raise ShardError(
                f"{out}: same config, but the inputs changed since it was built (runs, "
                "snapshots or skipped input differ). Use --overwrite to rebuild it."
            )
    elif (out / BUILD_DIR / CONFIG_RECORD).exists():
        # an unfinished build: any config may complete it, since a shard is reused only when
        # its sidecar carries this plan's hash (the shard's exact samples and options)
        rec = json.loads((out / BUILD_DIR / CONFIG_RECORD).read_text())
        diff = config_diff(rec.get("config", {}), cfg_dict)
        if diff:
            say(f"note: the unfinished build in {out} used another config ({'; '.join(diff)})")
    if prev is not None and _is_complete(out, prev):
        say(f"nothing to do: {mpath} is complete and matches the config")
        samples = {k: v["samples"] for k, v in prev["splits"].items()}
        return {
            "noop": True, "output_dir": str(out), "manifest": str(mpath), "built": [],
            "reused": [s.name for s in plan.shards], "removed_tmp": [], "samples": samples,
            "bytes_written": 0, "seconds": time.perf_counter() - t0,
        }  # fmt: skip

    # ---- resume: the manifest goes first (its presence means "complete"), then leftovers
    with contextlib.suppress(FileNotFoundError):
        mpath.unlink()
    (out / BUILD_DIR).mkdir(exist_ok=True)
    write_json_atomic(
        out / BUILD_DIR / CONFIG_RECORD, {"config": cfg_dict, "plan_sha256": plan.fingerprint}
    )
    removed = _remove_temporaries(out)
    planned = {sp.name for sp in plan.shards}
    for p in out.iterdir():
        if p.is_file() and SHARD_RE.match(p.name) and p.name not in planned:
            p.unlink()
    for p in (out / BUILD_DIR).glob("*.tar.json"):
        if p.name[: -len(".json")] not in planned:
            p.unlink()
    records: dict[str, dict[str, Any]] = {}
    todo: list[ShardPlan] = []
    for sp in plan.shards:
        rec = _reusable(out, sp)
        if rec is None:
            todo.append(sp)
            for stale in (sidecar_path(out, sp.name), out / sp.name):
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
        else:
            records[sp.name] = rec
    if records:
        say(f"resuming: {len(records)} verified shard(s) kept, {len(todo)} to build")

    # ---- build
    workers = cfg.workers or _default_workers()
    total = sum(len(sp.items) for sp in todo)
    bar = None
    if cfg.progress and total:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="sample", desc=f"shards -> {out}", file=sys.stderr)
    try:
        jobs = [_job(out.resolve(), sp, cfg.on_bad) for sp in todo]
        results = _run_jobs(jobs, workers, bar)
    except BaseException:
        # error, Ctrl-C or SIGTERM (SystemExit): every worker has exited by now, so what is
        # half-written is this build's; finished shards (tar + sidecar) are kept for the rerun
        _remove_temporaries(out)
        raise
    finally:
        if bar is not None:
            bar.close()
    records.update(results)

    # ---- manifest, last and atomic
    manifest = _manifest(cfg_dict, plan, records, t0)
    write_json_atomic(mpath, manifest)
    dt = time.perf_counter() - t0
    written = sum(r["bytes"] for r in results.values())
    say(
        f"wrote {len(results)} shard(s) ({written / 1e6:.1f} MB in {dt:.1f} s), kept "
        f"{len(records) - len(results)}; manifest {mpath}"
    )
    return {
        "noop": False,
        "output_dir": str(out),
        "manifest": str(mpath),
        "built": sorted(results),
        "reused": sorted(set(records) - set(results)),
        "removed_tmp": removed,
        "samples": {k: v["samples"] for k, v in manifest["splits"].items()},
        "bytes_written": written,
        "seconds": dt,
    }
