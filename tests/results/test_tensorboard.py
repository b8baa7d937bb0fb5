"""TensorBoard logs of a run (one run per θ-curve), read back with TensorBoard's own readers."""

from __future__ import annotations

import dataclasses
import io
import os
import textwrap
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
import torch
from google.protobuf.json_format import MessageToDict
from PIL import Image
from tensorboard import program
from tensorboard.backend.event_processing.data_ingester import LocalDataIngester
from tensorboard.backend.event_processing.event_accumulator import DEFAULT_SIZE_GUIDANCE, EventAccumulator
from tensorboard.context import RequestContext
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups, metadata
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.tensorboard import SummaryWriter

import benchsuite.results.tensorboard as tensorboard_module
from benchsuite.engine.grid import Cell, detail_thetas, expand
from benchsuite.engine.pipeline import run_group
from benchsuite.engine.registry import default_registry
from benchsuite.engine.runner import run_cells
from benchsuite.engine.suite import load_suite
from benchsuite.results.cell_result import CellResult
from benchsuite.results.overlays import saliency_overlays
from benchsuite.results.tensorboard import RunLogs, final_metrics, run_name
from tests.core.test_runner import TINY

SUITE = """\
name: tb
data: {size: 16, eval_images: 4, examples: 2}
record: {detail_angles: 2}
datasets:
  shapes: {plugin: symmetric_shapes, params: {k: 4, n_images: 20}}
theta: [0, 90, 187.5]
seeds: [0, 1]
methods:
  moco: {plugin: moco_v2, params: {epochs: 2, batch_size: 8, queue_size: 16}}
encoders: {cnn: {plugin: small_cnn, params: {width: 4}}}
saliency: {plugin: smoothgrad, params: {samples: 2}}
metrics: [dice, auroc, mass_in_mask, final_loss]
"""
METRICS = ("dice", "auroc", "mass_in_mask", "final_loss")
CURVES = ("shapes/seed=0/moco/cnn", "shapes/seed=1/moco/cnn")
STEPS = [0, 900, 1875]  # θ in tenths of a degree


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> list[Cell]:
    path = tmp_path_factory.mktemp("suite") / "tb.yaml"
    path.write_text(textwrap.dedent(SUITE))
    return expand(load_suite(path, default_registry()))


@pytest.fixture(scope="module")
def detail(cells: list[Cell]) -> frozenset[float]:
    return detail_thetas(sorted({c.theta for c in cells}), 2)


@pytest.fixture(scope="module")
def result(cells: list[Cell], tmp_path_factory: pytest.TempPathFactory) -> CellResult:
    cell = next(c for c in cells if (c.theta, c.seed) == (90.0, 1))
    # The module scope cannot use conftest's per-test cache fixture; point at the same cache.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCHSUITE_CACHE", str(tmp_path_factory.getbasetemp() / "dataset-cache"))
        (found,) = run_group([cell], torch.device("cpu"), registry=default_registry())
        return found


def at(result: CellResult, cell: Cell) -> CellResult:
    """``result`` moved to ``cell``, its metrics shifted by θ and seed so that every cell's differ."""
    shift = cell.theta / 1000 + cell.seed / 10
    return dataclasses.replace(
        result,
        cell=cell,
        image_metrics={name: values + shift for name, values in result.image_metrics.items()},
        cell_metrics={name: value + shift for name, value in result.cell_metrics.items()},
        identical_views=cell.theta == 0,
        wall_time_s=1 + shift,
    )


@pytest.fixture(scope="module")
def results(cells: list[Cell], result: CellResult) -> list[CellResult]:
    with_nan = {**result.image_metrics, "dice": np.full_like(result.image_metrics["dice"], np.nan)}
    return [at(dataclasses.replace(result, image_metrics=with_nan) if c.theta == 0 else result, c) for c in cells]


@pytest.fixture(scope="module")
def logdir(cells, detail, results, tmp_path_factory: pytest.TempPathFactory) -> Path:
    logdir = tmp_path_factory.mktemp("tensorboard")
    with RunLogs(logdir, cells, detail) as logs:
        for r in results:
            logs.add(r)
    return logdir


