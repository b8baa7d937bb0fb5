"""The analysis of a run directory, from its cube alone (so a copied cube gives the same tables)."""

from __future__ import annotations

from pathlib import Path

from benchsuite.analysis.anova import anova_table, format_anova
from benchsuite.errors import BenchsuiteError
from benchsuite.store import CUBE_NAME, open_cube


def analyze_run(run_dir: Path, *, typ: int = 2) -> str:
    """Fit the ANOVA of every metric in ``run_dir``'s cube, write ``anova.csv`` beside it, return the text table."""
    run_dir = Path(run_dir)
    if not (run_dir / CUBE_NAME).is_file():
        raise BenchsuiteError(f"{run_dir} has no {CUBE_NAME}; run a suite first (benchsuite run SUITE) or point at its run directory.")
    table = anova_table(open_cube(run_dir), typ=typ)
    table.to_csv(run_dir / "anova.csv", index=False)
    return format_anova(table)
