"""`benchsuite estimate`: counts, groups and a projection from a few timed steps, without a run directory."""

from __future__ import annotations

import math

import pytest
import torch

from benchsuite.estimate import estimate
from benchsuite.registry import default_registry
from benchsuite.suite import load_suite
from tests.test_cli import benchsuite, write


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


def test_estimate_command_prints_the_projection_and_writes_nothing(tmp_path):
    write(tmp_path)
    done = benchsuite("estimate", "tiny.yaml", "--stack", "4", "--steps", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "8 cells in 2 families" in done.stdout and "projected:" in done.stdout
    assert "on a cluster: 2 tasks (one per group)" in done.stdout and "CPU-core-hours" in done.stdout
    assert not (tmp_path / "runs").exists()
