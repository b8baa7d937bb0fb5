"""Grid expansion: a resolved suite becomes cells, each keyed by a stable content hash.

The key covers everything that can change a cell's numbers: its coordinates, the resolved
parameters of every component it uses, the versions of those plugins and of benchsuite. It is
the key for skipping finished cells, for resuming, and for sending cells elsewhere to run.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Any

import benchsuite
from benchsuite.suite import ResolvedSuite, canonical_json

AXES: tuple[str, ...] = ("dataset", "theta", "seed", "method", "encoder")
"""The grid dimensions of the results cube, in order."""


@dataclass(frozen=True)
class Cell:
    """One (dataset, theta, seed, method, encoder) combination with everything needed to run it.

    ``config`` is plain JSON data (no plugin objects), so a cell can travel to another process
    or machine, which re-creates the components from its own installed plugins.
    """

    dataset: str
    theta: float
    seed: int
    method: str
    encoder: str
    config: dict[str, Any]
    key: str

    @property
    def coords(self) -> dict[str, Any]:
        return {axis: getattr(self, axis) for axis in AXES}

    def describe(self) -> str:
        return f"dataset={self.dataset} theta={self.theta:g} seed={self.seed} method={self.method} encoder={self.encoder}"


def cell_key(coords: dict[str, Any], config: dict[str, Any]) -> str:
    """A 16-hex-digit content hash of a cell's coordinates, config and benchsuite version."""
    payload = canonical_json({"coords": coords, "config": config, "benchsuite": benchsuite.__version__})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def expand(resolved: ResolvedSuite) -> list[Cell]:
    """Every cell of the suite's Cartesian grid, in axis order."""
    suite = resolved.suite
    shared = {
        "data": suite.data.model_dump(mode="json"),
        "augmentation": resolved.augmentation.config(),
        "saliency": resolved.saliency.config(),
        "metrics": {name: m.config() for name, m in resolved.metrics.items()},
    }
    cells = []
    for dataset, theta, seed, method, encoder in itertools.product(
        resolved.datasets, suite.thetas, suite.seeds, resolved.methods, resolved.encoders
    ):
        config = {
            **shared,
            "dataset": resolved.datasets[dataset].config(),
            "method": resolved.methods[method].config(),
            "encoder": resolved.encoders[encoder].config(),
        }
        coords = {"dataset": dataset, "theta": float(theta), "seed": int(seed), "method": method, "encoder": encoder}
        cells.append(Cell(**coords, config=config, key=cell_key(coords, config)))
    return cells
