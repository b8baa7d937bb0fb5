"""The self-contained HTML report of a run: figures, the ANOVA and its reading, provenance.

``write_report(cube, tables, out_dir)`` is the entry point; the report reads only the cube and
the analysis tables computed from it, which ``analysis_tables(run_dir, cube)`` reads from the
run directory (or computes and writes there once).
"""

from benchsuite.report.document import analysis_tables, write_report

__all__ = ["analysis_tables", "write_report"]
