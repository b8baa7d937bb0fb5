"""The ``ray`` executor on a real local Ray cluster: the numbers of ``local``, retries, lost cells, Ctrl-C.

The cluster is started once per test session (2 CPUs). Test plugins reach its workers through
the executor's ``runtime_env`` (PYTHONPATH), as a user's plugin reaches a cluster's nodes.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from benchsuite.cube import open_cube
from benchsuite.errors import RunError, SuiteError
from benchsuite.registry import default_registry
from benchsuite.suite import load_suite
from tests.conftest import stored_keys
from tests.test_runner import TINY, run

ray = pytest.importorskip("ray", reason="the ray extra is part of the test install")

COMPARED = ("cell_key", "final_loss", "ssp_loss_step", "dice", "auroc", "mass_in_mask", "saliency_example", "stack_size")

FLAKY_ENCODERS = """
import os
import time
from pathlib import Path
import torch
from pydantic import Field
from benchsuite.api import Params, hookimpl

class FragileParams(Params):
    marker: str
    once: bool = Field(True, description="create the marker before dying, so the next attempt lives")

class GatedParams(Params):
    gate: str

class Tiny(torch.nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(in_channels, 4, 3, stride=2, padding=1), torch.nn.ReLU())
        self.out_dim = 4

    def forward(self, x):
        return self.features(x).mean(dim=(2, 3))

def fragile(params, in_channels):
    # The worker process dies (as when killed or out of memory) while building a cell's model,
    # unless the marker file exists. Models are built only where cells run, never in the driver.
    marker = Path(params.marker)
    if not marker.exists():
        if params.once:
            marker.write_text(str(os.getpid()))
        os._exit(1)
    return Tiny(in_channels)

def gated(params, in_channels):
    # Holds its cells until the gate file exists, so a test can stop the driver while they wait.
    while not Path(params.gate).exists():
        time.sleep(0.1)
    return Tiny(in_channels)

@hookimpl
def benchsuite_register_encoders(registry):
    registry.add("fragile", fragile, params=FragileParams)
    registry.add("gated", gated, params=GatedParams)
"""


def with_flaky_encoder(plugin: str, params: str, text: str = TINY) -> str:
    """TINY with one dataset and a second encoder ``flaky`` of ``plugin``: 4 of its 8 cells use it."""
    return text.replace("  iso: {plugin: isotropic_texture, params: {n_images: 14}}\n", "").replace(
        "encoders: {cnn: {plugin: small_cnn, params: {width: 4}}}",
        f"encoders: {{cnn: {{plugin: small_cnn, params: {{width: 4}}}}, flaky: {{plugin: {plugin}, params: {params}}}}}",
    )


@pytest.fixture(scope="session")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


def ray_suite(text: str = TINY, **params) -> str:
    inner = ", ".join(f"{key}: {value}" for key, value in params.items())
    return text + f"executor: {{plugin: ray, params: {{{inner}}}}}\n"


@pytest.fixture
def fragile_suite(plugin_path, fresh_registry):
    """``make(marker, once, **executor_params)``: TINY with a second encoder ``fragile``, run by ``ray``."""
    root = plugin_path("bs-flaky", {"bs_flaky": FLAKY_ENCODERS}, {"flaky": "bs_flaky"})

    def make(marker, once: bool, **params) -> str:
        text = with_flaky_encoder("fragile", f"{{marker: '{marker}', once: {str(once).lower()}}}")
        return ray_suite(text, runtime_env=f"{{env_vars: {{PYTHONPATH: '{root}'}}}}", **params)

    return make


def assert_same_cells(a, b) -> None:
    for name in COMPARED:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def test_ray_runs_the_cells_of_local_with_the_same_numbers(tmp_path, ray_cluster):
    local = open_cube(run(tmp_path, TINY + "executor: {plugin: local}\n", out="local").run_dir)
    summary = run(tmp_path, ray_suite(), out="ray")
    assert (summary.cells_run, summary.cells_total) == (8, 8)
    remote = open_cube(summary.run_dir)
    assert_same_cells(remote, local)
    assert np.isfinite(remote["final_loss"].values).all()


def test_a_worker_that_dies_is_retried_and_the_cube_equals_an_uninterrupted_run(tmp_path, ray_cluster, fragile_suite):
    marker = tmp_path / "died-once"
    text = fragile_suite(marker, once=True, max_retries=2)
    retried = open_cube(run(tmp_path, text, out="retried").run_dir)
    assert marker.exists(), "a worker died"
    assert int(marker.read_text()) != os.getpid()
    uninterrupted = open_cube(run(tmp_path, text, out="uninterrupted").run_dir)
    assert_same_cells(retried, uninterrupted)
    assert np.isfinite(retried["final_loss"].values).all()


def test_cells_whose_worker_keeps_dying_are_reported_and_a_rerun_runs_only_them(tmp_path, ray_cluster, fragile_suite):
    marker = tmp_path / "allowed"
    text = fragile_suite(marker, once=False, max_retries=0)
    with pytest.raises(RunError, match=r"4 cells could not be run: the 'ray' executor lost them \(\w+Error"):
        run(tmp_path, text)
    run_dir = tmp_path / "runs" / "tiny"
    assert len(stored_keys(run_dir)) == 4  # the other encoder's cells are stored
    assert (run_dir / "error.log").read_text().count("encoder=flaky") == 4
    marker.write_text("allowed")
    again = run(tmp_path, text)
    assert (again.cells_run, again.cells_skipped) == (4, 4)
    assert np.isfinite(open_cube(run_dir)["final_loss"].values).all()


def test_ctrl_c_stops_its_own_cluster_and_leaves_a_resumable_run(tmp_path):
    # No session cluster here: the CLI starts its own local cluster, as a user's first run does,
    # for a suite that names no executor (--executor takes it to Ray unchanged).
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY.replace("epochs: 2,", "epochs: 30,"))
    executor = "{plugin: ray, params: {local_cpus: 1}}"
    command = [sys.executable, "-m", "benchsuite", "run", str(suite), "--out", str(tmp_path / "runs"), "--executor", executor]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "runs" / "tiny"
    deadline = time.monotonic() + 120
    while not stored_keys(run_dir) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "finished cells are stored; rerun the same command to resume" in stderr
    stored = len(stored_keys(run_dir))
    assert 1 <= stored < 8
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{8 - stored} cells run, {stored} already stored" in done.stdout + done.stderr
    assert json.loads(open_cube(tmp_path / "runs" / "tiny").attrs["executor"])["plugin"] == "ray"


def test_an_executor_given_on_the_command_line_is_checked_like_the_suite_s(tmp_path):
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY)
    with pytest.raises(SuiteError, match=r"--executor 'rayy': unknown executor 'rayy'. Did you mean 'ray'"):
        load_suite(suite, default_registry(), executor="rayy")
    with pytest.raises(SuiteError, match=r"--executor .*'max_retries': Input should be greater than or equal to 0"):
        load_suite(suite, default_registry(), executor="{plugin: ray, params: {max_retries: -1}}")
    resolved = load_suite(suite, default_registry(), executor="{plugin: ray, params: {address: auto}}")
    assert resolved.single("executors").plugin == "ray" and resolved.text == TINY


def test_a_suite_naming_ray_without_it_installed_says_which_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # find_spec (and import) now see no Ray
    with pytest.raises(SuiteError, match=r'pip install -e "\.\[ray\]"'):
        run(tmp_path, ray_suite())
