"""The run directory on disk: one NetCDF shard per finished cell, and the consolidated cube.

Why NetCDF (through h5netcdf) rather than Zarr: a run's results are small (kilobytes per cell),
a single ``results.nc`` file is easy to copy off a cluster or attach to a paper, and every
language reads it. Durability comes from the shards, not from the format: each cell is written
to a temporary file and renamed into ``cells/<key>.nc``, an atomic step on POSIX file systems,
so the presence of a shard is the cell's done marker and a killed run loses only the cells in
flight. The cube is rebuilt from the shards, again written atomically.

Layout of a run directory::

    DIR/<suite name>/
      suite.yaml          the suite text as given
      manifest.json       resolved configuration and the key of every cell
      cells/<key>.nc      one shard per finished cell
      cells/unreadable/   shards found damaged on a resume (cut short, say), kept for inspection
      results.nc          the cube: every variable over (dataset, theta, seed, method, encoder, ...)
      lock                held by the run in progress (an OS file lock, released when it exits or dies)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr

from benchsuite import cube as names
from benchsuite import provenance
from benchsuite.cube import AXES, CUBE_NAME, ENGINE
from benchsuite.errors import RunDirInUse, make_output_folder
from benchsuite.grid import Cell
from benchsuite.pipeline import CellResult


def _atomic_netcdf(ds: xr.Dataset, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    ds.to_netcdf(tmp, engine=ENGINE)
    os.replace(tmp, path)


def _atomic_text(text: str, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _var(dims: tuple[str, ...], values: Any, role: str, level: str = "cell", **attrs: str) -> tuple[Any, ...]:
    # ``level`` says whether a variable varies per cell or only per dataset; the cube drops it.
    return dims, values, {"level": level, "role": role, **attrs}


def shard(result: CellResult) -> xr.Dataset:
    """One cell's results as a small Dataset, with the variable names and roles of :mod:`benchsuite.cube`."""
    variables: dict[str, Any] = {}
    better = {name: {names.BETTER: names.HIGHER if higher else names.LOWER} for name, higher in result.higher_is_better.items()}
    for name, values in result.image_metrics.items():
        variables[name] = _var((names.IMAGE,), values, names.METRIC, scope="image", **better.get(name, {}))
        variables[f"{name}_nan_images"] = _var(
            (), int(np.isnan(values).sum()), names.DIAGNOSTIC, description=f"evaluation images where {name} is undefined (NaN)"
        )
    for name, value in result.cell_metrics.items():
        variables[name] = _var((), value, names.METRIC, scope="cell", **better.get(name, {}))
    curves = result.curves
    variables |= {
        names.SSP_LOSS: _var(("epoch",), curves.epoch_loss, names.CURVE, description="mean SSP loss per epoch"),
        names.SSP_LOSS_STEP: _var(("step",), curves.step_loss, names.CURVE, description="SSP loss per step"),
        names.LR: _var(("step",), curves.step_lr, names.CURVE, description="learning rate per step"),
        names.EPOCH_TIME: _var(("epoch",), curves.epoch_seconds, names.CURVE, units="s", description="wall time per epoch"),
        names.SALIENCY_EXAMPLE: _var(("example", "y", "x"), result.example_saliency, names.EXAMPLE),
        names.WALL_TIME: _var((), result.wall_time_s, names.PROVENANCE, units="s"),
        names.PEAK_MEMORY: _var(
            (),
            result.peak_memory_mb,
            names.PROVENANCE,
            units="MiB",
            description="CUDA peak allocation, or the process's peak RSS on a CPU",
        ),
        names.DEVICE: _var((), result.device, names.PROVENANCE),
        names.TORCH_THREADS: _var(
            (), result.threads, names.PROVENANCE, description="CPU threads torch used; bit-exact results need the same count"
        ),
        names.STACK_SIZE: _var(
            (), result.stack_size, names.PROVENANCE, description="cells trained together as one stacked model, this one included"
        ),
        names.IDENTICAL_VIEWS: _var(
            (),
            int(result.identical_views),
            names.DIAGNOSTIC,
            description="1 where the pair's two views were identical, so the cell has no saliency (NaN maps)",
        ),
        names.EXAMPLE_IMAGE: _var(("example", "channel", "y", "x"), result.example_images, names.EXAMPLE, level="dataset"),
        names.EXAMPLE_MASK: _var(("example", "y", "x"), result.example_masks.astype(np.float32), names.EXAMPLE, level="dataset"),
        names.ORIENTATION_HIST: _var(
            ("orientation",),
            result.orientation_hist,
            names.COVARIATE,
            level="dataset",
            description="magnitude-weighted gradient-orientation histogram, sums to 1",
        ),
    }
    cell = result.cell
    attrs = dict(cell.coords.items()) | {"key": cell.key, "config": json.dumps(cell.config)}
    return xr.Dataset(variables, attrs=attrs)


