"""A whole study in one call: a suite file in, a run directory with results, logs, tables and report out.

:func:`run` is what ``benchsuite run`` does, for code that drives benchsuite from Python (a
notebook, a sweep script)::

    import benchsuite

    result = benchsuite.run("suites/rotation.yaml", out="runs")
    print(result.summary)                        # the ANOVA and the other headline numbers
    cube = benchsuite.open_cube(result.run_dir)  # xarray Dataset over (dataset, theta, seed, ...)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from benchsuite.analysis.settings import analysis_options, study_terms
from benchsuite.analysis.summary import analyze_cube, write_tables
from benchsuite.analysis.terminal import format_summary
from benchsuite.engine.data import set_data_root
from benchsuite.engine.registry import installed_plugins
from benchsuite.engine.runner import run_cells
from benchsuite.engine.suite import load_suite
from benchsuite.report import write_report
from benchsuite.results.cube import open_cube


@dataclass(frozen=True)
class RunResult:
    """Where a run's outputs are, how many cells it ran, and the analysis as printed."""

    run_dir: Path
    """The run directory, OUT/<suite name>/: results.nc, tensorboard/, the tables and report.html."""
    cells_total: int
    cells_run: int
    cells_skipped: int
    summary: str
    """The headline analysis (ANOVA and the other tables) as text."""
    report: Path


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def run(
    suite: str | Path,
    *,
    out: str | Path = "runs",
    force: bool = False,
    progress: bool = True,
    data_root: str | Path | None = None,
    anova_type: Literal[2, 3] = 2,
    strict: bool = False,
    executor: str | None = None,
    log: Callable[[str], None] = _stderr,
) -> RunResult:
    """Run (or resume) the suite file ``suite`` end to end, then analyse it and write the report.

    Cells already stored under ``out/<suite name>/`` are skipped unless ``force``. Each cell's
    TensorBoard logs are written as it finishes, and it is stored within a second; then the cube ``results.nc``, the
    analysis tables (ANOVA of Type ``anova_type``, mixed model, periodicity, ...) and
    ``report.html``. ``data_root`` is where relative dataset folders are found (default:
    ``$BENCHSUITE_DATA_ROOT``, else the working directory). With ``strict``, a plugin that fails to
    load is an error rather than a warning. ``executor`` (YAML, e.g. ``"{plugin: ray, params:
    {address: auto}}"``) runs the cells with another executor than the suite names; the cells
    and the run directory stay the same. Status lines go to ``log``.

    Raises :class:`benchsuite.results.errors.BenchsuiteError` for bad input (exit code 2 on the command
    line) and :class:`benchsuite.results.errors.RunError` when a cell fails; stored cells are kept.
    """
    if data_root is not None:
        set_data_root(data_root)
    registry = installed_plugins(strict=strict)
    resolved = load_suite(suite, registry, executor=executor)
    log(f"suite '{resolved.name}': {resolved.describe()}")
    ran = run_cells(resolved, registry, Path(out), force=force, progress=progress)
    log(f"{ran.cells_run} cells run, {ran.cells_skipped} already stored; cube: {ran.cube_path}")
    cube = open_cube(ran.run_dir)
    tables = analyze_cube(cube, typ=anova_type)
    write_tables(cube, tables, ran.run_dir)
    report = write_report(cube, tables, ran.run_dir)
    summary = format_summary(tables, study_terms(cube, analysis_options(cube)))
    return RunResult(ran.run_dir, ran.cells_total, ran.cells_run, ran.cells_skipped, summary, report)
