"""The component kinds a plugin can provide, in one table that the whole core loops over.

The registry (one hook per kind), the suite schema and its resolution, the grid's cell
configuration, the run manifest and the cell pipeline's error messages all read
:data:`KINDS`. Adding a kind means a row here and a hook in ``hookspecs.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from benchsuite.results.cube import DATASET, ENCODER, METHOD

Shape = Literal["axis", "one", "list"]
"""How a suite names components of a kind: ``axis`` a grid axis (a mapping from labels to
components, one per cell), ``one`` a single component shared by every cell, ``list`` a list of
components that every cell uses (each named by its label)."""


@dataclass(frozen=True)
class Kind:
    """One component kind: its registry name and how suites, cells and users refer to it."""

    name: str
    """Registry name, plural: ``benchsuite_register_<name>`` is its hook."""
    suite_key: str
    """Key of the suite file that names components of this kind."""
    cell_key: str | None
    """Key of the cell configuration (and for an ``axis``, the cube dimension, named in
    ``benchsuite.results.cube``); None for kinds that decide where cells run rather than what they compute."""
    label: str
    """What users read in messages: "SSP method"."""
    shape: Shape
    default: str | None = None
    """Plugin used when a ``one`` kind is left out of the suite."""
    description: str = ""
    """The suite key's line in the reference (docs/suites.md)."""
    params_base: str = "Params"
    """The class of ``benchsuite.api`` that the kind's parameter models must extend."""

    @property
    def hook(self) -> str:
        return f"benchsuite_register_{self.name}"


# fmt: off
KINDS: tuple[Kind, ...] = (
    #    name                suite key       cell key        label              shape   default
    Kind("datasets",         "datasets",     DATASET,        "dataset",         "axis",
         description="Grid axis: label -> dataset plugin."),
    Kind("augmentations",    "augmentation", "augmentation", "augmentation",    "one",  "rotation",
         description="Pair augmentation."),
    Kind("ssp_methods",      "methods",      METHOD,         "SSP method",      "axis",
         description="Grid axis: label -> SSP method plugin.",
         params_base="TrainingParams"),  # the core's training loop reads a method's optimiser settings
    Kind("encoders",         "encoders",     ENCODER,        "encoder",         "axis",
         description="Grid axis: label -> encoder plugin."),
    Kind("saliency_methods", "saliency",     "saliency",     "saliency method", "one",  "smoothgrad",
         description="Saliency method."),
    Kind("metrics",          "metrics",      "metrics",      "metric",          "list",
         description="Metrics computed for every cell."),
    Kind("executors",        "executor",     None,           "executor",        "one",  "local",
         description="Where cells run; does not change results."),
)
# fmt: on

BY_NAME: dict[str, Kind] = {kind.name: kind for kind in KINDS}
NAMES: tuple[str, ...] = tuple(BY_NAME)

AXIS_KINDS: dict[str, Kind] = {kind.cell_key: kind for kind in KINDS if kind.shape == "axis" and kind.cell_key}
"""The kinds whose components fill a grid axis, by that axis; the suite's ``theta`` and ``seeds`` fill the others."""
