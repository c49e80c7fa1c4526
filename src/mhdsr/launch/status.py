"""Status of submitted jobs: read a job folder back into a done / failed / pending summary.

A job folder (``launch.job_dir``) holds, next to submitit's own ``<id>_submitted.pkl`` /
``<id>_<task>_log.out`` / ``<id>_<task>_log.err`` files, the records :mod:`mhdsr.launch.submit`
writes (``<id>_submission.json``, the resolved configs). The state of each job comes from
submitit's result pickles and ``squeue`` / ``scontrol show job`` (never ``sacct``: clusters
without accounting exist). SLURM client commands run with argument lists, never shell strings.

Result pickles are files in a (possibly shared) folder: they are read with a restricted
unpickler that builds plain data only (:func:`safe_load_result`); a pickle that would import or
call anything else is refused and reported, never run.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mhdsr.config import from_dict
from mhdsr.errors import CheckpointError, MhdsrError
from mhdsr.launch.submit import BULK_KINDS, ENDED_STATES, LaunchError, bulk_api


def slurm_states(job_ids: Sequence[str]) -> dict[str, str]:
    """SLURM states of jobs still known to slurmctld, via ``squeue`` (never ``sacct``).

    Returns:
        ``{job id: state}`` (array ids expand to their elements); missing ids are unknown to
        squeue (usually: ended).
    """
    from mhdsr.launch.cluster import squeue_states

    return {j: st for j, (st, _) in squeue_states(list(job_ids)).items()}


#: the only globals a result pickle may name (plain data; nothing that runs code)
_SAFE_GLOBALS = frozenset(
    {("builtins", n) for n in ("dict", "list", "tuple", "set", "frozenset", "str", "bytes",
                                "int", "float", "complex", "bool", "bytearray", "slice")}
    | {("collections", "OrderedDict"), ("datetime", "datetime"), ("datetime", "timedelta")}
)  # fmt: skip


class UnsafePickleError(ValueError):
    """A result pickle names a global outside the allow-list (it was not run)."""


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        raise UnsafePickleError(f"refers to {module}.{name}, which is not plain data")


def safe_load_result(path: Path) -> Any:
    """Unpickle a submitit result file allowing plain data only (dict, list, str, numbers...).

    Raises:
        UnsafePickleError: the pickle refers to any other global (e.g. ``os.system`` in a
            planted ``__reduce__``); nothing of it was called. The message names the file.
        OSError, pickle.UnpicklingError, EOFError: unreadable or torn.
    """
    data = path.read_bytes()
    try:
        return _PlainUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: refused to unpickle: {e}") from None


def _result(
    job_dir: Path, job_id: str, task: int = 0, refused: list[dict[str, str]] | None = None
) -> tuple[str, Any] | None:
    """``("success", value)`` / ``("error", traceback)`` from submitit's result pickle, or None
    (absent, torn, or refused: a refused one is appended to ``refused``)."""
    path = job_dir / f"{job_id}_{task}_result.pkl"
    if not path.exists():
        return None
    if not path.is_file():
        if refused is not None:
            refused.append({"record": str(path), "error": "not a regular file (not read)"})
        return None
    try:
        res = safe_load_result(path)
    except UnsafePickleError as e:
        if refused is not None:
            refused.append({"record": str(path), "error": str(e)})
        return None
    except Exception as e:  # noqa: BLE001 - torn or corrupt: reported, never guessed at
        if refused is not None:
            why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            refused.append(
                {
                    "record": str(path),
                    "error": f"unreadable result pickle (truncated or corrupt: {why})",
                }
            )
        return None
    if not (isinstance(res, tuple) and len(res) == 2 and res[0] in ("success", "error")):
        return None
    return res


def log_files(job_dir: Path, job_id: str, task: int = 0) -> tuple[Path, Path]:
    """(stdout, stderr) of a job's task: ``<id>_<task>_log.out`` (array element ids are
    ``<array id>_<index>``, so their logs are ``<array id>_<index>_<task>_log.out``)."""
    return (job_dir / f"{job_id}_{task}_log.out", job_dir / f"{job_id}_{task}_log.err")


_ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*)$")
_PROGRESS = re.compile(r"(\d+)/(\d+) \[")


def _read_tail(path: Path, size: int = 65536) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def last_error_line(err_log: Path) -> str | None:
    """The last ``SomethingError: message`` line of a log (else its last non-empty line)."""
    lines = [ln.strip() for ln in re.split(r"[\r\n]+", _read_tail(err_log)) if ln.strip()]
    for ln in reversed(lines):
        if _ERROR_LINE.match(ln):
            return ln
    return lines[-1] if lines else None


def sample_progress(err_log: Path) -> tuple[int, int] | None:
    """``(samples done, samples to do)`` of a sampling task from its progress bar, if any."""
    found = _PROGRESS.findall(_read_tail(err_log, 8192))
    return (int(found[-1][0]), int(found[-1][1])) if found else None


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
    **{k: {"config": dict, "num_tasks": int, "tasks": list,
           "pending_at_submission": list, "output_dir": str} for k in BULK_KINDS},
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


def _job_details(
    folder: Path,
    rec: dict[str, Any],
    ids: list[str],
    states: dict[str, str],
    squeue: dict[str, tuple[str, str]],
    results: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Per job: state, SLURM reason, restarts, log files, last error line (FAILED)."""
    from mhdsr.launch.cluster import job_records

    restarts: dict[str, int] = {}
    if rec["executor"] == "slurm" and any(j in squeue for j in ids):
        for jid, info in job_records([rec["job_id"]]).items():
            with contextlib.suppress(ValueError):
                restarts[jid] = int(info.get("Restarts", "0"))
    out: dict[str, dict[str, Any]] = {}
    for j in ids:
        log_out, log_err = log_files(folder, j)
        d: dict[str, Any] = {
            "state": states[j],
            "reason": (squeue.get(j) or ("", ""))[1],
            "restarts": restarts.get(j),
            "log": str(log_out),
            "started": log_out.exists() or log_err.exists(),
            "error": None,
        }
        if states[j] in ("FAILED", "ENDED", "OUT_OF_MEMORY", "NODE_FAIL", "TIMEOUT", "BOOT_FAIL"):
            res = results.get(j)
            if res is not None and res[0] == "error":
                tb = [ln for ln in str(res[1]).splitlines() if ln.strip()]
                d["error"] = next((ln.strip() for ln in reversed(tb) if _ERROR_LINE.match(ln)),
                                  tb[-1].strip() if tb else None)  # fmt: skip
            if d["error"] is None:
                d["error"] = last_error_line(log_err)
        out[j] = d
    return out


