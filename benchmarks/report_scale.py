"""The report of a dense θ-curve: a synthetic cube as a 3,600-angle run stores it, and its analysis tables.

No training: the cube is made with numpy, the shape the store writes (4 datasets x 3,600 θ x 2
seeds by default, 4 metrics, 32 evaluation images a cell, saliency examples only at 12 detailed
angles, over ``example_theta``, identical views at θ = 0). With ``--analysis quick`` (the default) only the
periodicity, orientation autocorrelation and covariate tables are computed, by the real
analysis, and every other table is written empty and marked as not run, so that the report is
timed apart from the analysis; ``--analysis full`` runs ``analyze_cube`` on the whole cube.
Then time the report alone, which reads the tables:

    python benchmarks/report_scale.py /tmp/dense
    /usr/bin/time -v benchsuite report /tmp/dense
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from benchsuite.analysis.covariate import autocorrelation_table, covariate_table
from benchsuite.analysis.periodicity import periodicity_table
from benchsuite.analysis.summary import SKIPPED, analyze_cube, write_tables
from benchsuite.cube import CUBE_NAME, ENGINE

GRID = ("dataset", "theta", "seed", "method", "encoder")
NOT_RUN = "is not run by benchmarks/report_scale.py --analysis quick"


def dense_cube(
    n_theta: int = 3600, n_datasets: int = 4, n_seeds: int = 2, n_images: int = 32, size: int = 32, detailed: int = 12
) -> xr.Dataset:
    """A cube over ``n_theta`` evenly spaced angles, the first dataset's metrics following cos 4θ, the others flat.

    Saliency examples are kept at ``detailed`` evenly spread angles, over ``example_theta`` as the
    store writes them; θ = 0 is one of them, where the views are identical and the maps therefore
    NaN, as the pipeline leaves them.
    """
    rng = np.random.default_rng(0)
    thetas = np.arange(n_theta) * 360.0 / n_theta
    datasets = [f"set{i}" for i in range(n_datasets)]
    shape = (n_datasets, n_theta, n_seeds, 1, 1)
    planted = 0.1 * np.cos(np.deg2rad(4 * thetas)) * (np.arange(n_datasets) == 0)[:, None]
    base = 0.5 + planted[:, :, None, None, None]  # [dataset, theta, 1, 1, 1]

    def per_image(scale: float) -> np.ndarray:
        return base[..., None] + rng.normal(0, scale, (*shape, n_images))

    image_metric = {"role": "metric", "scope": "image", "better": "higher"}
    variables = {name: ((*GRID, "image"), per_image(0.05), image_metric) for name in ("dice", "auroc", "mass_in_mask")}
    variables["final_loss"] = (GRID, 2 + base + rng.normal(0, 0.05, shape), {"role": "metric", "scope": "cell"})
    variables["ssp_loss"] = ((*GRID, "epoch"), 3 - np.linspace(0, 1, 10) + rng.normal(0, 0.02, (*shape, 10)), {"role": "curve"})
    detail = thetas[np.linspace(0, n_theta, detailed, endpoint=False).round().astype(int)]
    saliency = rng.random((n_datasets, n_seeds, 1, 1, detailed, 4, size, size), dtype=np.float32)
    saliency[:, :, :, :, 0] = np.nan  # θ = 0: identical views
    example_dims = ("dataset", "seed", "method", "encoder", "example_theta", "example", "y", "x")
    variables["saliency_example"] = (example_dims, saliency, {"role": "example"})
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 3) ** 2 < (size / 4) ** 2).astype(np.float32)
    variables["example_image"] = (
        ("dataset", "example", "channel", "y", "x"),
        rng.random((n_datasets, 4, 1, size, size)),
        {"role": "example"},
    )
    variables["example_mask"] = (
        ("dataset", "example", "y", "x"),
        np.broadcast_to(disc, (n_datasets, 4, size, size)),
        {"role": "example"},
    )
    histogram = rng.random((n_datasets, 36)) + 1
    variables["orientation_hist"] = (
        ("dataset", "orientation"),
        histogram / histogram.sum(1, keepdims=True),
        {"role": "covariate"},
    )
    identical = np.zeros(shape, dtype=np.int64)
    identical[:, 0] = 1
    variables["identical_views"] = (GRID, identical, {"role": "diagnostic"})
    variables["wall_time_s"] = (GRID, rng.uniform(0.1, 0.2, shape), {"role": "provenance", "units": "s"})
    variables["peak_memory_mb"] = (GRID, rng.uniform(300, 400, shape), {"role": "provenance", "units": "MiB"})
    variables["device"] = (GRID, np.full(shape, "cuda:0", dtype=object), {"role": "provenance"})
    variables["torch_threads"] = (GRID, np.ones(shape, dtype=np.int64), {"role": "provenance"})
    coords = {
        "dataset": datasets,
        "theta": thetas,
        "seed": np.arange(n_seeds),
        "method": ["simclr"],
        "encoder": ["small_cnn"],
        "image": np.arange(n_images),
        "epoch": np.arange(10),
        "example": np.arange(4),
        "example_theta": detail,
        "channel": [0],
        "orientation": (np.arange(36) + 0.5) * 10.0,
    }
    return xr.Dataset(variables, coords=coords, attrs={"suite_name": "dense", "device": "cuda:0"})


def write_run(run_dir: Path, cube: xr.Dataset, *, full: bool = False) -> None:
    """``cube`` as ``run_dir/results.nc``, then its tables beside it (newer than the cube, so the report reads them).

    Unless ``full``, the analysis is the quick one of the module's description.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    cube.to_netcdf(run_dir / CUBE_NAME, engine=ENGINE)
    write_tables(cube, analyze_cube(cube) if full else _quick_tables(cube), run_dir)


def _quick_tables(cube: xr.Dataset) -> dict[str, pd.DataFrame]:
    """The tables that take seconds on a dense cube, computed; every other one empty, with :data:`NOT_RUN` as the reason."""
    # The analysis of a single angle is quick and gives every table its columns.
    tables = {name: table.head(0) for name, table in analyze_cube(cube.isel(theta=[0])).items()}
    for table in tables.values():
        table.attrs = {SKIPPED: NOT_RUN}
    autocorr = autocorrelation_table(cube)
    computed = {
        "periodicity": periodicity_table(cube),
        "orientation_autocorr": autocorr,
        "covariate": covariate_table(cube, autocorr=autocorr),
    }
    return tables | computed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--angles", type=int, default=3600)
    parser.add_argument("--datasets", type=int, default=4)
    parser.add_argument("--images", type=int, default=32, help="evaluation images a cell (100 makes a cube opened lazily)")
    parser.add_argument("--analysis", choices=["quick", "full"], default="quick")
    args = parser.parse_args()
    start = time.perf_counter()
    cube = dense_cube(args.angles, args.datasets, n_images=args.images)
    write_run(args.run_dir, cube, full=args.analysis == "full")
    size = (args.run_dir / CUBE_NAME).stat().st_size / 2**20
    cells = cube.sizes["dataset"] * cube.sizes["theta"] * cube.sizes["seed"]
    print(f"{args.run_dir / CUBE_NAME}: {size:.0f} MiB, {cells} cells; with its tables in {time.perf_counter() - start:.1f} s")
    print(f"now: /usr/bin/time -v benchsuite report {args.run_dir}")


if __name__ == "__main__":
    main()
