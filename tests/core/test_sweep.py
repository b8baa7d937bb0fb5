"""Any component parameter as a grid axis: the suite's ``sweep``, through the grid, the store and the logs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchsuite.analysis.summary import analyze_cube
from benchsuite.analysis.terminal import format_summary
from benchsuite.engine.data import check_datasets
from benchsuite.engine.grid import expand, families
from benchsuite.engine.registry import default_registry
from benchsuite.engine.runner import run_cells
from benchsuite.engine.suite import load_suite
from benchsuite.results.cube import AXES, SWEEP, grid_axes, interactions, open_cube
from benchsuite.results.errors import SuiteError
from benchsuite.results.tensorboard import run_name

BASE = """\
name: swept
data: {size: 16, eval_images: 4, examples: 1}
datasets:
  shapes: {plugin: symmetric_shapes, params: {k: 4, n_images: 12}}
  iso: {plugin: isotropic_texture, params: {n_images: 12}}
theta: [90]
seeds: [0, 1]
methods: {moco: {plugin: moco_v2, params: {epochs: 1, batch_size: 4, queue_size: 8}}}
encoders: {cnn: {plugin: small_cnn, params: {width: 4}}}
saliency: {plugin: smoothgrad, params: {samples: 2}}
metrics: [dice, final_loss]
"""


def load(tmp_path, sweep: str = "", text: str = BASE):
    path = tmp_path / "swept.yaml"
    path.write_text(text + sweep)
    return load_suite(path, default_registry())


def test_a_swept_parameter_is_a_grid_dimension_whose_values_reach_the_component(tmp_path):
    resolved = load(tmp_path, "sweep:\n  saliency.params.samples: [1, 3]\n  methods.moco.params.epochs: [1, 2]\n")
    assert resolved.describe().endswith(
        "x 1 encoder x 2 values of saliency.params.samples x 2 values of methods.moco.params.epochs = 16 cells"
    )
    cells = expand(resolved)
    assert [list(c.swept) for c in cells[:1]] == [["samples", "epochs"]]
    for cell in cells:
        assert cell.config["saliency"]["params"]["samples"] == cell.swept["samples"]
        assert cell.config["method"]["params"]["epochs"] == cell.swept["epochs"]
        assert cell.config["method"]["params"]["batch_size"] == 4, "the other params stay as the suite gives them"
        assert f"samples={cell.swept['samples']}" in cell.describe()
        assert run_name(cell).endswith(f"samples={cell.swept['samples']}/epochs={cell.swept['epochs']}")
    assert len({c.key for c in cells}) == 16
    # Cells that differ in a swept value compute different things, so they never share a stack.
    assert all(len({json.dumps(c.swept) for c in family}) == 1 for family in families(cells))


def test_values_are_validated_by_the_parameter_model_and_stored_as_it_parses_them(tmp_path):
    resolved = load(tmp_path, "sweep:\n  saliency.params.spread: [0.1, 1]\n")
    (sweep,) = resolved.sweeps
    assert (sweep.dim, sweep.path, sweep.kind, sweep.label, sweep.field) == (
        "spread", "saliency.params.spread", "saliency_methods", "saliency", "spread"
    )  # fmt: skip
    assert sweep.values == (0.1, 1.0) and isinstance(sweep.values[1], float)


def test_a_suite_without_a_sweep_keeps_its_cells_and_keys(tmp_path):
    plain = expand(load(tmp_path))
    empty = expand(load(tmp_path, "sweep: {}\n"))
    assert [c.key for c in plain] == [c.key for c in empty] and all(not c.swept for c in plain)
    assert list(plain[0].coords) == ["dataset", "theta", "seed", "method", "encoder"]


@pytest.mark.parametrize(
    ("sweep", "expected"),
    [
        ("  augmentaton.params.fill: [0, 1]\n", r"'augmentaton' names no component key. Did you mean 'augmentation'"),
        (
            "  saliency.params.sample: [1, 2]\n",
            r"'smoothgrad' has no parameter 'sample'. Did you mean 'samples'\?",
        ),
        ("  saliency.params.samples: [1, -3]\n", r"value -3: bad params for saliency method 'smoothgrad': 'samples'"),
        ("  saliency.samples: [1, 2]\n", r"'saliency.samples' is not a parameter path; a path is KEY.params.FIELD"),
        ("  methods.mocoo.params.epochs: [1, 2]\n", r"'mocoo' is not a label of methods. Did you mean 'moco'"),
        ("  executor.params.workers: [1, 2]\n", r"the executor decides where cells run, not what they compute"),
        ("  datasets.shapes.params.k: [2, 4]\n", r"needs 'shapes' to be the suite's only entry of datasets"),
        ("  saliency.params.samples: [1, 1]\n", r"the values of 'saliency.params.samples' must be unique"),
        ("  saliency.params.samples: [[1], 2]\n", r"must be numbers or strings"),
    ],
)
def test_a_bad_sweep_is_a_suite_error_naming_its_line_and_what_to_write(tmp_path, sweep, expected):
    with pytest.raises(SuiteError, match=r"swept.yaml:1[23]: 'sweep.*" + expected):
        load(tmp_path, "sweep:\n" + sweep)


def test_two_sweeps_of_parameters_with_one_name_get_the_label_in_their_dimension(tmp_path):
    text = BASE.replace("metrics: [dice, final_loss]", "metrics: [dice, final_loss, {plugin: pair_probe, name: probe}]")
    sweep = (
        "sweep:\n  methods.moco.params.lr: [0.01, 0.1]\n  metrics.probe.params.lr: [0.5, 1]\n"
        "  metrics.dice.params.percentile: [80, 90]\n"
    )
    resolved = load(tmp_path, sweep, text)
    assert [s.dim for s in resolved.sweeps] == ["moco_lr", "probe_lr", "percentile"]
    cells = expand(resolved)
    assert {(c.config["method"]["params"]["lr"], c.swept["moco_lr"]) for c in cells} == {(0.01, 0.01), (0.1, 0.1)}
    assert {c.config["metrics"]["probe"]["params"]["lr"] for c in cells} == {0.5, 1.0}
    assert {c.config["metrics"]["dice"]["params"]["percentile"] for c in cells} == {80.0, 90.0}


def test_a_swept_parameter_named_like_a_dimension_of_the_cube_takes_its_label(tmp_path):
    text = BASE.replace("  iso: {plugin: isotropic_texture, params: {n_images: 12}}\n", "")
    resolved = load(tmp_path, "sweep:\n  datasets.shapes.params.seed: [0, 1]\n", text)
    assert [s.dim for s in resolved.sweeps] == ["shapes_seed"]  # 'seed' is a grid axis
    assert list(resolved.levels()) == [*AXES, "shapes_seed"]


def test_a_run_with_a_sweep_stores_it_as_a_dimension_of_the_cube(tmp_path):
    resolved = load(tmp_path, "sweep:\n  methods.moco.params.epochs: [1, 2]\n")
    summary = run_cells(resolved, default_registry(), tmp_path / "runs", progress=False)
    assert summary.cells_run == 8
    cube = open_cube(summary.run_dir)
    assert grid_axes(cube) == ("dataset", "theta", "seed", "method", "encoder", "epochs")
    assert cube["epochs"].attrs == {"role": SWEEP, "path": "methods.moco.params.epochs"}
    assert list(cube["epochs"].values) == [1, 2]
    assert cube["final_loss"].dims == grid_axes(cube)
    # One epoch of curve at epochs=1, two at epochs=2: the ragged dim is padded with NaN.
    losses = cube["ssp_loss"].sel(dataset="shapes", seed=0).squeeze()
    assert np.isnan(losses.sel(epochs=1).values[1]) and np.isfinite(losses.sel(epochs=2).values).all()
    manifest = json.loads((summary.run_dir / "manifest.json").read_text())
    assert manifest["config"]["sweep"] == {"methods.moco.params.epochs": [1, 2]}
    assert {coords["epochs"] for coords in manifest["cells"].values()} == {1, 2}
    assert (summary.run_dir / "tensorboard" / "shapes" / "seed=0" / "moco" / "cnn" / "epochs=2").is_dir()  # a run per curve
    # The analysis reads the swept dimension from the cube: a factor with its interaction with the dataset.
    anova = analyze_cube(cube)["anova"]
    assert {"epochs", "dataset", "epochs:dataset"} <= set(anova[anova["metric"] == "final_loss"]["term"])
    assert "epochs:dataset" in format_summary(analyze_cube(cube), interactions(cube))


def test_each_value_of_a_swept_dataset_parameter_is_built_and_checked_before_training(tmp_path):
    text = BASE.replace("  iso: {plugin: isotropic_texture, params: {n_images: 12}}\n", "")
    resolved = load(tmp_path, "sweep:\n  datasets.shapes.params.n_images: [10, 14]\n", text)
    summaries = check_datasets(expand(resolved), default_registry())
    assert [(s.label, s.images) for s in summaries] == [("shapes n_images=10", 10), ("shapes n_images=14", 14)]
    too_few = load(tmp_path, "sweep:\n  datasets.shapes.params.n_images: [5, 14]\n", text)
    with pytest.raises(SuiteError, match=r"data.eval_images = 4, but dataset 'shapes n_images=5' has 5 images"):
        check_datasets(expand(too_few), default_registry())
