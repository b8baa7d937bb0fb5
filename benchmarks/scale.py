"""The results path at scale: synthetic results (no training) through the real store, cube, logs, analysis and report.

    python benchmarks/scale.py [--grids default,curve,curves,36k] [--images 64] [--keep DIR]
    python benchmarks/scale.py --grids follow-up          # the follow-up's 921,600 cells (long)

Each grid is a real suite (``expand``, real cells and keys) whose cells get synthetic results
shaped as ``suites/curve-3600.yaml``'s: three per-image metrics over ``--images`` (32) evaluation
images and ``final_loss``, 5 epochs of 16 steps, 4 saliency examples of 32 px, a planted
cos(kθ) curve per dataset. Every stage runs in a process of its own, so its peak memory (the
process's peak resident set, imports included) is its own:

- ``store``: the grid's cells made (``expand``), then the results through
  :class:`benchsuite.results.store.PartWriter` as the runner stores them; only the store's calls are
  timed, not the making of the synthetic results. Then, in a process of its own, the cube
  assembled from the parts and written (``consolidate``).
- ``logs``: the same results through the TensorBoard logs (:class:`benchsuite.results.tensorboard.RunLogs`).
- ``resume``: what a resume reads before it runs anything: every part checked, the stored keys.
- ``analyze`` and ``report``: ``benchsuite analyze RUN_DIR`` and ``benchsuite report RUN_DIR``.
- ``baseline``: the earlier store on the first cells of the grid (at most ``--baseline-cells``):
  one NetCDF file per cell, then every file read back to rebuild the cube, as it did; the
  ratio compares its cost per cell with ``store``'s.

Stages a grid is too large for on this machine are projected from the largest grid measured,
and marked so. Times are medians of nothing: one run each; read the per-cell costs and ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

GRIDS = {  # name: (datasets, angles, seeds, methods, encoders)
    "default": (4, 12, 2, 1, 1),
    "curve": (1, 3600, 1, 1, 1),
    "curves": (4, 3600, 2, 1, 1),
    "36k": (10, 3600, 1, 1, 1),
    "100k": (28, 3600, 1, 1, 1),
    "follow-up": (16, 3600, 1, 2, 8),
}
STAGES = ("store", "logs", "resume", "analyze", "report", "baseline")
MAX_LOGGED_CELLS = 36_000
"""Larger grids have their TensorBoard cost projected from the per-cell cost at this size."""


def suite_text(grid: str) -> str:
    n_datasets, angles, seeds, n_methods, n_encoders = GRIDS[grid]
    datasets = ", ".join(f"d{i}: {{plugin: symmetric_shapes, params: {{k: {2 + i % 11}, seed: {i}}}}}" for i in range(n_datasets))
    methods = ", ".join(f"m{i}: {{plugin: moco_v2, params: {{lr: {0.01 * (i + 1)}}}}}" for i in range(n_methods))
    encoders = ", ".join(f"e{i}: {{plugin: small_cnn, params: {{width: {8 * (i + 1)}}}}}" for i in range(n_encoders))
    return textwrap.dedent(f"""\
        name: scale-{grid}
        data: {{size: 32, eval_images: 64, examples: 4}}
        datasets: {{{datasets}}}
        theta: {{start: 0, stop: 360, step: {360 / angles!r}}}
        seeds: {list(range(seeds))}
        methods: {{{methods}}}
        encoders: {{{encoders}}}
        metrics: [auroc, mass_in_mask, pointing_game, final_loss]
    """)


def resolved_grid(grid: str, directory: Path):
    from benchsuite.engine.registry import default_registry
    from benchsuite.engine.suite import load_suite

    path = directory / f"{grid}.yaml"
    path.write_text(suite_text(grid))
    return load_suite(path, default_registry())


def synthetic_results(cells, images: int) -> Iterator:
    """A result per cell, shaped as a real one.

    Each dataset's metrics follow 0.5 + 0.1 cos(kθ) (k from 0, flat, to 4), plus a fixed effect per
    evaluation image, a random effect per training run and noise per image, so the mixed model
    meets the structure it models; each dataset has its own k-fold orientation histogram.
    """
    from benchsuite.results.cell_result import CellResult, TrainingCurves

    rng = np.random.default_rng(0)
    datasets = list(dict.fromkeys(c.dataset for c in cells))
    harmonic = {name: k % 5 for k, name in enumerate(datasets)}
    image_effect = {name: rng.normal(0, 0.05, images).astype(np.float32) for name in datasets}
    bins = np.deg2rad(np.arange(36) * 10 + 5)
    hist = {name: (lambda h: h / h.sum())(1.1 + np.cos((2 + k % 4) * bins)) for k, name in enumerate(datasets)}
    steps = np.linspace(5, 3, 80).astype(np.float32)
    curves = TrainingCurves(np.linspace(5, 3, 5), np.full(5, 0.1), steps, np.full(80, 0.03))
    examples = rng.random((4, 32, 32), np.float32)
    pictures = rng.random((4, 1, 32, 32), np.float32)
    masks = rng.random((4, 32, 32)) > 0.5
    for cell in cells:
        level = 0.5 + 0.1 * np.cos(harmonic[cell.dataset] * np.deg2rad(cell.theta)) + rng.normal(0, 0.02)
        noise = rng.normal(0, 0.05, (3, images)).astype(np.float32)
        identical = cell.theta == 0  # as for rotation: no saliency, so its metrics are NaN
        per_image = {
            metric: np.full(images, np.nan, np.float32) if identical else level + image_effect[cell.dataset] + noise[j]
            for j, metric in enumerate(("auroc", "mass_in_mask", "pointing_game"))
        }
        yield CellResult(
            cell, per_image, {"final_loss": float(3 + level)}, {"auroc": True, "final_loss": False}, curves, identical,
            examples, pictures, masks, hist[cell.dataset], 0.15, 512.0, "cpu", 1, 1,
        )  # fmt: skip


def stage_store(run_dir: Path, grid: str, images: int) -> dict[str, float]:
    from benchsuite.engine.grid import detail_thetas, expand
    from benchsuite.results.store import PartWriter, RunStore

    resolved = resolved_grid(grid, run_dir.parent)
    start = time.perf_counter()
    cells = expand(resolved)
    expanded = time.perf_counter() - start
    store = RunStore(run_dir)
    adding = 0.0
    with PartWriter(store, detail_thetas(resolved.suite.thetas, resolved.suite.record.detail_angles)) as writer:
        for result in synthetic_results(cells, images):
            start = time.perf_counter()
            writer.add(result)
            adding += time.perf_counter() - start
        start = time.perf_counter()
    adding += time.perf_counter() - start  # the last part, written on the way out
    (run_dir / "suite.yaml").write_text(resolved.text)
    return {"cells": len(cells), "expand_s": expanded, "add_s": adding, "parts": len(store.part_paths())}


def stage_cube(run_dir: Path, grid: str) -> dict[str, float]:
    from benchsuite.engine.grid import expand
    from benchsuite.engine.runner import _cube_attrs
    from benchsuite.results.store import RunStore

    resolved = resolved_grid(grid, run_dir.parent)
    cells = expand(resolved)
    store = RunStore(run_dir)
    start = time.perf_counter()
    store.write_cube(store.build_cube(cells, _cube_attrs(resolved), {}))
    return {"cells": len(cells), "consolidate_s": time.perf_counter() - start}


def stage_logs(run_dir: Path, grid: str, images: int) -> dict[str, float]:
    from benchsuite.engine.grid import detail_thetas, expand
    from benchsuite.results.tensorboard import RunLogs

    resolved = resolved_grid(grid, run_dir.parent)
    cells = expand(resolved)[:MAX_LOGGED_CELLS]
    thetas = detail_thetas(resolved.suite.thetas, resolved.suite.record.detail_angles)
    spent = 0.0
    start = time.perf_counter()
    logs = RunLogs(run_dir / "tensorboard", cells, thetas, replace=True)
    spent += time.perf_counter() - start
    for result in synthetic_results(cells, images):
        start = time.perf_counter()
        logs.add(result)
        spent += time.perf_counter() - start
    start = time.perf_counter()
    logs.close()
    spent += time.perf_counter() - start
    return {"cells": len(cells), "logs_s": spent}


def stage_resume(run_dir: Path) -> dict[str, float]:
    from benchsuite.results.store import RunStore

    store = RunStore(run_dir)
    start = time.perf_counter()
    store.set_aside_unreadable()
    keys = store.done_keys()
    return {"cells": len(keys), "resume_s": time.perf_counter() - start}


def stage_baseline(run_dir: Path, grid: str, images: int, count: int) -> dict[str, float]:
    """The earlier store: a NetCDF shard per cell through xarray, then every shard read back for the cube."""
    import xarray as xr

    from benchsuite.engine.grid import expand
    from benchsuite.results.parts import cell_variables

    cells = expand(resolved_grid(grid, run_dir.parent))[:count]
    shards = run_dir / "cells"
    shards.mkdir(parents=True)
    writing = 0.0
    for result in synthetic_results(cells, images):
        start = time.perf_counter()
        variables = cell_variables(result, detailed=True, dataset_level=True)
        shard = xr.Dataset({name: (v.dims, v.values, v.attrs | {"level": v.level}) for name, v in variables.items()})
        shard.attrs.update(result.cell.coords | {"key": result.cell.key, "config": json.dumps(result.cell.config)})
        shard.to_netcdf(shards / f"{result.cell.key}.nc", engine="h5netcdf")
        writing += time.perf_counter() - start
    start = time.perf_counter()
    loaded = [xr.load_dataset(path, engine="h5netcdf") for path in sorted(shards.glob("*.nc"))]
    reading = time.perf_counter() - start
    return {"cells": len(loaded), "write_s": writing, "read_s": reading}


def run_stage(argv: list[str]) -> tuple[dict, float, float]:
    """Run one stage in a process of its own; its result, wall seconds and peak resident memory in MiB."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"stage failed ({' '.join(argv)}); its output:\n{out}")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    return (json.loads(lines[-1]) if lines else {}), wall, usage.ru_maxrss / 1024


