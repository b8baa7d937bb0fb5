"""The ``ray`` executor on a real local Ray cluster: the numbers of ``local``, retries, lost cells, Ctrl-C,
and a worker node that dies in the middle of a run.

The cluster is started once per test session (2 CPUs); the node test starts its own two-node
cluster with ``ray start``. Test plugins reach the workers through the executor's
``runtime_env`` (PYTHONPATH), as a user's plugin reaches a cluster's nodes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from benchsuite.engine.registry import default_registry
from benchsuite.engine.suite import load_suite
from benchsuite.results.cube import open_cube
from benchsuite.results.errors import RunError, SuiteError
from tests.conftest import stored_keys
from tests.core.test_runner import TINY, run

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
    arrived: str | None = Field(None, description="a folder where each process that waits leaves a file named by its PID")

class Tiny(torch.nn.Module):
    def __init__(self, in_channels):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(in_channels, 4, 3, stride=2, padding=1), torch.nn.ReLU())
        self.out_dim = 4

    def forward(self, x):
        return self.features(x).mean(dim=(2, 3))

def fragile(params, in_channels, image_size):
    # The worker process dies (as when killed or out of memory) while building a cell's model,
    # unless the marker file exists. Models are built only where cells run, never in the driver.
    marker = Path(params.marker)
    if not marker.exists():
        if params.once:
            marker.write_text(str(os.getpid()))
        os._exit(1)
    return Tiny(in_channels)

def gated(params, in_channels, image_size):
    # Holds its cells until the gate file exists, so a test can stop the driver while they wait.
    if params.arrived:
        Path(params.arrived, str(os.getpid())).touch()
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


# The GCS checks each node every 0.5 s and declares it dead after 4 missed checks (the defaults
# take 30 s), so the tasks of a killed node are retried within seconds.
FAST_NODE_DEATH = {
    "RAY_health_check_initial_delay_ms": "0",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_failure_threshold": "4",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def node_processes(leader: int) -> set[int]:
    """The processes of the Ray node whose ``ray start --block`` is ``leader``: its process group (raylet,
    agents), and their children, the Ray workers, which lead process groups of their own."""
    parents: dict[int, tuple[int, int]] = {}  # pid -> (parent pid, process group)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            parents[int(entry.name)] = (int(fields[1]), int(fields[2]))
    found = {pid for pid, (_, group) in parents.items() if group == leader}
    while more := {pid for pid, (parent, _) in parents.items() if parent in found} - found:
        found |= more
    return found


def kill_node(node: subprocess.Popen) -> None:
    """SIGKILL every process of a node, as when its machine is lost."""
    for pid in node_processes(node.pid):
        with contextlib.suppress(ProcessLookupError):  # ended meanwhile
            os.kill(pid, signal.SIGKILL)
    node.wait(timeout=30)


@pytest.fixture
def two_nodes() -> Iterator[tuple[str, subprocess.Popen]]:
    """A head node (1 CPU) and a worker node (2 CPUs) started by ``ray start`` on this machine: (address, worker).

    Each node is a ``ray start --block`` in a session of its own, stopped by its PID whatever the
    test does. The private temporary folder keeps this cluster out of /tmp/ray, where
    ``ray.init()`` elsewhere on the machine would find it; it is short because Ray's socket paths
    must fit in 107 characters.
    """
    ray_command = str(Path(sys.executable).parent / "ray")
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    port = free_port()
    common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats", "--object-store-memory=100000000", "--block"]
    env = os.environ | FAST_NODE_DEATH
    nodes: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        log = (temp / f"node{len(nodes)}.log").open("w")
        node = subprocess.Popen(
            [ray_command, "start", *args, f"--dashboard-agent-listen-port={free_port()}", *common],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        nodes.append(node)
        return node

    try:
        head = start("--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                     f"--ray-client-server-port={free_port()}", f"--temp-dir={temp}")  # fmt: skip
        deadline = time.monotonic() + 60
        while not (temp / "ray_current_cluster").exists():  # written once the head is up
            assert head.poll() is None and time.monotonic() < deadline, (temp / "node0.log").read_text()
            time.sleep(0.2)
        yield f"127.0.0.1:{port}", start(f"--address=127.0.0.1:{port}", "--num-cpus=2")
    finally:
        for node in reversed(nodes):
            kill_node(node)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_worker_node_that_dies_mid_run_leaves_the_cube_of_an_uninterrupted_run(
    tmp_path, two_nodes, plugin_path, fresh_registry, monkeypatch
):
    address, worker = two_nodes
    root = plugin_path("bs-flaky", {"bs_flaky": FLAKY_ENCODERS}, {"flaky": "bs_flaky"})
    monkeypatch.setenv("PYTHONPATH", str(root))  # for the driver, a subprocess
    gate, arrived = tmp_path / "gate", tmp_path / "arrived"
    arrived.mkdir()
    text = with_flaky_encoder("gated", f"{{gate: '{gate}', arrived: '{arrived}'}}")
    suite = tmp_path / "tiny.yaml"
    suite.write_text(text)
    executor = f"{{plugin: ray, params: {{address: '{address}', runtime_env: {{env_vars: {{PYTHONPATH: '{root}'}}}}}}}}"
    command = [sys.executable, "-m", "benchsuite", "run", str(suite), "--out", str(tmp_path / "runs"), "--executor", executor]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    # Wait until a gated cell is held on the worker node, then lose that node with everything on it.
    while not {int(path.name) for path in arrived.iterdir()} & node_processes(worker.pid):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    kill_node(worker)
    gate.write_text("open")
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr  # the lost node's tasks ran again on the head
    reference = run(tmp_path, text + "executor: {plugin: local}\n", out="reference")  # 1 thread, 1 cell a group, as ray's
    assert_same_cells(open_cube(tmp_path / "runs" / "tiny"), open_cube(reference.run_dir))
