"""Resuming tells the truth: one run per directory, damaged shards recomputed, plugin upgrades explained."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest
import xarray as xr

from benchsuite.engine.registry import default_registry
from benchsuite.engine.runner import StoreWarning, run_cells
from benchsuite.engine.suite import load_suite
from benchsuite.results.cube import open_cube
from benchsuite.results.errors import BenchsuiteError, RunDirInUse, SuiteError
from benchsuite.results.store import RunStore

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
    assert not (store.run_dir / "parts").exists()
    assert run(tmp_path).cells_run == 2, "the lock is released when its holder is done"


def test_a_killed_run_does_not_leave_its_directory_locked(tmp_path):
    holder = textwrap.dedent(f"""
        import time
        from benchsuite.results.store import RunStore
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


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="cut short"),
        pytest.param(lambda data: data[: len(data) // 2] + bytes(len(data) - len(data) // 2), id="zeroed tail"),
        pytest.param(lambda data: data[:4] + bytes(64) + data[68:], id="zeroed page"),
    ],
)
def test_a_damaged_part_is_set_aside_and_its_cells_run_again(tmp_path, damage):
    first = run(tmp_path)
    before = open_cube(first.run_dir).load()
    damaged = sorted((first.run_dir / "parts").glob("*.parquet"))[-1]
    lost = len(pq.read_table(damaged, columns=["cell_key"]))
    damaged.write_bytes(damage(damaged.read_bytes()))
    with pytest.warns(StoreWarning, match=r"stored results could not be read .*; moved to .*unreadable.*cells run again"):
        again = run(tmp_path)
    assert (again.cells_run, again.cells_skipped) == (lost, 2 - lost)
    assert (first.run_dir / "parts" / "unreadable" / damaged.name).is_file()
    after = open_cube(first.run_dir)
    assert after["final_loss"].equals(before["final_loss"]) and after["dice"].equals(before["dice"])


def _earlier_layout(cube, run_dir):
    """Write ``cube`` as the per-cell NetCDF shards of the earlier layout (cells/<key>.nc), as that version wrote them."""
    (run_dir / "cells").mkdir()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for key, coords in manifest["cells"].items():
        at = cube.sel(coords)
        shard = xr.Dataset(attrs=coords | {"key": key, "config": "{}"})
        for name, var in at.data_vars.items():
            if name == "cell_key":
                continue
            if "example_theta" in var.dims:  # the earlier layout kept every cell's example maps
                var = var.sel(example_theta=coords["theta"])
            level = "cell" if "theta" in cube[name].dims or "example_theta" in cube[name].dims else "dataset"
            shard[name] = (var.dims, var.values, var.attrs | {"level": level})
        shard.to_netcdf(run_dir / "cells" / f"{key}.nc", engine="h5netcdf")


def test_a_run_directory_of_the_earlier_per_cell_layout_is_converted_once(tmp_path):
    first = run(tmp_path)
    before = open_cube(first.run_dir).load()
    _earlier_layout(before, first.run_dir)
    shutil.rmtree(first.run_dir / "parts")
    (first.run_dir / "results.nc").unlink()
    with pytest.warns(StoreWarning, match=r"written by an earlier version .* its 2 stored cells were converted to parts/"):
        again = run(tmp_path)
    assert (again.cells_run, again.cells_skipped) == (0, 2)
    assert not (first.run_dir / "cells").exists()
    after = open_cube(first.run_dir)
    for name in ("final_loss", "dice", "ssp_loss_step", "saliency_example", "example_image", "orientation_hist"):
        assert after[name].equals(before[name]), name


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
