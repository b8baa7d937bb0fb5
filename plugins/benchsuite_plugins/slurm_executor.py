"""The ``slurm`` executor: the pending cell groups as one Slurm job array, through submitit.

``benchsuite run`` on the login node submits every group as one task of a job array and waits,
collecting each task's results as it finishes; the driver alone writes the run directory, so
the shards and TensorBoard logs on the shared filesystem have one writer. Each task's results
are written atomically by submitit (a temporary file, then a rename) under ``RUN_DIR/slurm/``,
and this executor records which cells each job holds in ``RUN_DIR/slurm/jobs.json``. If the
driver stops (Ctrl-C, a lost login session), the jobs go on; rerunning the same command
collects what they finished, waits for the ones still queued or running, and submits only the
cells that have no job left.

``backend: local`` runs the same code path through submitit's ``LocalExecutor``: each job is a
subprocess of this machine, so the executor is tested, and a setup tried, without a cluster.
A job that fails (a plugin's error, the time limit, a node failure) comes back as an
``api.LostGroup`` naming the cause; the run goes on and a rerun submits those cells again.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from benchsuite.api import CellTask, ExecutorParams, LostGroup, cut_groups, hookimpl, run_on_worker, stack_size

# Slurm states in which a job will still produce its result.
_ALIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED"}


class SlurmParams(ExecutorParams):
    partition: str | None = Field(None, description="Slurm partition (sbatch --partition); None: the cluster's default.")
    time_min: int = Field(60, ge=1, le=60 * 24 * 30, description="Time limit of each array task, in minutes.")
    gpus_per_task: int = Field(1, ge=0, le=16, description="GPUs of each array task; 0 runs the groups on CPUs.")
    cpus_per_task: int = Field(4, ge=1, le=1024, description="CPUs of each array task; torch uses as many threads.")
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


class _Ledger:
    """``jobs.json``: job id -> the keys of the cells it runs, written atomically after each submission."""

    def __init__(self, path: Path):
        self.path = path
        self.jobs: dict[str, list[str]] = json.loads(path.read_text()) if path.exists() else {}

    def add(self, jobs: dict[str, list[str]]) -> None:
        self.jobs |= jobs
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(self.jobs, indent=1))
        os.replace(partial, self.path)


class SlurmExecutor:
    """Groups of cells as Slurm array tasks through submitit; see the module docstring."""

    def __init__(self, params: SlurmParams):
        self.params = params
        self.threads = params.cpus_per_task  # torch threads per array task: its CPUs

    def _submitter(self, folder: Path) -> Any:
        import submitit

        p = self.params
        if p.backend == "local":
            submitter = submitit.LocalExecutor(folder)
            submitter.update_parameters(timeout_min=p.time_min, gpus_per_node=p.gpus_per_task, cpus_per_task=p.cpus_per_task)
            return submitter
        submitter = submitit.SlurmExecutor(folder)
        submitter.update_parameters(
            time=p.time_min,
            gpus_per_node=p.gpus_per_task,
            cpus_per_task=p.cpus_per_task,
            ntasks_per_node=1,
            array_parallelism=p.array_parallelism,
            **({"partition": p.partition} if p.partition else {}),
            **({"mem": f"{int(p.mem_gb * 1024)}M"} if p.mem_gb else {}),
            **({"additional_parameters": dict(p.additional)} if p.additional else {}),
        )
        return submitter

    def run(self, task: CellTask, families: Sequence[Sequence[Any]]) -> Iterator[Any]:
        import submitit
        from submitit.core.utils import FailedJobError, UncompletedJobError

        p = self.params
        folder = Path(task.run_dir) / "slurm"
        folder.mkdir(parents=True, exist_ok=True)
        ledger = _Ledger(folder / "jobs.json")
        job_class = submitit.LocalJob if p.backend == "local" else submitit.SlurmJob
        cells = {cell.key: cell for family in families for cell in family}
        todo = set(cells)  # keys whose results have not been yielded yet
        in_flight: dict[Any, list[str]] = {}  # job -> the keys of its cells, in the order of its results

        def collect(job: Any, keys: list[str]) -> list[Any]:
            """The job's results for cells still to do; raises if the job failed."""
            results = job.result()
            wanted = [result for key, result in zip(keys, results, strict=True) if key in todo]
            todo.difference_update(keys)
            return wanted

        # Jobs of earlier runs that hold pending cells: collect the finished, wait for those Slurm
        # still runs, and submit again the cells of any other (failed, cancelled, never started).
        for job_id, keys in ledger.jobs.items():
            if todo.isdisjoint(keys):
                continue
            job = job_class(folder, job_id)
            if job.paths.result_pickle.exists():
                with contextlib.suppress(FailedJobError, UncompletedJobError):
                    yield from collect(job, keys)
            elif p.backend == "slurm" and job.state.split()[0] in _ALIVE:
                in_flight[job] = keys

        busy = {key for keys in in_flight.values() for key in keys}
        unassigned = [[cell for cell in family if cell.key in todo and cell.key not in busy] for family in families]
        groups = cut_groups([family for family in unassigned if family], stack_size(p.stack, on_gpu=p.gpus_per_task > 0))
        if groups:
            submitter = self._submitter(folder)
            n = len(groups)
            jobs = submitter.map_array(run_on_worker, [task] * n, groups, [p.gpus_per_task > 0] * n, [self.threads] * n)
            submitted = {job: [cell.key for cell in group] for job, group in zip(jobs, groups, strict=True)}
            ledger.add({job.job_id: keys for job, keys in submitted.items()})
            in_flight |= submitted

        finished = False
        try:
            while in_flight:
                for job in [job for job in in_flight if job.done()]:
                    keys = in_flight.pop(job)
                    try:
                        results = collect(job, keys)
                    except (FailedJobError, UncompletedJobError) as exc:
                        lines = [line for line in str(exc).strip().splitlines() if line.strip()]
                        lost = [cells[key] for key in keys if key in todo]
                        yield LostGroup(lost, f"job {job.job_id} ({job.state}): {lines[-1] if lines else type(exc).__name__}")
                        continue
                    yield from results
                if in_flight:
                    time.sleep(p.poll_s)
            finished = True
        finally:
            if not finished and p.backend == "local":
                # Local jobs are this machine's subprocesses: stop them with the driver. Slurm
                # jobs go on, and a rerun collects them.
                for job in in_flight:
                    with contextlib.suppress(Exception):
                        job.cancel(check=False)


@hookimpl
def benchsuite_register_executors(registry):
    registry.add(
        "slurm",
        SlurmExecutor,
        params=SlurmParams,
        description="Submits the pending groups of cells as one Slurm job array through submitit (or runs them as "
        "local subprocesses, backend: local); a rerun collects finished jobs and submits only what has no job left.",
    )
