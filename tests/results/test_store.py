"""The store's parts and the cube assembled from them, on synthetic results (no training)."""

from __future__ import annotations

import dataclasses
import textwrap
import time

import numpy as np
import pytest

from benchsuite.engine.grid import Cell, expand
from benchsuite.engine.registry import default_registry
from benchsuite.engine.suite import load_suite
from benchsuite.results import cube as names
from benchsuite.results import store as store_module
from benchsuite.results.cell_result import CellResult, TrainingCurves
from benchsuite.results.cube import open_cube
from benchsuite.results.parts import cell_variables
from benchsuite.results.store import PartWriter, RunStore

SUITE = """\
name: stored
datasets: {big: {plugin: symmetric_shapes, params: {k: 4}}, small: isotropic_texture}
theta: [0, 90, 180, 270]
seeds: [0, 1]
methods: {moco: moco_v2}
encoders: {cnn: small_cnn}
metrics: [dice, final_loss]
"""
IMAGES = {"big": 5, "small": 3}  # evaluation images per dataset: the cube pads the smaller one with NaN


@pytest.fixture
def cells(tmp_path) -> list[Cell]:
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(SUITE))
    return expand(load_suite(path, default_registry()))


def result(cell: Cell, shift: float = 0.0) -> CellResult:
    """A result whose every value says which cell it belongs to (θ, seed and ``shift``)."""
    tag = cell.theta + cell.seed / 10 + shift
    n = IMAGES[cell.dataset]
    curves = TrainingCurves(np.array([tag, tag + 1]), np.array([0.5, 0.5]), np.arange(4) + tag, np.full(4, 0.1))
    return CellResult(
        cell=cell,
        image_metrics={"dice": np.arange(n, dtype=np.float32) + tag},
        cell_metrics={"final_loss": tag},
        higher_is_better={"dice": True, "final_loss": False},
        curves=curves,
        identical_views=cell.theta == 0,
        example_saliency=np.full((2, 4, 4), tag, np.float32),
        example_images=np.full((2, 1, 4, 4), len(cell.dataset), np.float32),
        example_masks=np.ones((2, 4, 4), bool),
        orientation_hist=np.full(36, 1 / 36),
        wall_time_s=1.0,
        peak_memory_mb=10.0,
        device=f"cpu {cell.dataset}",
        threads=1,
        stack_size=1,
    )


def rows(results: list[CellResult], detail: set[float]) -> list:
    return [(r.cell, cell_variables(r, detailed=r.cell.theta in detail, dataset_level=True)) for r in results]


def test_parts_assemble_into_the_cube_of_their_results(tmp_path, cells):
    done = [c for c in cells if not (c.dataset == "small" and c.theta == 270)]  # a cell not run stays NaN
    first, second = done[: len(done) // 2], done[len(done) // 2 :]
    rerun = result(first[0], shift=0.05)  # stored again later (--force): the later row wins
    stranger = result(dataclasses.replace(first[1], key="not-in-this-grid", theta=45.0))
    store = RunStore(tmp_path)
    store.write_part(rows([result(c) for c in first], {90.0}))
    store.write_part(rows([*[result(c) for c in second], rerun, stranger], {90.0}))
    cube = store.build_cube(cells, {"suite_name": "stored"}, {})

    assert dict(cube["dice"].sizes) == {"dataset": 2, "theta": 4, "seed": 2, "method": 1, "encoder": 1, "image": 5}
    for c in done:
        at = cube.sel(c.coords)
        tag = c.theta + c.seed / 10 + (0.05 if c.key == first[0].key else 0.0)
        expected = np.full(5, np.nan)
        expected[: IMAGES[c.dataset]] = np.arange(IMAGES[c.dataset]) + tag
        np.testing.assert_allclose(at["dice"].values, expected, rtol=1e-6)
        assert at["final_loss"].item() == tag and str(at["device"].values) == f"cpu {c.dataset}"
        np.testing.assert_allclose(at["ssp_loss_step"].values, np.arange(4) + tag, rtol=1e-6)
        assert at["cell_key"].item() == c.key
    missing = cube.sel(dataset="small", theta=270.0)
    assert np.isnan(missing["final_loss"].values).all() and np.isnan(missing["dice"].values).all()
    assert 45.0 not in cube["theta"].values  # a row of a cell outside the grid is left out
    # Example maps only at the detailed angle, over example_theta; dataset-level variables per dataset.
    assert list(cube[names.EXAMPLE_THETA].values) == [90.0] and cube[names.EXAMPLE_THETA].attrs["units"] == "degree"
    assert cube["saliency_example"].dims == ("dataset", names.EXAMPLE_THETA, "seed", "method", "encoder", "example", "y", "x")
    assert (cube["saliency_example"].sel(dataset="big", seed=1).values == 90.1).all()
    assert (cube["example_image"].sel(dataset="small").values == 5).all() and cube["example_image"].dims[0] == "dataset"
    assert cube["dice"].attrs == {"role": "metric", "scope": "image", "better": "higher"}
    assert cube["orientation"].values[0] == 5.0  # bin centres in degrees


def test_a_result_is_stored_as_soon_as_results_pause_without_waiting_for_the_end(tmp_path, cells):
    store = RunStore(tmp_path)
    with PartWriter(store, {90.0}, quiet=0.05) as writer:
        writer.add(result(cells[0]))
        deadline = time.monotonic() + 5
        while not store.done_keys() and time.monotonic() < deadline:
            time.sleep(0.01)  # the driver waits for the next group; the writer's thread stores meanwhile
        assert store.done_keys() == {cells[0].key}
        for c in cells[1:]:
            writer.add(result(c))
    assert store.done_keys() == {c.key for c in cells}


def test_a_stream_of_results_is_stored_in_few_parts(tmp_path, cells):
    store = RunStore(tmp_path)
    with PartWriter(store, {90.0}, max_delay=60, quiet=60) as writer:
        for c in cells:
            writer.add(result(c))
    assert len(store.part_paths()) == 1 and store.done_keys() == {c.key for c in cells}
    with PartWriter(store, {90.0}, max_cells=5, max_delay=60, quiet=60) as writer:
        for c in cells:
            writer.add(result(c, shift=1))
    assert len(store.part_paths()) == 1 + 4  # 16 cells in parts of at most 5


def test_a_large_cube_opens_lazily_with_the_values_of_a_small_one(tmp_path, cells, monkeypatch):
    store = RunStore(tmp_path)
    with PartWriter(store, {90.0}) as writer:
        for c in cells:
            writer.add(result(c))
    store.write_cube(store.build_cube(cells, {"suite_name": "stored"}, {}))
    whole = open_cube(tmp_path)
    monkeypatch.setattr(names, "LOAD_WHOLE_BYTES", 0)
    lazy = open_cube(tmp_path)
    assert lazy["dice"].chunks is not None and whole["dice"].chunks is None
    for name in ("dice", "final_loss", "saliency_example", "cell_key"):
        assert lazy[name].equals(whole[name]), name


@pytest.mark.parametrize("shape", [(4, 3600, 2, 1, 1, 64), (16, 3600, 1, 2, 8, 80), (3, 5), (2, 4, 8, 32, 32)])
def test_cube_chunks_stay_near_the_target_size_and_keep_whole_trailing_dimensions(shape):
    chunks = store_module._chunks(shape, 4)
    assert all(1 <= c <= n for c, n in zip(chunks, shape, strict=True))
    assert np.prod(chunks) * 4 <= max(store_module.CHUNK_BYTES, shape[-1] * 4)
    assert chunks[-1] == shape[-1]
