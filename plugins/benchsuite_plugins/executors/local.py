"""The ``local`` executor: runs cells on this machine, in this process or in a pool of workers."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from benchsuite.api import (
    CellTask,
    Count,
    ExecutorFactory,
    ExecutorParams,
    LostGroup,
    PluginError,
    Registry,
    cut_groups,
    hookimpl,
    stack_size,
)


class LocalParams(ExecutorParams):
    device: str | list[str] = Field(
        "auto",
        description="'auto' (CUDA when present, else CPU), 'cpu', 'cuda', 'cuda:N', 'all' (every visible GPU) or "
        "a list such as [cuda:0, cuda:1]. With several GPUs each worker keeps to one of them.",
    )
    workers: Count | Literal["auto"] = Field(
        1,
        description="Groups of cells run at once, each in its own worker process, spread evenly over the devices; "
        "'auto' means one per CPU core on a CPU and one per GPU. 1 runs cells in this process. Two or more "
        "workers on one GPU keep several groups in flight on it.",
    )
    threads: int | None = Field(
        1,
        ge=1,
        le=1024,
        description="torch CPU threads per worker; None keeps torch's default. One is the default because the "
        "small models of a sweep gain nothing from intra-op threads: on a 2-core machine a default-suite cell "
        "took 1.5 s with 1 thread and 1.5-11 s with 2, whose threads stall whenever another process runs.",
    )

    @field_validator("device")
    @classmethod
    def _known(cls, value: str | list[str]) -> str | list[str]:
        for name in [value] if isinstance(value, str) else value:
            if name not in ("auto", "all"):
                try:
                    torch.device(name)
                except RuntimeError as exc:
                    raise ValueError(f"'{name}' is not a device; use auto, all, cpu, cuda or cuda:N") from exc
        if isinstance(value, list) and not value:
            raise ValueError("give at least one device")
        return value


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


def _devices(name: str | list[str]) -> list[torch.device]:
    if isinstance(name, list):
        return [device for item in name for device in _devices(item)]
    if name == "auto":
        return [torch.device("cuda" if torch.cuda.is_available() else "cpu")]
    if name == "all":
        if not torch.cuda.is_available():
            raise PluginError("executor device 'all' means every visible GPU, but torch sees no CUDA device; use auto or cpu.")
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PluginError(f"executor device '{name}' was asked for, but torch sees no CUDA device; use device: auto or cpu.")
    return [device]


class LocalExecutor:
    """Groups of cells on this machine: one after another in-process, or ``workers`` at a time in subprocesses.

    Each worker process keeps to one device (workers are dealt over the devices in turn) and
    gets the next group as soon as it has finished one, so a GPU is never left idle while
    groups remain.
    """

    def __init__(self, params: LocalParams):
        self.devices = _devices(params.device)
        self.device = self.devices[0]
        self.threads = params.threads
        on_cpu = self.device.type == "cpu"
        auto_workers = len(os.sched_getaffinity(0)) if on_cpu else len(self.devices)
        workers = auto_workers if params.workers == "auto" else params.workers
        self.slots = [self.devices[i % len(self.devices)] for i in range(max(workers, len(self.devices)))]
        self.stack = stack_size(params.stack, on_gpu=not on_cpu)

    def run(self, task: CellTask, families: Sequence[Sequence[Any]]) -> Iterator[Any]:
        groups = cut_groups(families, self.stack)
        if len(self.slots) == 1 or len(groups) <= 1:
            _set_threads(self.threads)
            for group in groups:
                yield from task(group, self.device)
            return
        # spawn, not fork: a forked copy of a process that already ran torch can deadlock.
        context = multiprocessing.get_context("spawn")
        queue = iter(groups)
        pending: dict[Future[list[Any]], tuple[int, list[Any]]] = {}
        with contextlib.ExitStack() as stack:

            def new_pool() -> ProcessPoolExecutor:
                pool = ProcessPoolExecutor(1, mp_context=context, initializer=_set_threads, initargs=(self.threads,))
                return stack.enter_context(pool)

            pools = [new_pool() for _ in self.slots]

            def feed(slot: int) -> None:
                group = next(queue, None)
                if group is not None:
                    pending[pools[slot].submit(task, group, self.slots[slot])] = (slot, group)

            for slot in range(len(self.slots)):
                feed(slot)
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        slot, group = pending.pop(future)
                        try:
                            results = future.result()
                        except BrokenProcessPool as exc:
                            # The worker died (killed, out of memory, os._exit): its pool is unusable, so
                            # the slot gets a fresh worker and the run goes on without this group.
                            pools[slot] = new_pool()
                            feed(slot)
                            yield LostGroup(group, f"its worker process died: {str(exc).strip().splitlines()[0]}")
                            continue
                        feed(slot)  # the worker's next group starts before its results are stored
                        yield from results
            finally:
                for future in pending:
                    future.cancel()


@hookimpl
def benchsuite_register_executors(registry: Registry[ExecutorFactory]):
    registry.add(
        "local",
        LocalExecutor,
        params=LocalParams,
        description="Runs groups of cells on this machine, in-process or in worker processes (one device each); "
        "device auto picks CUDA when present, stack trains the cells of a sweep as one stacked model.",
    )
