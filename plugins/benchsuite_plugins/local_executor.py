"""The ``local`` executor: runs cells one after another in this process."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from pydantic import Field, field_validator

from benchsuite.api import CellTask, Params, PluginError, hookimpl


class LocalParams(Params):
    device: str = Field("auto", description="'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'.")
    threads: int | None = Field(
        1,
        ge=1,
        le=1024,
        description="torch CPU threads; None keeps torch's default. One is the default because the small "
        "models of a sweep gain nothing from intra-op threads: on a 2-core machine a default-suite cell "
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


class LocalExecutor:
    """In-process and sequential: the simplest executor, and the reference for the others."""

    def __init__(self, params: LocalParams):
        self.device = self._pick(params.device)
        self.threads = params.threads

    @staticmethod
    def _pick(name: str) -> torch.device:
        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise PluginError(f"executor device '{name}' was asked for, but torch sees no CUDA device; use device: auto or cpu.")
        return device

    def run(self, task: CellTask, cells: Sequence[Any]) -> Iterator[Any]:
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        for cell in cells:
            yield task(cell, self.device)


@hookimpl
def benchsuite_register_executors(registry):
    registry.add("local", LocalExecutor, params=LocalParams, description="Runs cells one by one in this process; device auto picks CUDA when present.")
