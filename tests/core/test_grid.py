"""Grid expansion and the stability of cell keys."""

from __future__ import annotations

import dataclasses
import textwrap

from benchsuite.engine.grid import Cell, cell_key, detail_thetas, expand
from benchsuite.engine.kinds import AXIS_KINDS
from benchsuite.engine.registry import default_registry
from benchsuite.engine.suite import load_suite
from benchsuite.results.cube import AXES, SEED, THETA
from tests.core.test_suite import VALID


def cells_of(tmp_path, text, name="suite.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return expand(load_suite(path, default_registry()))


def test_grid_is_the_cartesian_product_of_the_axes_in_axis_order(tmp_path):
    text = VALID.replace("seeds: [0, 1]", "seeds: [0, 1, 2]").replace("theta: [0, 90]", "theta: {start: 0, stop: 360, step: 90}")
    cells = cells_of(tmp_path, text)
    assert len(cells) == 4 * 3
    assert [(c.theta, c.seed) for c in cells[:4]] == [(0.0, 0), (0.0, 1), (0.0, 2), (90.0, 0)]
    assert len({c.key for c in cells}) == len(cells)
    assert list(cells[0].coords) == list(AXES)


def test_the_grid_axes_spelt_once_in_the_cube_are_the_cells_fields_and_the_axis_kinds_with_theta_and_seed():
    assert tuple(f.name for f in dataclasses.fields(Cell))[: len(AXES)] == AXES
    assert {*AXIS_KINDS, THETA, SEED} == set(AXES)


def test_keys_are_stable_across_loads_and_key_order(tmp_path):
    reordered = VALID.replace(
        "shapes: {plugin: symmetric_shapes, params: {k: 4, n_images: 16}}",
        "shapes: {params: {n_images: 16, k: 4}, plugin: symmetric_shapes}",
    )
    assert [c.key for c in cells_of(tmp_path, VALID, "a.yaml")] == [c.key for c in cells_of(tmp_path, reordered, "b.yaml")]


def test_spelling_out_a_default_parameter_keeps_the_key(tmp_path):
    explicit = VALID.replace("metrics: [dice, final_loss]", "metrics: [{plugin: dice, params: {binarize: topk}}, final_loss]")
    assert [c.key for c in cells_of(tmp_path, VALID, "a.yaml")] == [c.key for c in cells_of(tmp_path, explicit, "b.yaml")]


def test_changing_a_parameter_changes_every_affected_key(tmp_path):
    before = cells_of(tmp_path, VALID, "a.yaml")
    after = cells_of(tmp_path, VALID.replace("epochs: 1", "epochs: 2"), "b.yaml")
    assert not {c.key for c in before} & {c.key for c in after}


def test_the_executor_does_not_enter_the_key(tmp_path):
    elsewhere = VALID + "executor: {plugin: local, params: {device: cpu}}\n"
    assert [c.key for c in cells_of(tmp_path, VALID, "a.yaml")] == [c.key for c in cells_of(tmp_path, elsewhere, "b.yaml")]


def test_key_is_a_pure_function_of_coordinates_and_config():
    coords = {"dataset": "d", "theta": 30.0, "seed": 1, "method": "m", "encoder": "e"}
    config = {"a": {"b": 1, "c": [1, 2]}}
    assert cell_key(coords, config) == cell_key(dict(reversed(coords.items())), {"a": {"c": [1, 2], "b": 1}})
    assert cell_key(coords, config) != cell_key({**coords, "theta": 30.000001}, config)
    assert len(cell_key(coords, config)) == 16


def test_detail_thetas_spread_evenly_through_the_suites_angles():
    thetas = [round(0.1 * i, 9) for i in range(3600)]
    sample = detail_thetas(thetas, 12)
    assert sorted(sample) == [30.0 * i for i in range(12)]
    assert detail_thetas([0.0, 90.0, 180.0], 12) == {0.0, 90.0, 180.0}  # fewer angles than asked: all of them
    assert detail_thetas([270.0, 0.0, 90.0, 180.0], 2) == {0.0, 180.0}  # in angle order, whatever the suite's order


def test_expand_keys_every_cell_as_cell_key_does_and_shares_a_familys_config(tmp_path):
    cells = cells_of(tmp_path, VALID)
    assert all(cell.key == cell_key(cell.coords, cell.config) for cell in cells)
    by_family = {}
    for cell in cells:
        by_family.setdefault((cell.dataset, cell.method, cell.encoder), []).append(cell)
    assert all(len({id(c.config) for c in family}) == 1 for family in by_family.values())
