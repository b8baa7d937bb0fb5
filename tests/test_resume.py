"""Resuming tells the truth: one run per directory, damaged shards recomputed, plugin upgrades explained."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from benchsuite.cube import open_cube
from benchsuite.errors import BenchsuiteError, RunDirInUse, SuiteError
from benchsuite.registry import default_registry
from benchsuite.runner import StoreWarning, run_cells
from benchsuite.store import RunStore
from benchsuite.suite import load_suite

SMALL = """\
name: small
data: {size: 16, eval_images: 4, examples: 1}
datasets: {shapes: {plugin: symmetric_shapes, params: {k: 4, n_images: 12}}}
theta: [90, 180]
seeds: [0]
methods: {moco: {plugin: moco_v2, params: {epochs: 1, batch_size: 8, queue_size: 16}}}
encoders: {cnn: {plugin: small_cnn, params: {width: 4}}}
saliency: {plugin: smoothgrad, params: {samples: 2}}
metrics: [dice, final_loss]
"""


def run(tmp_path, text=SMALL, **kw):
    path = tmp_path / "small.yaml"
    path.write_text(text)
    return run_cells(load_suite(path, default_registry()), default_registry(), tmp_path / "runs", progress=False, **kw)


def test_a_second_run_in_the_same_directory_is_refused_naming_the_first(tmp_path):
    store = RunStore(tmp_path / "runs" / "small")
    with store.locked(), pytest.raises(RunDirInUse, match=rf"in use by another benchsuite run \(pid {os.getpid()} on "):
        run(tmp_path)
    assert not (store.run_dir / "cells").exists()
    assert run(tmp_path).cells_run == 2, "the lock is released when its holder is done"


def test_a_killed_run_does_not_leave_its_directory_locked(tmp_path):
    holder = textwrap.dedent(f"""
        import time
        from benchsuite.store import RunStore
        with RunStore({str(tmp_path / "runs" / "small")!r}).locked():
            print("locked", flush=True)
            time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(RunDirInUse):
        run(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert run(tmp_path).cells_run == 2


def test_a_truncated_shard_is_set_aside_and_its_cell_runs_again(tmp_path):
    first = run(tmp_path)
    before = open_cube(first.run_dir)
    damaged = sorted((first.run_dir / "cells").glob("*.nc"))[0]
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # a copy cut short
    with pytest.warns(StoreWarning, match=r"a stored cell could not be read .*; moved to .*unreadable"):
        again = run(tmp_path)
    assert (again.cells_run, again.cells_skipped) == (1, 1)
    assert (first.run_dir / "cells" / "unreadable" / damaged.name).is_file()
    after = open_cube(first.run_dir)
    assert after["final_loss"].equals(before["final_loss"]) and after["dice"].equals(before["dice"])


def test_a_damaged_cube_is_a_clear_error_and_rebuilt_by_a_rerun(tmp_path):
    first = run(tmp_path)
    before = open_cube(first.run_dir)
    cube = first.run_dir / "results.nc"
    cube.write_bytes(cube.read_bytes()[:100])
    with pytest.raises(BenchsuiteError, match=r"cannot be read as a cube .* rebuilds it from the stored cells"):
        open_cube(first.run_dir)
    again = run(tmp_path)
    assert (again.cells_run, again.cells_skipped) == (0, 2)
    assert open_cube(first.run_dir)["dice"].equals(before["dice"])


def test_a_netcdf_file_that_is_not_a_cube_is_named_as_such(tmp_path):
    import xarray as xr

    xr.Dataset({"dice": ("x", [0.5, 0.7])}).to_netcdf(tmp_path / "results.nc", engine="h5netcdf")
    missing = "it has no dataset, theta, seed, method, encoder"
    with pytest.raises(BenchsuiteError, match=rf"is not a benchsuite cube: {missing}"):
        open_cube(tmp_path)


PLUGIN = """
import torch
from benchsuite.api import ImageMaskSet, Params, hookimpl

def squares(params, spec):
    masks = torch.zeros(8, spec.size, spec.size, dtype=torch.bool)
    masks[:, 3:9, 4:12] = True
    return ImageMaskSet(masks[:, None].float(), masks)

@hookimpl
def benchsuite_register_datasets(registry):
    registry.add("squares", squares, params=Params)
"""


def test_a_resume_after_a_plugin_upgrade_says_what_changed_and_offers_force_or_out(tmp_path, plugin_path, fresh_registry):
    text = SMALL.replace("plugin: symmetric_shapes, params: {k: 4, n_images: 12}", "plugin: squares")
    root = plugin_path("bs-squares", {"bs_squares": PLUGIN}, {"squares": "bs_squares"}, version="1.0")
    run(tmp_path, text)
    shutil.rmtree(root / "bs_squares-1.0.dist-info")  # upgraded in place, as pip would
    default_registry.cache_clear()
    plugin_path("bs-squares", {"bs_squares": PLUGIN}, {"squares": "bs_squares"}, version="2.0")
    with pytest.raises(SuiteError) as refused:
        run(tmp_path, text)
    message = str(refused.value)
    assert "the installed software changed: plugin 'squares' (datasets.shapes) 1.0 -> 2.0" in message
    assert "Pass --force to run the new version's cells here, or pass --out" in message
    assert "the suite changed" not in message and "Restore the suite" not in message
    assert run(tmp_path, text, force=True).cells_run == 2
