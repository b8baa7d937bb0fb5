"""The ``slurm`` executor on a real one-node Slurm cluster: the numbers of ``local``, the partition's
limits, cancelled and timed-out array tasks, an interrupted driver.

The cluster has no accounting (no ``sacct``), as many small clusters have none: the executor
follows its jobs with ``squeue`` and their result files. It is the one ``.ci/run`` starts
(``SLURM_CONF`` names it); without one, the session starts its own with ``.ci/slurm-up`` and
stops it with ``.ci/slurm-down`` (both need root). Where Slurm is not installed, these tests
skip and say how to get it; the pure functions and ``backend: local`` are tested everywhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from benchsuite.api import PluginError
from benchsuite.results.cube import open_cube
from benchsuite.results.errors import RunError, SuiteError
from benchsuite_plugins.executors._slurm_request import Node, Partition, SlurmParams, fit, gres_gpus, slurm_minutes
from tests.conftest import ROOT, stored_keys
from tests.core.test_runner import TINY, run
from tests.plugins.executors.test_ray import FLAKY_ENCODERS, assert_same_cells, with_flaky_encoder

pytest.importorskip("submitit", reason="the slurm extra is part of the test install")

INSTALL = "apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge"
# What the executor gives a task on the one node of .ci/slurm-up (this machine): 4 CPUs, or all if fewer.
DEFAULT_CPUS = min(4, os.cpu_count() or 1)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A running one-node cluster: the one ``SLURM_CONF`` names if it answers, else one started here and stopped after."""
    if not all(shutil.which(tool) for tool in ("sbatch", "slurmctld", "slurmd", "munged")):
        pytest.skip(f"Slurm is not installed (Debian, as root: {INSTALL}); the tests start a one-node cluster")
    named = os.environ.get("SLURM_CONF")
    if named and subprocess.run(["sinfo", "--noheader"], capture_output=True, check=False).returncode == 0:
        yield
        return
    if os.geteuid() != 0:
        pytest.skip("starting a Slurm cluster needs root: run .ci/slurm-up DIR as root and export SLURM_CONF as it says")
    folder = tmp_path_factory.mktemp("slurm")
    try:
        up = subprocess.run([ROOT / ".ci" / "slurm-up", folder], capture_output=True, text=True, timeout=60, check=False)
        assert up.returncode == 0, up.stderr
        os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
        yield
    finally:
        subprocess.run([ROOT / ".ci" / "slurm-down", folder], check=False, timeout=60)
        if named is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = named


@pytest.fixture
def cluster(slurm_cluster, tmp_path) -> Iterator[None]:
    """The cluster, with no job of this test left in its queue afterwards (cancelled, and gone); other jobs
    (on a cluster that ``SLURM_CONF`` names) are left alone."""
    yield
    arrays = sorted({job.split("_")[0] for ledger in tmp_path.rglob("jobs.json") for job in json.loads(ledger.read_text())})
    if arrays:
        subprocess.run(["scancel", *arrays], check=False)
    deadline = time.monotonic() + 30
    while set(arrays) & {job.split("_")[0] for job in queued()} and time.monotonic() < deadline:
        time.sleep(0.2)


def slurm_suite(text: str = TINY, params: str = "") -> str:
    return text + f"executor: {{plugin: slurm, params: {{poll_s: 0.3{params}}}}}\n"


def queued() -> dict[str, str]:
    """This user's jobs in the queue, each array task apart: job id -> state."""
    squeue = ["squeue", "--noheader", "--me", "--array", "--format=%i %T"]
    done = subprocess.run(squeue, capture_output=True, text=True, check=True)
    return dict(line.split() for line in done.stdout.splitlines())


@pytest.fixture
def flaky(plugin_path, fresh_registry, monkeypatch) -> None:
    """The test encoders on the path of this process and, through the environment sbatch passes on, of the jobs."""
    root = plugin_path("bs-flaky", {"bs_flaky": FLAKY_ENCODERS}, {"flaky": "bs_flaky"})
    monkeypatch.setenv("PYTHONPATH", str(root))


def command(tmp_path: Path, text: str, executor: str) -> list[str]:
    suite = tmp_path / "tiny.yaml"
    suite.write_text(text)
    return [sys.executable, "-m", "benchsuite", "run", str(suite), "--out", str(tmp_path / "runs"), "--executor", executor]


def jobs(run_dir: Path) -> dict[str, list[str]]:
    path = run_dir / "slurm" / "jobs.json"
    return json.loads(path.read_text()) if path.exists() else {}


