"""TensorBoard logs of a run: one run per θ-curve, its final metrics over θ, a sample of angles in full, hparams.

A curve is the cells that differ only in θ: one (dataset, seed, method, encoder[, swept values]).
Each curve is one TensorBoard run under ``RUN_DIR/tensorboard/``, named by :func:`run_name`
(``dataset/seed=0/method/encoder``), so the run count does not grow with the angles (TensorBoard
slows down beyond a few hundred runs) and the HParams dashboard has one session per curve.

- **Every cell**: ``metrics/<name>`` (:func:`final_metrics`), ``time/cell_seconds`` and
  ``memory/peak_mb``, one point per cell at step = θ in tenths of a degree (90° is step 900),
  so each chart draws the curve against the angle. A grid with finer angles (30.25°) counts in
  hundredths, and so on (:attr:`RunLogs.steps_per_degree`); the root run's ``layout`` text says which.
- **Detailed cells** (θ in ``detail_thetas``, the suite's ``record.detail_angles``): also the
  training curves, the saliency overlays and a description, each tag ending in ``/theta=<θ>``
  (``ssp/loss_step/theta=030.0``). Tags rather than sub-runs keep one run per curve.
- **HParams**: the root run holds the experiment (the axes but θ, and the metrics); each curve's
  run holds its session, named by the run. The session's metrics are ``theta_mean/<name>``, the
  mean over θ of ``metrics/<name>`` where it is defined, written with the session's end when
  the curve's last cell is logged; until then the session shows no metrics and no status.

TensorBoard keeps 1,000 points per scalar tag by default (a random sample), so view a dense
curve with ``tensorboard --logdir RUN_DIR/tensorboard --samples_per_plugin scalars=10000``.
"""

from __future__ import annotations

import json
import time
import warnings
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hp
from tensorboard.plugins.text.summary_v2 import text_pb

from benchsuite.results.cell_result import CellResult
from benchsuite.results.cube import SEED, THETA
from benchsuite.results.event_files import (
    EVENT_FILE_PREFIX,
    EventFile,
    hparams_summary,
    image_value,
    read_events,
    remove_event_files,
    scalar_value,
)
from benchsuite.results.overlays import saliency_overlays
from benchsuite.results.per_cell_runs import read_per_cell_run

if TYPE_CHECKING:  # annotations only: the grid's module imports torch
    from benchsuite.engine.grid import Cell

MAX_OPEN_RUNS = 64
"""Event files a :class:`RunLogs` keeps open at once. Results arrive a family of cells at a
time, so a few runs take the writes; the least recently used file is closed beyond this, and
the run's next cell opens a new file in the same run directory, which TensorBoard reads on."""


def _path_safe(label: str) -> str:
    # Percent-encoding is injective, so distinct suite labels never share a run directory; a
    # leading dot is encoded too so that no label can become '.', '..' or a hidden directory.
    quoted = quote(label, safe="")
    return "%2E" + quoted[1:] if quoted.startswith(".") else quoted


def _theta_text(theta: float) -> str:
    # Three integer digits (angles lie in [0, 360]) and only the decimals the angle needs, so
    # the tags sort by angle as plain text: 007.5 < 030.0 < 030.25 < 090.0 < 180.0.
    decimals = f"{theta:.9f}".rstrip("0")
    integer, fraction = decimals.split(".")
    return f"{int(integer):03d}.{fraction or '0'}"


def run_name(cell: Cell) -> str:
    """The TensorBoard run of the cell's θ-curve, relative to the log directory: ``dataset/seed=0/method/encoder``.

    One directory level per grid axis but θ, then one per swept parameter (``epochs=2``), keeps
    TensorBoard's run selector usable on a large grid (a regex such as ``seed=1`` or
    ``^shapes_k4/`` selects a slice). Labels are percent-encoded where they are not path-safe,
    so every curve of a grid gets its own name.
    """
    return "/".join(
        (
            _path_safe(cell.dataset),
            f"{SEED}={cell.seed}",
            _path_safe(cell.method),
            _path_safe(cell.encoder),
            *(f"{dim}={_path_safe(str(value))}" for dim, value in cell.swept.items()),
        )
    )


def final_metrics(result: CellResult) -> dict[str, float]:
    """Cell metrics and the per-image metrics' means over the images where they are defined (NaN where none is)."""
    means = {}
    for name, values in result.image_metrics.items():
        # Not np.nanmean: it warns on an all-NaN metric (the runner has warned about NaN images
        # already), and it costs several times as much, once per metric of every cell.
        defined = values[~np.isnan(values)]
        means[name] = float(defined.mean()) if defined.size else float("nan")
    return means | {name: float(value) for name, value in result.cell_metrics.items()}


