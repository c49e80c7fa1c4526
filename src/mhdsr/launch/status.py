"""Status of submitted jobs: read a job folder back into a done / failed / pending summary.

A job folder (``launch.job_dir``) holds, next to submitit's own ``<id>_submitted.pkl`` /
``<id>_<task>_log.out`` / ``<id>_<task>_log.err`` files, the records :mod:`mhdsr.launch.submit`
writes (``<id>_submission.json``, the resolved configs). The state of each job comes from
submitit's result pickles and ``squeue`` (never ``sacct``: clusters without accounting exist).
SLURM client commands run with argument lists, never shell strings.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mhdsr.config import from_dict
from mhdsr.launch.submit import ENDED_STATES, LaunchError, sample_api


def slurm_states(job_ids: Sequence[str]) -> dict[str, str]:
    """SLURM states of jobs still known to slurmctld, via ``squeue`` (never ``sacct``).

    Args:
        job_ids: job ids (``"123"``, array elements ``"123_4"``); array ids expand.

    Returns:
        ``{job id: state}`` for the jobs squeue lists (pending, running, recently ended with
        some configurations); missing ids are unknown to squeue (usually: ended).
    """
    mains = sorted({str(j).split("_", 1)[0] for j in job_ids})
    if not mains:
        return {}
    try:
        proc = subprocess.run(
            ["squeue", "--noheader", "--array", "--states=all", f"--jobs={','.join(mains)}",
             "--format=%i|%T"],
            capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {}
    states = {}
    for line in proc.stdout.splitlines():
        jid, _, state = line.strip().partition("|")
        if jid and state:
            states[jid] = state
    return states


def _result(job_dir: Path, job_id: str, task: int = 0) -> tuple[str, Any] | None:
    """``("success", value)`` / ``("error", traceback)`` from submitit's result pickle, or None."""
    path = job_dir / f"{job_id}_{task}_result.pkl"
    if not path.is_file():
        return None
    try:
        with path.open("rb") as f:
            return pickle.load(f)
    except Exception:  # noqa: BLE001 - a torn or foreign pickle reads as "no result"
        return None


def job_state(executor: str, job_id: str, squeue: dict[str, str], result: Any) -> str:
    """One word for a job: the SLURM state when squeue knows it, else from its result
    (``COMPLETED`` / ``FAILED``), else ``RUNNING`` for a local job whose controller process is
    alive, else ``ENDED`` (SLURM: gone without a result, e.g. cancelled or killed) or
    ``UNKNOWN`` (local/debug).

    Args:
        executor: ``slurm`` | ``local`` | ``debug``.
        job_id: the job id.
        squeue: :func:`slurm_states` output.
        result: ``("success", value)`` / ``("error", text)`` or None (no result yet).
    """
    if job_id in squeue:
        return squeue[job_id]
    if result is not None:
        return "COMPLETED" if result[0] == "success" else "FAILED"
    if executor == "local" and job_id.isdigit():  # the local job id is the controller's pid
        with contextlib.suppress(OSError):
            os.kill(int(job_id), 0)
            return "RUNNING"
    return "ENDED" if executor == "slurm" else "UNKNOWN"


#: keys every ``<id>_submission.json`` has, and those of each kind (with their JSON types)
_RECORD_KEYS: dict[str, type] = {
    "kind": str, "executor": str, "job_id": str, "job_ids": list,
}  # fmt: skip
_KIND_KEYS: dict[str, dict[str, type]] = {
    "train": {"run_dir": str, "config": dict},
    "sample": {"config": dict, "num_tasks": int, "tasks": list,
               "pending_at_submission": list, "output_dir": str},
}  # fmt: skip


def read_record(path: Path) -> dict[str, Any]:
    """Read and check one ``<id>_submission.json``.

    Raises:
        ValueError: unreadable, not JSON (e.g. truncated by a full disk), or lacking a key this
            module reads (the message names the key).
    """
    import json

    try:
        rec = json.loads(path.read_text())
    except OSError as e:
        raise ValueError(f"cannot read it ({e.strerror or e})") from None
    except ValueError as e:
        raise ValueError(f"not valid JSON ({e})") from None
    if not isinstance(rec, dict):
        raise ValueError("not a JSON object")
    need = dict(_RECORD_KEYS)
    need.update(_KIND_KEYS.get(rec.get("kind"), {}))
    for key, typ in need.items():
        if not isinstance(rec.get(key), typ):
            raise ValueError(f"key {key!r} is missing or not a {typ.__name__}")
    if rec["kind"] not in _KIND_KEYS:
        raise ValueError(f"unknown kind {rec['kind']!r}")
    if rec["kind"] == "train" and "max_steps" not in rec["config"]:
        raise ValueError("key 'config.max_steps' is missing")
    return rec