def gated_job(run_dir: Path, deadline: float) -> str:
    """The id of the job that holds the gated encoder's cells, once it is submitted."""
    manifest = run_dir / "manifest.json"
    while not (manifest.exists() and jobs(run_dir)):
        if time.monotonic() > deadline:
            raise TimeoutError("no job was submitted")
        time.sleep(0.1)
    cells = json.loads(manifest.read_text())["cells"]
    return next(job for job, keys in jobs(run_dir).items() if cells[keys[0]]["encoder"] == "flaky")


@pytest.fixture(scope="module")
def local_cube(tmp_path_factory: pytest.TempPathFactory):
    """TINY's cube from the local executor, in groups of 4 with the threads the slurm runs below train with."""
    folder = tmp_path_factory.mktemp("local")
    local = f"executor: {{plugin: local, params: {{stack: 4, threads: {DEFAULT_CPUS}}}}}\n"
    return open_cube(run(folder, TINY + local).run_dir)


def test_a_suite_through_slurm_with_the_defaults_equals_the_local_cube(tmp_path, cluster, local_cube):
    # No GPUs, CPUs or time given: the executor takes them from the partition (no GPUs, 60 minutes).
    summary = run(tmp_path, slurm_suite(params=", stack: 4"))
    assert summary.cells_run == 8
    assert_same_cells(open_cube(summary.run_dir), local_cube)
    ledger = jobs(summary.run_dir)
    assert sorted(len(keys) for keys in ledger.values()) == [4, 4]  # one array task per group of 4
    script = next((summary.run_dir / "slurm").glob("*_submission.sh")).read_text()
    assert f"--cpus-per-task={DEFAULT_CPUS}" in script and "--gpus-per-node=0" in script and "--time=60:00" in script


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("gpus_per_task: 1", r"gpus_per_task: 1, but partition 'debug' has no GPUs .*gpus_per_task: 0"),
        ("cpus_per_task: 64", r"cpus_per_task: 64, but no node of partition 'debug' has more than \d+ CPUs"),
        ("time_min: 120", r"time_min: 120, but partition 'debug' allows at most 60 minutes"),
        ("mem_gb: 4000", r"mem_gb: 4000, but no node of partition 'debug' has more than [\d.]+ GB"),
        ("partition: gpu", r"partition 'gpu' does not exist; the cluster has debug"),
        ("additional: {constraint: nvlink}", r"sbatch refused the job array: .*Invalid feature specification"),
    ],
)
def test_a_request_no_node_can_run_is_refused_before_any_job_waits(tmp_path, cluster, params, message):
    with pytest.raises(PluginError, match=message):
        run(tmp_path, slurm_suite(params=f", {params}"))
    assert not list((tmp_path / "runs" / "tiny" / "slurm").glob("*_submission.sh")), "nothing was submitted"


