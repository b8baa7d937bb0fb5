"""The code executor plugins share: cutting families into groups, the stack size, a remote worker's body.

Exported to plugins from :mod:`benchsuite.api`; the executor contract itself is :mod:`benchsuite.api.executors`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch

if TYPE_CHECKING:  # the contract imports GPU_STACK from here
    from benchsuite.api.executors import CellTask

GPU_STACK = 64
"""The stack size of ``stack: auto`` on a GPU, where ResNet-18's stacked throughput levelled off;
on a CPU, where stacking is slower than cells one after another, ``auto`` is 1. The measurements
behind both choices are in docs/design.md (Stacked training)."""


def stack_size(stack: int | Literal["auto"], on_gpu: bool) -> int:
    """The number of cells per group for an executor's ``stack`` setting on a GPU or a CPU."""
    if stack == "auto":
        return GPU_STACK if on_gpu else 1
    return stack


def cut_groups(families: Sequence[Sequence[Any]], stack: int) -> list[list[Any]]:
    """Each family cut, in order, into groups of at most ``stack`` cells: the units executors run."""
    return [list(family[i : i + stack]) for family in families for i in range(0, len(family), stack)]


def run_on_worker(task: CellTask, group: Sequence[Any], gpu: bool, threads: int) -> list[Any]:
    """The body of a remote worker's job: ``task(group, device)`` with ``threads`` torch threads, on
    the GPU the scheduler gave the worker (``CUDA_VISIBLE_DEVICES`` makes it ``cuda``) or the CPU."""
    torch.set_num_threads(threads)
    return task(group, torch.device("cuda" if gpu else "cpu"))
