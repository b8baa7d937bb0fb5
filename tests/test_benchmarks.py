"""The speed benchmark keeps running (its numbers are read by people, never asserted)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_speed_benchmark_runs_and_prints_a_ratio_per_variant():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--repeats", "1"],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    ratios = [line for line in done.stdout.splitlines() if line.rstrip().endswith("x")]
    assert len(ratios) == 5 and all(" 1.0x" in ratios[i] for i in (0, 3))  # each baseline is 1.0x of itself
