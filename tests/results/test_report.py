"""The HTML report: its sections and figures, its readings of the ANOVA, and that a browser shows it whole."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib.colors import to_rgb, to_rgba
from PIL import Image

from benchsuite.analysis.anova import SS_TYPE, anova_table
from benchsuite.analysis.summary import (
    NEEDS_REPLICATES,
    SUMMARY_NAME,
    analyze_cube,
    read_tables,
    write_tables,
)
from benchsuite.report import analysis_tables, write_report
from benchsuite.report.curves import interaction_figure, seed_band, sweep_figure
from benchsuite.report.document import SHOWN_ROWS
from benchsuite.report.figures import saliency_gallery
from benchsuite.report.style import png_bytes
from benchsuite.results.cube import CUBE_NAME, ENGINE, EXAMPLE_IMAGE, SALIENCY_EXAMPLE, WALL_TIME, open_cube
from tests.results.report_page import CHROMIUM, CHROMIUM_FLAGS, PageParts, Report, rendered_images
from tests.results.test_anova import STRENGTHS, SWEEP
from tests.results.test_figures import SIMILARITY
from tests.results.test_summary import _cube as synthetic_cube
from tests.results.test_summary import _sweep_cube, _uneven_cube

METRICS = ["dice", "auroc", "mass_in_mask", "final_loss"]
FIGURE_FILES = {f"interaction_{m}.png" for m in METRICS} | {
    "saliency_gallery.png",
    "orientation_roses.png",
    "training_curves.png",
}


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory: pytest.TempPathFactory, dense_cube: xr.Dataset) -> Path:
    """A run directory of :func:`dense_cube` with its tables, reported by ``benchsuite report``."""
    run_dir = tmp_path_factory.mktemp("dense")
    dense_cube.to_netcdf(run_dir / CUBE_NAME, engine=ENGINE)
    write_tables(dense_cube, analyze_cube(dense_cube), run_dir)
    done = subprocess.run(["benchsuite", "report", str(run_dir)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return run_dir


@pytest.fixture(scope="module")
def strength_report(tmp_path_factory: pytest.TempPathFactory) -> Report:
    """The report of an augmentation-strength study: strength swept at a single θ, with every analysis of it."""
    cube = _sweep_cube().isel(theta=[0])
    with warnings.catch_warnings():
        # Periodicity, Tukey and the covariate are about θ; test_summary checks that they say so once each.
        warnings.simplefilter("ignore")
        tables = analyze_cube(cube)
    path = write_report(cube, tables, tmp_path_factory.mktemp("strength"))
    html = path.read_text(encoding="utf-8")
    return Report(cube, tables["anova"], path, html, PageParts(html))


def test_report_has_every_section(report):
    expected = {
        "summary",
        "interaction",
        "analysis-periodicity",
        "analysis-mixed",
        "saliency",
        "orientation",
        "training",
        "provenance",
    }
    assert expected <= report.parts.ids


def test_every_figure_is_saved_as_png_and_inlined_as_the_same_bytes(report):
    figures_dir = report.path.parent / "figures"
    assert {p.name for p in figures_dir.iterdir()} == FIGURE_FILES
    inlined = sorted(base64.b64decode(img["src"].removeprefix("data:image/png;base64,")) for img in report.parts.images)
    assert inlined == sorted((figures_dir / name).read_bytes() for name in FIGURE_FILES)
    assert all(img["src"].startswith("data:image/png;base64,") and img["alt"] for img in report.parts.images)


def test_report_loads_nothing_from_outside_the_page(report):
    assert not re.search(r"https?:", report.html)
    assert not re.search(r"<(script|link|iframe)\b|url\(|@import", report.html)


def test_interaction_reading_states_the_numbers_of_the_anova_table(report):
    for metric in METRICS:
        row = report.anova.query("metric == @metric and term == 'theta:dataset'").iloc[0]
        for text in report.parts.readings[metric]:  # once in the summary, once in the metric's section
            found = re.fullmatch(
                r"θ × dataset interaction: F=(\S+), p=(\S+), partial η²=(\S+) ((?:not )?significant) at 0\.05", text
            )
            assert found, text
            f, p, eta = (float(found[i]) for i in (1, 2, 3))
            assert f == pytest.approx(row["F"], abs=0.005)
            assert p == pytest.approx(row["p"], rel=0.05)
            assert eta == pytest.approx(row["partial_eta_sq"], abs=0.0005)
            assert found[4] == ("significant" if row["p"] < 0.05 else "not significant")


def test_anova_tables_highlight_exactly_the_interaction_row(report):
    anova_tables = [t for t in report.parts.tables if t[0][1][:2] == ["term", "sum of squares"]]
    assert len(anova_tables) == len(METRICS)
    for table in anova_tables:
        assert [cells[0] for cls, cells in table if cls == "highlight"] == ["theta:dataset"]


def test_the_anova_says_its_type_of_sums_of_squares_in_the_summary_and_beside_each_table(report):
    heading = "ANOVA (Type II sums of squares, sum contrasts)"
    assert f"Is there a θ × dataset interaction? {heading} on the per-cell means" in report.html
    for metric in METRICS:
        assert f"{heading} of {metric}: balanced, 2 observations per cell" in report.html


def test_a_cube_without_replicates_gets_a_report_that_says_once_what_was_skipped(tmp_path):
    cube = synthetic_cube().isel(seed=[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tables = analyze_cube(cube)
        html = write_report(cube, tables, tmp_path).read_text(encoding="utf-8")
    parts = PageParts(html)

    assert html.count("; each needs replicates") == 1 and "Skipped: ANOVA, mixed model, Tukey HSD" in html
    assert not {f"analysis-{name}" for name in NEEDS_REPLICATES} & parts.ids
    assert {"analysis-periodicity", "analysis-covariate"} <= parts.ids
    assert not parts.readings and "sums of squares" not in html and "No ANOVA table was given" not in html


def _relative_luminance(rgb: tuple[float, float, float]) -> float:
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    """The WCAG contrast ratio of two colours; 4.5 is the least it asks of body text."""
    high, low = sorted([_relative_luminance(a), _relative_luminance(b)], reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_the_not_run_label_stays_readable_on_a_black_and_white_image(report):
    cube = report.cube.copy(deep=True)
    cube[EXAMPLE_IMAGE][:] = np.indices((cube.sizes["y"], cube.sizes["x"])).sum(axis=0) % 2  # a checkerboard
    cube[SALIENCY_EXAMPLE][:] = np.nan
    cube[WALL_TIME][:] = np.nan
    figure = saliency_gallery(cube)
    png_bytes(figure)  # draws it, as the report does

    labels = [text for ax in figure.axes for text in ax.texts if text.get_text() == "not run"]
    assert len(labels) == cube.sizes["dataset"] * cube.sizes["theta"]
    for label in labels:
        box = label.get_bbox_patch()
        assert box is not None, "the label is drawn straight onto the image"
        *face, alpha = to_rgba(box.get_facecolor())
        # Whatever lies under the box, from black to white, the ink must stand out from it.
        for image in [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0)]:
            under_box = tuple(alpha * f + (1 - alpha) * i for f, i in zip(face, image, strict=True))
            assert _contrast(to_rgb(label.get_color()), under_box) >= 4.5, image


def test_a_further_analysis_table_is_shown_under_its_heading(report):
    assert "Periodicity of metric(θ)" in report.html
    assert report.parts.table_headed("metric", "dataset") == [["dice", "shapes", "90", "0.1235"]]


def test_a_further_table_with_terms_highlights_the_interaction_row(report):
    (mixed,) = [t for t in report.parts.tables if t[0][1] == ["metric", "term", "chi2"]]
    assert [(cls, cells) for cls, cells in mixed[1:]] == [
        ("", ["dice", "theta", "1.5"]),
        ("highlight", ["dice", "theta:dataset", "30.25"]),
    ]


def test_wall_time_per_dataset_agrees_with_the_cube(report):
    rows = {cells[0]: cells for cells in report.parts.table_headed("dataset", "cells")}
    for dataset in report.cube["dataset"].values:
        seconds = report.cube["wall_time_s"].sel(dataset=dataset).values.ravel()
        assert rows[dataset][1:5] == [
            str(seconds.size),
            f"{seconds.sum():.1f}",
            f"{np.median(seconds):.2f}",
            f"{seconds.max():.2f}",
        ]


def test_suite_text_is_escaped_not_interpreted(report):
    assert "Angles &amp; &lt;b&gt;masks&lt;/b&gt;" in report.html
    assert "<b>masks</b>" not in report.html
    assert "name: tiny" in report.html


def test_a_sweep_report_names_the_swept_parameter_by_its_path_in_the_grid(strength_report):
    grid = "2 datasets × 1 angle θ × 2 seeds × 1 method × 1 encoder × 3 values of augmentation.params.strength = 12 cells"
    assert grid in strength_report.html


def test_at_a_single_angle_each_metric_is_plotted_against_the_swept_parameter(strength_report):
    alts = {img["alt"] for img in strength_report.parts.images}
    assert {f"{m} against {SWEEP['path']} per dataset" for m in ["dice", "final_loss"]} <= alts
    assert "On the circle" not in strength_report.html

    cube = strength_report.cube
    band = seed_band(cube, "dice", "strength")
    figure = sweep_figure(band, "dice", "strength", SWEEP["path"])
    (axes,) = figure.axes
    assert axes.get_xlabel() == SWEEP["path"]
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["shapes", "brain"]
    for line, dataset in zip(axes.lines, ["shapes", "brain"], strict=True):
        x, means = line.get_data()
        assert list(x) == STRENGTHS
        expected = cube["dice"].sel(dataset=dataset).mean("image").mean(["theta", "seed", "method", "encoder"])
        assert list(means) == pytest.approx(expected.values)


def test_a_sweep_report_reads_and_highlights_the_strength_interaction(strength_report):
    assert "Is there a strength × dataset interaction? ANOVA" in strength_report.html
    for metric in ["dice", "final_loss"]:
        row = strength_report.anova.query("metric == @metric and term == 'strength:dataset'").iloc[0]
        for text in strength_report.parts.readings[metric]:
            found = re.fullmatch(
                r"strength × dataset interaction: F=(\S+), p=\S+, partial η²=\S+ ((?:not )?significant) at 0\.05", text
            )
            assert found, text
            assert float(found[1]) == pytest.approx(row["F"], abs=0.005)
            assert found[2] == ("significant" if row["p"] < 0.05 else "not significant")
    assert strength_report.parts.readings["dice"][0].endswith(" significant at 0.05")  # planted in _sweep_cube
    anova_tables = [t for t in strength_report.parts.tables if t[0][1][:2] == ["term", "sum of squares"]]
    for table in anova_tables:
        assert [cells[0] for cls, cells in table if cls == "highlight"] == ["strength:dataset"]


def test_with_theta_and_a_sweep_both_interactions_are_read_and_each_strength_is_a_line_of_its_own(tmp_path):
    cube = _sweep_cube()
    html = write_report(cube, {"anova": anova_table(cube)}, tmp_path).read_text(encoding="utf-8")
    parts = PageParts(html)

    assert "Is there a θ × dataset or a strength × dataset interaction? ANOVA" in html
    assert [text.split(":")[0] for text in parts.readings["dice"]] == [
        "θ × dataset interaction",
        "strength × dataset interaction",
    ] * 2
    anova_tables = [t for t in parts.tables if t[0][1][:2] == ["term", "sum of squares"]]
    assert [cells[0] for cls, cells in anova_tables[0] if cls == "highlight"] == ["theta:dataset", "strength:dataset"]
    legend = interaction_figure(seed_band(cube, "dice"), "dice").legends[0]
    assert [text.get_text() for text in legend.get_texts()] == [
        f"{dataset} / strength={s}" for dataset in ["shapes", "brain"] for s in STRENGTHS
    ]


@pytest.mark.chromium
def test_chromium_renders_the_report_with_every_image(report, tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    screenshot = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile-shot'}",
            f"--screenshot={screenshot}",
            "--window-size=1400,4000",
            report.path.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    print(f"screenshot: {screenshot}")
    with Image.open(screenshot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 24)
    assert len(colours) > 1000, "the screenshot is (nearly) one flat colour"
    assert rendered_images(report.html, tmp_path) == f"images={len(FIGURE_FILES)} broken=0"


@pytest.mark.chromium
def test_chromium_renders_the_sweep_report_with_its_strength_plots(strength_report, tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    figures = {p.name for p in (strength_report.path.parent / "figures").iterdir()}
    assert {"interaction_dice.png", "interaction_final_loss.png"} <= figures
    assert rendered_images(strength_report.html, tmp_path) == f"images={len(figures)} broken=0"


def test_report_compare_adds_a_section_comparing_the_run_with_another(report, tmp_path):
    # The fixture's run, and a copy of it with every Dice raised by 0.1: the section says B - A = -0.1.
    run_dir = report.path.parent.parent / "runs" / "tiny"
    other = tmp_path / "other"
    other.mkdir()
    raised = open_cube(run_dir).load()
    raised["dice"] = raised["dice"] + 0.1
    raised.to_netcdf(other / "results.nc", engine="h5netcdf")
    done = subprocess.run(
        ["benchsuite", "report", str(run_dir), "--compare", str(other)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    page = PageParts((Path(run_dir) / "report.html").read_text(encoding="utf-8"))
    assert "analysis-compare" in page.ids
    rows = {cells[1]: cells for cells in page.table_headed("", "metric")}
    mark, _, _, _, _, difference, *_, verdict = rows["dice"]
    assert float(difference) == pytest.approx(-0.1, abs=1e-6)  # B (this run) - A (the other)
    # The same difference in every seed: significant, and worse, since a higher Dice is better.
    assert (mark, verdict) == ("-", "worse")
    html = (Path(run_dir) / "report.html").read_text(encoding="utf-8")
    assert f"A = {other}" in html and f"B = {run_dir}" in html and "+/-: B larger/smaller than A" in html


@pytest.fixture
def analysed_run(tmp_path: Path) -> Path:
    """A run directory whose tables `benchsuite analyze` wrote, with the ANOVA's first F changed to a mark."""
    synthetic_cube().to_netcdf(tmp_path / CUBE_NAME, engine=ENGINE)
    done = subprocess.run(["benchsuite", "analyze", str(tmp_path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    anova = pd.read_csv(tmp_path / "anova.csv")
    anova.loc[0, "F"] = 12345.0  # a value no analysis of this cube gives, so it shows whether the files were read
    anova.to_csv(tmp_path / "anova.csv", index=False)
    return tmp_path


def test_the_report_reads_the_tables_analyze_wrote_instead_of_analysing_again(analysed_run):
    assert analysis_tables(analysed_run, open_cube(analysed_run))["anova"].loc[0, "F"] == 12345.0
    done = subprocess.run(["benchsuite", "report", str(analysed_run)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "12345" in (analysed_run / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("change", ["cube rewritten", "table missing", "other type"])
def test_the_report_analyses_again_and_writes_the_tables_when_they_do_not_match_the_cube(analysed_run, change):
    typ = 3 if change == "other type" else 2
    if change == "cube rewritten":
        open_cube(analysed_run).to_netcdf(analysed_run / CUBE_NAME, engine=ENGINE)  # now newer than the tables
    elif change == "table missing":
        (analysed_run / "covariate.csv").unlink()
    tables = analysis_tables(analysed_run, open_cube(analysed_run), typ=typ)
    assert tables["anova"].loc[0, "F"] != 12345.0 and tables["anova"].attrs[SS_TYPE] == typ
    # Written once: the next report reads them.
    assert read_tables(analysed_run)["anova"].loc[0, "F"] == tables["anova"].loc[0, "F"]
    assert json.loads((analysed_run / SUMMARY_NAME).read_text())["anova_type"] == typ


def test_an_empty_table_says_on_the_page_why_its_analysis_did_not_run(tmp_path):
    _uneven_cube().to_netcdf(tmp_path / CUBE_NAME, engine=ENGINE)
    analyzed = subprocess.run(["benchsuite", "analyze", str(tmp_path)], capture_output=True, text=True, check=False)
    assert analyzed.returncode == 0 and "do not cover the circle evenly" in analyzed.stderr
    reported = subprocess.run(["benchsuite", "report", str(tmp_path)], capture_output=True, text=True, check=False)
    assert reported.returncode == 0, reported.stderr
    assert "do not cover the circle evenly" not in reported.stderr  # read from the files, not analysed again

    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    section = re.search(r'<section id="analysis-periodicity">(.*?)</section>', html, re.S)[1]
    assert "The table is empty. The analysis warned:" in section
    assert "periodicity analysis skipped: the 3 θ values (0, 90, 270) do not cover the circle evenly" in section


def test_a_metric_the_analysis_left_out_is_explained_under_its_table(tmp_path):
    cube = synthetic_cube()
    cube["final_loss"][:] = np.nan
    with pytest.warns(UserWarning, match="final_loss"):
        tables = analyze_cube(cube)
    html = write_report(cube, tables, tmp_path).read_text(encoding="utf-8")
    section = re.search(r'<section id="analysis-periodicity">(.*?)</section>', html, re.S)[1]
    assert "<table>" in section and "The table is empty" not in section
    assert "periodicity of metric &#39;final_loss&#39; skipped: every cell is NaN." in section


def test_a_long_table_shows_its_first_rows_and_says_where_the_rest_are(tmp_path):
    cube = synthetic_cube()
    autocorr = pd.DataFrame({"dataset": "shapes", "theta": np.arange(1000) * 0.36, "autocorr": 0.5})
    html = write_report(cube, {"orientation_autocorr": autocorr}, tmp_path).read_text(encoding="utf-8")
    (table,) = PageParts(html).tables[:1]
    assert len(table) == 1 + SHOWN_ROWS
    assert f"The first {SHOWN_ROWS} of 1,000 rows; orientation_autocorr.csv in the run directory has them all." in html


def test_the_report_draws_the_signature_similarity_when_the_analysis_has_it(tmp_path):
    cube = synthetic_cube()
    html = write_report(cube, {"signature_similarity": SIMILARITY}, tmp_path / "with").read_text(encoding="utf-8")
    assert 'id="signatures"' in html and "cosine similarity between θ-curves, per metric" in html
    assert (tmp_path / "with" / "figures" / "signature_similarity.png").is_file()
    empty = write_report(cube, {"signature_similarity": SIMILARITY.head(0)}, tmp_path / "empty").read_text(encoding="utf-8")
    assert 'id="signatures"' not in empty and 'id="analysis-signature_similarity"' in empty
    assert 'id="signatures"' not in write_report(cube, {}, tmp_path / "without").read_text(encoding="utf-8")


def test_the_report_of_a_3600_angle_curve_in_its_shape_stays_small(dense_run):
    html = (dense_run / "report.html").read_text(encoding="utf-8")
    assert len(html.encode()) < 2_000_000  # 360 angles here; the benchmark's 3,600 give 2.2 MB
    assert "2 datasets × 360 angles θ × 2 seeds × 1 method × 1 encoder = 1,440 cells, 1,440 finished." in html
    assert f"The first {SHOWN_ROWS} of 720 rows" in html  # the orientation autocorrelation: 360 angles per dataset


@pytest.mark.chromium
def test_chromium_renders_the_dense_report_with_every_image(dense_run, tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    html = (dense_run / "report.html").read_text(encoding="utf-8")
    figures = {p.name for p in (dense_run / "figures").iterdir()}
    assert rendered_images(html, tmp_path) == f"images={len(figures)} broken=0"


def test_the_summary_names_the_outcome_first_and_the_cells_whose_training_loss_reads_low(tmp_path):
    cube = synthetic_cube()
    cube.attrs["outcome"] = "final_loss"
    shares = xr.zeros_like(cube["final_loss"]).where(cube["dataset"] == "brain", 0.84375)
    cube["placeholder_negatives"] = shares.assign_attrs(role="diagnostic")
    html = write_report(cube, {"anova": anova_table(cube)}, tmp_path / "named").read_text(encoding="utf-8")
    summary = html[html.index('<section id="summary">') : html.index('<section id="interaction">')]
    assert "The outcome is final_loss, as the suite names it" in summary
    assert "8 of 16 cells ended training with 84% to 84% of their negatives still random placeholders" in summary
    assert summary.index("<strong>final_loss</strong> (the outcome)") < summary.index("<strong>dice</strong>")
    assert "final_loss (the outcome)</h3>" in html

    plain = write_report(synthetic_cube(), {"anova": anova_table(synthetic_cube())}, tmp_path / "plain").read_text()
    assert "The suite names no outcome" in plain and "placeholders" not in plain and "(the outcome)" not in plain
