"""Finished cells as Arrow tables (the store's parts), and the cube assembled from them.

A part is one row per cell: the cell's key and coordinates, one column per variable. A scalar
is a plain column; an array is a list column of its flattened values (float32), with a
``<name>/shape`` column when it has more than one dimension. Each variable's dimensions, level
and attributes travel in the table's schema metadata, so a reader needs nothing but the parts.
A variable a row does not keep (the saliency examples of a cell outside the detailed angles) is
null there and NaN in the cube.

:func:`assemble` places every row at its cell's position in the grid with numpy indexing, one
variable at a time, so building the cube costs a few array operations per variable rather than
a file per cell.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa
import xarray as xr

from benchsuite.results import cube as names
from benchsuite.results.cell_result import CellResult

if TYPE_CHECKING:  # annotations only: the grid's module imports torch
    from benchsuite.engine.grid import Cell

VARIABLES = b"benchsuite.variables"
"""The schema metadata key of a part: JSON of each variable's dims, level and attributes."""


@dataclass(frozen=True)
class Variable:
    """One variable of one cell, as the cube will hold it."""

    dims: tuple[str, ...]
    values: Any
    attrs: dict[str, str] = field(default_factory=dict)
    level: Literal["cell", "detail", "dataset"] = "cell"
    """``detail`` for what only the cells at the detailed angles keep (their example maps), which
    the cube holds over :data:`~benchsuite.results.cube.EXAMPLE_THETA`; ``dataset`` for what every cell
    of a dataset shares (example images, the orientation histogram)."""


def _var(
    dims: tuple[str, ...],
    values: Any,
    role: str,
    level: Literal["cell", "detail", "dataset"] = "cell",
    *,
    scope: str | None = None,
    better: str | None = None,
    units: str | None = None,
    description: str | None = None,
) -> Variable:
    attrs = {names.ROLE: role, names.SCOPE: scope, names.BETTER: better, names.UNITS: units, names.DESCRIPTION: description}
    return Variable(dims, values, {name: value for name, value in attrs.items() if value is not None}, level)


def cell_variables(result: CellResult, *, detailed: bool, dataset_level: bool) -> dict[str, Variable]:
    """The variables of one cell, with the names and roles of :mod:`benchsuite.results.cube`.

    ``detailed``: the cell is at one of the suite's detailed angles and keeps its saliency
    examples. ``dataset_level``: the row carries its dataset's shared variables (example images
    and masks, orientation histogram); one row per dataset suffices, so most rows leave them out.
    """
    variables: dict[str, Variable] = {}
    better = {name: names.HIGHER if higher else names.LOWER for name, higher in result.higher_is_better.items()}
    for name, values in result.image_metrics.items():
        variables[name] = _var((names.IMAGE,), values, names.METRIC, scope=names.IMAGE, better=better.get(name))
        variables[f"{name}_nan_images"] = _var(
            (), int(np.isnan(values).sum()), names.DIAGNOSTIC, description=f"evaluation images where {name} is undefined (NaN)"
        )
    for name, value in result.cell_metrics.items():
        variables[name] = _var((), value, names.METRIC, scope=names.CELL, better=better.get(name))
    curves = result.curves
    variables |= {
        names.SSP_LOSS: _var((names.EPOCH,), curves.epoch_loss, names.CURVE, description="mean SSP loss per epoch"),
        names.SSP_LOSS_STEP: _var((names.STEP,), curves.step_loss, names.CURVE, description="SSP loss per step"),
        names.LR: _var((names.STEP,), curves.step_lr, names.CURVE, description="learning rate per step"),
        names.EPOCH_TIME: _var((names.EPOCH,), curves.epoch_seconds, names.CURVE, units="s", description="wall time per epoch"),
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
    }
    if result.placeholder_negatives is not None:  # only for a method that stores negatives; NaN in the cube elsewhere
        variables[names.PLACEHOLDER_NEGATIVES] = _var(
            (),
            result.placeholder_negatives,
            names.DIAGNOSTIC,
            description="share of the method's stored negatives (MoCo's queue) that were still placeholders, not keys "
            "of training images, when training ended; its training loss is lower where this is above 0",
        )
    if detailed:
        variables[names.SALIENCY_EXAMPLE] = _var(
            (names.EXAMPLE_INDEX, names.Y, names.X), result.example_saliency, names.EXAMPLE, level="detail"
        )
    if dataset_level:
        variables |= {
            names.EXAMPLE_IMAGE: _var(
                (names.EXAMPLE_INDEX, names.CHANNEL, names.Y, names.X), result.example_images, names.EXAMPLE, level="dataset"
            ),
            names.EXAMPLE_MASK: _var(
                (names.EXAMPLE_INDEX, names.Y, names.X), result.example_masks.astype(np.float32), names.EXAMPLE, level="dataset"
            ),
            names.ORIENTATION_HIST: _var(
                (names.ORIENTATION,),
                result.orientation_hist,
                names.COVARIATE,
                level="dataset",
                description="magnitude-weighted gradient-orientation histogram, sums to 1",
            ),
        }
    return variables