def read_status(job_dir: str | Path) -> dict[str, Any]:
    """What the submissions recorded in a job folder did, and where the work stands now.

    Returns:
        ``{"submissions": [...], "sims": ... | None, "unreadable": [...]}``. ``unreadable``
        lists ``{"record", "error"}`` for each record that cannot be read (corrupt or truncated
        JSON, a missing key, an invalid config): it is passed over and the others reported.
        One entry per submission (oldest first)
        with ``kind``, ``job_id``, ``executor`` and ``states`` (``{job id: state}``, see
        :func:`job_state`); training entries add ``run_dir``, ``step`` (newest complete
        checkpoint) and ``max_steps``; sampling entries add ``owned`` (the sims it was
        submitted to make) and ``failed`` (those of them still incomplete whose task reported
        them failed or ended without success). ``sims`` (when there was a sampling submission)
        splits the newest sampling config's work list by the files on disk now into ``done``,
        ``failed`` (incomplete, and the newest submission owning it failed) and ``pending``
        (incomplete otherwise: queued, running, or never submitted), plus ``output_dir``.

    Raises:
        LaunchError: the folder holds no submission record.
    """
    folder = Path(job_dir).expanduser().resolve()

    def mtime(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:  # removed meanwhile: reported as unreadable
            return 0.0

    records = sorted(folder.glob("*_submission.json"), key=lambda p: (mtime(p), p.name))
    if not records:
        raise LaunchError(f"{folder}: no *_submission.json here (not an mhdsr launch job folder)")
    subs: list[dict[str, Any]] = []
    unreadable: list[dict[str, str]] = []
    sims = None
    newest_owner_failed: dict[str, bool] = {}
    for rec_path in records:
        try:
            rec = read_record(rec_path)
            cfg = None
            if rec["kind"] == "sample":
                sample_cls, list_work, status = sample_api()
                cfg = from_dict(sample_cls, rec["config"])
        except ValueError as e:  # also ConfigError: the recorded config no longer validates
            unreadable.append({"record": str(rec_path), "error": str(e)})
            continue
        ids = [str(j) for j in rec["job_ids"]]
        sq = slurm_states(ids) if rec["executor"] == "slurm" else {}
        debug = rec.get("debug_results", {})  # debug jobs ran in the submitting process
        results = {j: ("success", debug[j]) if j in debug else _result(folder, j) for j in ids}
        states = {j: job_state(rec["executor"], j, sq, results[j]) for j in ids}
        entry: dict[str, Any] = {"kind": rec["kind"], "job_id": rec["job_id"],
                                 "executor": rec["executor"], "states": states}  # fmt: skip
        if rec["kind"] == "train":
            from mhdsr.runtime import checkpoint as ckpt

            latest = ckpt.find_latest(rec["run_dir"])
            entry.update(run_dir=rec["run_dir"], step=latest.step if latest else 0,
                         max_steps=int(rec["config"]["max_steps"]))  # fmt: skip
        else:
            work = list(list_work(cfg))
            now = status(cfg)
            incomplete = set(now["pending"])
            index = {w: i for i, w in enumerate(work)}
            n, owner = int(rec["num_tasks"]), dict(zip(rec["tasks"], ids))
            owned = [
                w for w in rec["pending_at_submission"] if w in index and index[w] % n in owner
            ]
            failed = set()
            for w in owned:
                jid = owner[index[w] % n]
                res = results[jid]
                if res is not None and res[0] == "success":
                    bad = w in res[1].get("failed", [])
                else:
                    bad = states[jid] in ENDED_STATES | {"ENDED"}
                if bad and w in incomplete:
                    failed.add(w)
                newest_owner_failed[w] = w in failed
            entry.update(owned=owned, failed=sorted(failed))
            bad_now = {w for w in incomplete if newest_owner_failed.get(w)}
            sims = {"output_dir": rec["output_dir"], "done": sorted(now["done"]),
                    "failed": sorted(bad_now), "pending": sorted(incomplete - bad_now)}  # fmt: skip
        subs.append(entry)
    return {"submissions": subs, "sims": sims, "unreadable": unreadable}


def format_status(status: dict[str, Any]) -> str:
    """Text for :func:`read_status`: one line per unreadable record, one block per submission;
    for sampling, a final line with the simulations done / failed / pending now."""
    lines = [
        f"unreadable record {u['record']}: {u['error']} (passed over)"
        for u in status.get("unreadable", [])
    ]
    for s in status["submissions"]:
        counts: dict[str, int] = {}
        for st in s["states"].values():
            counts[st] = counts.get(st, 0) + 1
        jobs = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
        lines.append(f"{s['kind']} {s['job_id']} ({s['executor']}): {jobs}")
        if s["kind"] == "train":
            lines.append(
                f"  step {s['step']} of {s['max_steps']} (newest checkpoint) in {s['run_dir']}"
            )
        else:
            lines.append(f"  submitted for {len(s['owned'])} sim(s); failed: {len(s['failed'])}")
    if status["sims"] is not None:
        sims = status["sims"]
        lines.append(
            f"sims now: {len(sims['done'])} done, {len(sims['failed'])} failed, "
            f"{len(sims['pending'])} pending in {sims['output_dir']}"
        )
        for name in sims["failed"][:20]:
            lines.append(f"  failed: {name}")
    return "\n".join(lines)
