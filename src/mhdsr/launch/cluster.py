"""What a SLURM partition offers, and whether a launch request can ever start there.

Before anything is submitted (and in ``--dry-run``), :func:`check_request` compares the request
(nodes, tasks x CPUs per node, memory, GPUs, time limit) with ``scontrol show partition`` and
``scontrol show node``, and refuses a job that SLURM would keep PENDING forever (e.g. Reason
``PartitionConfig`` / ``Resources`` with nothing running) or reject (invalid gres), with the
numbers. SLURM client commands run with argument lists, never shell strings.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from mhdsr.launch.config import LaunchConfig, format_minutes, parse_time

_KEY_VALUE = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_:/]*)=(\S*)")
_GPU = re.compile(r"(?:^|,)gpu(?::[^:,(]+)?:(\d+)")


class ClusterQueryError(RuntimeError):
    """``scontrol`` is missing or failed (the message says which command and why)."""


def _scontrol(*args: str) -> list[dict[str, str]]:
    """``scontrol show ... -o`` as one dict per record."""
    if shutil.which("scontrol") is None:
        raise ClusterQueryError("scontrol not on PATH")
    try:
        proc = subprocess.run(
            ["scontrol", "show", *args, "-o"],
            capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError) as e:
        raise ClusterQueryError(f"scontrol show {' '.join(args)}: {e}") from None
    if proc.returncode != 0:
        raise ClusterQueryError(
            f"scontrol show {' '.join(args)}: {(proc.stderr or proc.stdout).strip()}"
        )
    return [dict(_KEY_VALUE.findall(line)) for line in proc.stdout.splitlines() if line.strip()]


def gpus_of(gres: str) -> int:
    """GPUs in a node's ``Gres`` field (``gpu:4``, ``gpu:a100:4(S:0-1)``, ``(null)``: 0)."""
    return sum(int(n) for n in _GPU.findall(gres or ""))


def _int(text: str | None, default: int = 0) -> int:
    try:
        return int(str(text))
    except (TypeError, ValueError):
        return default


@dataclass
class Node:
    name: str
    cpus: int
    mem_mb: int
    gpus: int
    state: str


@dataclass
class Partition:
    """One partition and its nodes (from scontrol)."""

    name: str
    max_time_min: int | None  # None = unlimited
    max_nodes: int | None  # None = unlimited
    max_cpus_per_node: int | None
    max_mem_per_node_mb: int | None
    nodes: list[Node] = field(default_factory=list)


def _limit(text: str | None) -> int | None:
    if text is None or text.upper() in ("UNLIMITED", "INFINITE", "NONE", "N/A"):
        return None
    return _int(text, 0) or None


def read_partition(name: str = "") -> Partition:
    """The partition ``name`` ("" = the cluster's default partition) with its nodes.

    Raises:
        ClusterQueryError: scontrol failed, or no such partition (the message lists them).
    """
    parts = _scontrol("partition")
    if name:
        rec = next((p for p in parts if p.get("PartitionName") == name), None)
    else:
        rec = next((p for p in parts if p.get("Default") == "YES"), None)
    if rec is None:
        known = ", ".join(p.get("PartitionName", "?") for p in parts) or "none"
        want = f"partition {name!r}" if name else "a default partition"
        raise ClusterQueryError(f"this cluster has no {want} (partitions: {known})")
    pname = rec["PartitionName"]
    max_time = rec.get("MaxTime", "UNLIMITED")
    nodes = []
    for n in _scontrol("node"):
        if pname not in (n.get("Partitions") or "").split(","):
            continue
        nodes.append(
            Node(
                name=n.get("NodeName", "?"),
                cpus=_int(n.get("CPUEfctv") or n.get("CPUTot")),
                mem_mb=_int(n.get("RealMemory")),
                gpus=gpus_of(n.get("Gres", "")),
                state=n.get("State", "?"),
            )
        )
    return Partition(
        name=pname,
        max_time_min=None if _limit(max_time) is None else parse_time(max_time),
        max_nodes=_limit(rec.get("MaxNodes")),
        max_cpus_per_node=_limit(rec.get("MaxCPUsPerNode")),
        max_mem_per_node_mb=_limit(rec.get("MaxMemPerNode")),
        nodes=nodes,
    )