def table(cells: Sequence[Cell], rows: Sequence[Mapping[str, Variable]]) -> pa.Table:
    """One part: a row per cell (its key, its coordinates, then every variable any row has)."""
    columns: dict[str, pa.Array] = {names.CELL_KEY: pa.array([c.key for c in cells], pa.string())}
    for dim in cells[0].coords:
        columns[dim] = pa.array([c.coords[dim] for c in cells])
    described: dict[str, dict[str, Any]] = {}
    for row in rows:
        for name, var in row.items():
            described.setdefault(name, {"dims": list(var.dims), "level": var.level, "attrs": var.attrs})
    for name, about in described.items():
        values = [row[name].values if name in row else None for row in rows]
        if about["dims"]:
            columns[name] = _list_column(values)
            if len(about["dims"]) > 1:
                columns[f"{name}/shape"] = pa.array(
                    [None if v is None else list(np.shape(v)) for v in values], pa.list_(pa.int32())
                )
        else:
            columns[name] = pa.array(values)
    return pa.table(columns).replace_schema_metadata({VARIABLES: json.dumps(described).encode()})


def _list_column(arrays: Sequence[Any]) -> pa.Array:
    """Flattened float32 values of each row's array (null where a row has none), built from one concatenation."""
    present = [np.asarray(a, dtype=np.float32).ravel() for a in arrays if a is not None]
    lengths = iter(len(a) for a in present)
    sizes = np.array([0 if a is None else next(lengths) for a in arrays], dtype=np.int64)
    offsets = pa.array(np.concatenate(([0], np.cumsum(sizes))), pa.int64())
    flat = np.concatenate(present) if present else np.empty(0, np.float32)
    mask = pa.array([a is None for a in arrays])
    return pa.LargeListArray.from_arrays(offsets, pa.array(flat), mask=mask)


