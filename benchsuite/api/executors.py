"""The executor contract: the core's task for a group of cells, and how an executor runs groups and reports lost ones.

The helpers executors share (``cut_groups``, ``stack_size``, ``run_on_worker``) are engine code in
:mod:`benchsuite.engine.executing`, exported from :mod:`benchsuite.api`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

import torch
from pydantic import Field

from benchsuite.api.params import Params
from benchsuite.engine.executing import GPU_STACK


class CellTask(Protocol):
    """The core's work for a group of cells; an executor calls it as ``task(group, device)`` and gets
    one result per cell of the group, in order. A group of several cells trains as one stacked model.

    The task pickles (registry as plugin names, settings such as the data root as values), so an
    executor may call it in another process or on another machine with the same plugins
    installed. ``run_dir`` is the run directory, where an executor that outlives the driver
    (Slurm) keeps its records. Cells are opaque to executors except for ``cell.key``, a string
    that names the cell's content and is the same in every run.
    """

    run_dir: str

    def __call__(self, group: Sequence[Any], device: torch.device) -> list[Any]: ...


@dataclass(frozen=True)
class LostGroup:
    """What an executor yields, in place of results, for a group whose task died and was not retried further.

    For failures of the machinery (worker process killed, node lost, out of host memory), not
    for exceptions the task raised: those propagate. The core stores every other result, then
    reports the lost cells with ``cause`` and a rerun runs them again.
    """

    cells: Sequence[Any]
    cause: str


Count = Annotated[int, Field(ge=1, le=4096)]
"""A whole number of cells, workers or the like, 1 to 4096; ``Count | Literal["auto"]`` adds the default choice."""


class ExecutorParams(Params):
    """Parameters every executor that trains stacked groups shares; an executor's model extends this."""

    stack: Count | Literal["auto"] = Field(
        "auto",
        description="Cells of a sweep trained together as one stacked model (cells that differ only in theta and "
        f"seed). 1 trains each cell alone. 'auto' is 1 on a CPU, where stacking is slower, and {GPU_STACK} on a GPU, "
        "where it is several times faster; a stack that does not fit in memory trains as two halves. Results agree "
        "with training alone to rounding (measurements in docs/design.md).",
    )


class Executor(Protocol):
    """Runs cells somewhere and streams their results back to the core, which stores them.

    It may also expose what ``benchsuite estimate`` reads to time and project a suite as it
    would run: ``device`` (a :class:`torch.device`), ``stack`` (cells per group), ``threads``
    (torch CPU threads per worker) and ``slots`` (one device per worker running at once).
    """

    def run(self, task: CellTask, families: Sequence[Sequence[Any]]) -> Iterator[Any]:
        """Run every cell of ``families`` and yield each cell's result as soon as it is ready, in any order.

        A family holds cells that differ only in theta and seed. The executor cuts each family
        into groups of any size it likes (one cell each, or as many as fit on its device;
        :func:`cut_groups`) and calls ``task(group, device)`` for each; grouping is an execution
        detail that does not change results beyond the tolerance of stacked training
        (docs/design.md). A group whose task died without raising is yielded as a
        :class:`LostGroup`.
        """
