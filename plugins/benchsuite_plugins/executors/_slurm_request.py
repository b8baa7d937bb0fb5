"""What each array task of the ``slurm`` executor asks Slurm for: the executor's parameters, the
partition's nodes and time limit read from ``sinfo``, and the request ``fit`` fills in from them,
refusing one no node could ever run (see ``slurm.py``).

A helper module, not an entry point.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, model_validator

from benchsuite.api import ExecutorParams, PluginError


class SlurmParams(ExecutorParams):
    partition: str | None = Field(None, description="Slurm partition (sbatch --partition); None: the cluster's default.")
    time_min: float | None = Field(
        None,
        gt=0,
        le=60 * 24 * 30,
        description="Time limit of each array task, in minutes (0.5 is 30 s); None: 60, or the partition's limit if lower.",
    )
    gpus_per_task: int | None = Field(
        None,
        ge=0,
        le=16,
        description="GPUs of each array task; 0 runs the groups on CPUs. None: 1 if the partition has GPUs, else 0.",
    )
    cpus_per_task: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="CPUs of each array task; torch uses as many threads. None: a node's CPUs per GPU on GPUs, else 4 "
        "(or the node's CPUs if fewer).",
    )
    mem_gb: float | None = Field(
        None, gt=0, le=4096, description="Memory of each array task in GB; None: the partition's default."
    )
    array_parallelism: int = Field(256, ge=1, le=100_000, description="Array tasks running at once (sbatch --array=...%N).")
    additional: dict[str, str] = Field(
        default_factory=dict, description="Further sbatch options without the dashes, e.g. {account: proj42, qos: normal}."
    )
    backend: Literal["slurm", "local"] = Field(
        "slurm", description="'local' runs each job as a subprocess here (submitit's LocalExecutor): no cluster needed."
    )
    poll_s: float = Field(15.0, gt=0, le=3600, description="Seconds between checks for finished jobs.")

    @model_validator(mode="after")
    def _installed(self) -> SlurmParams:
        if importlib.util.find_spec("submitit") is None:
            raise ValueError(
                'the slurm executor needs submitit, which is not installed: pip install -e ".[slurm]" in the benchsuite checkout'
            )
        return self


@dataclass(frozen=True)
class Node:
    cpus: int
    memory_mb: int
    gpus: int


@dataclass(frozen=True)
class Partition:
    name: str
    nodes: list[Node]
    time_limit_min: float | None  # None: no limit


@dataclass(frozen=True)
class Request:
    """What each array task asks Slurm for, every default filled in."""

    gpus: int
    cpus: int
    time_min: float
    mem_gb: float | None


def slurm_command(*args: str) -> str:
    """The output of a Slurm client command; a ``PluginError`` with its message when it fails."""
    if shutil.which(args[0]) is None:
        raise PluginError(f"`{args[0]}` is not on the PATH: the slurm executor runs where Slurm's commands do (a login node)")
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode:
        raise PluginError(f"`{' '.join(args)}` failed: {done.stderr.strip() or f'exit status {done.returncode}'}")
    return done.stdout


def slurm_minutes(text: str) -> float | None:
    """Slurm's time format (``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``) in minutes; None for no limit."""
    if text.strip().lower() in {"infinite", "unlimited", "n/a", "none"}:
        return None
    days, _, clock = text.strip().rpartition("-")
    parts = [int(part) for part in clock.split(":")]
    if days:  # after days the clock starts with hours: D-H, D-H:M, D-H:M:S
        parts += [0] * (3 - len(parts))
    elif len(parts) < 3:  # M or M:S
        parts = [0, *parts] + [0] * (2 - len(parts))
    hours, minutes, seconds = parts
    return int(days or 0) * 1440 + hours * 60 + minutes + seconds / 60


def gres_gpus(gres: str) -> int:
    """The GPUs in a node's gres (``gpu:4``, ``gpu:a100:2(S:0-1),gpu:v100:2``, ``(null)``)."""
    return sum(int(count) for count in re.findall(r"\bgpu(?::[^:,()]+)?:(\d+)", gres))