def assemble(
    cells: Sequence[Cell], parts: Iterable[pa.Table], attrs: dict[str, str], sweep_paths: Mapping[str, str]
) -> xr.Dataset:
    """The cube over the grid of ``cells`` from the rows of ``parts``, read one part at a time; cells without a row are NaN.

    The grid is :data:`~benchsuite.results.cube.AXES` and then the swept parameters (``sweep_paths``:
    dimension -> the parameter's path in the suite), whose coordinates are marked with
    ``role="sweep"``. A key that appears in several rows takes its last row (a rerun with
    ``--force`` appends); rows of cells outside the grid are left out. Arrays are padded with
    NaN to the longest row (the image count differs between datasets). Each cell-level variable
    is filled in place as the parts go by, so memory holds the cube and one part; the few rows of
    the detailed cells and of each dataset are kept until the end, when the angles that kept
    example maps are known.
    """
    grid = (*names.AXES, *sweep_paths)
    coords = {axis: list(dict.fromkeys(c.coords[axis] for c in cells)) for axis in grid}
    index = {axis: {value: i for i, value in enumerate(values)} for axis, values in coords.items()}
    shape = tuple(len(coords[a]) for a in grid)
    cell_index = np.array([[index[a][c.coords[a]] for a in grid] for c in cells], dtype=np.int64).reshape(len(cells), len(grid))
    position = dict(zip((c.key for c in cells), np.ravel_multi_index(tuple(cell_index.T), shape).tolist(), strict=True))

    described: dict[str, dict[str, Any]] = {}
    filled: dict[str, np.ndarray] = {}  # cell-level variables over the flattened grid
    few: dict[str, list[tuple[pa.Array, pa.Array | None, np.ndarray]]] = {}  # detail and dataset rows, until the end
    for part in parts:
        keys = part.column(names.CELL_KEY).to_pylist()
        rows = [row for row, key in enumerate(keys) if key in position]
        at = np.array([position[keys[row]] for row in rows], dtype=np.int64)
        for name, about in json.loads(part.schema.metadata[VARIABLES]).items():
            described.setdefault(name, about)
            ndim = len(about["dims"])
            column = part.column(name).take(pa.array(rows, pa.int64())).combine_chunks()
            valid = np.asarray(column.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
            taken = pa.array(np.flatnonzero(valid))
            values = column.take(taken)
            shapes = (
                part.column(f"{name}/shape").take(pa.array(rows, pa.int64())).combine_chunks().take(taken) if ndim > 1 else None
            )
            if about["level"] == "cell":
                filled[name] = _place(filled.get(name), int(np.prod(shape)), ndim, values, shapes, at[valid])
            else:
                few.setdefault(name, []).append((values, shapes, at[valid]))

    detail_coords: dict[str, list[Any]] = {}
    dense: dict[str, tuple[tuple[str, ...], np.ndarray]] = {
        name: (grid, data.reshape(shape + data.shape[1:])) for name, data in filled.items()
    }
    for name, pieces in few.items():
        values = pa.concat_arrays([v for v, _, _ in pieces])
        shapes = pa.concat_arrays([s for _, s, _ in pieces]) if pieces[0][1] is not None else None
        at = np.concatenate([a for _, _, a in pieces])
        if described[name]["level"] == "dataset":  # shared by a dataset's cells: placed by its dataset, the first grid axis
            lead, lead_shape, at = (names.DATASET,), shape[:1], np.unravel_index(at, shape)[0]
        else:  # kept at the detailed angles only: θ gives way to the angles that kept it
            lead, lead_shape, at, detail_coords[names.EXAMPLE_THETA] = _at_detailed_angles(at, shape, grid, coords[names.THETA])
        data = _place(None, int(np.prod(lead_shape)), len(described[name]["dims"]), values, shapes, at)
        dense[name] = (lead, data.reshape(lead_shape + data.shape[1:]))

    extents: dict[str, int] = {}
    for name, (lead, data) in dense.items():
        for dim, n in zip(described[name]["dims"], data.shape[len(lead) :], strict=True):
            extents[dim] = max(extents.get(dim, 0), n)
    cube_vars: dict[str, Any] = {}
    for name, (lead, data) in dense.items():
        dims = tuple(described[name]["dims"])
        cube_vars[name] = (lead + dims, _padded(data, len(lead), [extents[d] for d in dims]), described[name]["attrs"])

    key = np.full(int(np.prod(shape)), "", dtype=object)
    key[list(position.values())] = list(position)
    cube_vars[names.CELL_KEY] = (
        grid,
        key.reshape(shape).astype(str),
        {names.ROLE: names.PROVENANCE, names.DESCRIPTION: "content hash of the cell"},
    )
    coord_values = {axis: np.asarray(values) for axis, values in coords.items()}
    coord_values |= {dim: np.asarray(values) for dim, values in detail_coords.items()}
    coord_values |= {dim: np.arange(n) for dim, n in extents.items() if dim not in coord_values}
    cube = xr.Dataset(cube_vars, coords=coord_values, attrs=attrs)
    for dim in (names.THETA, *detail_coords):
        cube[dim].attrs[names.UNITS] = "degree"
    for dim, path in sweep_paths.items():
        cube[dim].attrs.update({names.ROLE: names.SWEEP, names.PATH: path})
    if names.ORIENTATION in cube.dims:
        bins = cube.sizes[names.ORIENTATION]
        cube = cube.assign_coords({names.ORIENTATION: (np.arange(bins) + 0.5) * 360.0 / bins})
        cube[names.ORIENTATION].attrs.update(
            {names.UNITS: "degree", names.DESCRIPTION: "bin centre, counter-clockwise from +x as displayed"}
        )
    return cube


def _at_detailed_angles(
    at: np.ndarray, shape: tuple[int, ...], grid: tuple[str, ...], thetas: Sequence[float]
) -> tuple[tuple[str, ...], tuple[int, ...], np.ndarray, list[float]]:
    """Lead dims, shape and positions of a variable over the angles its cells are at.

    The dim is :data:`~benchsuite.results.cube.EXAMPLE_THETA`.
    """
    axis = grid.index(names.THETA)
    index = list(np.unravel_index(at, shape))
    kept = np.unique(index[axis])
    index[axis] = np.searchsorted(kept, index[axis])
    lead_shape = (*shape[:axis], len(kept), *shape[axis + 1 :])
    lead = (*grid[:axis], names.EXAMPLE_THETA, *grid[axis + 1 :])
    angles = [thetas[i] for i in kept]
    return lead, lead_shape, np.ravel_multi_index(tuple(index), lead_shape), angles


def _place(
    data: np.ndarray | None, size: int, ndim: int, values: pa.Array, shapes: pa.Array | None, at: np.ndarray
) -> np.ndarray:
    """``data`` ([size, *extents], made on first use) with each of ``values`` written at its position ``at``.

    An array is grown, padded with NaN, when a value is longer than any before it. Rows of one
    length are written together, so the temporaries are the size of one part.
    """
    if not ndim:
        found = values.to_numpy(zero_copy_only=False)
        if data is None:
            text = found.dtype.kind in "OUS"  # the device: empty where no cell ran
            data = np.full(size, "" if text else np.nan, dtype=object if text else np.float64)
        data[at] = found
        return data
    offsets = values.offsets.to_numpy()
    flat = values.values.to_numpy()
    if ndim == 1:
        lengths = np.diff(offsets)
        data = _grown(data, size, (int(lengths.max(initial=0)),))
        for length in np.unique(lengths):
            same = lengths == length
            data[at[same], :length] = flat[offsets[:-1][same, None] + np.arange(length)]
        return data
    row_shapes = shapes.to_pylist()
    data = _grown(data, size, tuple(np.max(row_shapes, axis=0)) if row_shapes else (0,) * ndim)
    for i, row_shape in enumerate(row_shapes):  # only the detailed and dataset rows hold arrays of several dimensions
        data[(at[i], *(slice(0, n) for n in row_shape))] = flat[offsets[i] : offsets[i + 1]].reshape(row_shape)
    return data


def _grown(data: np.ndarray | None, size: int, extents: tuple[int, ...]) -> np.ndarray:
    """``data``, or a NaN array [size, *extents] when None, padded with NaN to at least ``extents``."""
    if data is None:
        return np.full((size, *extents), np.nan, dtype=np.float32)
    return _padded(data, 1, [max(n, have) for n, have in zip(extents, data.shape[1:], strict=True)])


def _padded(data: np.ndarray, lead: int, extents: Sequence[int]) -> np.ndarray:
    """``data`` padded with NaN on its dimensions after the ``lead`` grid ones to ``extents`` (another variable may be longer)."""
    pad = [(0, 0)] * lead + [(0, n - have) for n, have in zip(extents, data.shape[lead:], strict=True)]
    return np.pad(data, pad, constant_values=np.nan) if any(after for _, after in pad) else data
