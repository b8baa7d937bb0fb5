"""A suite whose every plugin reference has been checked: its components, its sweeps and its grid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from benchsuite.api import Params
from benchsuite.engine.kinds import AXIS_KINDS
from benchsuite.engine.suite.schema import Suite
from benchsuite.results.cube import AXES, SEED, THETA


@dataclass(frozen=True)
class ResolvedComponent:
    """A component whose plugin exists and whose params passed its model."""

    plugin: str
    params: Params
    distribution: str
    version: str

    def config(self) -> dict[str, Any]:
        """JSON-ready form: what a cell carries to wherever it runs, and what its hash covers."""
        return {
            "plugin": self.plugin,
            "params": self.params.model_dump(mode="json"),
            "distribution": self.distribution,
            "version": self.version,
        }


@dataclass(frozen=True)
class Sweep:
    """One swept parameter: a grid dimension over the values of one parameter of one component."""

    dim: str
    """The cube dimension: the parameter's name, or ``LABEL_FIELD`` where two sweeps share it."""
    path: str
    """As the suite wrote it: ``augmentation.params.strength``."""
    kind: str
    label: str
    """The component's label within its kind (the suite key for a kind of shape ``one``)."""
    field: str
    values: tuple[Any, ...]
    """Each value as the parameter model validated it, in JSON form."""


@dataclass(frozen=True)
class ResolvedSuite:
    """A suite whose every plugin reference has been checked, plus the text it came from."""

    suite: Suite
    text: str
    components: dict[str, dict[str, ResolvedComponent]]
    """Per kind name, label -> component. The only label of a kind of shape ``one`` is its suite key."""
    sweeps: tuple[Sweep, ...] = ()

    @property
    def name(self) -> str:
        return self.suite.name

    def single(self, kind: str) -> ResolvedComponent:
        """The component of a kind of shape ``one`` (the augmentation, the executor, ...)."""
        (component,) = self.components[kind].values()
        return component

    def levels(self) -> dict[str, list[Any]]:
        """The values of every grid axis, in the cube's axis order."""
        levels: dict[str, list[Any]] = {THETA: self.suite.thetas, SEED: self.suite.seeds}
        levels |= {axis: list(self.components[kind.name]) for axis, kind in AXIS_KINDS.items()}
        return {axis: levels[axis] for axis in AXES} | {sweep.dim: list(sweep.values) for sweep in self.sweeps}

    def describe(self) -> str:
        """The grid's size, axis by axis: ``2 datasets x 12 angles x 2 seeds x 1 method x 1 encoder = 48 cells``.

        A swept parameter is named by its path, as the report's grid line names it.
        """
        names = {THETA: ("angle", "angles"), SEED: ("seed", "seeds")}
        names |= {axis: (axis, kind.suite_key) for axis, kind in AXIS_KINDS.items()}
        names |= {sweep.dim: (f"value of {sweep.path}", f"values of {sweep.path}") for sweep in self.sweeps}
        counts = {axis: len(values) for axis, values in self.levels().items()}
        sizes = " x ".join(f"{n} {names[axis][n != 1]}" for axis, n in counts.items())
        return f"{sizes} = {int(np.prod(list(counts.values())))} cells"
