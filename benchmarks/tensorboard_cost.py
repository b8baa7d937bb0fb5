"""What TensorBoard logging costs the driver per cell, on synthetic results of a dense θ-curve (no training).

    python benchmarks/tensorboard_cost.py [--angles 3600] [--curves 1] [--before REV] [--before-cells 360]

The results are shaped as suites/curve-3600.yaml's cells: three per-image metrics over 64
evaluation images and final_loss, 5 epochs of 16 steps, 4 saliency examples of 64 px; the
default ``record.detail_angles`` (12) of each curve's angles are detailed. Timed, in the driver's
order: ``RunLogs`` from its construction (the experiment config) through every ``add`` to
``close``, per cell, split into plain and detailed cells; then a resume that re-reads the runs
(every cell already logged); then the logs loaded by TensorBoard's own reader, as
``tensorboard --logdir DIR --samples_per_plugin scalars=10000`` loads them, with the points per
metric it holds.

``--before REV`` also times ``benchsuite/tensorboard.py`` at git revision REV, the one-run-per-cell
layout (``write_experiment_config``, then ``write_cell_logs`` per cell), on the first
``--before-cells`` cells, and prints the ratio of the two costs per cell.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tensorboard import program
from tensorboard.backend.event_processing.data_ingester import LocalDataIngester
from tensorboard.context import RequestContext

from benchsuite.engine.grid import Cell, detail_thetas, expand
from benchsuite.engine.registry import default_registry
from benchsuite.engine.suite import load_suite
from benchsuite.results.cell_result import CellResult, TrainingCurves
from benchsuite.results.tensorboard import RunLogs

SUITE = """\
name: tb-cost
data: {{size: 64, eval_images: 64, examples: 4}}
datasets:
{datasets}
theta: {{start: 0, stop: 360, step: {step}}}
seeds: [0]
methods:
  moco_v2: {{plugin: moco_v2, params: {{epochs: 5, batch_size: 64}}}}
encoders:
  resnet18: {{plugin: resnet18}}
saliency: {{plugin: smoothgrad, params: {{samples: 25}}}}
metrics: [dice, auroc, mass_in_mask, final_loss]
"""


def grid(angles: int, curves: int, folder: Path) -> tuple[list[Cell], frozenset[float]]:
    datasets = "\n".join(f"  shapes_{i}: {{plugin: symmetric_shapes, params: {{k: 4}}}}" for i in range(curves))
    path = folder / "suite.yaml"
    path.write_text(SUITE.format(datasets=datasets, step=360 / angles))
    resolved = load_suite(path, default_registry())
    return expand(resolved), detail_thetas(resolved.suite.thetas, resolved.suite.record.detail_angles)


def results(cells: list[Cell]) -> list[CellResult]:
    rng = np.random.default_rng(0)
    # Every result shares one set of example arrays: the driver holds one result at a time.
    saliency = rng.random((4, 64, 64), dtype=np.float32)
    images = rng.random((4, 1, 64, 64), dtype=np.float32)
    masks = rng.random((4, 64, 64)) > 0.7
    return [
        CellResult(
            cell=cell,
            image_metrics={name: rng.random(64) for name in ("dice", "auroc", "mass_in_mask")},
            cell_metrics={"final_loss": float(rng.random())},
            higher_is_better={"dice": True, "auroc": True, "mass_in_mask": True, "final_loss": False},
            curves=TrainingCurves(rng.random(5), rng.random(5), rng.random(80), rng.random(80)),
            identical_views=cell.theta == 0,
            example_saliency=saliency,
            example_images=images,
            example_masks=masks,
            orientation_hist=rng.random(36),
            wall_time_s=1.0,
            peak_memory_mb=100.0,
            device="cpu",
            threads=1,
            stack_size=64,
        )
        for cell in cells
    ]


def time_run_logs(logdir: Path, cells: list[Cell], detail: frozenset[float], batch: list[CellResult]) -> float:
    plain, detailed = [], []
    start = time.perf_counter()
    with RunLogs(logdir, cells, detail, replace=True) as logs:
        for result in batch:
            before = time.perf_counter()
            logs.add(result)
            (detailed if result.cell.theta in detail else plain).append(time.perf_counter() - before)
    total = time.perf_counter() - start
    print(
        f"RunLogs: {len(batch)} cells in {total:.2f} s: {1e3 * total / len(batch):.3f} ms a cell amortised "
        f"(add: {1e3 * np.mean(plain):.3f} ms a plain cell, {1e3 * np.mean(detailed):.1f} ms each of "
        f"{len(detailed)} detailed cells)"
    )
    start = time.perf_counter()
    with RunLogs(logdir, cells, detail) as logs:
        for result in batch:
            logs.add(result)
    print(f"resume: every cell logged already, runs re-read: {time.perf_counter() - start:.2f} s")
    return total / len(batch)


def load_with_tensorboard(logdir: Path, angles: int) -> None:
    start = time.perf_counter()
    tensorboard = program.TensorBoard()
    flags = ["--logdir", str(logdir), "--samples_per_plugin", "scalars=10000", "--load_fast", "false"]
    tensorboard.configure(["tensorboard", *flags, "--reload_interval", "0", "--reload_task", "blocking"])
    ingester = LocalDataIngester(tensorboard.flags)
    ingester.start()
    provider = ingester.data_provider
    scalars = provider.read_scalars(
        RequestContext(), experiment_id="", plugin_name="scalars", downsample=10000, run_tag_filter=None
    )
    points = [len(data) for tags in scalars.values() for tag, data in tags.items() if tag.startswith("metrics/")]
    print(
        f"TensorBoard's reader: {len(scalars)} runs loaded in {time.perf_counter() - start:.1f} s; points per "
        f"metrics/ tag: {sorted(set(points))} (angles: {angles})"
    )


def old_module(revision: str):
    source = subprocess.run(
        ["git", "show", f"{revision}:benchsuite/tensorboard.py"], capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "tensorboard_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("tensorboard_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def time_before(revision: str, logdir: Path, cells: list[Cell], batch: list[CellResult]) -> float:
    before = old_module(revision)
    start = time.perf_counter()
    before.write_experiment_config(logdir, cells)
    for result in batch:
        before.write_cell_logs(result, logdir, before.run_name(result.cell))
    total = time.perf_counter() - start
    print(f"{revision} (a run per cell): {len(batch)} cells in {total:.2f} s: {1e3 * total / len(batch):.3f} ms a cell")
    return total / len(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--angles", type=int, default=3600)
    parser.add_argument("--curves", type=int, default=1, help="datasets, each one curve")
    parser.add_argument("--before", metavar="REV", help="also time benchsuite/tensorboard.py at this git revision")
    parser.add_argument("--before-cells", type=int, default=360)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        cells, detail = grid(args.angles, args.curves, Path(folder))
        batch = results(cells)
        print(f"{len(cells)} cells: {args.curves} curve(s) of {args.angles} angles, {len(detail)} detailed per curve")
        after = time_run_logs(Path(folder) / "after", cells, detail, batch)
        load_with_tensorboard(Path(folder) / "after", args.angles)
        if args.before:
            sample = batch[:: max(1, len(batch) // args.before_cells)][: args.before_cells]
            ratio = time_before(args.before, Path(folder) / "before", cells, sample) / after
            print(f"before / after, per cell: {ratio:.0f}x")


if __name__ == "__main__":
    sys.exit(main())
