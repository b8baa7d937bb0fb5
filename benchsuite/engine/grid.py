"""Grid expansion: a resolved suite becomes cells, each keyed by a stable content hash.

The key covers everything that can change a cell's numbers: its coordinates, the resolved
parameters of every component it uses, the versions of those plugins and of benchsuite. It is
the key for skipping finished cells, for resuming, and for sending cells elsewhere to run.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import benchsuite
from benchsuite.engine.kinds import BY_NAME, KINDS
from benchsuite.engine.suite import DataSettings, ResolvedSuite
from benchsuite.results.cube import AXES, SEED, THETA


@dataclass(frozen=True, slots=True)
class Component:
    """A component as a cell carries it (``ResolvedComponent.config()``): plain JSON, read by name."""

    config: dict[str, Any]  # plugin, params, distribution, version: what cell keys and the dataset cache hash

    @property
    def plugin(self) -> str:
        return self.config["plugin"]

    @property
    def params(self) -> dict[str, Any]:
        return self.config["params"]


@dataclass(frozen=True, slots=True)
class Cell:
    """One (dataset, theta, seed, method, encoder[, swept parameters]) combination with everything needed to run it.

    ``config`` is plain JSON data (no plugin objects), so a cell can travel to another process
    or machine, which re-creates the components from its own installed plugins. A swept
    parameter's value is in ``swept`` (its coordinate) and in ``config`` (where it acts).
    """

    # The grid axes, named and ordered as benchsuite.results.cube.AXES (the one place they are spelt),
    # as fields so that a type checker knows each one's type; tests/core/test_grid.py checks they agree.
    dataset: str
    theta: float
    seed: int
    method: str
    encoder: str
    config: dict[str, Any]
    key: str
    swept: dict[str, Any] = field(default_factory=dict)

    @property
    def coords(self) -> dict[str, Any]:
        """The cell's coordinates on every grid dimension: :data:`AXES`, then the swept parameters."""
        return {axis: getattr(self, axis) for axis in AXES} | self.swept

    def component(self, kind: str) -> Component:
        """The component of ``kind`` (an ``axis`` or ``one`` kind: one per cell) that the cell computes with."""
        return Component(self.config[BY_NAME[kind].cell_key])

    def components(self, kind: str) -> dict[str, Component]:
        """The components of a ``list`` kind (the metrics), by label, in the suite's order."""
        return {label: Component(config) for label, config in self.config[BY_NAME[kind].cell_key].items()}

    @property
    def data(self) -> DataSettings:
        """The suite's data settings (size, split, examples) as the cell carries them."""
        return DataSettings.model_validate(self.config["data"])

    def describe(self) -> str:
        """``dataset=shapes theta=30 seed=0 method=moco encoder=cnn``, then any swept parameters."""
        return " ".join(f"{dim}={value:g}" if dim == THETA else f"{dim}={value}" for dim, value in self.coords.items())


def canonical_json(value: Any) -> str:
    """Deterministic JSON: what cell keys (and the dataset and model caches' keys) hash, and how configs compare."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def cell_key(coords: dict[str, Any], config: dict[str, Any]) -> str:
    """A 16-hex-digit content hash of a cell's coordinates, config and benchsuite version."""
    return _hashed(canonical_json(coords), canonical_json(config))


def _hashed(coords_json: str, config_json: str) -> str:
    # canonical_json({"benchsuite": ..., "config": ..., "coords": ...}) written out in its sorted
    # key order, so that expand serialises a family's shared config once rather than per cell.
    payload = f'{{"benchsuite":{canonical_json(benchsuite.__version__)},"config":{config_json},"coords":{coords_json}}}'
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def cell_config(resolved: ResolvedSuite, coords: dict[str, Any]) -> dict[str, Any]:
    """What a cell at ``coords`` computes with: the data settings and one config per component kind.

    An ``axis`` kind contributes the component at the cell's coordinate, a ``one`` kind its
    single component, a ``list`` kind every component by label. Kinds without a cell key (the
    executor) decide where a cell runs, not what it computes, so they stay out of the key. A
    swept parameter takes the cell's value in its component's params.
    """
    config: dict[str, Any] = {"data": resolved.suite.data.model_dump(mode="json")}
    for kind in KINDS:
        if kind.cell_key is None:
            continue
        components = resolved.components[kind.name]
        if kind.shape == "axis":
            config[kind.cell_key] = components[coords[kind.cell_key]].config()
        elif kind.shape == "one":
            config[kind.cell_key] = resolved.single(kind.name).config()
        else:
            config[kind.cell_key] = {label: c.config() for label, c in components.items()}
    for sweep in resolved.sweeps:
        cell_key = BY_NAME[sweep.kind].cell_key
        component = config[cell_key][sweep.label] if BY_NAME[sweep.kind].shape == "list" else config[cell_key]
        component["params"][sweep.field] = coords[sweep.dim]
    return config


def families(cells: Sequence[Cell]) -> list[list[Cell]]:
    """``cells`` grouped into families that may train together: the same config, dataset, method and encoder.

    Cells of a family differ only in theta and seed, so they can share one stacked model (each
    with its own weights, data order and theta). Families and their cells keep grid order.
    """
    grouped: dict[tuple[str, ...], list[Cell]] = {}
    for cell in cells:
        key = (cell.dataset, cell.method, cell.encoder, canonical_json(cell.config))
        grouped.setdefault(key, []).append(cell)
    return list(grouped.values())


def expand(resolved: ResolvedSuite) -> list[Cell]:
    """Every cell of the suite's Cartesian grid, in axis order.

    The cells of a family (the same coordinates but θ and seed) share one config object, built
    and serialised once: a 921,600-cell grid would otherwise hold 921,600 copies of it. A cell's
    config is never changed after this, so sharing it is safe.
    """
    levels = resolved.levels()
    configs: dict[tuple[Any, ...], tuple[dict[str, Any], str]] = {}
    cells = []
    for values in itertools.product(*levels.values()):
        coords = dict(zip(levels, values, strict=True))
        coords[THETA], coords[SEED] = float(coords[THETA]), int(coords[SEED])
        family = tuple(value for axis, value in coords.items() if axis not in (THETA, SEED))
        if family not in configs:
            config = cell_config(resolved, coords)
            configs[family] = (config, canonical_json(config))
        config, config_json = configs[family]
        base = {axis: coords[axis] for axis in AXES}
        swept = {dim: value for dim, value in coords.items() if dim not in base}
        cells.append(Cell(**base, config=config, key=_hashed(canonical_json(coords), config_json), swept=swept))
    return cells


def detail_thetas(thetas: Sequence[float], count: int) -> frozenset[float]:
    """``count`` of the suite's angles, evenly spread through its list: the cells kept in full (``record.detail_angles``).

    Every curve of the grid shares the suite's angles, so one set of θ serves them all: a cell
    is kept in full (its saliency examples in the cube, its step-by-step curves and overlays in
    TensorBoard) when its θ is in the set. 3,600 angles and ``count`` 12 give every 30°.
    """
    ordered = sorted(thetas)
    if count >= len(ordered):
        return frozenset(ordered)
    return frozenset(ordered[(i * len(ordered)) // count] for i in range(count))
