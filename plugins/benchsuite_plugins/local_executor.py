"""The ``local`` executor: runs cells on this machine, in this process or in a pool of workers."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from benchsuite.api import CellTask, Params, PluginError, hookimpl


class LocalParams(Params):
    device: str = Field("auto", description="'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'.")
    workers: int | Literal["auto"] = Field(
        1,
        description="Cells run at once, each in its own worker process; 'auto' means one per CPU core on a CPU "
        "and one on a GPU. 1 runs cells in this process.",
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
    def _known(cls, value: str) -> str:
        if value != "auto":
            try:
                torch.device(value)
            except RuntimeError as exc:
                raise ValueError(f"'{value}' is not a device; use auto, cpu, cuda or cuda:N") from exc
        return value

    @field_validator("workers")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 1024:
            raise ValueError("workers must be 'auto' or between 1 and 1024")
        return value


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)


class LocalExecutor:
    """Cells on this machine: one after another in-process, or ``workers`` at a time in subprocesses."""

    def __init__(self, params: LocalParams):
        self.device = self._pick(params.device)
        self.threads = params.threads
        if params.workers == "auto":
            self.workers = len(os.sched_getaffinity(0)) if self.device.type == "cpu" else 1
        else:
            self.workers = params.workers

    @staticmethod
    def _pick(name: str) -> torch.device:
        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise PluginError(f"executor device '{name}' was asked for, but torch sees no CUDA device; use device: auto or cpu.")
        return device

    def run(self, task: CellTask, cells: Sequence[Any]) -> Iterator[Any]:
        if self.workers == 1 or len(cells) <= 1:
            _set_threads(self.threads)
            for cell in cells:
                yield task(cell, self.device)
            return
        # spawn, not fork: a forked copy of a process that already ran torch can deadlock.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.workers, mp_context=context, initializer=_set_threads, initargs=(self.threads,)) as pool:
            pending = {pool.submit(task, cell, self.device) for cell in cells}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield future.result()
            finally:
                for future in pending:
                    future.cancel()


@hookimpl
def benchsuite_register_executors(registry):
    registry.add(
        "local",
        LocalExecutor,
        params=LocalParams,
        description="Runs cells on this machine, in-process or in worker processes; device auto picks CUDA when present.",
    )
