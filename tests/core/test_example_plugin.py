"""The example third-party distribution from docs/plugins.md, pip-installed and used by a suite."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT

EXAMPLE = ROOT / "plugins" / "examples" / "benchsuite-example"

SUITE = """\
name: example
data: {size: 16, eval_images: 4, examples: 1}
datasets:
  squares: {plugin: bright_squares, params: {n_images: 16}}
theta: [0, 90]
seeds: [0, 1]
methods:
  moco: {plugin: moco_v2, params: {epochs: 1, batch_size: 8, queue_size: 16}}
encoders: {cnn: {plugin: small_cnn, params: {width: 4}}}
saliency: {plugin: vanilla_grad}
metrics: [peak_near_mask, {plugin: peak_near_mask, name: peak_loose, params: {tolerance: 2}}, final_loss]
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, str]:
    """pip-installs the example into a private target directory; returns an environment that sees it."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), str(EXAMPLE)],
        check=True, capture_output=True,
    )  # fmt: skip
    return {**os.environ, "PYTHONPATH": str(target)}


def benchsuite(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchsuite", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_plugins_command_lists_the_example_with_its_distribution_and_version(installed):
    listing = benchsuite(installed, "plugins").stdout
    assert any(line.split()[:3] == ["bright_squares", "benchsuite-example", "0.1.0"] for line in listing.splitlines())
    assert any(line.split()[:3] == ["peak_near_mask", "benchsuite-example", "0.1.0"] for line in listing.splitlines())


def test_a_suite_runs_with_the_example_dataset_and_metric(installed, tmp_path):
    (tmp_path / "example.yaml").write_text(textwrap.dedent(SUITE))
    done = benchsuite(installed, "run", "example.yaml", "--out", "runs", "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    import xarray as xr

    cube = xr.load_dataset(tmp_path / "runs" / "example" / "results.nc", engine="h5netcdf")
    values = cube["peak_near_mask"].values
    assert values.shape == (1, 2, 2, 1, 1, 4)
    assert np.isnan(cube["peak_near_mask"].sel(theta=0.0).values).all()  # identical views: no map to point with
    hits = cube["peak_near_mask"].sel(theta=90.0).values
    assert set(hits.ravel().tolist()) <= {0.0, 1.0}
    assert (cube["peak_loose"].sel(theta=90.0).values >= hits).all()  # a looser mask can only add hits
    assert "benchsuite-example 0.1.0" in cube.attrs["plugins"]


def test_the_example_modules_are_the_ones_the_tutorial_shows():
    tutorial = (ROOT / "docs" / "plugins.md").read_text()
    for module in ("datasets.py", "metrics.py"):
        source = (EXAMPLE / "benchsuite_example" / module).read_text()
        assert source.strip() in tutorial, f"docs/plugins.md no longer shows {module} as it is"


def test_the_example_passes_the_conformance_checks_the_tutorial_recommends(installed):
    script = "from benchsuite.testing import check_dataset, check_metric; " \
             "check_dataset('bright_squares', {'n_images': 8}); check_metric('peak_near_mask')"  # fmt: skip
    done = subprocess.run([sys.executable, "-c", script], env=installed, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
