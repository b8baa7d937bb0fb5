"""TensorBoard logs of a run: per cell, training curves, final metrics, saliency overlays and hparams.

Each cell gets its own run directory under ``RUN_DIR/tensorboard/``, named by :func:`run_name`
(``dataset/theta=030.0/seed=0/method/encoder``), so TensorBoard's run selector can filter the
grid by any axis. The run holds the cell's hparams session next to its ``metrics/<name>``
scalars, which is what the HParams dashboard needs to sort and filter cells by θ, dataset and
so on (``SummaryWriter.add_hparams`` would put them in a separate, timestamp-named sub-run).
:func:`write_experiment_config` describes the whole grid once, at the log directory's root.

View with ``tensorboard --logdir RUN_DIR/tensorboard``.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hp
from torch.utils.tensorboard import SummaryWriter

from benchsuite.grid import Cell
from benchsuite.pipeline import CellResult

OUTLINE_RGB = np.array([0.0, 1.0, 1.0])
"""Colour of the mask outline: cyan, which the black-red-yellow-white heat scale never uses."""

GREY_CEILING = 0.6
"""The brightest image pixel's grey level: dimmer than the heat scale, so saliency on bright
foreground stays visible instead of washing out to pink."""

MIN_OVERLAY_SIZE = 128
"""Overlays are upscaled (nearest neighbour) to at least this many pixels on their longer side,
so a one-pixel outline sits on the mask's boundary without hiding a whole image pixel."""


def _path_safe(label: str) -> str:
    # Percent-encoding is injective, so distinct suite labels never share a run directory; a
    # leading dot is encoded too so that no label can become '.', '..' or a hidden directory.
    quoted = quote(label, safe="")
    return "%2E" + quoted[1:] if quoted.startswith(".") else quoted


def _theta_text(theta: float) -> str:
    # Three integer digits (angles lie in [0, 360]) and only the decimals the angle needs, so
    # the names sort by angle as plain text: 007.5 < 030.0 < 030.25 < 090.0 < 180.0.
    decimals = f"{theta:.9f}".rstrip("0")
    integer, fraction = decimals.split(".")
    return f"{int(integer):03d}.{fraction or '0'}"


def run_name(cell: Cell) -> str:
    """The cell's TensorBoard run, relative to the log directory: ``dataset/theta=030.0/seed=0/method/encoder``.

    One directory level per grid axis keeps TensorBoard's run selector usable on a large grid
    (a regex such as ``theta=090`` or ``^shapes_k4/`` selects a slice). Labels are
    percent-encoded where they are not path-safe, so every cell of a grid gets its own name.
    """
    return "/".join(
        (
            _path_safe(cell.dataset),
            f"theta={_theta_text(cell.theta)}",
            f"seed={cell.seed}",
            _path_safe(cell.method),
            _path_safe(cell.encoder),
            *(f"{dim}={_path_safe(str(value))}" for dim, value in cell.swept.items()),
        )
    )


def final_metrics(result: CellResult) -> dict[str, float]:
    """Cell metrics and the per-image metrics' means over the images where they are defined."""
    with warnings.catch_warnings():
        # An all-NaN metric gives NaN here; the runner has already warned about its NaN images.
        warnings.simplefilter("ignore", RuntimeWarning)
        means = {name: float(np.nanmean(values)) for name, values in result.image_metrics.items()}
    return means | {name: float(value) for name, value in result.cell_metrics.items()}


