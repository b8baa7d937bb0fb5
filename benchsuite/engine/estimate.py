"""How long a suite will take: count its cells and groups, time a few steps of one group, project.

``benchsuite estimate SUITE`` sizes a run before it starts, on this machine or on the node that
will run it: the stack size the executor would use, the peak memory of one group, and the wall
time of the whole suite projected from a few timed optimisation steps and the rest of a cell's
time (its set-up, saliency and metrics), one group run as a run runs it
(:func:`benchsuite.engine.pipeline.run_group`). Nothing is written to a run directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from benchsuite.api import TrainingParams
from benchsuite.engine.building import load_data
from benchsuite.engine.grid import Cell, expand, families
from benchsuite.engine.kinds import BY_NAME
from benchsuite.engine.pipeline import run_group
from benchsuite.engine.registry import PluginRegistry
from benchsuite.engine.suite import ResolvedSuite
from benchsuite.engine.training import Schedule
from benchsuite.results.durations import readable_duration


@dataclass(frozen=True)
class Estimate:
    """The projection for one suite on one device."""

    cells: int
    families: int
    groups: int
    stack: int
    device: str
    timed_family: str
    threads: int  # torch CPU threads the timing ran with
    steps_timed: int  # at least the ``steps`` asked for: whole epochs once they exceed one epoch
    step_seconds: float  # one optimisation step of a group of ``stack`` cells
    steps_per_cell: int
    evaluate_seconds: float  # the rest of a cell's time: building it, saliency and metrics (the group scored together)
    peak_memory_mb: float  # of one group: training, saliency and metrics
    total_seconds: float  # every group one after another
    workers: int  # groups the executor runs at a time

    @property
    def wall_seconds(self) -> float:
        """The suite's time with ``workers`` groups at a time: as many rounds as it takes them to share the groups."""
        return self.total_seconds * math.ceil(self.groups / self.workers) / self.groups

    def describe(self) -> str:
        per_cell = self.total_seconds / self.cells
        return "\n".join(
            [
                f"{self.cells} cells in {self.families} families of cells that differ only in theta and seed; "
                f"{self.groups} groups of up to {self.stack} cells trained as one stacked model each, on {self.device}",
                f"timed on {self.timed_family} with {self.threads} torch CPU thread{'s' * (self.threads != 1)}: "
                f"{self.steps_timed} step{'s' * (self.steps_timed != 1)}, "
                f"{self.step_seconds * 1000:.1f} ms per step of a group, "
                f"{self.steps_per_cell} steps per cell, {self.evaluate_seconds:.2f} s of set-up, saliency and metrics per cell",
                f"peak memory of one group: {self.peak_memory_mb:.0f} MiB"
                + (" (CUDA allocation)" if self.device.startswith("cuda") else " (the process's peak RSS)"),
                f"projected: {self.wall_seconds / 60:.1f} min ({self.wall_seconds / 3600:.2f} h) for the suite with "
                f"{self.workers} group{'s' * (self.workers != 1)} at a time ({self.total_seconds / 60:.1f} min one "
                f"at a time), {per_cell:.3f} s per cell amortised (start-up, analysis and report not included; "
                "families unlike the timed one may differ, and workers that share a CPU run a little slower)",
                f"on a cluster: {self.groups} tasks (one per group), about {self.total_seconds / 3600:.2f} "
                f"{'GPU' if self.device.startswith('cuda') else 'CPU-core'}-hours in all; each task about "
                f"{readable_duration(self.total_seconds / self.groups)} on this device",
            ]
        )


def _short(cell: Cell, epochs: int) -> Cell:
    """``cell`` with its method trained for ``epochs`` epochs: the timing probe changes nothing else."""
    method = cell.component("ssp_methods")
    key = BY_NAME["ssp_methods"].cell_key
    config = {**cell.config, key: {**method.config, "params": {**method.params, "epochs": epochs}}}
    return dataclasses.replace(cell, config=config)


