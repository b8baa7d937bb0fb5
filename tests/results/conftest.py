"""The fixtures that the tests of the report and of its figures and curves share."""

from __future__ import annotations

import pandas as pd
import pytest
import xarray as xr

from benchsuite.analysis.anova import anova_table
from benchsuite.report import write_report
from benchsuite.results import synthetic
from benchsuite.results.cube import SUITE_DESCRIPTION, open_cube
from tests.core.test_runner import TINY, run
from tests.results.report_page import PageParts, Report

DESCRIPTION = "Angles & <b>masks</b>"
PERIODICITY = pd.DataFrame({"metric": ["dice"], "dataset": ["shapes"], "period_deg": [90.0], "power": [0.123456]})
MIXED = pd.DataFrame({"metric": ["dice", "dice"], "term": ["theta", "theta:dataset"], "chi2": [1.5, 30.25]})


@pytest.fixture(scope="package")
def report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    """The report of a tiny real run (θ = 45° and 90°), with its ANOVA and two further tables."""
    root = tmp_path_factory.mktemp("report")
    # Package scope comes before the per-test cache fixture of tests/conftest.py, so point at the same cache here.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BENCHSUITE_CACHE", str(tmp_path_factory.getbasetemp() / "dataset-cache"))
        # Not theta = 0: its identical views leave the saliency metrics undefined (NaN).
        cube = open_cube(run(root, TINY.replace("theta: [0, 90]", "theta: [45, 90]")).run_dir)
    cube.attrs[SUITE_DESCRIPTION] = DESCRIPTION
    anova = anova_table(cube)
    path = write_report(cube, {"anova": anova, "periodicity": PERIODICITY, "mixed": MIXED}, root / "out")
    html = path.read_text(encoding="utf-8")
    return Report(cube, anova, path, html, PageParts(html))


@pytest.fixture(scope="package")
def dense_cube() -> xr.Dataset:
    """A dense curve as a run stores it: 2 datasets x 360 angles x 2 seeds, saliency examples every 30° only."""
    return synthetic.synthetic_cube(datasets=2, thetas=360, seeds=2, images=4, detail=12)
