"""Typed configuration of ``mhdsr launch``: where and how jobs run (submitit executors).

The launch settings are their own schema (:class:`LaunchConfig`), separate from the train or
sample config they launch. On the command line both come together::

    mhdsr launch train --config configs/train/x.yaml --launch configs/launch/slurm.yaml \\
        nodes=4 gpus_per_node=4 time=24h max_steps=200000

Each ``key=value`` override goes to exactly one of the two configs (:func:`split_overrides`):
``launch.KEY=...`` always means the launch config; a bare key whose first component is a field
of the train/sample config goes there; a bare key that is a launch field goes to the launch
config; a key naming a field of both schemas, or of neither, is an error. All values are
validated before anything is submitted.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mhdsr.config import load_config, require
from mhdsr.errors import ConfigError

#: executors accepted by ``executor`` (submitit's SLURM, local-subprocess and in-process ones)
Executor = Literal["slurm", "local", "debug"]

_UNIT_TIME = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?:in)?)?(?:(\d+)s)?$")
_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_SBATCH_KEY = re.compile(r"^[a-z][a-z0-9-]*$")


def parse_time(text: str | int) -> int:
    """Wall-clock limit in whole minutes (rounded up) from a human or SLURM time string.

    Accepted forms: minutes as an integer (``90``), unit strings (``"24h"``, ``"90m"``,
    ``"1d12h"``, ``"1h30m"``, ``"45s"``) and SLURM's ``--time`` formats (``"MM:SS"``,
    ``"HH:MM:SS"``, ``"D-HH"``, ``"D-HH:MM"``, ``"D-HH:MM:SS"``).

    Args:
        text: the limit.

    Returns:
        Minutes, >= 1.

    Raises:
        ConfigError: unparseable, or zero.
    """
    s = str(text).strip().lower()
    seconds: int | None = None
    if s.isdigit():
        seconds = 60 * int(s)
    elif (m := _UNIT_TIME.match(s)) and any(m.groups()):
        d, h, mi, se = (int(g or 0) for g in m.groups())
        seconds = ((d * 24 + h) * 60 + mi) * 60 + se
    elif m := _SLURM_TIME.match(s):
        day, a, b, c = m.groups()
        if day is not None:  # D-HH, D-HH:MM, D-HH:MM:SS
            h, mi, se = int(a), int(b or 0), int(c or 0)
            seconds = ((int(day) * 24 + h) * 60 + mi) * 60 + se
        elif c is not None:  # HH:MM:SS
            seconds = (int(a) * 60 + int(b)) * 60 + int(c)
        elif b is not None:  # MM:SS
            seconds = int(a) * 60 + int(b)
    if seconds is None:
        raise ConfigError(
            f"config key 'launch.time': cannot read {text!r}; use e.g. 24h, 90m, 1d12h, "
            "90 (minutes) or a SLURM time such as 1-00:00:00"
        )
    if seconds <= 0:
        raise ConfigError(f"config key 'launch.time': {text!r} is not a positive duration")
    return math.ceil(seconds / 60)


def format_minutes(minutes: int) -> str:
    """``D-HH:MM:00`` text of a limit in minutes (how SLURM prints it)."""
    d, rem = divmod(int(minutes), 24 * 60)
    h, m = divmod(rem, 60)
    return f"{d}-{h:02d}:{m:02d}:00" if d else f"{h:02d}:{m:02d}:00"


@dataclass
class LaunchConfig:
    """``mhdsr launch`` settings (one job for training, one job array for sampling)."""

    #: slurm | local (subprocesses on this machine) | debug (in this process)
    executor: Executor = "slurm"
    #: wall-clock limit per job run: 24h, 90m, 1d12h, 1-00:00:00 or minutes; always sent
    time: str = "4h"
    #: training nodes (sampling array tasks always use one node)
    nodes: int = 1
    #: GPUs per node; training runs one task (rank) per GPU
    gpus_per_node: int = 0
    #: ranks per node; 0 = gpus_per_node (1 without GPUs); set it on CPU-only clusters
    tasks_per_node: int = 0
    #: CPUs per rank (data workers + 1)
    cpus_per_task: int = 4
    #: memory per node in GB (0 = the partition's default)
    mem_gb: float = 0.0
    #: SLURM partition ("" = cluster default)
    partition: str = ""
    #: SLURM account ("" = user default)
    account: str = ""
    #: SLURM quality of service ("" = none)
    qos: str = ""
    #: SLURM node features, e.g. "a100|h100" ("" = none)
    constraint: str = ""
    #: whole nodes for the job
    exclusive: bool = False
    #: "" = mhdsr-train / mhdsr-sample
    job_name: str = ""
    #: submitit folder (logs, pickles, resolved configs); "" = <run_dir>/jobs or <output_dir>/jobs
    job_dir: str = ""
    #: USR2 this many seconds before the time limit (SLURM may send it up to 60 s earlier)
    signal_delay_s: int = 120
    #: requeues after a TIME LIMIT before giving up (preemptions requeue without limit)
    max_requeues: int = 3
    #: sampling: array tasks running at once
    array_parallelism: int = 16
    #: sampling: simulations per array task (array size = ceil(pending-work / this))
    sims_per_task: int = 1
    #: sampling: SLURM MaxArraySize; arrays never exceed it (tasks take more sims)
    max_array_size: int = 1001
    #: extra sbatch options, e.g. {mail-type: END}
    additional_parameters: dict[str, str] = field(default_factory=dict)
    #: shell lines run before srun, verbatim (e.g. "module load cuda/12.4")
    setup: list[str] = field(default_factory=list)
    #: extra srun arguments, one list item per argument
    srun_args: list[str] = field(default_factory=list)

    @property
    def timeout_min(self) -> int:
        """The time limit in minutes (what submitit calls ``timeout_min``)."""
        return parse_time(self.time)

    def ranks_per_node(self) -> int:
        """Training ranks per node: ``tasks_per_node``, else one per GPU, else 1."""
        return self.tasks_per_node or self.gpus_per_node or 1

    def validate(self) -> None:
        minutes = self.timeout_min  # raises ConfigError on a bad time
        require(self.nodes >= 1, "launch.nodes", "an integer >= 1", self.nodes)
        require(
            self.gpus_per_node >= 0, "launch.gpus_per_node", "an integer >= 0", self.gpus_per_node
        )
        require(
            self.tasks_per_node >= 0,
            "launch.tasks_per_node",
            "an integer >= 0",
            self.tasks_per_node,
        )
        if self.gpus_per_node and self.tasks_per_node not in (0, self.gpus_per_node):
            raise ConfigError(
                f"config key 'launch.tasks_per_node': {self.tasks_per_node} ranks per node but "
                f"gpus_per_node={self.gpus_per_node}; training runs one rank per GPU (leave "
                "tasks_per_node=0)"
            )
        require(
            self.cpus_per_task >= 1, "launch.cpus_per_task", "an integer >= 1", self.cpus_per_task
        )
        require(self.mem_gb >= 0, "launch.mem_gb", ">= 0 (0 = partition default)", self.mem_gb)
        require(
            0 <= self.signal_delay_s < 60 * minutes,
            "launch.signal_delay_s",
            f"seconds in [0, time limit = {60 * minutes} s)",
            self.signal_delay_s,
        )
        require(self.max_requeues >= 0, "launch.max_requeues", "an integer >= 0", self.max_requeues)
        require(
            self.array_parallelism >= 1,
            "launch.array_parallelism",
            "an integer >= 1",
            self.array_parallelism,
        )
        require(
            self.sims_per_task >= 1, "launch.sims_per_task", "an integer >= 1", self.sims_per_task
        )
        require(
            self.max_array_size >= 1,
            "launch.max_array_size",
            "an integer >= 1",
            self.max_array_size,
        )
        if self.executor == "local" and self.nodes > 1:
            raise ConfigError(
                "config key 'launch.nodes': the local executor runs on this machine only (nodes=1)"
            )
        if self.executor == "debug" and (self.nodes > 1 or self.ranks_per_node() > 1):
            raise ConfigError(
                "config key 'launch.executor': debug runs one process in this Python session; use "
                "nodes=1 tasks_per_node=1 gpus_per_node<=1, or executor=local for several ranks"
            )
        for key in self.additional_parameters:
            if not _SBATCH_KEY.match(key):
                raise ConfigError(
                    f"config key 'launch.additional_parameters': {key!r} is not an sbatch option name "
                    "(lower-case letters, digits and '-', e.g. mail-type)"
                )


def schema_fields(schema: type) -> frozenset[str]:
    """Top-level field names of a config dataclass."""
    return frozenset(f.name for f in dataclasses.fields(schema))


def split_overrides(
    overrides: Sequence[str], target_schema: type, target_name: str
) -> tuple[list[str], list[str]]:
    """Route ``key=value`` overrides to the target (train/sample) config or the launch config.

    Rules (checked for every item, before anything is loaded):
    ``launch.KEY=V`` goes to the launch config as ``KEY=V``; otherwise the first dotted
    component of the key decides: a field of ``target_schema`` only -> target config; a field of
    :class:`LaunchConfig` only -> launch config; both or neither -> :class:`ConfigError`.

    Args:
        overrides: items such as ``"max_steps=100"``, ``"nodes=4"``, ``"launch.time=2h"``.
        target_schema: ``TrainConfig`` or the sample config class.
        target_name: ``"train"`` or ``"sample"`` (for messages).

    Returns:
        ``(target_overrides, launch_overrides)``, each in the given order.

    Raises:
        ConfigError: an item is not ``key=value``, or its key is ambiguous or unknown.
    """
    target_keys = schema_fields(target_schema)
    launch_keys = schema_fields(LaunchConfig)
    to_target: list[str] = []
    to_launch: list[str] = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. nodes=4)")
        head = key.split(".", 1)[0]
        if head == "launch":
            rest = key.split(".", 1)[1] if "." in key else ""
            if rest.split(".", 1)[0] not in launch_keys:
                raise ConfigError(
                    f"override {item!r}: {rest or '(empty)'!r} is not a launch setting; known: "
                    f"{', '.join(sorted(launch_keys))}"
                )
            to_launch.append(f"{rest}={value}")
        elif head in target_keys and head in launch_keys:
            raise ConfigError(
                f"override {item!r}: {head!r} is both a {target_name} key and a launch key; this "
                f"cannot happen by design (report it); write launch.{key}=... for the launch setting"
            )
        elif head in target_keys:
            to_target.append(item)
        elif head in launch_keys:
            to_launch.append(item)
        else:
            raise ConfigError(
                f"override {item!r}: {head!r} is neither a {target_name} config key "
                f"({', '.join(sorted(target_keys))}) nor a launch key "
                f"({', '.join(sorted(launch_keys))})"
            )
    return to_target, to_launch


def _raw_time(path: str | Path | None, overrides: Sequence[str]) -> str | None:
    """``time`` exactly as written in the file or the last ``time=...`` override.

    YAML 1.1 (hence OmegaConf) reads ``10:30`` and ``2:00:00`` as base-60 integers (630, 7200),
    which would silently become 630 or 7200 minutes; the raw text keeps SLURM's meaning.
    """
    raw = None
    if path is not None and Path(path).is_file():
        try:
            data = yaml.load(Path(path).read_text(), Loader=yaml.BaseLoader)  # scalars as text
        except yaml.YAMLError:
            data = None  # load_config reports it
        if isinstance(data, dict) and isinstance(data.get("time"), str):
            raw = data["time"]
    for item in overrides:
        key, _, value = item.partition("=")
        if key.strip() == "time":
            raw = value.strip().strip("'\"")
    return raw


def load_launch_config(path: str | Path | None, overrides: Sequence[str] = ()) -> LaunchConfig:
    """A validated :class:`LaunchConfig` from an optional YAML file and ``key=value`` overrides.

    ``time`` is taken as written (see :func:`_raw_time`), so ``time: 2:00:00`` means 2 hours.

    Raises:
        ConfigError: missing file, unknown key, wrong type or invalid value (names the key).
    """
    raw = _raw_time(path, overrides)
    try:
        cfg = load_config(LaunchConfig, path, overrides)
    except ConfigError as e:  # launch keys share the command line with train/sample keys
        msg = str(e)
        if "config key 'launch." not in msg:
            msg = msg.replace("config key '", "config key 'launch.", 1)
        raise ConfigError(msg) from None
    if raw is not None and raw != cfg.time:
        cfg.time = raw
        cfg.validate()
    return cfg


def executor_parameters(
    launch: LaunchConfig, *, nodes: int, tasks_per_node: int, name: str
) -> dict[str, Any]:
    """submitit ``AutoExecutor.update_parameters`` keywords for a job of this launch config.

    Only set fields are passed (empty strings and zeros mean "cluster default"); the time limit
    is always passed (submitit's SLURM default would be 5 minutes). Values go into
    ``#SBATCH --key=value`` lines that submitit shell-quotes; nothing here builds a command line
    (``setup`` lines are the user's own shell lines, passed verbatim). For the local and debug
    executors only the generic keys are kept.

    Args:
        launch: the launch config.
        nodes: nodes per job (training: ``launch.nodes``; a sampling array task: 1).
        tasks_per_node: processes per node for this job (training: ranks; sampling: 1).
        name: job name.

    Returns:
        Generic keys (``timeout_min``, ``nodes``, ...) plus ``slurm_``-prefixed ones.
    """
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": launch.timeout_min,
        "nodes": nodes,
        "tasks_per_node": tasks_per_node,
        "cpus_per_task": launch.cpus_per_task,
        "slurm_signal_delay_s": launch.signal_delay_s,
    }
    if launch.gpus_per_node:
        params["gpus_per_node"] = launch.gpus_per_node
    if launch.mem_gb:
        params["mem_gb"] = launch.mem_gb
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(launch, key):
            params[f"slurm_{key}"] = getattr(launch, key)
    if launch.exclusive:
        params["slurm_exclusive"] = True
    if launch.additional_parameters:
        params["slurm_additional_parameters"] = dict(launch.additional_parameters)
    if launch.srun_args:
        params["slurm_srun_args"] = list(launch.srun_args)
    if launch.setup:
        params["slurm_setup"] = list(launch.setup)
    if launch.executor != "slurm":  # local/debug: one machine, no sbatch options
        params = {k: v for k, v in params.items() if k != "nodes" and not k.startswith("slurm_")}
    return params