def read_run(run_dir: Path) -> EventAccumulator:
    return EventAccumulator(str(run_dir), size_guidance=dict.fromkeys(DEFAULT_SIZE_GUIDANCE, 0)).Reload()


def scalars(events: EventAccumulator, tag: str) -> tuple[list[int], np.ndarray]:
    points = events.Scalars(tag)
    return [p.step for p in points], np.array([p.value for p in points])


def hparams_data(events: EventAccumulator, tag: str) -> HParamsPluginData:
    return HParamsPluginData.FromString(events.PluginTagToContent(metadata.PLUGIN_NAME)[tag])


def event_dirs(logdir: Path) -> set[str]:
    return {p.parent.relative_to(logdir).as_posix() for p in logdir.rglob("events.out.tfevents.*")}


def add_all(logdir: Path, cells, detail, results, **kw) -> None:
    with RunLogs(logdir, cells, detail, **kw) as logs:
        for r in results:
            logs.add(r)


# Run names and steps


def test_run_name_nests_the_grid_axes_but_theta(result):
    assert run_name(result.cell) == "shapes/seed=1/moco/cnn"


def test_run_name_encodes_unsafe_labels_reversibly_into_one_path_level_each(result):
    labels = ["a/b", "a_b", "..", ".", ".hidden", "x y", "v1.5"]
    names = [run_name(dataclasses.replace(result.cell, dataset=label)) for label in labels]
    parts = [Path(name).parts for name in names]
    assert all(len(p) == 4 and not {".", ".."} & set(p) for p in parts)
    assert [unquote(p[0]) for p in parts] == labels


def test_the_step_is_theta_in_tenths_of_a_degree_or_finer_when_the_grid_needs_it(cells, detail, tmp_path):
    logs = RunLogs(tmp_path / "a", cells, detail)
    assert logs.steps_per_degree == 10 and [logs.step(t) for t in (0.0, 90.0, 187.5)] == STEPS
    finer = [dataclasses.replace(c, theta=t) for c, t in zip(cells, [0.0, 30.25, 359.99, 0.0, 30.25, 359.99], strict=True)]
    logs = RunLogs(tmp_path / "b", finer, detail)
    assert logs.steps_per_degree == 100 and [logs.step(t) for t in (30.25, 359.99)] == [3025, 35999]


# One run per curve, metrics over θ


def test_each_curve_is_one_run_beside_the_experiment_at_the_root(logdir):
    assert event_dirs(logdir) == {".", *CURVES}


def test_metric_scalars_hold_each_cells_final_metrics_at_its_theta_step(logdir, results):
    for seed, curve in enumerate(CURVES):
        events = read_run(logdir / curve)
        expected = [final_metrics(r) for r in results if r.cell.seed == seed]
        for name in METRICS:
            steps, logged = scalars(events, f"metrics/{name}")
            assert steps == STEPS
            np.testing.assert_allclose(logged, [m[name] for m in expected], rtol=1e-6)  # NaN where undefined
        steps, seconds = scalars(events, "time/cell_seconds")
        assert steps == STEPS
        np.testing.assert_allclose(seconds, [r.wall_time_s for r in results if r.cell.seed == seed], rtol=1e-6)
        assert scalars(events, "memory/peak_mb")[0] == STEPS


def test_per_image_metric_means_skip_images_where_the_metric_is_nan(result):
    dice = result.image_metrics["dice"].copy()
    dice[0] = np.nan
    with_nan = dataclasses.replace(result, image_metrics={**result.image_metrics, "dice": dice})
    assert final_metrics(with_nan)["dice"] == pytest.approx(pd.Series(dice).mean())  # pandas skips NaN
    all_nan = dataclasses.replace(result, image_metrics={**result.image_metrics, "dice": dice * np.nan})
    assert np.isnan(final_metrics(all_nan)["dice"])


# Detailed angles


