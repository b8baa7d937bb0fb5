"""The runner end to end on a tiny suite: the cube, resuming, refusing a changed suite, reproducibility."""

from __future__ import annotations

import dataclasses
import json
import os
import textwrap
import warnings

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import benchsuite.engine.pipeline as pipeline_module
from benchsuite.engine.pipeline import StackingWarning
from benchsuite.engine.registry import default_registry
from benchsuite.engine.runner import NegativesWarning, run_cells
from benchsuite.engine.suite import load_suite
from benchsuite.results.cube import AXES, open_cube, outcome
from benchsuite.results.errors import DataError, RunError, SuiteError
from tests.conftest import stored_keys

TINY = """\
name: tiny
data: {size: 16, eval_images: 4, examples: 2}
datasets:
  shapes: {plugin: symmetric_shapes, params: {k: 4, n_images: 20}}
  iso: {plugin: isotropic_texture, params: {n_images: 14}}
theta: [0, 90]
seeds: [0, 1]
methods:
  moco: {plugin: moco_v2, params: {epochs: 2, batch_size: 8, queue_size: 16}}
encoders: {cnn: {plugin: small_cnn, params: {width: 4}}}
saliency: {plugin: smoothgrad, params: {samples: 2}}
metrics: [dice, auroc, mass_in_mask, final_loss]
"""


def run(tmp_path, text=TINY, out="runs", **kw):
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(text))
    return run_cells(load_suite(path, default_registry()), default_registry(), tmp_path / out, progress=False, **kw)


def with_method(plugin: str, text: str = TINY) -> str:
    """``text`` with its SSP method replaced by ``plugin`` (2 epochs of batches of 8, as TINY's)."""
    moco = "moco: {plugin: moco_v2, params: {epochs: 2, batch_size: 8, queue_size: 16}}"
    return text.replace(moco, f"moco: {{plugin: {plugin}, params: {{epochs: 2, batch_size: 8}}}}")


def cube_at_stack(tmp_path, text: str, stack: int):
    """The cube of ``text`` run with the local executor's ``stack``, in its own run directory."""
    executor = f"executor: {{plugin: local, params: {{stack: {stack}}}}}\n"
    return open_cube(run(tmp_path, text + executor, out=f"stack{stack}").run_dir)


def test_tiny_suite_produces_a_cube_with_grid_image_and_epoch_dims(tmp_path):
    summary = run(tmp_path)
    assert (summary.cells_total, summary.cells_run, summary.cells_skipped) == (8, 8, 0)
    cube = open_cube(summary.run_dir)
    assert dict(cube["dice"].sizes) == {"dataset": 2, "theta": 2, "seed": 2, "method": 1, "encoder": 1, "image": 4}
    assert cube["final_loss"].dims == AXES
    assert cube["ssp_loss"].dims == (*AXES, "epoch") and cube.sizes["epoch"] == 2
    assert cube["example_image"].dims == ("dataset", "example", "channel", "y", "x")
    assert list(cube["theta"].values) == [0.0, 90.0]
    assert list(cube["dataset"].values) == ["shapes", "iso"]
    assert cube["dice"].attrs == {"role": "metric", "scope": "image", "better": "higher"}
    assert cube["final_loss"].attrs["better"] == "lower"  # each metric's higher_is_better, recorded
    assert np.isfinite(cube["dice"].sel(theta=90.0).values).all() and np.isfinite(cube["final_loss"].values).all()
    assert np.isnan(cube["dice"].sel(theta=0.0).values).all()  # identical views: no saliency to score
    assert "name: tiny" in cube.attrs["suite_yaml"] and "torch" in cube.attrs["versions"]
    assert (summary.run_dir / "suite.yaml").read_text() == textwrap.dedent(TINY)
    event_dirs = {p.parent for p in (summary.run_dir / "tensorboard").rglob("events.out.tfevents.*")}
    assert len(event_dirs - {summary.run_dir / "tensorboard"}) == 4  # one TensorBoard run per curve over θ


def test_rerun_skips_every_stored_cell(tmp_path):
    run(tmp_path)
    again = run(tmp_path)
    assert (again.cells_run, again.cells_skipped) == (0, 8)