def _per_cell_run_name(cell: Cell) -> str:
    """The cell's run in the layout of earlier versions, one run per cell: ``dataset/theta=030.0/seed=0/method/encoder``."""
    dataset, rest = run_name(cell).split("/", 1)
    return f"{dataset}/{THETA}={_theta_text(cell.theta)}/{rest}"


@dataclass
class _Curve:
    """A θ-curve's run: what it shows the HParams dashboard, and which of its angles are logged."""

    name: str
    hparams: dict[str, Any]
    angles: int  # the curve's cells in the grid
    logged: bytearray = field(default_factory=bytearray)  # per θ index of the grid: 1 once logged; empty until read
    count: int = 0  # angles logged
    started: bool = False  # whether the run holds its session's start
    sums: dict[str, list[float]] = field(default_factory=dict)  # metric -> [sum, count] over defined values

    def add(self, index: int, metrics: dict[str, float]) -> None:
        self.logged[index] = 1
        self.count += 1
        for name, value in metrics.items():
            total = self.sums.setdefault(name, [0.0, 0])
            if not np.isnan(value):
                total[0] += value
                total[1] += 1

    @property
    def complete(self) -> bool:
        return self.count == self.angles

    def means(self) -> dict[str, float]:
        return {name: total / count if count else float("nan") for name, (total, count) in self.sums.items()}


def _curve_id(cell: Cell) -> tuple[Any, ...]:
    return (cell.dataset, cell.seed, cell.method, cell.encoder, *map(str, cell.swept.values()))


def _steps_per_degree(thetas: Sequence[float]) -> int:
    """The fewest steps per degree, 10 at least, at which every angle falls on a whole step."""
    for digits in range(1, 7):
        scale = 10**digits
        if all(abs(theta * scale - round(theta * scale)) < 1e-6 for theta in thetas):
            return scale
    return 10**6  # angles finer than a millionth of a degree are distinct only in rounding


