"""The ``local`` executor: groups cut from families, devices per worker, results streamed back."""

from __future__ import annotations

import os

import pytest
import torch
from pydantic import ValidationError

from benchsuite.api import GPU_STACK, LostGroup, PluginError
from benchsuite_plugins.executors.local import LocalExecutor, LocalParams


def describe(group: list[int], device: torch.device) -> list[tuple[int, int, str, int]]:
    """A task that reports, per cell, the group it came in and where it ran."""
    return [(cell, len(group), str(device), os.getpid()) for cell in group]


def die_on_cell_3(group: list[int], device: torch.device) -> list[tuple[int, int, str, int]]:
    """``describe``, except that the worker process running cell 3 dies, as when killed or out of memory."""
    if 3 in group:
        os._exit(1)
    return describe(group, device)


def test_families_are_cut_into_groups_of_at_most_stack_cells_in_order():
    executor = LocalExecutor(LocalParams(stack=3, device="cpu"))
    results = list(executor.run(describe, [[1, 2, 3, 4, 5], [6], [7, 8]]))
    assert [(cell, size) for cell, size, _, _ in results] == [(1, 3), (2, 3), (3, 3), (4, 2), (5, 2), (6, 1), (7, 2), (8, 2)]
    assert {pid for *_, pid in results} == {os.getpid()}  # one worker: in this process


def test_stack_auto_is_one_on_a_cpu():
    assert LocalExecutor(LocalParams(device="cpu")).stack == 1
    assert GPU_STACK > 1


def test_each_worker_keeps_to_its_device_and_every_group_runs_once():
    executor = LocalExecutor(LocalParams(device=["cpu", "cpu"], stack=2))
    assert executor.slots == [torch.device("cpu")] * 2
    results = list(executor.run(describe, [[1, 2, 3], [4, 5, 6, 7]]))
    assert sorted(cell for cell, *_ in results) == [1, 2, 3, 4, 5, 6, 7]
    assert {pid for *_, pid in results} - {os.getpid()}, "groups ran in worker processes"
    assert len({pid for *_, pid in results}) <= 2


def test_a_worker_that_dies_loses_its_group_and_a_fresh_worker_runs_the_rest():
    executor = LocalExecutor(LocalParams(device="cpu", workers=2, stack=1))
    results = list(executor.run(die_on_cell_3, [[1, 2, 3, 4, 5, 6, 7]]))
    lost = [r for r in results if isinstance(r, LostGroup)]
    assert [(list(r.cells), r.cause.startswith("its worker process died")) for r in lost] == [([3], True)]
    assert sorted(r[0] for r in results if not isinstance(r, LostGroup)) == [1, 2, 4, 5, 6, 7]


@pytest.mark.parametrize("device", ["gpu", ["cpu", "tpu:x"], []])
def test_unknown_devices_are_refused(device):
    with pytest.raises(ValidationError):
        LocalParams(device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown when there is no GPU")
def test_all_gpus_without_a_gpu_says_so():
    with pytest.raises(PluginError, match="torch sees no CUDA device"):
        LocalExecutor(LocalParams(device="all"))
