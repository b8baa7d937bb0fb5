"""The results cube's vocabulary, and opening one: what the store writes and the analysis reads.

The cube is one xarray Dataset over the grid :data:`AXES`. Every name the writer (the store)
and the readers (``analysis/``, ``report/``) must agree on is spelt here once. This module and
its readers import neither torch nor the training engine, so analysing or reporting a cube
copied off a cluster needs none of them and starts in a fraction of the time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from benchsuite.results.errors import BenchsuiteError

if TYPE_CHECKING:  # xarray is imported where a cube is opened, so naming the vocabulary costs nothing
    import xarray as xr

# The grid axes, spelt once for the whole project: here, below the engine, because the results
# layer must name them without importing it (docs/design.md, "One name, one place"). The engine's
# ``KINDS`` use these names for the axes that plugins fill, ``Cell`` has a field for each.
DATASET, THETA, SEED, METHOD, ENCODER = "dataset", "theta", "seed", "method", "encoder"
AXES: tuple[str, ...] = (DATASET, THETA, SEED, METHOD, ENCODER)
"""The grid dimensions of every per-cell variable, in order."""

REPLICATE = SEED
"""The axis whose levels are replicates rather than a factor."""

FACTORS: tuple[str, ...] = (THETA, DATASET, METHOD, ENCODER)
"""The axes that can be factors of the analysis, in the order their terms are reported."""

INTERACTION = f"{THETA}:{DATASET}"
"""The term the rotation-angle study asks about: does the effect of θ depend on the dataset?"""

SWEEP = "sweep"
"""The ``role`` attribute of the coordinate of a swept parameter: a grid dimension the suite added
with ``sweep:``, after :data:`AXES`. Its ``path`` attribute is the parameter's path in the suite."""

IMAGE = "image"
"""The dimension of per-image metrics (the evaluation split of a dataset)."""

# The dimensions a variable has besides the grid's (see the variables below).
EPOCH, STEP = "epoch", "step"
EXAMPLE_INDEX, CHANNEL, Y, X = "example", "channel", "y", "x"
ORIENTATION = "orientation"

CUBE_NAME = "results.nc"
ENGINE = "h5netcdf"

# Variables besides the metrics, which are named by the suite.
SSP_LOSS = "ssp_loss"  # [epoch] mean SSP loss per epoch
SSP_LOSS_STEP = "ssp_loss_step"  # [step]
LR = "lr"  # [step]
EPOCH_TIME = "epoch_time_s"  # [epoch]
SALIENCY_EXAMPLE = "saliency_example"  # [example, y, x], over EXAMPLE_THETA in place of theta
EXAMPLE_THETA = "example_theta"
"""The dimension that stands for θ in :data:`SALIENCY_EXAMPLE`: the suite's detailed angles
(``record.detail_angles``), the only cells whose example maps are kept. A cube written before
this was kept has ``theta`` there."""
EXAMPLE_IMAGE = "example_image"  # per dataset, [example, channel, y, x]
EXAMPLE_MASK = "example_mask"  # per dataset, [example, y, x]
ORIENTATION_HIST = "orientation_hist"  # per dataset, [orientation]
IDENTICAL_VIEWS = "identical_views"  # 1 where the pair's views were identical, so saliency is undefined
PLACEHOLDER_NEGATIVES = "placeholder_negatives"  # share of the method's negatives not yet real keys when training ended
WALL_TIME = "wall_time_s"
PEAK_MEMORY = "peak_memory_mb"
DEVICE = "device"
TORCH_THREADS = "torch_threads"
STACK_SIZE = "stack_size"  # cells trained together as one stacked model; an execution detail
CELL_KEY = "cell_key"

DIMS: tuple[str, ...] = (IMAGE, EPOCH, STEP, EXAMPLE_INDEX, EXAMPLE_THETA, CHANNEL, Y, X, ORIENTATION)
"""Every dimension of the cube besides the grid's: names a swept parameter's dimension must not take."""

ROLE = "role"
"""Every variable's attribute saying what kind of quantity it is: one of the roles below."""
METRIC, CURVE, EXAMPLE, PROVENANCE, DIAGNOSTIC, COVARIATE = "metric", "curve", "example", "provenance", "diagnostic", "covariate"

SCOPE = "scope"
"""A metric variable's attribute: :data:`IMAGE` (one value per evaluation image, over the :data:`IMAGE`
dimension) or :data:`CELL` (one value per cell), the metric's ``scope``."""
CELL = "cell"

UNITS, DESCRIPTION = "units", "description"
PATH = "path"
"""A swept coordinate's attribute (besides ``role=`` :data:`SWEEP`): the parameter's path in the suite."""