def _inner_outline(masks: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask; the image border does not count as outside."""
    padded = np.pad(masks, ((0, 0), (1, 1), (1, 1)), mode="edge")
    interior = padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    return masks & ~interior


def _rescale_per_map(maps: np.ndarray) -> np.ndarray:
    """Each [H, W] map of a [N, H, W] stack linearly to [0, 1]; a constant map becomes 0."""
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.divide(maps - low, span, out=np.zeros_like(maps), where=span > 0)


def saliency_overlays(images: np.ndarray, saliency: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """RGB overlays [N, 3, H', W'] in [0, 1] of saliency maps on their images, with the mask outlined.

    ``images`` [N, C, H, W] are shown in grey (channel mean, rescaled per image); ``saliency``
    [N, H, W] is rescaled per map to [0, 1] and blended over it in a black-red-yellow-white heat
    scale with opacity equal to the saliency, so unimportant pixels keep the image visible;
    the inner boundary of ``masks`` [N, H, W] is drawn in :data:`OUTLINE_RGB`. Everything is
    upscaled by a whole factor to at least :data:`MIN_OVERLAY_SIZE` pixels.
    """
    scale = -(-MIN_OVERLAY_SIZE // max(saliency.shape[1:]))  # ceiling division

    def upscale(stack: np.ndarray) -> np.ndarray:
        return stack.repeat(scale, axis=-2).repeat(scale, axis=-1)

    grey = GREY_CEILING * upscale(_rescale_per_map(images.astype(np.float64).mean(axis=1)))[:, None]
    heat = upscale(_rescale_per_map(saliency.astype(np.float64)))[:, None]
    # The 'hot' colour scale: red, then green, then blue ramp up over successive thirds.
    hot = np.clip(3 * heat - np.arange(3).reshape(1, 3, 1, 1), 0, 1)
    rgb = (1 - heat) * grey + heat * hot
    outline = _inner_outline(upscale(masks.astype(bool)))[:, None]
    rgb = np.where(outline, OUTLINE_RGB.reshape(1, 3, 1, 1), rgb)
    return rgb.astype(np.float32)


def _hparams_summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    """A summary carrying hparams plugin data, as the plugin's own summary functions build it."""
    value = Summary.Value(tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR)
    return Summary(value=[value])


def _remove_event_files(run_dir: Path) -> None:
    # A rerun (--force) replaces the cell's logs; TensorBoard would show both event files'
    # points otherwise. Only event files are removed, never anything else a user put there.
    for old in run_dir.glob("events.out.tfevents.*"):
        old.unlink()


def write_cell_logs(result: CellResult, logdir: Path, run_name: str) -> Path:
    """Write one finished cell's TensorBoard run under ``logdir/run_name``, replacing an earlier one.

    Scalars: ``ssp/loss_step`` and ``ssp/lr`` per optimisation step (0-based);
    ``ssp/loss_epoch``, ``time/epoch_seconds`` and the cumulative ``time/elapsed_seconds`` per
    epoch (0-based, as in the cube); ``metrics/<name>`` for every metric of
    :func:`final_metrics`, and ``time/cell_seconds`` and ``memory/peak_mb``, at the final step.
    Images: ``saliency/example_<i>`` per kept evaluation example (:func:`saliency_overlays`).
    Text: ``cell``, the cell's key, provenance and resolved config. HParams: a session (named
    by the cell key) with the grid coordinates (theta, dataset, seed, method, encoder) and
    ``cell_key``. Returns the run directory.
    """
    run_dir = Path(logdir) / run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    _remove_event_files(run_dir)

    cell, curves = result.cell, result.curves
    final_step = len(curves.step_loss)
    metrics = {f"metrics/{name}": value for name, value in final_metrics(result).items()}
    with SummaryWriter(log_dir=str(run_dir)) as writer:
        for step, (loss, lr) in enumerate(zip(curves.step_loss, curves.step_lr, strict=True)):
            writer.add_scalar("ssp/loss_step", loss, step)
            writer.add_scalar("ssp/lr", lr, step)
        elapsed = np.cumsum(curves.epoch_seconds)
        for epoch, (loss, seconds, total) in enumerate(zip(curves.epoch_loss, curves.epoch_seconds, elapsed, strict=True)):
            writer.add_scalar("ssp/loss_epoch", loss, epoch)
            writer.add_scalar("time/epoch_seconds", seconds, epoch)
            writer.add_scalar("time/elapsed_seconds", total, epoch)
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, final_step)
        writer.add_scalar("time/cell_seconds", result.wall_time_s, final_step)
        writer.add_scalar("memory/peak_mb", result.peak_memory_mb, final_step)

        overlays = saliency_overlays(result.example_images, result.example_saliency, result.example_masks)
        for i, overlay in enumerate(overlays):
            writer.add_image(f"saliency/example_{i}", overlay, final_step, dataformats="CHW")

        writer.add_text("cell", _describe(result), final_step)

        # The session summaries go through this run's own file writer, so the HParams dashboard
        # finds the metrics/<name> scalars in the session's run. The cell finished just before
        # its logs are written, so now and now - wall time stand in for its end and start.
        ended = time.time()
        hparams = {**cell.coords, "cell_key": cell.key}
        start = hp.hparams_pb(hparams, trial_id=cell.key, start_time_secs=ended - result.wall_time_s)
        end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=ended)
        writer.file_writer.add_summary(start, final_step)
        writer.file_writer.add_summary(
            _hparams_summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end)),
            final_step,
        )
    return run_dir


def write_experiment_config(logdir: Path, cells: Sequence[Cell]) -> Path:
    """Describe the grid of ``cells`` to the HParams dashboard, in the run at ``logdir`` itself; returns ``logdir``.

    Each grid axis becomes an hparam whose domain is the axis' values, so the dashboard offers
    them as check boxes; the metrics are the ``metrics/<name>`` tags :func:`write_cell_logs`
    writes. Call it once per run (it replaces an earlier config). Without it, TensorBoard infers
    the hparams from the cells' sessions and lists every scalar tag as a metric.
    """
    hparam_infos = []
    for axis in cells[0].coords:
        values = list(dict.fromkeys(cell.coords[axis] for cell in cells))
        info = api_pb2.HParamInfo(name=axis, differs=len(values) > 1)
        hp.Discrete(values).update_hparam_info(info)
        hparam_infos.append(info)
    # The dashboard shows the first five hparams, those that differ first; the key identifies a
    # cell but is no factor, so it is marked as not differing to leave those places to the axes.
    hparam_infos.append(api_pb2.HParamInfo(name="cell_key", type=api_pb2.DATA_TYPE_STRING, differs=False))
    metric_names = dict.fromkeys(name for cell in cells for name in cell.config["metrics"])
    experiment = api_pb2.Experiment(
        hparam_infos=hparam_infos,
        metric_infos=[hp.Metric(f"metrics/{name}").as_proto() for name in metric_names],
        time_created_secs=time.time(),
    )
    logdir = Path(logdir)
    logdir.mkdir(parents=True, exist_ok=True)
    _remove_event_files(logdir)
    with SummaryWriter(log_dir=str(logdir)) as writer:
        writer.file_writer.add_summary(
            _hparams_summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment))
        )
    return logdir


def _describe(result: CellResult) -> str:
    cell = result.cell
    return (
        f"{cell.describe()}  \nkey `{cell.key}`, device {result.device}, {result.threads} torch threads, "
        f"{result.wall_time_s:.1f} s, peak memory {result.peak_memory_mb:.0f} MiB\n\n"
        f"```json\n{json.dumps(cell.config, indent=2, sort_keys=True)}\n```"
    )