def test_the_command_exits_2_naming_the_parameter_to_change(tmp_path, cluster):
    done = subprocess.run(
        command(tmp_path, TINY, "{plugin: slurm, params: {gpus_per_task: 1}}"), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "set gpus_per_task: 0" in done.stderr and "This is a bug" not in done.stderr


def test_a_job_pending_for_a_reason_that_cannot_clear_is_cancelled_with_exit_2(tmp_path, cluster):
    # sbatch accepts 3 CPUs on a 2-CPU node (the partition does not enforce its limits at
    # submission) and the job would wait for ever with reason PartitionConfig.
    with pytest.raises(PluginError, match=r"can never start: Slurm keeps it PENDING with reason PartitionConfig"):
        run(tmp_path, slurm_suite(params=", cpus_per_task: 1, additional: {cpus_per_task: '3'}"))
    submitted = jobs(tmp_path / "runs" / "tiny")
    assert submitted and not set(submitted) & set(queued())  # cancelled


def test_a_cancelled_array_task_is_lost_with_slurm_s_reason_and_a_rerun_submits_only_its_cells(tmp_path, cluster, flaky):
    gate = tmp_path / "gate"
    text = with_flaky_encoder("gated", f"{{gate: '{gate}'}}")
    executor = "{plugin: slurm, params: {stack: 4, cpus_per_task: 1, poll_s: 0.3}}"
    process = subprocess.Popen(command(tmp_path, text, executor), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "runs" / "tiny"
    job = gated_job(run_dir, time.monotonic() + 120)
    while queued().get(job) != "RUNNING":  # (a task cancelled before it started leaves no record at all)
        time.sleep(0.1)
    subprocess.run(["scancel", job], check=True)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 1, stderr
    assert re.search(r"4 cells could not be run: the 'slurm' executor lost them \(job \d+_\d CANCELLED", " ".join(stderr.split()))
    assert (run_dir / "error.log").read_text().count("encoder=flaky") == 4
    assert len(stored_keys(run_dir)) == 4
    first = jobs(run_dir)

    gate.write_text("open")
    done = subprocess.run(command(tmp_path, text, executor), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    new = {job: keys for job, keys in jobs(run_dir).items() if job not in first}
    assert list(new.values()) == [first[job]]  # only the cancelled task's cells again


def test_a_task_past_its_time_limit_is_reported_with_that_reason(tmp_path, cluster, flaky):
    text = with_flaky_encoder("gated", f"{{gate: '{tmp_path / 'never'}'}}")
    with pytest.raises(
        RunError, match=r"4 cells could not be run: the 'slurm' executor lost them \(job \d+_\d reached its time limit \(0.2 min"
    ):
        run(tmp_path, slurm_suite(text, ", stack: 4, cpus_per_task: 1, time_min: 0.2"))
    assert len(stored_keys(tmp_path / "runs" / "tiny")) == 4


def test_an_interrupted_driver_collects_finished_jobs_and_waits_for_running_ones_on_rerun(tmp_path, cluster, flaky):
    gate = tmp_path / "gate"
    text = with_flaky_encoder("gated", f"{{gate: '{gate}'}}")
    executor = "{plugin: slurm, params: {stack: 4, cpus_per_task: 1, poll_s: 0.3}}"
    process = subprocess.Popen(command(tmp_path, text, executor), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "runs" / "tiny"
    deadline = time.monotonic() + 120
    while not stored_keys(run_dir) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)  # the gated job still runs: Slurm keeps it going
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    first = jobs(run_dir)
    assert queued().get(gated_job(run_dir, 0)) == "RUNNING"

    rerun = subprocess.Popen(command(tmp_path, text, executor), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    gate.write_text("open")  # the rerun finds the job running, and waits for it
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert "4 cells run, 4 already stored" in out + err
    assert jobs(run_dir) == first, "no job was submitted again"
    assert np.isfinite(open_cube(run_dir)["final_loss"].values).all()


def test_partition_limits_fill_in_the_request_and_refuse_what_no_node_has():
    gpu = Partition("gpu", [Node(cpus=32, memory_mb=256_000, gpus=4), Node(cpus=16, memory_mb=128_000, gpus=2)], 2880)
    request = fit(SlurmParams(), gpu)
    assert (request.gpus, request.cpus, request.time_min) == (1, 8, 60)  # a node's CPUs per GPU
    assert fit(SlurmParams(gpus_per_task=2), gpu).cpus == 16
    mixed = Partition("mixed", [Node(cpus=32, memory_mb=256_000, gpus=0), Node(cpus=8, memory_mb=64_000, gpus=4)], None)
    with pytest.raises(PluginError, match=r"no single node of partition 'mixed' has 4 GPUs and 32 CPUs"):
        fit(SlurmParams(gpus_per_task=4, cpus_per_task=32), mixed)
    cpu = Partition("cpu", [Node(cpus=2, memory_mb=8000, gpus=0)], 30)
    assert (fit(SlurmParams(), cpu).gpus, fit(SlurmParams(), cpu).cpus, fit(SlurmParams(), cpu).time_min) == (0, 2, 30)


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("30", 30), ("1:30", 1.5), ("2:00:00", 120), ("1-00", 1440), ("1-02:30", 1590), ("2-00:00:30", 2880.5), ("infinite", None)],
)
def test_slurm_times_read_as_minutes(text, minutes):
    assert slurm_minutes(text) == minutes


def test_gpus_are_counted_from_every_gpu_entry_of_a_node_s_gres():
    assert [gres_gpus(g) for g in ("(null)", "gpu:4", "gpu:a100:2(S:0-1),gpu:v100:2", "gpu:4,mps:400")] == [0, 4, 4, 4]


def test_the_local_backend_runs_the_cells_of_local_with_the_same_numbers(tmp_path, local_cube):
    # `backend: local` (subprocesses of this machine) runs where Slurm is not installed.
    summary = run(tmp_path, slurm_suite(params=f", backend: local, gpus_per_task: 0, cpus_per_task: {DEFAULT_CPUS}, stack: 4"))
    assert summary.cells_run == 8
    assert_same_cells(open_cube(summary.run_dir), local_cube)


def test_a_suite_naming_slurm_without_submitit_says_which_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(SuiteError, match=r'pip install -e "\.\[slurm\]"'):
        run(tmp_path, slurm_suite())
