"""The suite file: a pydantic schema, YAML loading with line numbers, and plugin resolution.

A suite is data, never code. Loading happens in two passes: the schema (:mod:`.schema`) checks
the shape of the file (:mod:`.parsing` locates each problem by its line), then :func:`resolve`
checks every plugin name and its ``params`` against the plugin's own model, and each ``sweep``
path (:mod:`.sweeps`). Both passes report every problem at once, each with its key and line.
"""

from benchsuite.engine.suite.parsing import parse_suite
from benchsuite.engine.suite.resolution import load_suite, resolve
from benchsuite.engine.suite.resolved import ResolvedComponent, ResolvedSuite, Sweep
from benchsuite.engine.suite.schema import (
    AnalysisSettings,
    ComponentSpec,
    DataSettings,
    NamedComponentSpec,
    RecordSettings,
    Suite,
    ThetaRange,
)

__all__ = [
    "AnalysisSettings",
    "ComponentSpec",
    "DataSettings",
    "NamedComponentSpec",
    "RecordSettings",
    "ResolvedComponent",
    "ResolvedSuite",
    "Suite",
    "Sweep",
    "ThetaRange",
    "load_suite",
    "parse_suite",
    "resolve",
]
