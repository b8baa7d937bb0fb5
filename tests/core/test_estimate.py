"""`benchsuite estimate`: counts, groups and a projection from a few timed steps, without a run directory."""

from __future__ import annotations

import math
from importlib.util import find_spec

import pytest
import torch

from benchsuite.engine.estimate import estimate
from benchsuite.engine.pipeline import run_group
from benchsuite.engine.registry import default_registry
from benchsuite.engine.suite import load_suite
from tests.core.test_cli import benchsuite, flat, write
from tests.core.test_runner import TINY


@pytest.mark.parametrize("stack", [1, 3])
def test_estimate_counts_the_groups_and_projects_from_timed_steps(tmp_path, stack):
    resolved = load_suite(write(tmp_path), default_registry())
    found = estimate(resolved, default_registry(), device=torch.device("cpu"), stack=stack, steps=2)
    # TINY: 2 datasets x 2 angles x 2 seeds; each dataset's 4 cells are one family.
    assert (found.cells, found.families, found.groups) == (8, 2, 2 * math.ceil(4 / stack))
    assert found.steps_per_cell == 2 * (16 // 8)  # 2 epochs of the 16 training images in batches of 8
    assert found.step_seconds > 0 and found.evaluate_seconds > 0 and found.peak_memory_mb > 0
    expected = found.groups * found.steps_per_cell * found.step_seconds + found.cells * found.evaluate_seconds
    assert found.total_seconds == pytest.approx(expected)
    assert f"{found.groups} groups of up to {stack} cells" in found.describe()


@pytest.mark.parametrize(("workers", "rounds"), [(1, 4), (2, 2), (3, 2), (8, 1)])
def test_the_projection_shares_the_groups_among_the_executors_workers(tmp_path, workers, rounds):
    resolved = load_suite(write(tmp_path), default_registry())
    found = estimate(resolved, default_registry(), device=torch.device("cpu"), stack=2, workers=workers, steps=1)
    assert found.groups == 4 and found.workers == min(workers, 4)
    assert found.wall_seconds == pytest.approx(found.total_seconds * rounds / 4)
    assert f"with {found.workers} group{'s' * (found.workers > 1)} at a time" in found.describe()


def test_estimate_command_prints_the_projection_and_writes_nothing(tmp_path):
    write(tmp_path)
    done = benchsuite("estimate", "tiny.yaml", "--stack", "4", "--steps", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "8 cells in 2 families" in done.stdout and "projected:" in done.stdout
    assert "on a cluster: 2 tasks (one per group)" in done.stdout and "CPU-core-hours" in done.stdout
    assert "with 1 group at a time" in flat(done.stdout)  # TINY's executor: the local one, one worker
    assert not (tmp_path / "runs").exists()


def timed_calls(monkeypatch) -> list[tuple[int, float, int]]:
    """Each group estimate runs, as (steps run, seconds of its epochs, torch threads)."""
    calls = []

    def spy(*args, **kwargs):
        results = run_group(*args, **kwargs)
        curves = results[0].curves
        calls.append((len(curves.step_loss), float(curves.epoch_seconds.sum()), torch.get_num_threads()))
        return results

    monkeypatch.setattr("benchsuite.engine.estimate.run_group", spy)
    return calls


@pytest.mark.parametrize(("steps", "timed"), [(1, 1), (2, 2), (5, 6), (6, 6)])
def test_the_time_per_step_divides_by_the_steps_that_ran(tmp_path, monkeypatch, steps, timed):
    # TINY's 16 training images make 2 batches of 8, one epoch; more steps run as whole epochs.
    calls = timed_calls(monkeypatch)
    resolved = load_suite(write(tmp_path), default_registry())
    found = estimate(resolved, default_registry(), device=torch.device("cpu"), stack=1, steps=steps)
    warm_up, (ran, seconds, _) = calls
    assert warm_up[0] == 1 and ran == found.steps_timed == timed
    assert found.step_seconds == pytest.approx(seconds / timed)
    assert f": {timed} step{'s' * (timed != 1)}, " in found.describe()


def test_estimate_times_with_the_executors_threads_and_restores_them(tmp_path, monkeypatch):
    calls = timed_calls(monkeypatch)
    before = torch.get_num_threads()
    threads = 2 if before == 1 else 1  # not what torch has, so that setting it shows
    resolved = load_suite(write(tmp_path), default_registry())
    found = estimate(resolved, default_registry(), device=torch.device("cpu"), stack=1, threads=threads, steps=1)
    assert [used for *_, used in calls] == [threads, threads] and found.threads == threads
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    "executor",
    [
        "{plugin: local, params: {threads: 3}}",
        "{plugin: ray, params: {num_cpus: 2.5}}",  # a task reserving 2.5 CPUs runs 3 threads
        "{plugin: slurm, params: {cpus_per_task: 3}}",
    ],
)
def test_estimate_command_takes_the_threads_of_the_suites_executor(tmp_path, executor):
    write(tmp_path, TINY + f"executor: {executor}\n")
    done = benchsuite("estimate", "tiny.yaml", "--steps", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "with 3 torch CPU threads: 1 step," in flat(done.stdout)


def test_device_replaces_the_executors_own(tmp_path):
    # The suite's executor asks for a GPU that a CPU-only torch lacks: --device cpu takes its place.
    write(tmp_path, TINY + "executor: {plugin: local, params: {device: cuda}}\n")
    done = benchsuite("estimate", "tiny.yaml", "--device", "cpu", "--steps", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "trained as one stacked model each, on cpu" in flat(done.stdout)


# The local executor, which has a device setting, and ray, which has none.
EXECUTORS = ["", pytest.param("executor: {plugin: ray}\n", marks=pytest.mark.skipif(find_spec("ray") is None, reason="no ray"))]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch that sees no CUDA device")
@pytest.mark.parametrize("executor", EXECUTORS)
def test_device_cuda_without_cuda_is_the_error_run_gives(tmp_path, executor):
    write(tmp_path, TINY + executor)
    done = benchsuite("estimate", "tiny.yaml", "--device", "cuda", cwd=tmp_path)
    assert done.returncode == 2
    assert "error: executor device 'cuda' was asked for, but torch sees no CUDA device; use device: auto or cpu." in flat(
        done.stderr
    )
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr


@pytest.mark.parametrize("executor", EXECUTORS)
def test_a_device_torch_does_not_know_is_a_clear_error(tmp_path, executor):
    write(tmp_path, TINY + executor)
    done = benchsuite("estimate", "tiny.yaml", "--device", "tpu", cwd=tmp_path)
    assert done.returncode == 2
    assert "'tpu' is not a device; use auto, all, cpu, cuda or cuda:N" in flat(done.stderr)
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