def read_partition(name: str | None) -> Partition:
    """The nodes and time limit of partition ``name`` (None: the cluster's default), from ``sinfo``."""
    if name is None:
        listed = slurm_command("sinfo", "--noheader", "--format=%P").split()
        default = [partition.rstrip("*") for partition in listed if partition.endswith("*")]
        if not default:
            raise PluginError(f"the cluster has no default partition: set the executor's partition (one of {', '.join(listed)})")
        name = default[0]
    rows = slurm_command("sinfo", "--noheader", "--Node", f"--partition={name}", "--format=%c|%m|%G|%l").splitlines()
    if not rows:
        listed = slurm_command("sinfo", "--noheader", "--format=%P").split()
        raise PluginError(f"partition '{name}' does not exist; the cluster has {', '.join(p.rstrip('*') for p in listed)}")
    fields = [row.split("|") for row in rows]
    nodes = [Node(int(cpus), int(memory), gres_gpus(gres)) for cpus, memory, gres, _ in fields]
    return Partition(name, nodes, slurm_minutes(fields[0][3]))


def fit(params: SlurmParams, partition: Partition) -> Request:
    """``params`` with every unset request chosen from the partition; a ``PluginError`` for one no node could run."""
    where = f"partition '{partition.name}'"
    most = Node(*(max(getattr(node, field) for node in partition.nodes) for field in ("cpus", "memory_mb", "gpus")))
    gpus = params.gpus_per_task if params.gpus_per_task is not None else min(1, most.gpus)
    if gpus > most.gpus and not most.gpus:
        raise PluginError(f"gpus_per_task: {gpus}, but {where} has no GPUs (gres): set gpus_per_task: 0 or another partition")
    if gpus > most.gpus:
        raise PluginError(f"gpus_per_task: {gpus}, but no node of {where} has more than {most.gpus} GPUs; at most {most.gpus}")
    cpus = params.cpus_per_task
    if cpus is None:
        # On GPUs, a node's CPUs shared among its GPUs, so that every GPU gets a task; on CPUs, 4.
        gpu_nodes = [node for node in partition.nodes if node.gpus >= max(gpus, 1)]
        cpus = max(1, min(node.cpus // node.gpus * gpus for node in gpu_nodes)) if gpus else min(4, most.cpus)
    if cpus > most.cpus:
        raise PluginError(f"cpus_per_task: {cpus}, but no node of {where} has more than {most.cpus} CPUs; at most {most.cpus}")
    if params.mem_gb is not None and params.mem_gb * 1024 > most.memory_mb:
        raise PluginError(f"mem_gb: {params.mem_gb:g}, but no node of {where} has more than {most.memory_mb / 1024:.1f} GB")
    memory_mb = (params.mem_gb or 0) * 1024
    if not any(node.gpus >= gpus and node.cpus >= cpus and node.memory_mb >= memory_mb for node in partition.nodes):
        memory = f" and {params.mem_gb:g} GB" if params.mem_gb else ""
        raise PluginError(f"no single node of {where} has {gpus} GPUs and {cpus} CPUs{memory}: ask for fewer")
    limit = partition.time_limit_min
    time_min = params.time_min if params.time_min is not None else min(60, limit or 60)
    if limit is not None and time_min > limit:
        raise PluginError(f"time_min: {time_min:g}, but {where} allows at most {limit:g} minutes per job")
    return Request(gpus, cpus, time_min, params.mem_gb)


def local_request(params: SlurmParams) -> Request:
    """``params`` with every unset request chosen for this machine (``backend: local``)."""
    gpus = params.gpus_per_task if params.gpus_per_task is not None else int(torch.cuda.is_available())
    cpus = params.cpus_per_task if params.cpus_per_task is not None else min(4, os.cpu_count() or 1)
    return Request(gpus, cpus, params.time_min or 60, params.mem_gb)


def time_text(minutes: float) -> str:
    """``minutes`` as sbatch --time's ``M:SS``, to the second (at least 1 s)."""
    seconds = max(1, round(minutes * 60))
    return f"{seconds // 60}:{seconds % 60:02d}"