def test_interrupted_run_loses_nothing_and_resume_redoes_nothing(tmp_path, monkeypatch):
    calls = []
    real = pipeline_module.run_group

    def dies_on_the_fourth_cell(group, device, **kw):
        # On a CPU each group is one cell (stack: auto), so the fourth call is the fourth cell.
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.extend(cell.key for cell in group)
        return real(group, device, **kw)

    monkeypatch.setattr(pipeline_module, "run_group", dies_on_the_fourth_cell)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path)
    run_dir = tmp_path / "runs" / "tiny"
    assert stored_keys(run_dir) == set(calls)  # Ctrl-C stores every cell that had finished
    parts = {p.name: p.stat().st_mtime_ns for p in (run_dir / "parts").glob("*.parquet")}
    partial = open_cube(run_dir)  # the cube is written on the way out, with the unfinished cells NaN
    assert int(np.isfinite(partial["final_loss"].values).sum()) == 3

    monkeypatch.setattr(pipeline_module, "run_group", real)
    resumed = run(tmp_path)
    assert (resumed.cells_run, resumed.cells_skipped) == (5, 3)
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "parts").glob("*.parquet") if p.name in parts} == parts
    assert np.isfinite(open_cube(run_dir)["final_loss"].values).all()


def test_resuming_with_a_changed_suite_is_refused_and_explained(tmp_path):
    run(tmp_path)
    with pytest.raises(SuiteError, match=r"different version of suite 'tiny'.*methods.moco.params.epochs: 2 -> 3.*--force"):
        run(tmp_path, TINY.replace("epochs: 2", "epochs: 3"))


def test_force_reruns_a_changed_suite_and_keeps_the_old_cells(tmp_path):
    first = run(tmp_path)
    old = stored_keys(first.run_dir)
    forced = run(tmp_path, TINY.replace("epochs: 2", "epochs: 3"), force=True)
    assert forced.cells_run == 8
    assert old < stored_keys(first.run_dir) and len(stored_keys(first.run_dir)) == 16
    assert open_cube(first.run_dir).sizes["epoch"] == 3


def test_same_suite_and_seed_give_identical_numbers(tmp_path):
    a = open_cube(run(tmp_path, out="a").run_dir)
    b = open_cube(run(tmp_path, out="b").run_dir)
    for name in ("dice", "auroc", "final_loss", "ssp_loss_step", "saliency_example"):
        np.testing.assert_array_equal(a[name].values, b[name].values)


NAN_METHOD = """
import torch
from benchsuite.api import SSPMethod, TrainingParams, hookimpl

class Diverges(SSPMethod):
    # A method whose loss turns NaN on its third step, as a diverging optimisation would.
    def __init__(self, params, encoder):
        super().__init__()
        self.params, self.encoder, self.steps = params, encoder, 0
    def forward(self, view1, view2):
        self.steps += 1
        loss = (self.encoder(view1) - self.encoder(view2)).pow(2).mean()
        return loss * float("nan") if self.steps >= 3 else loss
    def embed(self, x):
        return self.encoder(x)

@hookimpl
def benchsuite_register_ssp_methods(registry):
    registry.add("diverges", Diverges, params=TrainingParams)
"""


def test_nan_loss_stops_the_run_with_advice_and_keeps_nothing_half_written(tmp_path, plugin_path, fresh_registry):
    plugin_path("bs-diverges", {"bs_diverges": NAN_METHOD}, {"diverges": "bs_diverges"})
    text = with_method("diverges")
    with pytest.raises(RunError, match=r"SSP loss became nan in epoch 2.*Lower the learning rate \(methods.moco.params.lr\)"):
        run(tmp_path, text)
    assert not stored_keys(tmp_path / "runs" / "tiny")


def test_each_cell_records_whether_its_views_were_identical(tmp_path):
    cube = open_cube(run(tmp_path).run_dir)
    assert (cube["identical_views"].sel(theta=0.0) == 1).all()
    assert (cube["identical_views"].sel(theta=90.0) == 0).all()
    assert np.isnan(cube["dice"].sel(theta=0.0)).all() and np.isfinite(cube["dice"].sel(theta=90.0)).any()


def test_the_cube_names_the_metric_the_suite_declared_its_outcome(tmp_path):
    named = open_cube(run(tmp_path, TINY + "outcome: final_loss\n", out="named").run_dir)
    assert named.attrs["outcome"] == "final_loss" and outcome(named) == "final_loss"
    assert outcome(open_cube(run(tmp_path, out="unnamed").run_dir)) is None


# TINY's queue of 16 is full after 2 epochs; one of 64 is not: the shapes' 16 training images give
# 2 steps of 8 keys an epoch (32 keys: half the queue), the textures' 10 give 1 step (16 keys: a quarter).
UNFILLED_QUEUE = TINY.replace("queue_size: 16", "queue_size: 64")


