"""The suite's ``analysis`` settings as the analysis reads them: from the cube, or their defaults.

The store writes the suite's ``analysis`` section into the cube's attributes as JSON (key
:data:`~benchsuite.results.cube.ANALYSIS`). A cube written before the section existed has none
and gets the defaults, which are spelt here again rather than imported from ``benchsuite.engine.suite``:
the suite module imports the training engine, which the results layer must not. A test keeps the two in step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import xarray as xr

from benchsuite.results.cube import ANALYSIS, THETA, interactions
from benchsuite.results.errors import BenchsuiteError

DENSE_ABOVE = 36
"""Above this many angles θ is a periodic curve rather than a categorical factor (``AnalysisSettings.dense_above``)."""

HARMONICS: int | Literal["auto"] = "auto"
"""The harmonics of that curve; ``"auto"`` chooses them by AIC (``AnalysisSettings.harmonics``)."""

HARMONIC_TERM = "harmonics"
"""The term of θ as a periodic curve (sin kθ and cos kθ, k = 1..K): ``harmonics``, ``harmonics:dataset``, ..."""


HARMONICS_CHOSEN = "harmonics"
"""The key of ``DataFrame.attrs`` under which the harmonic regression records each metric's K."""


@dataclass(frozen=True)
class AnalysisOptions:
    """How θ is analysed: categorical up to ``dense_above`` angles, then a curve of ``harmonics`` harmonics."""

    dense_above: int = DENSE_ABOVE
    harmonics: int | Literal["auto"] = HARMONICS

    def __post_init__(self) -> None:
        if self.harmonics != "auto" and not (isinstance(self.harmonics, int) and self.harmonics >= 1):
            raise BenchsuiteError(f"harmonics must be a whole number of at least 1 or 'auto', not {self.harmonics!r}.")

    def dense(self, cube: xr.Dataset) -> bool:
        """Whether ``cube``'s θ is read as a periodic curve (more than ``dense_above`` angles)."""
        return cube.sizes[THETA] > self.dense_above


def analysis_options(cube: xr.Dataset, harmonics: int | Literal["auto"] | None = None) -> AnalysisOptions:
    """The options ``cube`` was run with (its ``analysis`` attribute, else the defaults), ``harmonics`` overriding."""
    text = cube.attrs.get(ANALYSIS)
    try:
        stored = json.loads(text) if text else {}
        options = AnalysisOptions(
            dense_above=int(stored.get("dense_above", DENSE_ABOVE)), harmonics=stored.get("harmonics", HARMONICS)
        )
    except (TypeError, ValueError, AttributeError) as error:
        raise BenchsuiteError(
            f"the cube's {ANALYSIS!r} attribute ({text!r}) is not the suite's analysis section: {error}"
        ) from error
    return options if harmonics is None else AnalysisOptions(options.dense_above, harmonics)


def study_terms(cube: xr.Dataset, options: AnalysisOptions) -> tuple[str, ...]:
    """The interactions the study asks about, as the analysis of ``cube`` names them.

    :func:`benchsuite.results.cube.interactions` (``theta:dataset``, then ``<swept>:dataset``), with θ's
    term read as ``harmonics:dataset`` when θ is a curve.
    """
    terms = interactions(cube)
    if not options.dense(cube):
        return terms
    return (f"{HARMONIC_TERM}:dataset", *terms[1:])