# The cube's own attributes: what was run, with what, where and when (the run's provenance).
SUITE_NAME, SUITE_DESCRIPTION, SUITE_YAML = "suite_name", "suite_description", "suite_yaml"
EXECUTOR = "executor"  # JSON of the last run's executor component
VERSIONS, PLUGINS = "versions", "plugins"  # JSON: {package: version}, {plugin: "distribution version"}
DEVICE_DESCRIPTION, GIT_REVISION, CREATED = "device", "git_revision", "created"
ANALYSIS = "analysis"
"""The cube attribute holding the suite's ``analysis`` section as JSON."""

OUTCOME = "outcome"
"""The cube attribute naming the metric the suite declared its outcome (the suite's ``outcome``), the one
that answers the study's question; the other metrics are diagnostics. Empty when the suite names none."""

BETTER = "better"
"""A metric variable's attribute: :data:`HIGHER` or :data:`LOWER`, the direction that is better
(the metric's ``higher_is_better``); absent when neither is."""
HIGHER, LOWER = "higher", "lower"


def swept(cube: xr.Dataset) -> tuple[str, ...]:
    """The cube's swept-parameter dimensions (coordinate ``role="sweep"``), in cube order; empty without a sweep."""
    return tuple(str(dim) for dim in cube.dims if dim in cube.coords and cube[dim].attrs.get(ROLE) == SWEEP)


def grid_axes(cube: xr.Dataset) -> tuple[str, ...]:
    """Every grid dimension of ``cube``: :data:`AXES`, then the swept parameters."""
    return AXES + swept(cube)


def factors(cube: xr.Dataset) -> tuple[str, ...]:
    """The dimensions that can be factors of the analysis, in the order their terms are reported.

    A swept parameter comes after θ and before the dataset, so its interaction with the dataset
    reads like θ's: ``strength:dataset``.
    """
    return (FACTORS[0], *swept(cube), *FACTORS[1:])


def interactions(cube: xr.Dataset) -> tuple[str, ...]:
    """The terms the study asks about: θ × dataset, and each swept parameter × dataset."""
    return tuple(f"{factor}:{DATASET}" for factor in (FACTORS[0], *swept(cube)))


def metric_names(cube: xr.Dataset) -> list[str]:
    """The cube's metric variables (attribute ``role="metric"``), in cube order."""
    return [str(name) for name, var in cube.data_vars.items() if var.attrs.get(ROLE) == METRIC]


def better(cube: xr.Dataset, metric: str) -> str | None:
    """``"higher"`` or ``"lower"`` when that direction of ``metric`` is better, else None.

    None also for a cube written before the direction was recorded.
    """
    return cube[metric].attrs.get(BETTER)


def outcome(cube: xr.Dataset) -> str | None:
    """The metric ``cube``'s suite named as its outcome; None when it named none (or predates ``outcome``)."""
    return cube.attrs.get(OUTCOME) or None


LOAD_WHOLE_BYTES = 512 * 2**20
"""A cube file up to this size is read into memory whole; a larger one is opened lazily."""


def open_cube(path: Path | str) -> xr.Dataset:
    """The cube of a run directory, or a cube file itself; a clear error when there is none.

    A cube up to :data:`LOAD_WHOLE_BYTES` is read whole and its file closed. A larger one is
    opened lazily: its variables are dask arrays over the file's chunks, so a cube larger than
    memory can be analysed a variable (or a slice) at a time.
    """
    path = Path(path)
    file = path / CUBE_NAME if path.is_dir() else path
    if not file.is_file():
        raise BenchsuiteError(
            f"{path} has no {CUBE_NAME}; run a suite first (benchsuite run SUITE) or point at its run directory."
        )
    import xarray as xr

    rebuild = "if it is a run's, rerunning its suite there (benchsuite run SUITE) rebuilds it from the stored cells"
    try:
        if file.stat().st_size <= LOAD_WHOLE_BYTES:
            cube = xr.load_dataset(file, engine=ENGINE)
        else:
            cube = xr.open_dataset(file, engine=ENGINE, chunks={})
    except (OSError, ValueError) as exc:  # not HDF5 (damaged, truncated) or HDF5 but not NetCDF
        raise BenchsuiteError(f"{file} cannot be read as a cube ({exc}); {rebuild}.") from exc
    missing = [name for name in AXES if name not in cube.variables]
    if missing:
        raise BenchsuiteError(f"{file} is not a benchsuite cube: it has no {', '.join(missing)}; {rebuild}.")
    return cube