def test_only_detailed_cells_log_training_curves_under_tags_that_name_the_angle(logdir, result, detail):
    assert detail == {0.0, 90.0}
    events = read_run(logdir / CURVES[1])
    per_cell = {f"metrics/{name}" for name in METRICS} | {"time/cell_seconds", "memory/peak_mb"}
    curves = ("ssp/loss_step", "ssp/lr", "ssp/loss_epoch", "time/epoch_seconds", "time/elapsed_seconds")
    detailed = {f"{tag}/theta={angle}" for tag in curves for angle in ("000.0", "090.0")}
    assert set(events.Tags()["scalars"]) == per_cell | detailed | {f"theta_mean/{name}" for name in METRICS}
    n = len(result.curves.step_loss)
    for tag, expected in (("ssp/loss_step", result.curves.step_loss), ("ssp/lr", result.curves.step_lr)):
        steps, values = scalars(events, f"{tag}/theta=090.0")
        assert steps == list(range(n))
        np.testing.assert_array_equal(values, expected.astype(np.float32))  # event files hold float32
    epoch = {
        "ssp/loss_epoch": result.curves.epoch_loss,
        "time/epoch_seconds": result.curves.epoch_seconds,
        "time/elapsed_seconds": np.cumsum(result.curves.epoch_seconds),
    }
    for tag, values in epoch.items():
        steps, logged = scalars(events, f"{tag}/theta=090.0")
        assert steps == list(range(len(result.curves.epoch_loss)))
        np.testing.assert_allclose(logged, values, rtol=1e-6)


def test_detailed_cells_with_saliency_have_overlays_upscaled_to_128_pixels(logdir, result):
    events = read_run(logdir / CURVES[1])
    # θ = 0: the two views are identical, so there are no maps to overlay.
    assert events.Tags()["images"] == ["saliency/example_0/theta=090.0", "saliency/example_1/theta=090.0"]
    overlays = saliency_overlays(result.example_images, result.example_saliency, result.example_masks)
    for i, overlay in enumerate(overlays):
        (image,) = events.Images(f"saliency/example_{i}/theta=090.0")
        assert (image.width, image.height, image.step) == (128, 128, 900)  # 16-pixel images, upscaled 8 times
        png = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"), dtype=float)
        np.testing.assert_allclose(png, overlay.transpose(1, 2, 0) * 255, atol=0.5)


def test_detailed_cells_are_described_with_their_key_and_whether_they_have_saliency(logdir, results):
    events = read_run(logdir / CURVES[1])
    texts = {tag: events.Tensors(tag) for tag in events.Tags()["tensors"] if tag.startswith("cell/")}
    assert sorted(texts) == ["cell/theta=000.0", "cell/theta=090.0"]
    zero, ninety = (texts[tag][0].tensor_proto.string_val[0].decode() for tag in sorted(texts))
    keys = {r.cell.theta: r.cell.key for r in results if r.cell.seed == 1}
    assert keys[0.0] in zero and "identical, so it has no saliency maps" in zero
    assert keys[90.0] in ninety and "identical" not in ninety


# HParams


def test_each_curve_is_one_session_with_the_grid_coordinates_but_theta(logdir):
    for seed, curve in enumerate(CURVES):
        start = MessageToDict(hparams_data(read_run(logdir / curve), metadata.SESSION_START_INFO_TAG).session_start_info)
        assert start["hparams"] == {"dataset": "shapes", "seed": float(seed), "method": "moco", "encoder": "cnn"}
        assert start["groupName"] == curve


def test_a_complete_curve_ends_its_session_with_the_mean_over_theta_of_each_metric(logdir, results):
    events = read_run(logdir / CURVES[0])
    assert hparams_data(events, metadata.SESSION_END_INFO_TAG).session_end_info.status == api_pb2.STATUS_SUCCESS
    curve = pd.DataFrame([final_metrics(r) for r in results if r.cell.seed == 0])
    assert curve["dice"].isna().sum() == 1  # θ = 0 has no dice; the mean is over the angles that have one
    for name in METRICS:
        steps, mean = scalars(events, f"theta_mean/{name}")
        assert len(steps) == 1 and mean[0] == pytest.approx(curve[name].mean(), rel=1e-6)


def test_an_incomplete_curve_has_no_session_end_and_no_means_yet(cells, detail, results, tmp_path):
    add_all(tmp_path, cells, detail, results[:2])
    events = read_run(tmp_path / CURVES[0])
    assert metadata.SESSION_START_INFO_TAG in events.PluginTagToContent(metadata.PLUGIN_NAME)
    assert metadata.SESSION_END_INFO_TAG not in events.PluginTagToContent(metadata.PLUGIN_NAME)
    assert not any(tag.startswith("theta_mean/") for tag in events.Tags()["scalars"])


