"""The self-contained HTML report of a run: figures, the ANOVA and its reading, provenance.

``write_report(cube, tables, out_dir)`` is the entry point; the report reads only the cube and
the analysis tables computed from it.
"""

from benchsuite.report.document import write_report

__all__ = ["write_report"]
