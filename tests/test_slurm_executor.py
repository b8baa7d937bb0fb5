"""The ``slurm`` executor through submitit's local backend: the numbers of ``local``, lost jobs, resume.

``backend: local`` runs each array task as a subprocess of this machine through the same
submitit code path as a cluster (submission, pickled task, pickled result, job records), so
everything but sbatch itself is exercised.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from benchsuite.cube import open_cube
from benchsuite.errors import RunError, SuiteError
from tests.conftest import stored_keys
from tests.test_ray_executor import FLAKY_ENCODERS, assert_same_cells, with_flaky_encoder
from tests.test_runner import TINY, run

submitit = pytest.importorskip("submitit", reason="the slurm extra is part of the test install")
from submitit.core.utils import FailedJobError, UncompletedJobError  # noqa: E402

LOCAL_BACKEND = "backend: local, gpus_per_task: 0, cpus_per_task: 1, poll_s: 0.2"


def slurm_suite(text: str = TINY, extra: str = "") -> str:
    return text + f"executor: {{plugin: slurm, params: {{{LOCAL_BACKEND}{extra}}}}}\n"


def test_slurm_jobs_give_the_cells_and_numbers_of_local(tmp_path):
    local = open_cube(run(tmp_path, TINY + "executor: {plugin: local, params: {stack: 4}}\n", out="local").run_dir)
    summary = run(tmp_path, slurm_suite(extra=", stack: 4"), out="slurm")
    assert summary.cells_run == 8
    assert_same_cells(open_cube(summary.run_dir), local)
    jobs = json.loads((summary.run_dir / "slurm" / "jobs.json").read_text())
    assert sorted(len(keys) for keys in jobs.values()) == [4, 4]  # one array task per group of 4


def test_a_job_that_dies_is_reported_lost_and_a_rerun_submits_only_its_cells(tmp_path, plugin_path, fresh_registry, monkeypatch):
    root = plugin_path("bs-flaky", {"bs_flaky": FLAKY_ENCODERS}, {"flaky": "bs_flaky"})
    monkeypatch.setenv("PYTHONPATH", str(root))  # the job subprocesses find the plugin as the cluster's nodes would
    marker = tmp_path / "allowed"
    text = slurm_suite(with_flaky_encoder("fragile", f"{{marker: '{marker}', once: false}}"), extra=", stack: 4")
    with pytest.raises(RunError, match=r"4 cells could not be run: the 'slurm' executor lost them .*job \d+"):
        run(tmp_path, text)
    run_dir = tmp_path / "runs" / "tiny"
    assert len(stored_keys(run_dir)) == 4
    first = json.loads((run_dir / "slurm" / "jobs.json").read_text())
    marker.write_text("allowed")
    again = run(tmp_path, text)
    assert (again.cells_run, again.cells_skipped) == (4, 4)
    ledger = json.loads((run_dir / "slurm" / "jobs.json").read_text())
    new = {job: keys for job, keys in ledger.items() if job not in first}
    assert len(new) == 1 and len(next(iter(new.values()))) == 4  # only the lost group was submitted again
    assert np.isfinite(open_cube(run_dir)["final_loss"].values).all()


def test_an_interrupted_run_collects_finished_jobs_and_submits_only_the_rest(tmp_path, plugin_path, monkeypatch):
    root = plugin_path("bs-flaky", {"bs_flaky": FLAKY_ENCODERS}, {"flaky": "bs_flaky"})
    monkeypatch.setenv("PYTHONPATH", str(root))
    gate = tmp_path / "gate"
    suite = tmp_path / "tiny.yaml"
    suite.write_text(with_flaky_encoder("gated", f"{{gate: '{gate}'}}"))
    executor = f"{{plugin: slurm, params: {{{LOCAL_BACKEND}}}}}"
    command = [sys.executable, "-m", "benchsuite", "run", str(suite), "--out", str(tmp_path / "runs"), "--executor", executor]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "runs" / "tiny"
    deadline = time.monotonic() + 180
    while not stored_keys(run_dir) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)  # the 4 gated cells' jobs are still waiting: they cannot have finished
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    stored = len(stored_keys(run_dir))
    assert 1 <= stored <= 4
    first = json.loads((run_dir / "slurm" / "jobs.json").read_text())
    cells = json.loads((run_dir / "manifest.json").read_text())["cells"]
    assert sorted(key for keys in first.values() for key in keys) == sorted(cells)  # every cell had a job
    for pid in map(int, first):  # a local job's id is its process id: wait until the cancelled ones are gone
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.1)
    succeeded = {key for job, keys in first.items() if succeeded_job(run_dir / "slurm", job) for key in keys}
    gated = {key for key, coords in cells.items() if coords["encoder"] == "flaky"}
    assert not succeeded & gated and len(succeeded) >= stored

    gate.write_text("open")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{8 - stored} cells run, {stored} already stored" in done.stdout + done.stderr
    ledger = json.loads((run_dir / "slurm" / "jobs.json").read_text())
    resubmitted = {key for job, keys in ledger.items() if job not in first for key in keys}
    assert resubmitted == set(cells) - succeeded, "finished jobs are collected, only the others are submitted again"
    assert np.isfinite(open_cube(run_dir)["final_loss"].values).all()


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (an exited child nobody has reaped yet is a zombie, not alive)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def succeeded_job(folder, job_id: str) -> bool:
    job = submitit.LocalJob(folder, job_id)
    if not job.paths.result_pickle.exists():  # (result() would wait for it)
        return False
    try:
        job.result()
    except (FailedJobError, UncompletedJobError):
        return False
    return True


def test_a_suite_naming_slurm_without_submitit_says_which_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(SuiteError, match=r'pip install -e "\.\[slurm\]"'):
        run(tmp_path, slurm_suite())
