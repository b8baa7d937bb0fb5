"""The analysis's memory guard: each analysis sizes its largest allocation before making it.

A design matrix too large for memory does not fail politely: numpy allocates what it can and
the kernel kills the process (a 2,880-cell cube's mixed model with categorical θ reached 24 GB).
So every analysis that builds a design matrix estimates its bytes first and, past
:data:`MEMORY_BUDGET`, raises :class:`AnalysisTooLarge`, which ``analyze`` turns into a skipped
table with the message as its reason while the other analyses run.
"""

from __future__ import annotations

from benchsuite.results.errors import BenchsuiteError

MEMORY_BUDGET = 2 * 2**30
"""Bytes one analysis may allocate for its model. Half of the 4 GB a 28,800-cell analysis is
allowed in all, leaving the rest for the cube and the interpreter."""

COPIES = 3
"""How many copies of its design matrix a statsmodels fit holds at its peak (patsy's frame, the
model's exog, the fit's working arrays), measured roughly on the ANOVA and the mixed model."""


class AnalysisTooLarge(BenchsuiteError, MemoryError):
    """An analysis would need more memory than :data:`MEMORY_BUDGET`; the message names it and the size.

    ``reason`` is the message without the analysis's name, as a skipped table's reason reads.
    """

    def __init__(self, analysis: str, reason: str) -> None:
        super().__init__(f"the {analysis} {reason}")
        self.reason = reason


def check_memory(analysis: str, what: str, n_bytes: float, budget: int | None = None) -> None:
    """Raise :class:`AnalysisTooLarge` when ``n_bytes`` for ``what`` exceed ``budget`` (default :data:`MEMORY_BUDGET`).

    ``analysis`` names the analysis as a user reads it (``"mixed model"``), ``what`` the
    allocation (``"a design of 921,600 rows × 7,236 columns"``).
    """
    budget = MEMORY_BUDGET if budget is None else budget
    if n_bytes > budget:
        raise AnalysisTooLarge(
            analysis,
            f"would need about {readable_bytes(n_bytes)} for {what}, more than the {readable_bytes(budget)} one analysis may use",
        )


def design_bytes(rows: int, columns: int) -> float:
    """Peak bytes of a statsmodels fit of a dense float64 design of ``rows × columns``."""
    return float(rows) * columns * 8 * COPIES


def readable_bytes(n_bytes: float) -> str:
    """``n_bytes`` as people read it: ``"512 MB"``, ``"13.4 GB"``."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= size:
            return f"{n_bytes / size:.3g} {unit}"
    return f"{n_bytes:.0f} B"
