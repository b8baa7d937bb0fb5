"""TensorBoard logs of a cell, read back with TensorBoard's own event reader."""

from __future__ import annotations

import dataclasses
import io
import textwrap
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
import torch
from google.protobuf.json_format import MessageToDict
from PIL import Image
from skimage.segmentation import find_boundaries
from tensorboard.backend.event_processing.event_accumulator import DEFAULT_SIZE_GUIDANCE, EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from benchsuite.grid import Cell, expand
from benchsuite.pipeline import CellResult, run_cell
from benchsuite.registry import default_registry
from benchsuite.suite import load_suite
from benchsuite.tensorboard import (
    GREY_CEILING,
    OUTLINE_RGB,
    final_metrics,
    run_name,
    saliency_overlays,
    write_cell_logs,
    write_experiment_config,
)

SUITE = """\
name: tb
data: {size: 16, eval_images: 4, examples: 2}
datasets:
  shapes: {plugin: symmetric_shapes, params: {k: 4, n_images: 20}}
theta: [0, 7.5, 90]
seeds: [0, 1]
methods:
  moco: {plugin: moco_v2, params: {epochs: 2, batch_size: 8, queue_size: 16}}
encoders: {cnn: {plugin: small_cnn, params: {width: 4}}}
saliency: {plugin: smoothgrad, params: {samples: 2}}
metrics: [dice, auroc, mass_in_mask, final_loss]
"""


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> list[Cell]:
    path = tmp_path_factory.mktemp("suite") / "tb.yaml"
    path.write_text(textwrap.dedent(SUITE))
    return expand(load_suite(path, default_registry()))


@pytest.fixture(scope="module")
def result(cells: list[Cell], tmp_path_factory: pytest.TempPathFactory) -> CellResult:
    cell = next(c for c in cells if (c.theta, c.seed) == (90.0, 1))
    # The module scope cannot use conftest's per-test cache fixture; point at the same cache.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCHSUITE_CACHE", str(tmp_path_factory.getbasetemp() / "dataset-cache"))
        return run_cell(cell, torch.device("cpu"), registry=default_registry())


def read_run(run_dir: Path) -> EventAccumulator:
    return EventAccumulator(str(run_dir), size_guidance=dict.fromkeys(DEFAULT_SIZE_GUIDANCE, 0)).Reload()


@pytest.fixture(scope="module")
def events(result: CellResult, tmp_path_factory: pytest.TempPathFactory) -> EventAccumulator:
    return read_run(write_cell_logs(result, tmp_path_factory.mktemp("tensorboard"), run_name(result.cell)))


def scalars(events: EventAccumulator, tag: str) -> tuple[list[int], np.ndarray]:
    points = events.Scalars(tag)
    return [p.step for p in points], np.array([p.value for p in points])


def hparams_data(events: EventAccumulator, tag: str) -> HParamsPluginData:
    return HParamsPluginData.FromString(events.PluginTagToContent(metadata.PLUGIN_NAME)[tag])


# Run names


def test_run_name_nests_the_grid_axes_with_a_zero_padded_theta(result):
    assert run_name(result.cell) == "shapes/theta=090.0/seed=1/moco/cnn"


def test_run_names_sort_as_text_in_theta_order(result):
    thetas = [0.0, 7.5, 30.0, 30.25, 90.0, 180.0, 359.9, 360.0]
    names = [run_name(dataclasses.replace(result.cell, theta=t)) for t in thetas]
    assert sorted(names) == names and len(set(names)) == len(names)


def test_run_name_encodes_unsafe_labels_reversibly_into_one_path_level_each(result):
    labels = ["a/b", "a_b", "..", ".", ".hidden", "x y", "v1.5"]
    names = [run_name(dataclasses.replace(result.cell, dataset=label)) for label in labels]
    parts = [Path(name).parts for name in names]
    assert all(len(p) == 5 and not {".", ".."} & set(p) for p in parts)
    assert [unquote(p[0]) for p in parts] == labels


# Scalars


def test_step_scalars_equal_the_step_loss_and_learning_rate(events, result):
    n = len(result.curves.step_loss)
    for tag, expected in (("ssp/loss_step", result.curves.step_loss), ("ssp/lr", result.curves.step_lr)):
        steps, values = scalars(events, tag)
        assert steps == list(range(n))
        np.testing.assert_array_equal(values, expected.astype(np.float32))  # event files hold float32


def test_epoch_scalars_equal_the_epoch_loss_time_and_cumulative_time(events, result):
    curves = result.curves
    expected = {
        "ssp/loss_epoch": curves.epoch_loss,
        "time/epoch_seconds": curves.epoch_seconds,
        "time/elapsed_seconds": np.cumsum(curves.epoch_seconds),
    }
    for tag, values in expected.items():
        steps, logged = scalars(events, tag)
        assert steps == list(range(len(curves.epoch_loss)))
        np.testing.assert_allclose(logged, values, rtol=1e-6)


def test_metric_scalars_equal_the_cell_metrics_and_per_image_means(events, result):
    expected = {name: values.mean() for name, values in result.image_metrics.items()} | result.cell_metrics
    assert set(expected) == {"dice", "auroc", "mass_in_mask", "final_loss"}
    for name, value in expected.items():
        steps, logged = scalars(events, f"metrics/{name}")
        assert steps == [len(result.curves.step_loss)]
        np.testing.assert_allclose(logged, [value], rtol=1e-6)


