"""The ``slurm`` executor: the pending cell groups as one Slurm job array, through submitit.

``benchsuite run`` on the login node submits every group as one task of a job array and waits,
collecting each task's results as it finishes; the driver alone writes the run directory, so
the parts and TensorBoard logs on the shared filesystem have one writer. Each task's results
are written atomically by submitit (a temporary file, then a rename) under ``RUN_DIR/slurm/``,
and this executor records which cells each job holds in ``RUN_DIR/slurm/jobs.json``. If the
driver stops (Ctrl-C, a lost login session), the jobs go on; rerunning the same command
collects what they finished, waits for the ones still queued or running, and submits only the
cells that have no job left.

Before submitting, the executor reads the partition's nodes and time limit (``sinfo``), fills
in the GPUs, CPUs and time it was not given, and refuses (a ``PluginError``, exit 2) a request
that no node could ever run, rather than leave it PENDING for ever. It follows its jobs with
``squeue`` and the result files alone, never ``sacct``, so clusters without accounting work
too: a job that has left the queue without a result is lost, and a job pending for a reason
that cannot clear (``PartitionConfig``, ...) is cancelled and lost. A lost job comes back as an
``api.LostGroup`` naming Slurm's reason; the run goes on and a rerun submits those cells again.

``backend: local`` runs the same code path through submitit's ``LocalExecutor``: each job is a
subprocess of this machine, so a setup is tried without a cluster.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from benchsuite.api import (
    CellTask,
    ExecutorFactory,
    LostGroup,
    PluginError,
    Registry,
    cut_groups,
    hookimpl,
    run_on_worker,
    stack_size,
)
from benchsuite_plugins.executors._slurm_request import (
    Request,
    SlurmParams,
    fit,
    local_request,
    read_partition,
    slurm_command,
    time_text,
)

# Reasons for which a pending job can never start: the request exceeds what the partition allows.
_NEVER = {"PartitionConfig", "PartitionTimeLimit", "PartitionNodeLimit", "BadConstraints", "InvalidQOS", "InvalidAccount"}
# How long squeue may keep failing (a controller restarting) before the run gives up waiting.
_QUEUE_PATIENCE_S = 300.0


def queue() -> dict[str, tuple[str, str]]:
    """This user's jobs in Slurm's queue, each array task apart: job id -> (state, reason)."""
    rows = slurm_command("squeue", "--noheader", "--me", "--array", "--format=%i|%T|%r").splitlines()
    return {job_id: (state, reason) for job_id, state, reason in (row.split("|", 2) for row in rows)}


def ending(job: Any) -> str:
    """Why job ``job`` left the queue without a result: Slurm's state and reason while slurmctld still
    remembers it (``MinJobAge``, 300 s by default), else the last line of its log."""
    done = subprocess.run(["scontrol", "--oneliner", "show", "job", job.job_id], capture_output=True, text=True, check=False)
    found = dict(re.findall(r"\b(JobState|Reason)=(\S+)", done.stdout))
    if "JobState" in found:
        reason = found.get("Reason", "None")
        return f"{found['JobState']}{f' ({reason})' if reason != 'None' else ''}"
    log = job.paths.stderr.read_text(errors="replace").strip().splitlines() if job.paths.stderr.exists() else []
    if log:
        return f"left the queue without a result; its log ends: {log[-1]}"
    return "left the queue without a result or a record (as an array task cancelled before it started does)"


def failure(message: str, time_min: float) -> str:
    """Why a job failed, from submitit's message: the time limit, or the last line of the job's traceback."""
    if "timed-out and not checkpointable" in message:  # submitit's answer to Slurm's warning before the limit
        return f"reached its time limit ({time_min:g} min: time_min) and was stopped"
    lines = [line for line in message.splitlines() if line.strip()]
    # submitit puts the traceback between two rules of dashes, then the paths of the logs
    rules = [i for i, line in enumerate(lines) if set(line.strip()) == {"-"}]
    end = rules[-1] if len(rules) >= 2 else len(lines)
    return f"failed: {lines[end - 1].strip() if end else message}"


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
        # torch threads per array task: its CPUs; unset until the partition is read (estimate keeps its own)
        self.threads = params.cpus_per_task

    def _request(self) -> Request:
        p = self.params
        return local_request(p) if p.backend == "local" else fit(p, read_partition(p.partition))

    def _submitter(self, folder: Path, request: Request) -> Any:
        import submitit

        p = self.params
        if p.backend == "local":
            submitter = submitit.LocalExecutor(folder)
            submitter.update_parameters(
                timeout_min=math.ceil(request.time_min), gpus_per_node=request.gpus, cpus_per_task=request.cpus
            )
            return submitter
        submitter = submitit.SlurmExecutor(folder)
        seconds = request.time_min * 60
        submitter.update_parameters(
            time=math.ceil(request.time_min),  # submitit's own arithmetic wants whole minutes
            gpus_per_node=request.gpus,
            cpus_per_task=request.cpus,
            ntasks_per_node=1,
            array_parallelism=p.array_parallelism,
            # submitit's warning signal (USR2, then a "timed-out" result) comes at most a tenth of
            # the limit early: its default, 90 s, would end a job of a minute or two at once.
            signal_delay_s=int(min(90, seconds / 10)),
            # the exact limit, to the second (sbatch --time=M:SS)
            additional_parameters={"time": time_text(request.time_min), **p.additional},
            **({"partition": p.partition} if p.partition else {}),
            **({"mem": f"{int(request.mem_gb * 1024)}M"} if request.mem_gb else {}),
        )
        return submitter

    def _submit(self, folder: Path, request: Request, task: CellTask, groups: list[list[Any]]) -> dict[Any, list[str]]:
        """Submit ``groups`` as one array: job -> the keys of its cells. sbatch's refusal is the user's to fix (exit 2)."""
        from submitit.core.utils import FailedJobError, FailedSubmissionError

        n = len(groups)
        try:
            jobs = self._submitter(folder, request).map_array(
                run_on_worker, [task] * n, groups, [request.gpus > 0] * n, [request.cpus] * n
            )
        except (FailedJobError, FailedSubmissionError) as exc:
            lines = [line.strip() for line in str(exc).splitlines() if "error" in line.lower()]
            raise PluginError(f"sbatch refused the job array: {lines[-1] if lines else str(exc).strip()}") from None
        return {job: [cell.key for cell in group] for job, group in zip(jobs, groups, strict=True)}

    def run(self, task: CellTask, families: Sequence[Sequence[Any]]) -> Iterator[Any]:
        import submitit

        p = self.params
        request = self._request()
        self.threads = request.cpus
        on_slurm = p.backend == "slurm"
        folder = Path(task.run_dir) / "slurm"
        folder.mkdir(parents=True, exist_ok=True)
        ledger = _Ledger(folder / "jobs.json")
        watch = _Watch({cell.key: cell for family in families for cell in family}, request.time_min)

        # Jobs of earlier runs that hold pending cells: collect the finished, wait for those Slurm
        # still runs, and submit again the cells of any other (failed, cancelled, never started).
        queued = queue() if on_slurm else {}
        job_class = submitit.SlurmJob if on_slurm else submitit.LocalJob
        for job_id, keys in ledger.jobs.items():
            if not watch.todo.isdisjoint(keys):
                yield from watch.resume(job_class(folder, job_id), keys, alive=job_id in queued)

        busy = {key for keys in watch.in_flight.values() for key in keys}
        unassigned = [[cell for cell in family if cell.key in watch.todo and cell.key not in busy] for family in families]
        groups = cut_groups([family for family in unassigned if family], stack_size(p.stack, on_gpu=request.gpus > 0))
        if groups:
            submitted = self._submit(folder, request, task, groups)
            ledger.add({job.job_id: keys for job, keys in submitted.items()})
            watch.in_flight |= submitted

        finished = False
        answered = time.monotonic()  # when squeue last answered
        try:
            while watch.in_flight:
                if not on_slurm:
                    yield from watch.look_local()
                else:
                    try:
                        queued, answered = queue(), time.monotonic()
                    except PluginError:
                        if time.monotonic() - answered > _QUEUE_PATIENCE_S:
                            raise
                        queued = None  # a controller restarting: look again at the next poll
                    yield from watch.look(queued)
                if watch.in_flight:
                    time.sleep(p.poll_s)
            finished = True
        finally:
            if not finished and not on_slurm:
                # Local jobs are this machine's subprocesses: stop them with the driver. Slurm
                # jobs go on, and a rerun collects them.
                for job in watch.in_flight:
                    with contextlib.suppress(Exception):
                        job.cancel(check=False)


class _Watch:
    """A run's jobs and the cells still to yield: each job's results once it finishes, or a ``LostGroup``
    for a job that never will."""

    def __init__(self, cells: dict[str, Any], time_min: float):
        self.cells = cells
        self.time_min = time_min
        self.todo = set(cells)  # keys whose results have not been yielded yet
        self.in_flight: dict[Any, list[str]] = {}  # job -> the keys of its cells, in the order of its results
        self.missing: set[Any] = set()  # jobs absent from the queue without a result at the last look

    def resume(self, job: Any, keys: list[str], alive: bool) -> Iterator[Any]:
        """An earlier run's job: its results if it finished well, followed if Slurm still has it, else nothing
        (its cells are submitted again)."""
        from submitit.core.utils import UncompletedJobError

        if job.paths.result_pickle.exists():
            with contextlib.suppress(UncompletedJobError):  # FailedJobError included
                yield from self._results(job, keys)
        elif alive:
            self.in_flight[job] = keys

    def look(self, queued: dict[str, tuple[str, str]] | None) -> Iterator[Any]:
        """One look at every Slurm job in flight, given the queue (None: squeue did not answer)."""
        for job in list(self.in_flight):
            if job.paths.result_pickle.exists():
                yield from self._finished(job)
            elif queued is None:
                continue
            elif job.job_id in queued:
                self.missing.discard(job)
                state, reason = queued[job.job_id]
                if state == "PENDING" and reason in _NEVER:
                    raise self._never(job.job_id, reason, queued)
            elif job in self.missing:  # gone from the queue twice, and still no result: it will never come
                yield self._lost(job, ending(job))
            else:
                # Its result may still be on its way over a shared filesystem: one more look.
                self.missing.add(job)

    def look_local(self) -> Iterator[Any]:
        """One look at every local job (a subprocess here) in flight."""
        for job in list(self.in_flight):
            if job.done():
                yield from self._finished(job)

    def _finished(self, job: Any) -> Iterator[Any]:
        from submitit.core.utils import UncompletedJobError

        try:
            yield from self._results(job, self.in_flight[job])
        except UncompletedJobError as exc:  # FailedJobError included
            yield self._lost(job, failure(str(exc), self.time_min))
        else:
            del self.in_flight[job]

    def _results(self, job: Any, keys: list[str]) -> list[Any]:
        """The job's results for cells still to do; raises if the job failed."""
        results = job.result()
        wanted = [result for key, result in zip(keys, results, strict=True) if key in self.todo]
        self.todo.difference_update(keys)
        return wanted

    def _lost(self, job: Any, cause: str) -> LostGroup:
        keys = self.in_flight.pop(job)
        return LostGroup([self.cells[key] for key in keys if key in self.todo], f"job {job.job_id} {cause}")

    def _never(self, job_id: str, reason: str, queued: dict[str, tuple[str, str]]) -> PluginError:
        """Cancel every job that waits for a reason that cannot clear (sbatch ``additional`` options beyond the
        partition, say); the error that says so. Running jobs go on: a rerun collects them."""
        for job in self.in_flight:
            if queued.get(job.job_id, ("", ""))[1] in _NEVER:
                job.cancel(check=False)
        return PluginError(
            f"job {job_id} can never start: Slurm keeps it PENDING with reason {reason} (the request exceeds what "
            "the partition allows: `scontrol show partition`); the jobs waiting for that reason are cancelled"
        )


@hookimpl
def benchsuite_register_executors(registry: Registry[ExecutorFactory]):
    registry.add(
        "slurm",
        SlurmExecutor,
        params=SlurmParams,
        description="Submits the pending groups of cells as one Slurm job array through submitit (or runs them as "
        "local subprocesses, backend: local); a rerun collects finished jobs and submits only what has no job left.",
    )