def read_status(job_dir: str | Path) -> dict[str, Any]:
    """What the submissions recorded in a job folder did, and where the work stands now.

    Returns:
        ``{"submissions": [...], "sims": ... | None, "unreadable": [...]}``. ``unreadable``
        lists ``{"record", "error"}`` for each record that cannot be read (corrupt or truncated
        JSON, a missing key, an invalid config) and each result pickle refused by the
        restricted unpickler: they are passed over and the others reported.
        One entry per submission (oldest first) with ``kind``, ``job_id``, ``executor``,
        ``states`` (``{job id: state}``, see :func:`job_state`) and ``jobs`` (``{job id:
        {state, reason, restarts, log, started, error}}``: SLURM's reason, e.g. ``Resources``,
        for a job squeue knows; restarts from scontrol; ``error`` the last error line of a
        failed job). Training entries add ``run_dir``, ``step`` (newest complete checkpoint),
        ``max_steps`` and ``own_steps`` (steps this job made: 0 if it never started, else the
        newest step minus the step at submission). Sampling entries add ``owned`` (the sims it
        was submitted to make), ``failed`` (those of them still incomplete whose task reported
        them failed or ended without success) and ``tasks`` (``{job id: {index, sims, done,
        samples}}``: per array task its sims, how many are complete now, and the progress bar's
        ``[done, total]`` samples of the sim being written, if any). Rollout entries
        (``mhdsr launch rollout``) are the same (their tasks print no progress bar).
        ``sims`` (when there was a sampling or rollout submission) splits the newest such
        config's work list by the files on disk now into ``done``, ``failed`` and ``pending``,
        plus ``output_dir``; a record whose work list cannot be built now (inputs or
        checkpoint gone) is reported in ``unreadable``.

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
            if rec["kind"] in BULK_KINDS:
                api = bulk_api(rec["kind"])
                cfg = from_dict(api.schema, rec["config"])
        except ValueError as e:  # also ConfigError: the recorded config no longer validates
            unreadable.append({"record": str(rec_path), "error": str(e)})
            continue
        ids = [str(j) for j in rec["job_ids"]]
        from mhdsr.launch.cluster import squeue_states

        sqr = squeue_states(ids) if rec["executor"] == "slurm" else {}
        sq = {j: st for j, (st, _) in sqr.items()}
        debug = rec.get("debug_results", {})  # debug jobs ran in the submitting process
        results = {
            j: ("success", debug[j]) if j in debug else _result(folder, j, refused=unreadable)
            for j in ids
        }
        states = {j: job_state(rec["executor"], j, sq, results[j]) for j in ids}
        entry: dict[str, Any] = {"kind": rec["kind"], "job_id": rec["job_id"],
                                 "executor": rec["executor"], "states": states,
                                 "jobs": _job_details(folder, rec, ids, states, sqr, results)}  # fmt: skip
        if rec["kind"] == "train":
            from mhdsr.runtime import checkpoint as ckpt

            try:
                latest = ckpt.find_latest(rec["run_dir"])
            except CheckpointError as e:  # status reports it; the job itself refuses to resume
                latest = None
                entry["checkpoint_error"] = str(e)
            step = latest.step if latest else 0
            started = any(d["started"] for d in entry["jobs"].values())
            res = results.get(ids[0])
            if res is not None and res[0] == "success" and "steps_this_run" in res[1]:
                own = int(res[1]["steps_this_run"])
            else:
                own = max(0, step - int(rec.get("step_at_submission", step))) if started else 0
            entry.update(run_dir=rec["run_dir"], step=step, own_steps=own,
                         max_steps=int(rec["config"]["max_steps"]))  # fmt: skip
        else:
            try:
                work = list(api.list_work(cfg))
                now = api.status(cfg)
            except MhdsrError as e:  # inputs or checkpoint gone since: reported, not guessed
                unreadable.append({"record": str(rec_path),
                                   "error": f"cannot list its work now: {e}"})  # fmt: skip
                continue
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
            per_task: dict[str, dict[str, Any]] = {}
            for k, jid in owner.items():
                mine = [w for w in owned if index[w] % n == k]
                prog = None
                if states[jid] not in ENDED_STATES | {"ENDED", "COMPLETED", "PENDING"}:
                    prog = sample_progress(log_files(folder, jid)[1])
                per_task[jid] = {"index": k, "sims": len(mine),
                                 "done": sum(w not in incomplete for w in mine),
                                 "samples": prog}  # fmt: skip
            entry.update(owned=owned, failed=sorted(failed), tasks=per_task)
            bad_now = {w for w in incomplete if newest_owner_failed.get(w)}
            sims = {"output_dir": rec["output_dir"], "done": sorted(now["done"]),
                    "failed": sorted(bad_now), "pending": sorted(incomplete - bad_now)}  # fmt: skip
        subs.append(entry)
    return {"submissions": subs, "sims": sims, "unreadable": unreadable}


def _job_line(jid: str, d: dict[str, Any], extra: str = "") -> str:
    state = d["state"] + (f" ({d['reason']})" if d.get("reason") and d["reason"] != "None" else "")
    parts = [f"  {jid}: {state}"]
    if d.get("restarts") is not None:
        parts.append(f"restarts {d['restarts']}")
    if extra:
        parts.append(extra)
    parts.append(f"log {Path(d['log']).name}" if d.get("started") else "not started")
    line = ", ".join(parts)
    if d.get("error"):
        line += f"\n    error: {d['error']}"
    return line


def format_status(status: dict[str, Any]) -> str:
    """Text for :func:`read_status`: one line per unreadable record, one block per submission
    (a summary line, then one line per job: state (reason), restarts, its own progress, log,
    last error line); for sampling, a final line with the simulations done / failed / pending
    now."""
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
        details = s.get("jobs", {})
        if s["kind"] == "train":
            for jid, d in details.items():
                lines.append(_job_line(jid, d, f"{s['own_steps']} step(s) by this job"))
            lines.append(
                f"  run_dir now at step {s['step']} of {s['max_steps']} (newest checkpoint) in "
                f"{s['run_dir']}"
            )
            if s.get("checkpoint_error"):
                lines.append(f"  checkpoint error: {s['checkpoint_error']}")
        else:
            for jid, d in details.items():
                t = s.get("tasks", {}).get(jid)
                extra = ""
                if t is not None:
                    extra = f"task {t['index']}: {t['done']}/{t['sims']} sim(s) done"
                    if t["samples"]:
                        extra += f", {t['samples'][0]}/{t['samples'][1]} samples written"
                lines.append(_job_line(jid, d, extra))
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