def test_experiment_lists_each_dimension_but_theta_and_the_mean_metrics(logdir):
    events = read_run(logdir)
    experiment = hparams_data(events, metadata.EXPERIMENT_TAG).experiment
    domains = {info.name: MessageToDict(info).get("domainDiscrete") for info in experiment.hparam_infos}
    assert domains == {"dataset": ["shapes"], "seed": [0.0, 1.0], "method": ["moco"], "encoder": ["cnn"]}
    assert [info.name for info in experiment.hparam_infos if info.differs] == ["seed"]
    assert [m.name.tag for m in experiment.metric_infos] == [f"theta_mean/{name}" for name in METRICS]
    layout = events.Tensors("layout")[0].tensor_proto.string_val[0].decode()
    assert "step = θ × 10" in layout and "0°, 90°" in layout


# Resuming and replacing


def test_a_resumed_run_appends_to_its_curves_without_logging_a_cell_twice(cells, detail, results, tmp_path):
    seed0, seed1 = ([r for r in results if r.cell.seed == seed] for seed in (0, 1))
    add_all(tmp_path, cells, detail, seed0[:2] + seed1[:1])
    # A kill after logging but before storing runs those cells again: they come back to add.
    again = [dataclasses.replace(r, cell_metrics={"final_loss": -1.0}) for r in results]
    add_all(tmp_path, cells, detail, again)
    first, second = read_run(tmp_path / CURVES[0]), read_run(tmp_path / CURVES[1])
    for events in (first, second):
        for name in METRICS:
            assert scalars(events, f"metrics/{name}")[0] == STEPS
        assert len(scalars(events, "ssp/loss_step/theta=090.0")[0]) == len(results[0].curves.step_loss)
        assert len(hparams_data(events, metadata.SESSION_START_INFO_TAG).session_start_info.hparams) == 4
    np.testing.assert_allclose(scalars(first, "metrics/final_loss")[1], [*(r.cell_metrics["final_loss"] for r in seed0[:2]), -1])
    np.testing.assert_allclose(scalars(second, "metrics/final_loss")[1], [seed1[0].cell_metrics["final_loss"], -1, -1])
    # The mean covers the cells logged before the kill too.
    mean = np.mean([r.cell_metrics["final_loss"] for r in seed0[:2]] + [-1.0])
    assert scalars(first, "theta_mean/final_loss")[1] == pytest.approx([mean], rel=1e-6)


def test_replacing_removes_earlier_event_files_and_runs_of_another_layout(cells, detail, results, tmp_path):
    add_all(tmp_path, cells, detail, results)
    old = tmp_path / "shapes" / "theta=090.0" / "seed=0" / "moco" / "cnn"  # one run per cell, as before
    old.mkdir(parents=True)
    (old / "events.out.tfevents.1.host").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("kept")
    add_all(tmp_path, cells, detail, results[:1], replace=True)
    assert event_dirs(tmp_path) == {".", CURVES[0]} and not (tmp_path / "shapes" / "theta=090.0").exists()
    assert (tmp_path / "notes.txt").read_text() == "kept"
    assert scalars(read_run(tmp_path / CURVES[0]), "metrics/dice")[0] == [0]


def write_per_cell_run(logdir: Path, result: CellResult, shift: float) -> None:
    """The cell's run as earlier versions wrote it, one run per cell, with its metrics shifted by ``shift``."""
    cell = result.cell
    final = len(result.curves.step_loss)
    with SummaryWriter(str(logdir / "shapes" / f"theta={cell.theta:05.1f}" / f"seed={cell.seed}" / "moco" / "cnn")) as writer:
        for step, loss in enumerate(result.curves.step_loss):
            writer.add_scalar("ssp/loss_step", loss, step)
        for name, value in final_metrics(result).items():
            writer.add_scalar(f"metrics/{name}", value + shift, final)
        writer.add_scalar("time/cell_seconds", result.wall_time_s, final)
        writer.add_scalar("memory/peak_mb", result.peak_memory_mb, final)
        writer.add_image("saliency/example_0", np.ones((3, 128, 128)), final, dataformats="CHW")
        writer.add_text("cell", cell.describe(), final)