class RunStore:
    """Reads and writes one run directory."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.cells_dir = self.run_dir / "cells"

    @property
    def cube_path(self) -> Path:
        return self.run_dir / CUBE_NAME

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run directory for this process, or raise :class:`RunDirInUse` naming the process that does.

        An ``flock`` rather than a file that exists: the operating system releases it when the
        holder exits or is killed, so a killed run never leaves the directory locked. (Worker
        processes are spawned, and Python opens files close-on-exec, so they do not hold it.)
        """
        make_output_folder(self.run_dir)
        path = self.run_dir / "lock"
        with path.open("a+", encoding="utf-8") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = path.read_text(encoding="utf-8").strip() or "another process"
                raise RunDirInUse(
                    f"{self.run_dir} is in use by another benchsuite run ({holder}). Two runs in one directory "
                    f"would compute the same cells twice and race on the cube. Wait for that run to finish or stop "
                    f"it, or pass --out to run in another directory."
                ) from None
            handle.truncate(0)
            handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {provenance.now()}\n")
            handle.flush()
            yield

    def set_aside_unreadable(self) -> list[tuple[Path, str]]:
        """Move shards that cannot be read (cut short by a full disk or a copy) to ``cells/unreadable/``.

        Returns each moved shard with its error. The shard is the cell's done marker, so a damaged
        one would otherwise stop every later resume; moved aside, its cell simply runs again. Read
        through h5py (the shards' HDF5 layer): a few milliseconds a shard, where xarray takes 0.2 s.
        """
        moved = []
        for path in sorted(self.cells_dir.glob("*.nc")) if self.cells_dir.is_dir() else []:
            try:
                with h5py.File(path, "r") as shard_file:
                    shard_file.visititems(_read_through)
            except (OSError, RuntimeError, KeyError, ValueError) as exc:
                aside = self.cells_dir / "unreadable" / path.name
                aside.parent.mkdir(exist_ok=True)
                os.replace(path, aside)
                moved.append((aside, str(exc)))
        return moved

    def done_keys(self) -> set[str]:
        return {p.stem for p in self.cells_dir.glob("*.nc")} if self.cells_dir.is_dir() else set()

    def write_cell(self, result: CellResult) -> None:
        self.cells_dir.mkdir(parents=True, exist_ok=True)
        _atomic_netcdf(shard(result), self.cells_dir / f"{result.cell.key}.nc")

    def read_manifest(self) -> dict[str, Any] | None:
        path = self.run_dir / "manifest.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def write_manifest(self, manifest: dict[str, Any], suite_text: str) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _atomic_text(suite_text, self.run_dir / "suite.yaml")
        _atomic_text(json.dumps(manifest, indent=2, sort_keys=True), self.run_dir / "manifest.json")

    def build_cube(self, cells: Sequence[Cell], attrs: dict[str, str], sweep_paths: Mapping[str, str]) -> xr.Dataset:
        """The cube over the grid of ``cells``, from the shards present; cells not run are NaN."""
        done = self.done_keys()
        shards = [xr.load_dataset(self.cells_dir / f"{c.key}.nc", engine=ENGINE) for c in cells if c.key in done]
        return assemble(cells, shards, attrs, sweep_paths)

    def cube_is_current(self, cells: Sequence[Cell]) -> bool:
        """Whether ``results.nc`` is the cube of the grid of ``cells`` and no stored shard is newer.

        Rebuilding reads every shard (about 0.2 s each through h5netcdf), which a rerun that
        ran nothing new should not pay.
        """
        done = self.done_keys()
        stored = [self.cells_dir / f"{c.key}.nc" for c in cells if c.key in done]
        if not self.cube_path.is_file() or not stored:
            return False
        if max(path.stat().st_mtime for path in stored) > self.cube_path.stat().st_mtime:
            return False
        try:
            with xr.open_dataset(self.cube_path, engine=ENGINE) as cube:
                return names.CELL_KEY in cube and set(cube[names.CELL_KEY].values.ravel()) == {c.key for c in cells}
        except (OSError, ValueError):  # a damaged cube is rebuilt from the shards, which hold every result
            return False

    def write_cube(self, cube: xr.Dataset) -> Path:
        _atomic_netcdf(cube, self.cube_path)
        return self.cube_path