def test_each_moco_cell_records_its_share_of_random_negatives_and_the_run_warns_once(tmp_path):
    with pytest.warns(NegativesWarning) as caught:
        cube = open_cube(run(tmp_path, UNFILLED_QUEUE).run_dir)
    (warning,) = [w for w in caught if w.category is NegativesWarning]
    assert "moco: 8 of 8 cells, 50% to 75% of their negatives" in str(warning.message)
    assert "heldout_infonce" in str(warning.message) and "queue_init: keys" in str(warning.message)
    shares = cube["placeholder_negatives"]
    assert shares.attrs["role"] == "diagnostic" and shares.dims == AXES
    assert (shares.sel(dataset="shapes") == 0.5).all() and (shares.sel(dataset="iso") == 0.75).all()


def test_a_queue_filled_with_keys_before_training_leaves_no_placeholder_and_no_warning(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cube = open_cube(run(tmp_path, UNFILLED_QUEUE.replace("queue_size: 64", "queue_size: 64, queue_init: keys")).run_dir)
    assert not [w for w in caught if w.category is NegativesWarning]
    assert (cube["placeholder_negatives"] == 0).all()


def test_a_method_without_stored_negatives_has_no_placeholder_variable(tmp_path):
    assert "placeholder_negatives" not in open_cube(run(tmp_path, with_method("simclr")).run_dir)


BAD_PLUGINS = """
import torch
from benchsuite.api import ImageMaskSet, Params, hookimpl

def bytes_not_unit(params, spec):
    # 0-255 pixel values, as a loader that forgot to rescale would return them.
    return ImageMaskSet(torch.full((20, 1, spec.size, spec.size), 255.0), torch.ones(20, spec.size, spec.size, dtype=torch.bool))

class WrongShape:
    scope = "image"
    def __init__(self, params):
        pass
    def __call__(self, inputs):
        return inputs.saliency.flatten(1).mean(1)[:1]

@hookimpl
def benchsuite_register_datasets(registry):
    registry.add("bytes_not_unit", bytes_not_unit, params=Params)

@hookimpl
def benchsuite_register_metrics(registry):
    registry.add("wrong_shape", WrongShape, params=Params)
"""


def test_a_dataset_outside_the_unit_range_is_bad_input_before_any_cell_trains(tmp_path, plugin_path, fresh_registry):
    # The broken dataset is the suite's second: the first one's cells must not have trained.
    plugin_path("bs-bad", {"bs_bad": BAD_PLUGINS}, {"bad": "bs_bad"})
    text = TINY.replace("plugin: isotropic_texture, params: {n_images: 14}", "plugin: bytes_not_unit")
    expected = r"dataset 'iso' \(plugin 'bytes_not_unit'\) cannot be built.*must be scaled to \[0, 1\], got values in \[255, 255"
    with pytest.raises(DataError, match=expected) as error:
        run(tmp_path, text)
    assert error.value.exit_code == 2
    assert not stored_keys(tmp_path / "runs" / "tiny")


def test_a_metric_that_breaks_the_output_contract_is_named(tmp_path, plugin_path, fresh_registry):
    plugin_path("bs-bad", {"bs_bad": BAD_PLUGINS}, {"bad": "bs_bad"})
    text = TINY.replace("metrics: [dice, auroc, mass_in_mask, final_loss]", "metrics: [dice, wrong_shape]")
    with pytest.raises(
        RunError, match=r"metric 'wrong_shape' \(wrong_shape\) failed.*for scope 'image', expected \(4,\)\. No cell had finished"
    ):
        run(tmp_path, text.replace("theta: [0, 90]", "theta: [90]"))


def test_worker_processes_build_cells_from_the_suites_plugins(tmp_path, plugin_path, fresh_registry):
    # A third-party dataset in spawned workers: each worker loads the resolving registry's entry
    # points by name, and the numbers match the in-process run.
    plugin_path("bs-good", {"bs_good": GOOD_DATASET}, {"good": "bs_good"})
    text = TINY.replace("plugin: isotropic_texture, params: {n_images: 14}", "plugin: squares").replace(
        "theta: [0, 90]", "theta: [90]"
    )
    alone = open_cube(run(tmp_path, text, out="alone").run_dir)
    pooled = open_cube(run(tmp_path, text + "executor: {plugin: local, params: {workers: 2}}\n", out="pooled").run_dir)
    np.testing.assert_array_equal(alone["final_loss"].values, pooled["final_loss"].values)


GOOD_DATASET = """
import torch
from benchsuite.api import ImageMaskSet, Params, hookimpl

def squares(params, spec):
    images = torch.zeros(14, 1, spec.size, spec.size)
    masks = torch.zeros(14, spec.size, spec.size, dtype=torch.bool)
    for i in range(14):
        masks[i, i % 5 : i % 5 + 6, 2:9] = True
    images[masks[:, None]] = 1.0
    return ImageMaskSet(images, masks)

@hookimpl
def benchsuite_register_datasets(registry):
    registry.add("squares", squares, params=Params)
"""


def test_a_rerun_that_runs_nothing_keeps_the_cube_and_a_new_part_rebuilds_it(tmp_path):
    cube_path = run(tmp_path).cube_path
    built = cube_path.stat().st_mtime_ns
    assert run(tmp_path).cells_run == 0 and cube_path.stat().st_mtime_ns == built
    part = sorted((cube_path.parent / "parts").glob("*.parquet"))[-1]
    lost = len(pq.read_table(part, columns=["cell_key"]))
    part.unlink()
    assert run(tmp_path).cells_run == lost and cube_path.stat().st_mtime_ns > built
    assert np.isfinite(open_cube(cube_path.parent)["final_loss"].values).all()


def test_a_rerun_of_a_suite_changed_only_where_no_cell_changes_rebuilds_the_cube_with_it(tmp_path):
    cube_path = run(tmp_path).cube_path
    changed = TINY + "analysis: {harmonics: 3}\n"  # no cell's key changes, so nothing runs again
    assert run(tmp_path, changed).cells_run == 0
    assert json.loads(open_cube(cube_path.parent).attrs["analysis"])["harmonics"] == 3


def test_stacked_cells_give_the_numbers_of_cells_trained_alone(tmp_path):
    # Stacking is an execution detail: the same cells and keys, and the same numbers up to the
    # float32 rounding of grouped convolutions (docs/design.md states the tolerance).
    alone, stacked = cube_at_stack(tmp_path, TINY, 1), cube_at_stack(tmp_path, TINY, 4)
    np.testing.assert_array_equal(alone["cell_key"].values, stacked["cell_key"].values)
    assert (alone["stack_size"] == 1).all() and (stacked["stack_size"] == 4).all()
    for name in ("ssp_loss_step", "final_loss"):
        np.testing.assert_allclose(stacked[name].values, alone[name].values, rtol=1e-5, atol=1e-6)
    for name in ("auroc", "mass_in_mask", "saliency_example"):
        np.testing.assert_allclose(stacked[name].values, alone[name].values, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(np.isnan(stacked["dice"].values), np.isnan(alone["dice"].values))


@pytest.mark.filterwarnings("ignore::benchsuite.engine.runner.NegativesWarning")
@pytest.mark.parametrize("queue_init", ["random", "keys"])
def test_a_stacked_moco_counts_and_fills_its_queue_as_each_cell_alone(tmp_path, queue_init):
    text = UNFILLED_QUEUE.replace("queue_size: 64", f"queue_size: 64, queue_init: {queue_init}")
    alone, stacked = cube_at_stack(tmp_path, text, 1), cube_at_stack(tmp_path, text, 4)
    assert (stacked["stack_size"] == 4).all()
    np.testing.assert_array_equal(stacked["placeholder_negatives"].values, alone["placeholder_negatives"].values)
    np.testing.assert_allclose(stacked["ssp_loss_step"].values, alone["ssp_loss_step"].values, rtol=1e-5, atol=1e-6)


UNSTACKABLE_METHOD = """
import torch
from benchsuite.api import SSPMethod, TrainingParams, hookimpl

class Branches(SSPMethod):
    # Python branching on a tensor value (.item()), which vmap cannot batch.
    def __init__(self, params, encoder):
        super().__init__()
        self.params, self.encoder = params, encoder
    def forward(self, view1, view2):
        a, b = self.encoder(view1), self.encoder(view2)
        scale = 2.0 if a.mean().item() > 0 else 1.0
        return scale * (1 - torch.nn.functional.cosine_similarity(a, b, dim=1)).mean()
    def embed(self, x):
        return self.encoder(x)

@hookimpl
def benchsuite_register_ssp_methods(registry):
    registry.add("branches", Branches, params=TrainingParams)
"""


def test_a_method_that_cannot_be_stacked_runs_its_cells_alone_with_a_note(tmp_path, plugin_path, fresh_registry):
    plugin_path("bs-branches", {"bs_branches": UNSTACKABLE_METHOD}, {"branches": "bs_branches"})
    alone = cube_at_stack(tmp_path, with_method("branches"), 1)
    with pytest.warns(StackingWarning, match=r"'branches' cannot be trained as a stack \(.*\); its 4 cells run one at a time"):
        tried = cube_at_stack(tmp_path, with_method("branches"), 4)
    np.testing.assert_array_equal(tried["ssp_loss_step"].values, alone["ssp_loss_step"].values)
    assert (tried["stack_size"] == 1).all()


OUT_OF_MEMORY_METHOD = """
import torch
from benchsuite.api import SSPMethod, TrainingParams, hookimpl

class Roomy(SSPMethod):
    # Runs out of (simulated) device memory when more than two copies are trained as one stack:
    # under vmap the views' unwrapped leading dimension is the stack size.
    def __init__(self, params, encoder):
        super().__init__()
        self.params, self.encoder = params, encoder
    def forward(self, view1, view2):
        if torch._C._functorch.is_batchedtensor(view1) and torch._C._functorch.get_unwrapped(view1).shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated by the test plugin)")
        a, b = self.encoder(view1), self.encoder(view2)
        return (1 - torch.nn.functional.cosine_similarity(a, b, dim=1)).mean()
    def embed(self, x):
        return self.encoder(x)

@hookimpl
def benchsuite_register_ssp_methods(registry):
    registry.add("roomy", Roomy, params=TrainingParams)
"""


def test_a_stack_that_runs_out_of_memory_trains_as_two_halves(tmp_path, plugin_path, fresh_registry):
    plugin_path("bs-roomy", {"bs_roomy": OUT_OF_MEMORY_METHOD}, {"roomy": "bs_roomy"})
    alone = cube_at_stack(tmp_path, with_method("roomy"), 1)
    with pytest.warns(StackingWarning, match=r"a stack of 4 cells did not fit .* training it as stacks of 2 and 2"):
        halves = cube_at_stack(tmp_path, with_method("roomy"), 4)
    assert (halves["stack_size"] == 2).all()
    np.testing.assert_allclose(halves["ssp_loss_step"].values, alone["ssp_loss_step"].values, rtol=1e-5, atol=1e-6)


PLAIN_SALIENCY = """
import torch
from benchsuite.api import Params, hookimpl

class InputGradient:
    # A third-party saliency method with no `stacked`: the core calls it once per model.
    def __init__(self, params):
        self.params = params
    def __call__(self, objective, x, generator):
        rows = (x + 0.1 * torch.randn(x.shape, generator=generator, device=x.device)).requires_grad_(True)
        (grad,) = torch.autograd.grad(objective(rows, torch.arange(len(x), device=x.device)).sum(), rows)
        return grad.abs().amax(dim=1)

@hookimpl
def benchsuite_register_saliency_methods(registry):
    registry.add("input_gradient", InputGradient, params=Params)
"""


def test_a_saliency_method_without_stacked_scores_a_stack_one_model_at_a_time(tmp_path, plugin_path, fresh_registry):
    plugin_path("bs-input-gradient", {"bs_input_gradient": PLAIN_SALIENCY}, {"input_gradient": "bs_input_gradient"})
    text = TINY.replace("saliency: {plugin: smoothgrad, params: {samples: 2}}", "saliency: {plugin: input_gradient}")
    alone, stacked = cube_at_stack(tmp_path, text, 1), cube_at_stack(tmp_path, text, 4)
    assert (stacked["stack_size"] == 4).all()
    assert np.isfinite(stacked["saliency_example"].sel(example_theta=90.0).values).all()
    np.testing.assert_allclose(stacked["saliency_example"].values, alone["saliency_example"].values, rtol=1e-3, atol=1e-4)


def test_the_task_sets_the_environment_in_a_worker_and_leaves_the_drivers_alone(monkeypatch):
    seen = []
    monkeypatch.setattr(pipeline_module, "run_group", lambda cells, device, **kw: seen.append(os.environ["BENCHSUITE_DATA_ROOT"]))
    monkeypatch.setenv("BENCHSUITE_DATA_ROOT", "/here")
    task = pipeline_module.GroupTask(default_registry(), {"BENCHSUITE_DATA_ROOT": "/elsewhere"}, "run")
    task([], torch.device("cpu"))
    dataclasses.replace(task, driver="another-host:1")([], torch.device("cpu"))
    assert seen == ["/here", "/elsewhere"]


def test_a_saliency_method_that_cannot_explain_the_model_is_bad_input_before_any_cell_trains(tmp_path):
    text = TINY.replace(
        "saliency: {plugin: smoothgrad, params: {samples: 2}}", "saliency: {plugin: grad_cam, params: {layer: nosuch}}"
    )
    with pytest.raises(
        SuiteError, match=r"'grad_cam' cannot explain the moco / cnn model: .*no layer 'nosuch' \(its top-level modules: features"
    ):
        run(tmp_path, text)
    assert not (tmp_path / "runs" / "tiny" / "cells").exists()
    # The encoder's own layer passes the same check, and the run goes on to train every cell.
    assert run(tmp_path, text.replace("layer: nosuch", "layer: features")).cells_run == 8
