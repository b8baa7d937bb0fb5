"""The speed benchmark keeps running (its numbers are read by people, never asserted)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_speed_benchmark_runs_and_prints_a_ratio_per_variant():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--repeats", "1", "--models", "2"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    sections = [block.splitlines() for block in done.stdout.split("\n\n")[1:]]
    ratios = [[float(line.split()[-1].rstrip("x")) for line in block[1:]] for block in sections]
    # SmoothGrad's 3 variants, rotation's 2, the 7 saliency methods, then each method stacked.
    assert [len(r) for r in ratios] == [3, 2, 7, 7]
    assert [r[0] for r in ratios[:3]] == [1.0, 1.0, 1.0]  # each baseline is 1x of itself
    assert all(r > 0 for block in ratios for r in block)


def test_scale_benchmark_pushes_synthetic_results_through_the_store_and_prints_a_ratio(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "scale.py"), "--grids", "default", "--stages", "store,resume,baseline",
               "--baseline-cells", "4", "--images", "8", "--keep", str(tmp_path)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    stages = {line.split()[2]: line for line in done.stdout.splitlines() if line.startswith("default ")}
    assert set(stages) == {"expand", "store", "consolidate", "resume", "baseline"}
    assert "96" in stages["resume"].split() and "the store's cost a cell" in stages["baseline"]
    assert (tmp_path / "default" / "scale-default" / "results.nc").is_file()