def show(grid: str, stage: str, seconds: float, count: int, peak: float, note: str = "") -> None:
    per_cell = 1e3 * seconds / count
    print(f"{grid:<10} {count:>8}  {stage:<12} {seconds:>8.2f}s {per_cell:>9.3f}ms {peak:>9.0f}  {note}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grids", default="default,curve,curves,36k", help=f"comma-separated, of {', '.join(GRIDS)}")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    parser.add_argument("--images", type=int, default=32, help="evaluation images per cell (the default suite has 32)")
    parser.add_argument("--baseline-cells", type=int, default=360, help="cells the earlier store is timed on")
    parser.add_argument("--keep", type=Path, help="keep the run directories here (default: a temporary folder)")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--grid", help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:  # a child process: one stage, its numbers as the last line
        stages = {
            "store": lambda: stage_store(args.dir, args.grid, args.images),
            "cube": lambda: stage_cube(args.dir, args.grid),
            "logs": lambda: stage_logs(args.dir, args.grid, args.images),
            "resume": lambda: stage_resume(args.dir),
            "baseline": lambda: stage_baseline(args.dir, args.grid, args.images, args.baseline_cells),
        }
        print(json.dumps(stages[args.stage]()))
        return

    root = args.keep or Path(tempfile.mkdtemp(prefix="benchsuite-scale-"))
    me = [sys.executable, __file__, "--images", str(args.images), "--baseline-cells", str(args.baseline_cells)]
    wanted = args.stages.split(",")
    print(f"{'grid':<10} {'cells':>8}  {'stage':<12} {'wall':>9} {'per cell':>11} {'peak MiB':>9}  note")
    for grid in args.grids.split(","):
        run_dir = root / grid / f"scale-{grid}"
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        cells = int(np.prod(GRIDS[grid]))

        store_ms = None
        if "store" in wanted:
            found, _, peak = run_stage([*me, "--stage", "store", "--grid", grid, "--dir", str(run_dir)])
            show(grid, "expand", found["expand_s"], cells, peak, "the grid's cells and keys (not the store)")
            show(grid, "store", found["add_s"], cells, peak, f"{found['parts']} parts")
            cube, _, peak = run_stage([*me, "--stage", "cube", "--grid", grid, "--dir", str(run_dir)])
            show(grid, "consolidate", cube["consolidate_s"], cells, peak, "cube assembled and written")
            store_ms = 1e3 * (found["add_s"] + cube["consolidate_s"]) / cells
            print(f"{'':<10} {'':>8}  store and consolidation together: {store_ms:.3f} ms a cell")
        if "logs" in wanted:
            found, _, peak = run_stage([*me, "--stage", "logs", "--grid", grid, "--dir", str(run_dir)])
            note = "" if found["cells"] == cells else f"on the first {found['cells']} cells; projected to the grid"
            show(grid, "logs", found["logs_s"] * cells / found["cells"], cells, peak, note)
        if "resume" in wanted:
            found, _, peak = run_stage([*me, "--stage", "resume", "--dir", str(run_dir)])
            show(grid, "resume", found["resume_s"], cells, peak, "every part checked, stored keys read")
        for command in ("analyze", "report"):
            if command in wanted:
                _, wall, peak = run_stage([sys.executable, "-m", "benchsuite", command, str(run_dir)])
                show(grid, command, wall, cells, peak, f"benchsuite {command}, start-up included")
        if "baseline" in wanted:
            found, _, peak = run_stage([*me, "--stage", "baseline", "--grid", grid, "--dir", str(root / grid / "baseline")])
            spent = found["write_s"] + found["read_s"]
            ratio = f"; {1e3 * spent / found['cells'] / store_ms:.0f}x the store's cost a cell" if store_ms else ""
            show(grid, "baseline", spent, found["cells"], peak, f"earlier per-cell NetCDF store{ratio}")
    print(f"run directories in {root}" if args.keep else "")


if __name__ == "__main__":
    main()