def test_per_cell_runs_of_an_earlier_version_move_into_their_curves(cells, detail, results, tmp_path):
    seed1 = [r for r in results if r.cell.seed == 1]
    for r in seed1:
        write_per_cell_run(tmp_path, r, shift=100)
    with pytest.warns(UserWarning, match="one run per cell; the 3 runs of this grid's cells were moved"):
        add_all(tmp_path, cells, detail, results)
    assert event_dirs(tmp_path) == {".", *CURVES} and not (tmp_path / "shapes" / "theta=090.0").exists()
    events = read_run(tmp_path / CURVES[1])
    steps, dice = scalars(events, "metrics/dice")
    assert steps == STEPS
    np.testing.assert_allclose(dice, [final_metrics(r)["dice"] + 100 for r in seed1], rtol=1e-6)  # the old runs' values
    assert scalars(events, "ssp/loss_step/theta=090.0")[0] == list(range(len(results[0].curves.step_loss)))
    assert [image.step for image in events.Images("saliency/example_0/theta=090.0")] == [900]
    assert "ssp/loss_step/theta=187.5" not in events.Tags()["scalars"]  # not a detailed angle
    assert hparams_data(events, metadata.SESSION_END_INFO_TAG).session_end_info.status == api_pb2.STATUS_SUCCESS


def test_a_record_cut_short_by_a_crash_is_skipped_and_the_cell_logged_again(cells, detail, results, tmp_path):
    seed0 = [r for r in results if r.cell.seed == 0]
    add_all(tmp_path, cells, detail, seed0[:1])
    (first,) = (tmp_path / CURVES[0]).glob("events.out.tfevents.*")
    with first.open("ab") as file:
        file.write((1000).to_bytes(8, "little") + b"\0\0")  # the start of a record, as a crash may leave
    add_all(tmp_path, cells, detail, seed0)
    assert scalars(read_run(tmp_path / CURVES[0]), "metrics/dice")[0] == STEPS


def test_least_recently_used_files_close_beyond_the_open_limit_and_runs_read_on(cells, detail, results, tmp_path):
    open_here = []
    with RunLogs(tmp_path, cells, detail, max_open=1) as logs:
        for r in sorted(results, key=lambda r: r.cell.theta):  # the curves take turns
            logs.add(r)
            fds = Path("/proc/self/fd")
            open_here.append(sum(str(tmp_path) in os.path.realpath(fd) for fd in fds.iterdir()) if fds.exists() else 1)
    assert max(open_here) == 1
    for curve in CURVES:
        assert len(list((tmp_path / curve).glob("events.out.tfevents.*"))) == 3
        assert scalars(read_run(tmp_path / curve), "metrics/dice")[0] == STEPS


# TensorBoard's own reader at the follow-up's density


def test_a_3600_angle_curve_loads_in_tensorboard_with_every_point_and_its_session(result, tmp_path):
    thetas = [round(0.1 * i, 9) for i in range(3600)]
    cells = [dataclasses.replace(result.cell, theta=theta, key=f"{i:016x}") for i, theta in enumerate(thetas)]
    add_all(tmp_path, cells, detail_thetas(thetas, 12), [at(result, cell) for cell in cells])

    tensorboard = program.TensorBoard()
    flags = ["--logdir", str(tmp_path), "--samples_per_plugin", "scalars=10000", "--load_fast", "false"]
    tensorboard.configure(["tensorboard", *flags, "--reload_interval", "0", "--reload_task", "blocking"])
    ingester = LocalDataIngester(tensorboard.flags)
    ingester.start()
    provider, context = ingester.data_provider, RequestContext()
    runs = provider.read_scalars(context, experiment_id="", plugin_name="scalars", downsample=10000, run_tag_filter=None)
    assert list(runs) == ["shapes/seed=1/moco/cnn"]
    for name in METRICS:
        points = runs["shapes/seed=1/moco/cnn"][f"metrics/{name}"]
        assert [p.step for p in points] == list(range(3600))
        expected = [final_metrics(at(result, cell))[name] for cell in cells]
        np.testing.assert_allclose([p.value for p in points], expected, rtol=1e-6)
    assert sum(tag.startswith("ssp/loss_step/") for tag in runs["shapes/seed=1/moco/cnn"]) == 12

    # The HParams dashboard's own query: one session group, its metrics the means over θ.
    hparams = backend_context.Context(base_plugin.TBContext(data_provider=provider, logdir=str(tmp_path)))
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0,
        slice_size=100,
        allowed_statuses=[api_pb2.STATUS_SUCCESS, api_pb2.STATUS_UNKNOWN],
        col_params=[api_pb2.ColParams(metric=api_pb2.MetricName(tag=f"theta_mean/{name}")) for name in METRICS],
    )
    (group,) = list_session_groups.Handler(context, hparams, "", request).run().session_groups
    assert group.name == "shapes/seed=1/moco/cnn" and group.sessions[0].status == api_pb2.STATUS_SUCCESS
    means = {m.name.tag: m.value for m in group.metric_values}
    dice = np.mean([final_metrics(at(result, cell))["dice"] for cell in cells])
    assert means["theta_mean/dice"] == pytest.approx(dice, rel=1e-6)