def test_per_image_metric_means_skip_images_where_the_metric_is_nan(result):
    dice = result.image_metrics["dice"].copy()
    dice[0] = np.nan
    with_nan = dataclasses.replace(result, image_metrics={**result.image_metrics, "dice": dice})
    assert final_metrics(with_nan)["dice"] == pytest.approx(pd.Series(dice).mean())  # pandas skips NaN


# Images


def test_each_example_has_an_overlay_image_upscaled_to_128_pixels(events, result):
    examples = len(result.example_saliency)
    assert examples == 2
    assert events.Tags()["images"] == [f"saliency/example_{i}" for i in range(examples)]
    overlays = saliency_overlays(result.example_images, result.example_saliency, result.example_masks)
    for i, overlay in enumerate(overlays):
        (image,) = events.Images(f"saliency/example_{i}")
        assert (image.width, image.height) == (128, 128)  # 16-pixel images, upscaled 8 times
        png = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"), dtype=float)
        np.testing.assert_allclose(png, overlay.transpose(1, 2, 0) * 255, atol=1)


def test_overlay_outlines_exactly_the_inner_boundary_of_the_mask():
    yy, xx = np.mgrid[:16, :16]
    mask = (yy - 7) ** 2 + (xx - 8) ** 2 < 20
    rng = np.random.default_rng(0)
    overlay = saliency_overlays(rng.random((1, 1, 16, 16)), rng.random((1, 16, 16)), mask[None])
    upscaled = mask.repeat(8, axis=0).repeat(8, axis=1)
    is_outline = np.all(overlay[0] == OUTLINE_RGB.reshape(3, 1, 1), axis=0)
    np.testing.assert_array_equal(is_outline, find_boundaries(upscaled, mode="inner"))


def test_overlay_draws_no_outline_along_the_image_border():
    overlay = saliency_overlays(np.zeros((1, 1, 16, 16)), np.zeros((1, 16, 16)), np.ones((1, 16, 16), dtype=bool))
    assert not np.all(overlay == OUTLINE_RGB.reshape(1, 3, 1, 1), axis=1).any()


def test_overlay_shows_the_dimmed_image_where_saliency_is_lowest_and_white_where_highest():
    image = np.linspace(0, 2, 256).reshape(1, 1, 16, 16)  # rescaled per image to 0..1
    saliency = np.zeros((1, 16, 16))
    saliency[0, 3, 4] = 5.0
    overlay = saliency_overlays(image, saliency, np.zeros((1, 16, 16), dtype=bool))
    np.testing.assert_allclose(overlay[0, :, 3 * 8, 4 * 8], 1.0)
    grey = GREY_CEILING * np.linspace(0, 1, 256).reshape(16, 16)[10, 12]
    np.testing.assert_allclose(overlay[0, :, 10 * 8, 12 * 8], grey, rtol=1e-6)


# HParams


def test_session_start_info_holds_the_cell_coordinates_and_key(events, result):
    start = MessageToDict(hparams_data(events, metadata.SESSION_START_INFO_TAG).session_start_info)
    key = result.cell.key
    assert start["hparams"] == {
        "theta": 90.0,
        "dataset": "shapes",
        "seed": 1.0,
        "method": "moco",
        "encoder": "cnn",
        "cell_key": key,
    }
    assert start["groupName"] == key


def test_session_end_info_marks_the_cell_successful(events):
    end = hparams_data(events, metadata.SESSION_END_INFO_TAG).session_end_info
    assert end.status == api_pb2.STATUS_SUCCESS


def test_experiment_config_lists_each_axis_values_and_the_logged_metric_tags(cells, events, tmp_path):
    experiment = hparams_data(read_run(write_experiment_config(tmp_path, cells)), metadata.EXPERIMENT_TAG).experiment
    infos = {info.name: info for info in experiment.hparam_infos}
    domains = {name: MessageToDict(info).get("domainDiscrete") for name, info in infos.items()}
    assert domains == {"dataset": ["shapes"], "theta": [0.0, 7.5, 90.0], "seed": [0.0, 1.0], "method": ["moco"],
                       "encoder": ["cnn"], "cell_key": None}  # fmt: skip
    assert {name for name, info in infos.items() if info.differs} == {"theta", "seed"}
    metric_tags = [m.name.tag for m in experiment.metric_infos]
    assert metric_tags == ["metrics/dice", "metrics/auroc", "metrics/mass_in_mask", "metrics/final_loss"]
    assert set(metric_tags) <= set(events.Tags()["scalars"])


# Rewriting


def test_rewriting_a_cell_replaces_its_events_rather_than_adding_to_them(result, tmp_path):
    write_cell_logs(result, tmp_path, run_name(result.cell))
    run_dir = write_cell_logs(result, tmp_path, run_name(result.cell))
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    steps, _ = scalars(read_run(run_dir), "ssp/loss_step")
    assert steps == list(range(len(result.curves.step_loss)))


def test_rewriting_the_experiment_config_replaces_it(cells, tmp_path):
    write_experiment_config(tmp_path, cells)
    write_experiment_config(tmp_path, cells[:1])
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1
    experiment = hparams_data(read_run(tmp_path), metadata.EXPERIMENT_TAG).experiment
    assert not any(info.differs for info in experiment.hparam_infos)