def sizing_executor(resolved: ResolvedSuite, registry: PluginRegistry, device: str | None) -> tuple[Any, torch.device]:
    """The suite's executor, which sizes the stack and the threads, and the device to time on: ``device`` or the executor's.

    ``device`` takes the place of the executor's own ``device`` setting, so that it is checked as
    ``benchsuite run`` checks the suite's (a device name, and a GPU that torch sees: the same
    messages and exit status) and the stack is the one for that device. An executor without a
    device setting (ray, slurm) has ``device`` checked by the default executor, which has one.
    """
    config = resolved.single("executors")

    def make(plugin: str, params: dict[str, Any]) -> Any:
        return registry.get("executors", plugin).factory(registry.parse_params("executors", plugin, params))

    params = config.params.model_dump(mode="json")
    if device is None:
        executor = make(config.plugin, params)
        return executor, getattr(executor, "device", torch.device("cpu"))
    if "device" in registry.get("executors", config.plugin).params.model_fields:
        executor = make(config.plugin, {**params, "device": device})
        return executor, executor.device
    default = BY_NAME["executors"].default
    assert default is not None  # the kinds table names the default executor
    return make(config.plugin, params), make(default, {"device": device}).device


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run with ``threads`` torch CPU threads (None: as they are), as an executor's worker does; yields the count."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def estimate(
    resolved: ResolvedSuite,
    registry: PluginRegistry,
    *,
    device: torch.device,
    stack: int,
    threads: int | None = None,
    workers: int = 1,
    steps: int = 5,
) -> Estimate:
    """Time ``steps`` optimisation steps of one group of the suite's first family on ``device`` and project the suite.

    Steps beyond one epoch are rounded up to whole epochs (``Estimate.steps_timed``). ``threads``
    is the executor's torch threads per worker (None: torch's default), set while timing because
    a cell's speed on a CPU depends on it, and restored afterwards; ``workers`` is how many groups
    it runs at a time.
    """
    cells = expand(resolved)
    grouped = families(cells)
    groups = sum(math.ceil(len(family) / stack) for family in grouped)
    first = grouped[0][0]
    # The real training's schedule, before the probe shortens it.
    params = registry.parse_params("ssp_methods", first.component("ssp_methods").plugin, first.component("ssp_methods").params)
    assert isinstance(params, TrainingParams)
    schedule = Schedule.of(params, len(load_data(first, registry, device).train))
    # Training takes one batch per step and never reuses one within an epoch, so more steps than an
    # epoch holds run as whole epochs, as a cell runs them; the time is divided by the steps that ran.
    epochs = math.ceil(steps / schedule.steps_per_epoch)
    images = schedule.batch * min(steps, schedule.steps_per_epoch)

    with torch_threads(threads) as used:
        # Warm-up of one step: kernels, allocator, vmap and autocast caches, and the saliency and
        # metrics once. It trains for one epoch where the timed group may train for several, so it
        # probes a different after_step key, but train_stacked probes before its epochs start,
        # outside the clock.
        run_group([_short(cell, 1) for cell in grouped[0][:stack]], device, registry=registry, train_images=schedule.batch)
        group = [_short(cell, epochs) for cell in grouped[0][:stack]]
        results = run_group(group, device, registry=registry, train_images=images)
    curves = results[0].curves
    steps_timed = len(curves.step_loss)
    # The epoch clock stops after a copy of the losses to the CPU, which waits for a GPU; the
    # cells' wall times add up to the group's.
    training_seconds = float(curves.epoch_seconds.sum())
    step_seconds = training_seconds / steps_timed
    evaluate_seconds = (sum(r.wall_time_s for r in results) - training_seconds) / len(group)
    total = groups * schedule.total * step_seconds + len(cells) * evaluate_seconds
    return Estimate(
        cells=len(cells),
        families=len(grouped),
        groups=groups,
        stack=stack,
        device=f"cuda: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "cpu",
        timed_family=f"dataset={first.dataset} method={first.method} encoder={first.encoder} ({len(group)} cells)",
        threads=used,
        steps_timed=steps_timed,
        step_seconds=step_seconds,
        steps_per_cell=schedule.total,
        evaluate_seconds=evaluate_seconds,
        peak_memory_mb=max(r.peak_memory_mb for r in results),
        total_seconds=total,
        workers=max(1, min(workers, groups)),
    )