def test_tensorboard_samples_1000_points_per_tag_without_the_flag(result, tmp_path):
    thetas = [float(i) / 4 for i in range(1440)]
    cells = [dataclasses.replace(result.cell, theta=theta, key=f"{i:016x}") for i, theta in enumerate(thetas)]
    add_all(tmp_path, cells, set(), [dataclasses.replace(result, cell=cell) for cell in cells])
    tensorboard = program.TensorBoard()
    tensorboard.configure(["tensorboard", "--logdir", str(tmp_path), "--load_fast", "false", "--reload_interval", "0"])
    tensorboard.flags.reload_task = "blocking"
    ingester = LocalDataIngester(tensorboard.flags)
    ingester.start()
    runs = ingester.data_provider.read_scalars(
        RequestContext(), experiment_id="", plugin_name="scalars", downsample=10000, run_tag_filter=None
    )
    assert len(runs["shapes/seed=1/moco/cnn"]["metrics/dice"]) == 1000  # why the docs give --samples_per_plugin


# Through the runner


@pytest.mark.filterwarnings("ignore::benchsuite.engine.runner.MetricWarning")  # θ = 0 has no saliency to score
def test_a_run_logs_one_run_per_curve_and_a_resume_after_a_kill_logs_no_cell_twice(tmp_path, monkeypatch):
    path = tmp_path / "tiny.yaml"
    path.write_text(textwrap.dedent(TINY))
    resolved = load_suite(path, default_registry())
    add = tensorboard_module.RunLogs.add
    logged = []

    def killed_after_three(self, result):
        add(self, result)
        logged.append(result.cell.key)
        if len(logged) == 3:
            raise KeyboardInterrupt  # after logging the third cell, before storing it

    monkeypatch.setattr(tensorboard_module.RunLogs, "add", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        run_cells(resolved, default_registry(), tmp_path / "runs", progress=False)
    monkeypatch.setattr(tensorboard_module.RunLogs, "add", add)
    summary = run_cells(resolved, default_registry(), tmp_path / "runs", progress=False)
    assert (summary.cells_run, summary.cells_skipped) == (6, 2)  # the third cell was logged, not stored

    logdir = summary.run_dir / "tensorboard"
    curves = {f"{dataset}/seed={seed}/moco/cnn" for dataset in ("shapes", "iso") for seed in (0, 1)}
    assert event_dirs(logdir) == {".", *curves}
    for curve in curves:
        events = read_run(logdir / curve)
        assert scalars(events, "metrics/final_loss")[0] == [0, 900]
        assert hparams_data(events, metadata.SESSION_END_INFO_TAG).session_end_info.status == api_pb2.STATUS_SUCCESS
        assert len(scalars(events, "theta_mean/final_loss")[0]) == 1

    forced = run_cells(resolved, default_registry(), tmp_path / "runs", progress=False, force=True)
    assert forced.cells_run == 8
    for curve in curves:
        assert len(list((logdir / curve).glob("events.out.tfevents.*"))) == 1
        assert scalars(read_run(logdir / curve), "metrics/final_loss")[0] == [0, 900]