def request_problems(
    part: Partition, launch: LaunchConfig, *, nodes: int, tasks_per_node: int
) -> list[str]:
    """Why a job of this shape can never start in ``part`` (empty: it fits).

    Per node the job needs ``tasks_per_node * cpus_per_task`` CPUs, ``mem_gb`` and
    ``gpus_per_node`` GPUs; it needs ``nodes`` such nodes and ``time`` within ``MaxTime``.
    """
    problems: list[str] = []
    where = f"partition {part.name!r}"
    cpus = tasks_per_node * launch.cpus_per_task
    mem_mb = int(launch.mem_gb * 1024) if launch.mem_gb else 0
    gpus = launch.gpus_per_node
    if not part.nodes:
        return [f"{where} has no nodes"]
    max_cpus = max(n.cpus for n in part.nodes)
    if part.max_cpus_per_node:
        max_cpus = min(max_cpus, part.max_cpus_per_node)
    max_mem = max(n.mem_mb for n in part.nodes)
    if part.max_mem_per_node_mb:
        max_mem = min(max_mem, part.max_mem_per_node_mb)
    max_gpus = max(n.gpus for n in part.nodes)
    if cpus > max_cpus:
        fit = max(1, max_cpus // tasks_per_node)
        problems.append(
            f"{tasks_per_node} task(s) x cpus_per_task={launch.cpus_per_task} = {cpus} CPUs per "
            f"node, but the largest node of {where} has {max_cpus}; use cpus_per_task={fit}"
            + (" (or fewer tasks_per_node)" if tasks_per_node > 1 else "")
        )
    if mem_mb > max_mem:
        problems.append(
            f"mem_gb={launch.mem_gb:g} per node, but the largest node of {where} has "
            f"{max_mem / 1024:.1f} GB; use mem_gb={int(max_mem // 1024)} or mem_gb=0 (partition default)"
        )
    if gpus > max_gpus:
        if max_gpus == 0:
            problems.append(
                f"gpus_per_node={gpus}, but the nodes of {where} have no GPUs; on a CPU-only "
                "partition use --launch configs/launch/slurm-cpu.yaml (gpus_per_node=0 "
                "tasks_per_node=N cpus_per_task=M) with engine.device=cpu / device=cpu"
            )
        else:
            problems.append(
                f"gpus_per_node={gpus}, but the nodes of {where} have at most {max_gpus} GPU(s); "
                f"use gpus_per_node={max_gpus}"
            )
    if part.max_time_min is not None and launch.timeout_min > part.max_time_min:
        problems.append(
            f"time={launch.time} ({format_minutes(launch.timeout_min)}) exceeds the MaxTime of "
            f"{where} ({format_minutes(part.max_time_min)}); use time={part.max_time_min}m or less"
        )
    fitting = [n for n in part.nodes if n.cpus >= cpus and n.mem_mb >= mem_mb and n.gpus >= gpus]
    limit = len(part.nodes) if part.max_nodes is None else min(len(part.nodes), part.max_nodes)
    if nodes > limit:
        problems.append(
            f"nodes={nodes}, but {where} has {len(part.nodes)} node(s)"
            + (f" and MaxNodes={part.max_nodes}" if part.max_nodes is not None else "")
            + f"; use nodes={limit}"
        )
    elif not problems and len(fitting) < nodes:
        problems.append(
            f"nodes={nodes} node(s) with {cpus} CPUs, {gpus} GPU(s)"
            + (f", {launch.mem_gb:g} GB" if mem_mb else "")
            + f" each, but only {len(fitting)} node(s) of {where} have that much"
        )
    return problems


def check_request(launch: LaunchConfig, *, nodes: int, tasks_per_node: int) -> str:
    """Refuse a SLURM request that can never start; returns a one-line summary of the partition.

    Raises:
        LaunchError: the request does not fit the partition (every reason, with the numbers), or
            the partition does not exist.
    """
    from mhdsr.launch.submit import LaunchError

    try:
        part = read_partition(launch.partition)
    except ClusterQueryError as e:
        if "has no" in str(e):
            raise LaunchError(f"launch.partition: {e}") from None
        raise LaunchError(f"cannot read the SLURM partition: {e}") from None
    problems = request_problems(part, launch, nodes=nodes, tasks_per_node=tasks_per_node)
    if problems:
        raise LaunchError(
            f"this job could never start in partition {part.name!r} (it would stay PENDING or be "
            "refused):\n  " + "\n  ".join(problems)
        )
    return describe_partition(part)


def describe_partition(part: Partition) -> str:
    """``partition debug: 1 node(s), <= 8 CPUs, 22.4 GB, 0 GPUs per node, MaxTime UNLIMITED``."""
    cpus = max((n.cpus for n in part.nodes), default=0)
    mem = max((n.mem_mb for n in part.nodes), default=0) / 1024
    gpus = max((n.gpus for n in part.nodes), default=0)
    mt = "UNLIMITED" if part.max_time_min is None else format_minutes(part.max_time_min)
    return (
        f"partition {part.name}: {len(part.nodes)} node(s), up to {cpus} CPUs, {mem:.1f} GB, "
        f"{gpus} GPU(s) per node, MaxTime {mt}"
    )


def job_records(main_ids: list[str]) -> dict[str, dict[str, Any]]:
    """``scontrol show job -o`` of each job (array: one entry per element id ``J_K``); pending
    array records with a range of task ids are expanded. Unknown jobs are left out."""
    out: dict[str, dict[str, Any]] = {}
    for main in dict.fromkeys(main_ids):
        try:
            recs = _scontrol("job", str(main))
        except ClusterQueryError:
            continue
        for rec in recs:
            task = rec.get("ArrayTaskId")
            if not task:
                out[rec.get("JobId", str(main))] = rec
                continue
            aid = rec.get("ArrayJobId", str(main))
            for k in _expand(task):
                out[f"{aid}_{k}"] = rec
    return out


def _expand(spec: str) -> list[int]:
    """``"3"``, ``"0-3%1"``, ``"1,4-5"`` -> task ids."""
    ids: list[int] = []
    for part in spec.split("%", 1)[0].split(","):
        a, _, b = part.partition("-")
        if a.isdigit():
            ids.extend(range(int(a), int(b or a) + 1) if (not b or b.isdigit()) else [int(a)])
    return ids


def squeue_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """``{job id: (state, reason)}`` from ``squeue`` for jobs slurmctld still knows (array ids
    expand to their elements); never ``sacct``. Empty when squeue is missing or fails."""
    mains = sorted({str(j).split("_", 1)[0] for j in job_ids})
    if not mains or shutil.which("squeue") is None:
        return {}
    try:
        proc = subprocess.run(
            ["squeue", "--noheader", "--array", "--states=all", f"--jobs={','.join(mains)}",
             "--format=%i|%T|%r"],
            capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {}
    states = {}
    for line in proc.stdout.splitlines():
        jid, state, reason = (line.strip().split("|") + ["", ""])[:3]
        if jid and state:
            states[jid] = (state, reason)
    return states
