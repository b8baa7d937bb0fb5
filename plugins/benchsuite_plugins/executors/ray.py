"""The ``ray`` executor: cell groups as Ray tasks, on a running cluster or on a local one it starts.

Each group (the cells of a sweep trained as one stack) is one Ray task with its resource needs;
results stream back to the driver as tasks finish, and the driver alone writes the run
directory, as with ``local``. The task object (the registry as plugin names, the data root) is
put in the object store once and shared by every task. Workers read the datasets themselves,
from the data root and the dataset cache, rather than receiving them from the driver: a
dataset is built deterministically from its config, the cache makes the second build on a node
a file read, and the driver (a login node, a laptop) need not hold the data at all.

A task whose worker dies (killed, node lost, out of memory) is run again up to ``max_retries``
times by Ray; after that its cells come back as an ``api.LostGroup`` and the run goes on. An
exception raised by the task (a plugin's error) ends the run as it does with ``local``. When
the run ends early (an error, Ctrl-C) the tasks still outstanding are cancelled.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from pydantic import Field, model_validator

from benchsuite.api import (
    CellTask,
    ExecutorFactory,
    ExecutorParams,
    LostGroup,
    Registry,
    cut_groups,
    hookimpl,
    run_on_worker,
    stack_size,
)


class RayParams(ExecutorParams):
    address: str | None = Field(
        None,
        description="The cluster: 'auto' (the one started with `ray start` on this machine), 'ray://HOST:10001' "
        "(Ray Client) or 'HOST:6379'. None does what ray.init() does: RAY_ADDRESS if set, else a cluster "
        "started with `ray start` on this machine, else a local cluster for this run, stopped at its end.",
    )
    num_cpus: float = Field(1, gt=0, le=1024, description="CPUs each task reserves; torch runs that many threads (rounded up).")
    num_gpus: float | Literal["auto"] = Field(
        "auto",
        description="GPUs each task reserves; a fraction such as 0.25 lets four groups share one GPU. "
        "'auto': 1 when the cluster has GPUs, else 0 (the tasks run on CPUs).",
    )
    max_retries: int = Field(
        3, ge=0, le=100, description="Times a task whose worker died (killed, node lost, out of memory) is run again."
    )
    local_cpus: int | None = Field(
        None, ge=1, le=4096, description="CPUs of the local cluster started when there is none to connect to; None: all."
    )
    runtime_env: dict[str, Any] | None = Field(
        None,
        description="Ray runtime environment of the tasks (env_vars, pip, working_dir, ...), e.g. "
        "{env_vars: {PYTHONPATH: /shared/plugins}} to put a plugin on every worker's path.",
    )

    @model_validator(mode="after")
    def _installed(self) -> RayParams:
        if importlib.util.find_spec("ray") is None:
            raise ValueError(
                'the ray executor needs Ray, which is not installed: pip install -e ".[ray]" in the benchsuite checkout'
            )
        if isinstance(self.num_gpus, float | int) and not 0 <= self.num_gpus <= 64:
            raise ValueError("num_gpus must be 'auto' or between 0 and 64")
        return self


class RayExecutor:
    """Groups of cells as Ray tasks; see the module docstring."""

    def __init__(self, params: RayParams):
        self.params = params
        self.threads = math.ceil(params.num_cpus)  # torch threads per task: the CPUs it reserves

    def _connect(self) -> bool:
        """Connect to (or start) the cluster unless this process already is; True when this call did it."""
        import ray

        if ray.is_initialized():
            return False
        p = self.params
        options: dict[str, Any] = {"logging_level": logging.WARNING}
        if p.local_cpus is not None:
            options["num_cpus"] = p.local_cpus
        if p.address is None:
            options["include_dashboard"] = False  # a private cluster for one run needs no dashboard
        ray.init(address=p.address, **options)
        return True

    def run(self, task: CellTask, families: Sequence[Sequence[Any]]) -> Iterator[Any]:
        import ray
        from ray.exceptions import RayError, RayTaskError

        p = self.params
        started = self._connect()
        pending: dict[Any, list[Any]] = {}
        try:
            gpus = p.num_gpus
            if gpus == "auto":
                gpus = 1 if ray.cluster_resources().get("GPU", 0) > 0 else 0
            remote = ray.remote(run_on_worker).options(
                num_cpus=p.num_cpus,
                num_gpus=gpus,
                max_retries=p.max_retries,
                retry_exceptions=False,  # a plugin's exception is not the machinery's fault: no retry
                runtime_env=p.runtime_env,
            )
            shared = ray.put(task)
            for group in cut_groups(families, stack_size(p.stack, on_gpu=gpus > 0)):
                pending[remote.remote(shared, group, gpus > 0, self.threads)] = group
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                group = pending.pop(done[0])
                try:
                    results = ray.get(done[0])
                except RayTaskError as exc:
                    raise exc.cause from None  # e.g. a CellFailure, which the core explains
                except RayError as exc:
                    yield LostGroup(group, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}")
                    continue
                yield from results
        finally:
            if started:
                ray.shutdown()  # the private cluster goes, and every task with it
            else:
                # Queued tasks are dropped and running ones interrupted. Not force=True: Ray 2.60
                # aborted the driver when a force-cancelled task completed at the same moment.
                for ref in pending:
                    ray.cancel(ref)


@hookimpl
def benchsuite_register_executors(registry: Registry[ExecutorFactory]):
    registry.add(
        "ray",
        RayExecutor,
        params=RayParams,
        description="Runs groups of cells as Ray tasks on a running cluster (address) or a local one it starts; "
        "retries tasks whose worker died, streams results to the driver, which writes the run directory.",
    )
