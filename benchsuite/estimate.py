"""How long a suite will take: count its cells and groups, time a few steps of one group, project.

``benchsuite estimate SUITE`` sizes a run before it starts, on this machine or on the node that
will run it: the stack size the executor would use, the peak memory of one group, and the wall
time of the whole suite projected from a few timed optimisation steps and one cell's saliency
and metrics. Nothing is written to a run directory.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import torch

from benchsuite.grid import Cell, expand, families
from benchsuite.pipeline import build, build_method, evaluate, load_data, peak_memory_mb, saliency_maps
from benchsuite.registry import PluginRegistry
from benchsuite.stacking import train_stacked
from benchsuite.suite import ResolvedSuite
from benchsuite.views import draw_generator


@dataclass(frozen=True)
class Estimate:
    """The projection for one suite on one device."""

    cells: int
    families: int
    groups: int
    stack: int
    device: str
    timed_family: str
    step_seconds: float  # one optimisation step of a group of ``stack`` cells
    steps_per_cell: int
    evaluate_seconds: float  # saliency and metrics per cell, the group scored together
    peak_memory_mb: float  # of one group: training, saliency and metrics
    total_seconds: float

    def describe(self) -> str:
        per_cell = self.total_seconds / self.cells
        return "\n".join(
            [
                f"{self.cells} cells in {self.families} families of cells that differ only in theta and seed; "
                f"{self.groups} groups of up to {self.stack} cells trained as one stacked model each, on {self.device}",
                f"timed on {self.timed_family}: {self.step_seconds * 1000:.1f} ms per step of a group, "
                f"{self.steps_per_cell} steps per cell, {self.evaluate_seconds:.2f} s of saliency and metrics per cell",
                f"peak memory of one group: {self.peak_memory_mb:.0f} MiB"
                + (" (CUDA allocation)" if self.device.startswith("cuda") else " (the process's peak RSS)"),
                f"projected: {self.total_seconds / 60:.1f} min ({self.total_seconds / 3600:.2f} h) for the suite, "
                f"{per_cell:.3f} s per cell amortised "
                "(start-up, analysis and report not included; families unlike the timed one may differ)",
                f"on a cluster: {self.groups} tasks (one per group), about {self.total_seconds / 3600:.2f} "
                f"{'GPU' if self.device.startswith('cuda') else 'CPU-core'}-hours in all; each task about "
                f"{self.total_seconds / self.groups / 60:.1f} min on this device",
            ]
        )


def _short(cell: Cell, epochs: int) -> Cell:
    """``cell`` with its method trained for ``epochs`` epochs: the timing probe changes nothing else."""
    config = {**cell.config, "method": {**cell.config["method"], "params": {**cell.config["method"]["params"], "epochs": epochs}}}
    return dataclasses.replace(cell, config=config)


def estimate(resolved: ResolvedSuite, registry: PluginRegistry, *, device: torch.device, stack: int, steps: int = 5) -> Estimate:
    """Time ``steps`` optimisation steps of one group of the suite's first family on ``device`` and project the suite."""
    cells = expand(resolved)
    grouped = families(cells)
    groups = sum(math.ceil(len(family) / stack) for family in grouped)
    params = grouped[0][0].config["method"]["params"]  # the real training, before the probe shortens it
    group = [_short(cell, 1) for cell in grouped[0][:stack]]
    first = group[0]
    data = load_data(first, registry, device)
    batch = min(params["batch_size"], len(data.train))
    steps_per_cell = params["epochs"] * (len(data.train) // batch)
    augment = build(registry, first, "augmentations")

    def train(n_steps: int) -> tuple[list, float]:
        methods = [build_method(cell, registry, data.train.shape[1], device) for cell in group]
        generators = [torch.Generator().manual_seed(cell.seed) for cell in group]
        images = data.train[: batch * n_steps]
        started = time.perf_counter()
        views = [draw_generator(cell.seed, "training", device) for cell in group]
        curves = train_stacked(methods, augment, [c.theta for c in group], images, generators, views=views)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return list(zip(methods, curves, strict=True)), time.perf_counter() - started

    train(1)  # warm-up: kernels, allocator, the after_step probe
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trained, seconds = train(steps)
    methods, curves = zip(*trained, strict=True)
    # Saliency of the whole group at once, as run_group does, then each cell's metrics.
    started = time.perf_counter()
    maps = saliency_maps(group, methods, augment, data, registry)
    for cell, method, curve, saliency in zip(group, methods, curves, maps, strict=True):
        evaluate(cell, registry, method, augment, curve, data, saliency, start=started, stack_size=len(group))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    evaluate_seconds = (time.perf_counter() - started) / len(group)
    peak = peak_memory_mb(device)
    step_seconds = seconds / steps
    total = groups * steps_per_cell * step_seconds + len(cells) * evaluate_seconds
    return Estimate(
        cells=len(cells),
        families=len(grouped),
        groups=groups,
        stack=stack,
        device=f"cuda: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "cpu",
        timed_family=f"dataset={first.dataset} method={first.method} encoder={first.encoder} ({len(group)} cells)",
        step_seconds=step_seconds,
        steps_per_cell=steps_per_cell,
        evaluate_seconds=evaluate_seconds,
        peak_memory_mb=peak,
        total_seconds=total,
    )