def _read_through(_: str, node: h5py.Group | h5py.Dataset) -> None:
    # Returns None, which keeps ``visititems`` going through every variable.
    if isinstance(node, h5py.Dataset):
        node[()]


def _ordered(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def assemble(
    cells: Sequence[Cell], shards: Sequence[xr.Dataset], attrs: dict[str, str], sweep_paths: Mapping[str, str]
) -> xr.Dataset:
    """Place each shard's variables at its cell's coordinates, padding ragged dims with NaN.

    The grid is :data:`AXES` and then the swept parameters (``sweep_paths``: dimension -> the
    parameter's path in the suite), whose coordinates are marked with ``role="sweep"``. Built
    with numpy indexing rather than ``xr.combine_by_coords``: the grid is known up front, cells
    may be missing, and the image count differs between datasets.
    """
    grid = (*AXES, *sweep_paths)
    coords = {axis: _ordered(c.coords[axis] for c in cells) for axis in grid}
    index = {axis: {v: i for i, v in enumerate(values)} for axis, values in coords.items()}
    templates: dict[str, xr.DataArray] = {}
    extents: dict[str, int] = {}
    for ds in shards:
        for name, var in ds.data_vars.items():
            templates.setdefault(name, var)
            for dim, n in var.sizes.items():
                extents[dim] = max(extents.get(dim, 0), n)

    cube_vars = {}
    for name, template in templates.items():
        lead = grid if template.attrs["level"] == "cell" else ("dataset",)
        dims = lead + template.dims
        shape = tuple(len(coords[a]) for a in lead) + tuple(extents[d] for d in template.dims)
        is_text = template.dtype.kind in "OUS"
        data = np.full(shape, "" if is_text else np.nan, dtype=object if is_text else np.float64)
        for ds in shards:
            if name not in ds:
                continue
            at = tuple(index[a][ds.attrs[a]] for a in lead)
            values = ds[name].values
            data[at + tuple(slice(0, n) for n in values.shape)] = values
        attrs_out = {k: v for k, v in template.attrs.items() if k != "level"}
        cube_vars[name] = (dims, data.astype(str) if is_text else data, attrs_out)

    key = np.full(tuple(len(coords[a]) for a in grid), "", dtype=object)
    for c in cells:
        key[tuple(index[a][c.coords[a]] for a in grid)] = c.key
    cube_vars[names.CELL_KEY] = (
        grid,
        key.astype(str),
        {"role": names.PROVENANCE, "description": "content hash of the cell; its shard is cells/<key>.nc"},
    )
    coord_values = {axis: np.asarray(values) for axis, values in coords.items()}
    coord_values |= {dim: np.arange(extents[dim]) for dim in extents if dim not in coord_values}
    cube = xr.Dataset(cube_vars, coords=coord_values, attrs=attrs)
    cube["theta"].attrs["units"] = "degree"
    for dim, path in sweep_paths.items():
        cube[dim].attrs.update(role=names.SWEEP, path=path)
    if "orientation" in cube.dims:
        bins = cube.sizes["orientation"]
        cube = cube.assign_coords(orientation=(np.arange(bins) + 0.5) * 360.0 / bins)
        cube["orientation"].attrs.update(units="degree", description="bin centre, counter-clockwise from +x as displayed")
    return cube