class RunLogs:
    """The TensorBoard logs of a run's ``cells`` under ``logdir``: one run per θ-curve (see the module's text).

    Use as a context manager; :meth:`add` logs a finished cell's result, and :meth:`close`
    (on leaving the context) closes the event files. Each call writes the cell's points to the
    file at once, so a killed run keeps every cell it added whole.

    Logs of an earlier run in ``logdir`` are extended: a run that gets more cells of its curve
    appends to it, and a cell whose θ the curve's run already holds is not logged again (after
    a kill, cells logged but not yet stored run again; TensorBoard keeps the first values,
    which match the stored ones wherever training is reproducible). Per-cell runs of earlier
    versions are moved into their curves' runs, with a warning. With ``replace`` (every cell
    runs: a new run or ``--force``) the earlier event files are removed first.
    """

    def __init__(
        self,
        logdir: Path,
        cells: Sequence[Cell],
        detail_thetas: Collection[float],
        *,
        replace: bool = False,
        max_open: int = MAX_OPEN_RUNS,
    ):
        self.logdir = Path(logdir)
        self._detail = frozenset(detail_thetas)
        self._max_open = max_open
        self._open: OrderedDict[str, EventFile] = OrderedDict()

        # One pass over the cells, which the follow-up grid has 921,600 of: its curves and angles.
        first: dict[tuple[Any, ...], Cell] = {}
        sizes: dict[tuple[Any, ...], int] = {}
        angles: set[float] = set()
        for cell in cells:
            curve = _curve_id(cell)
            first.setdefault(curve, cell)
            sizes[curve] = sizes.get(curve, 0) + 1
            angles.add(cell.theta)
        self._thetas = sorted(angles)
        self._index = {theta: i for i, theta in enumerate(self._thetas)}
        self.steps_per_degree = _steps_per_degree(self._thetas)
        self._steps = [round(theta * self.steps_per_degree) for theta in self._thetas]
        self._index_of_step = {step: i for i, step in enumerate(self._steps)}
        self._curves = {
            curve: _Curve(run_name(cell), {k: v for k, v in cell.coords.items() if k != THETA}, sizes[curve])
            for curve, cell in first.items()
        }

        remove_event_files(self.logdir, recursive=replace)
        self._write_experiment(list(first.values()))
        adopted = self._adopt_per_cell_runs(cells)
        if adopted:
            warnings.warn(
                f"{self.logdir} held TensorBoard logs of an earlier version, one run per cell; the {adopted} runs of "
                "this grid's cells were moved into their θ-curves' runs (their text descriptions were left out).",
                stacklevel=2,
            )

    def __enter__(self) -> RunLogs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def step(self, theta: float) -> int:
        """The step at which the cells at ``theta`` are logged: θ in 1/:attr:`steps_per_degree` degrees."""
        return self._steps[self._index[theta]]

    def add(self, result: CellResult) -> None:
        """Log one finished cell to its curve's run, unless the run holds its θ already."""
        cell = result.cell
        curve, index = self._curves[_curve_id(cell)], self._index[cell.theta]
        self._load(curve)
        if curve.logged[index]:
            return
        now = time.time()
        details = self._details(result, self._steps[index], now) if cell.theta in self._detail else []
        self._log(curve, index, final_metrics(result), result.wall_time_s, result.peak_memory_mb, details, now)

    def close(self) -> None:
        """Close every open event file; what was added is in the files already."""
        while self._open:
            self._open.popitem()[1].close()

    def _log(
        self,
        curve: _Curve,
        index: int,
        metrics: dict[str, float],
        seconds: float,
        peak_mb: float,
        details: list[Event],
        now: float,
    ) -> None:
        """Write one cell's events to its curve's run, in one write.

        Before ``details``, the session's start if the run has none yet; after them, the per-cell
        scalars at the cell's θ step, then the means and the session's end if the curve is complete.
        """
        events = []
        if not curve.started:
            start = hp.hparams_pb(curve.hparams, trial_id=curve.name, start_time_secs=now - seconds)
            events.append(Event(wall_time=now, step=0, summary=start))
            curve.started = True
        events += details
        values = [scalar_value(f"metrics/{name}", value) for name, value in metrics.items()]
        values += [scalar_value("time/cell_seconds", seconds), scalar_value("memory/peak_mb", peak_mb)]
        events.append(Event(wall_time=now, step=self._steps[index], summary=Summary(value=values)))
        curve.add(index, metrics)
        if curve.complete:
            means = [scalar_value(f"theta_mean/{name}", mean) for name, mean in curve.means().items()]
            end = plugin_data_pb2.HParamsPluginData(
                session_end_info=plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=now)
            )
            events.append(Event(wall_time=now, step=0, summary=Summary(value=means)))
            events.append(Event(wall_time=now, step=0, summary=hparams_summary(metadata.SESSION_END_INFO_TAG, end)))
        self._file(curve.name).write(events)

    def _details(self, result: CellResult, step: int, now: float) -> list[Event]:
        """The training curves, saliency overlays and description of a detailed cell, tagged with its θ."""
        angle, curves = f"{THETA}={_theta_text(result.cell.theta)}", result.curves
        events = []
        for i, (loss, lr) in enumerate(zip(curves.step_loss, curves.step_lr, strict=True)):
            values = [scalar_value(f"ssp/loss_step/{angle}", loss), scalar_value(f"ssp/lr/{angle}", lr)]
            events.append(Event(wall_time=now, step=i, summary=Summary(value=values)))
        elapsed = np.cumsum(curves.epoch_seconds)
        for epoch, (loss, seconds, total) in enumerate(zip(curves.epoch_loss, curves.epoch_seconds, elapsed, strict=True)):
            values = [
                scalar_value(f"ssp/loss_epoch/{angle}", loss),
                scalar_value(f"time/epoch_seconds/{angle}", seconds),
                scalar_value(f"time/elapsed_seconds/{angle}", total),
            ]
            events.append(Event(wall_time=now, step=epoch, summary=Summary(value=values)))
        # A cell whose two views are identical (θ = 0 under rotation) has no saliency: its maps
        # are NaN, so it gets no overlays, and its description says why.
        if len(result.example_saliency) and not result.identical_views:
            overlays = saliency_overlays(result.example_images, result.example_saliency, result.example_masks)
            images = [image_value(overlay, f"saliency/example_{i}/{angle}") for i, overlay in enumerate(overlays)]
            events.append(Event(wall_time=now, step=step, summary=Summary(value=images)))
        events.append(Event(wall_time=now, step=step, summary=text_pb(f"cell/{angle}", _describe(result))))
        return events

    def _load(self, curve: _Curve) -> None:
        """Read which angles (and metric values) the run's earlier event files hold, the first time the run is met."""
        if curve.logged:
            return
        curve.logged = bytearray(len(self._thetas))
        for path in sorted((self.logdir / curve.name).glob(f"{EVENT_FILE_PREFIX}*")):
            for event in read_events(path):
                tags = {value.tag: value for value in event.summary.value}
                curve.started |= metadata.SESSION_START_INFO_TAG in tags
                index = self._index_of_step.get(event.step)
                if "time/cell_seconds" in tags and index is not None and not curve.logged[index]:
                    metrics = {tag[len("metrics/") :]: v.simple_value for tag, v in tags.items() if tag.startswith("metrics/")}
                    curve.add(index, metrics)

    def _adopt_per_cell_runs(self, cells: Sequence[Cell]) -> int:
        """Log the per-cell runs of earlier versions into their curves' runs and remove them; returns how many.

        A run directory resumed by this version would otherwise show its stored cells in one
        run each and the new ones in curves that never complete. Each old run gives its cell's
        metrics, time and peak memory; a detailed cell also its training curves and overlays.
        """
        old_runs = {path.parent for path in self.logdir.glob(f"*/{THETA}=*/**/{EVENT_FILE_PREFIX}*")}
        if not old_runs:
            return 0
        cell_of = {self.logdir / _per_cell_run_name(cell): cell for cell in cells}
        adopted = 0
        for run_dir in sorted(old_runs & cell_of.keys()):  # runs of cells outside this grid stay as they are
            cell = cell_of[run_dir]
            curve, index = self._curves[_curve_id(cell)], self._index[cell.theta]
            self._load(curve)
            if not curve.logged[index]:
                angle, detailed = f"{THETA}={_theta_text(cell.theta)}", cell.theta in self._detail
                self._log(curve, index, *read_per_cell_run(run_dir, angle, self._steps[index], detailed), time.time())
            remove_event_files(run_dir, recursive=False)
            adopted += 1
        for path in sorted(self.logdir.glob(f"*/{THETA}=*/**/"), reverse=True):  # the emptied directories
            if not any(path.iterdir()):
                path.rmdir()
        return adopted

    def _file(self, name: str) -> EventFile:
        """The run's open event file, opening a new one (and closing the least recently used) if need be."""
        if name in self._open:
            self._open.move_to_end(name)
        else:
            if len(self._open) >= self._max_open:
                self._open.popitem(last=False)[1].close()
            self._open[name] = EventFile(self.logdir / name)
        return self._open[name]

    def _write_experiment(self, curves: Sequence[Cell]) -> None:
        """Describe the grid to the HParams dashboard, and the logs' layout, in the run at ``logdir`` itself.

        Each grid dimension but θ becomes an hparam whose domain is its values, so the dashboard
        offers them as check boxes; the metrics are the ``theta_mean/<name>`` tags. Without it,
        TensorBoard infers the hparams from the sessions and lists every scalar tag as a metric.
        """
        hparam_infos = []
        for dim in (dim for dim in curves[0].coords if dim != THETA):
            values = list(dict.fromkeys(cell.coords[dim] for cell in curves))
            info = api_pb2.HParamInfo(name=dim, differs=len(values) > 1)
            hp.Discrete(values).update_hparam_info(info)
            hparam_infos.append(info)
        metric_names = dict.fromkeys(name for cell in curves for name in cell.config["metrics"])
        metric_infos = [hp.Metric(f"theta_mean/{name}", display_name=f"{name} (mean over θ)").as_proto() for name in metric_names]
        experiment = api_pb2.Experiment(hparam_infos=hparam_infos, metric_infos=metric_infos, time_created_secs=time.time())
        detail = ", ".join(f"{theta:g}°" for theta in sorted(self._detail))
        layout = (
            f"One run per θ-curve ({len(curves)} runs). `metrics/<name>`, `time/cell_seconds` and `memory/peak_mb` "
            f"have one point per angle, at step = θ × {self.steps_per_degree} (θ in degrees). Cells at {detail} also "
            "have their training curves, saliency overlays and description, under tags ending in `/theta=<θ>`. "
            "HParams: one session per run; `theta_mean/<name>` is the mean over θ of `metrics/<name>`, written when "
            "the curve's last cell is logged."
        )
        config, now = EventFile(self.logdir), time.time()
        experiment_data = plugin_data_pb2.HParamsPluginData(experiment=experiment)
        config.write(
            [
                Event(wall_time=now, summary=hparams_summary(metadata.EXPERIMENT_TAG, experiment_data)),
                Event(wall_time=now, summary=text_pb("layout", layout)),
            ]
        )
        config.close()


def _describe(result: CellResult) -> str:
    cell = result.cell
    views = "  \nits two views are identical, so it has no saliency maps" if result.identical_views else ""
    return (
        f"{cell.describe()}  \nkey `{cell.key}`, device {result.device}, {result.threads} torch threads, "
        f"{result.wall_time_s:.1f} s, peak memory {result.peak_memory_mb:.0f} MiB{views}\n\n"
        f"```json\n{json.dumps(cell.config, indent=2, sort_keys=True)}\n```"
    )
