"""The library call for a whole run, and the layering that keeps reading a cube free of torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import benchsuite
from benchsuite.engine import hookspecs
from benchsuite.engine.kinds import KINDS
from benchsuite.engine.suite import Suite
from benchsuite.results.cube import AXES, CUBE_NAME, ENGINE, open_cube
from tests.core.test_runner import TINY
from tests.results.test_summary import _cube


def test_one_call_runs_a_suite_end_to_end_and_returns_the_run_directory(tmp_path: Path) -> None:
    suite = tmp_path / "tiny.yaml"
    suite.write_text(TINY)
    lines: list[str] = []
    result = benchsuite.run(suite, out=tmp_path / "runs", progress=False, log=lines.append)
    assert result.run_dir == tmp_path / "runs" / "tiny"
    assert (result.cells_total, result.cells_run, result.cells_skipped) == (8, 8, 0)
    for name in (CUBE_NAME, "anova.csv", "summary.json", "report.html", "tensorboard"):
        assert (result.run_dir / name).exists(), name
    assert result.report == result.run_dir / "report.html"
    assert "final_loss: balanced" in result.summary
    assert lines[0] == "suite 'tiny': 2 datasets x 2 angles x 2 seeds x 1 method x 1 encoder = 8 cells"
    assert benchsuite.open_cube(result.run_dir)["final_loss"].dims == AXES
    again = benchsuite.run(suite, out=tmp_path / "runs", progress=False, log=lines.append)
    assert (again.cells_run, again.cells_skipped) == (0, 8)


def _imports_torch(code: str) -> bool:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip() == "True"


def test_the_analysis_and_the_report_import_no_torch() -> None:
    assert not _imports_torch("import sys, benchsuite, benchsuite.analysis, benchsuite.report; print('torch' in sys.modules)")


def test_the_analyze_and_report_commands_import_no_torch(tmp_path: Path) -> None:
    _cube().to_netcdf(tmp_path / CUBE_NAME, engine=ENGINE)
    for command in ("analyze", "report"):
        code = f"""
            import sys
            from benchsuite.cli import main
            sys.argv = ["benchsuite", "{command}", {str(tmp_path)!r}]
            try:
                main()
            except SystemExit as exit:
                assert not exit.code, exit.code
            print('torch' in sys.modules)
        """
        assert not _imports_torch(code), command
    assert open_cube(tmp_path) is not None and (tmp_path / "report.html").is_file()


def test_the_kinds_table_drives_the_schema_the_grid_and_the_hooks() -> None:
    hooks = {name for name in dir(hookspecs) if name.startswith("benchsuite_register_")}
    assert hooks == {kind.hook for kind in KINDS}
    assert {kind.suite_key for kind in KINDS} <= set(Suite.model_fields)
    axes = [kind.cell_key for kind in KINDS if kind.shape == "axis"]
    assert set(axes) <= set(AXES) and len(axes) == len(set(axes))
    assert all(kind.default for kind in KINDS if kind.shape == "one")
