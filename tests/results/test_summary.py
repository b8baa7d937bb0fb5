"""The analysis of a run directory: every table, summary.json, the terminal text, and the cube as its only input."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from click.testing import CliRunner

from benchsuite.analysis.anova import SS_TYPE
from benchsuite.analysis.summary import (
    ABOUT_THETA,
    NEEDS_REPLICATES,
    NO_REPLICATES,
    SKIPPED,
    SUMMARY_NAME,
    TABLE_NAMES,
    WARNINGS,
    analyze_cube,
    read_tables,
    skipped_analyses,
    skipped_note,
    write_tables,
)
from benchsuite.analysis.terminal import analyze_run, format_summary
from benchsuite.cli import cli
from benchsuite.results.cube import CUBE_NAME, ENGINE
from benchsuite.results.errors import BenchsuiteError
from benchsuite.results.synthetic import synthetic_cube
from tests.results.test_anova import STRENGTHS, SWEEP

GRID = ("dataset", "theta", "seed", "method", "encoder")
THETAS = [0.0, 90.0, 180.0, 270.0]
BINS = 36
FILES = [*(f"{name}.csv" for name in TABLE_NAMES), SUMMARY_NAME]


def _cube() -> xr.Dataset:
    """A small cube as the store writes it: 2 datasets x 4 angles x 2 seeds, per-image and cell metrics, histograms.

    In ``shapes`` dice is higher at 0° and 180° (a 180° period); in ``brain`` θ does nothing.
    """
    rng = np.random.default_rng(3)
    shape = (2, len(THETAS), 2, 1, 1)
    effect = np.array([[0.2, 0.0, 0.2, 0.0], [0.0, 0.0, 0.0, 0.0]])
    image = rng.normal(0.0, 0.05, size=(2, 1, 1, 1, 1, 5))
    dice = 0.5 + effect[:, :, None, None, None, None] + image + rng.normal(0.0, 0.02, size=(*shape, 5))
    centres = np.deg2rad((np.arange(BINS) + 0.5) * 360 / BINS)
    histograms = np.stack([1 + 0.8 * np.cos(2 * centres), 1 + 0.2 * np.cos(centres)])
    return xr.Dataset(
        {
            "dice": ((*GRID, "image"), dice, {"role": "metric", "scope": "image"}),
            "final_loss": (GRID, 2.0 + rng.normal(0.0, 0.1, size=shape), {"role": "metric", "scope": "cell"}),
            "ssp_loss": ((*GRID, "epoch"), np.ones((*shape, 3)), {"role": "curve"}),
            "orientation_hist": (
                ("dataset", "orientation"),
                histograms / histograms.sum(axis=1, keepdims=True),
                {"role": "covariate"},
            ),
        },
        coords={
            "dataset": ["shapes", "brain"],
            "theta": THETAS,
            "seed": [0, 1],
            "method": ["moco_v2"],
            "encoder": ["small_cnn"],
            "image": np.arange(5),
            "epoch": np.arange(3),
            "orientation": (np.arange(BINS) + 0.5) * 360 / BINS,
        },
        attrs={"suite_name": "tiny"},
    )


def _swept(cube: xr.Dataset, strengths: list[float]) -> xr.Dataset:
    """``cube`` at each of ``strengths``, as the store writes a sweep: the dim after the grid's, its path in attrs."""
    per_cell = [name for name, variable in cube.data_vars.items() if "seed" in variable.dims]
    swept = xr.concat([cube] * len(strengths), pd.Index(strengths, name="strength"), data_vars=per_cell)
    swept = swept.transpose(*GRID, "strength", ...)
    swept["strength"].attrs.update(SWEEP)
    return swept


def _sweep_cube() -> xr.Dataset:
    """:func:`_cube` swept over 3 strengths; each strength is a training of its own, with its own noise.

    Dice rises with strength in ``shapes`` and not in ``brain``, a strength x dataset interaction.
    """
    rng = np.random.default_rng(5)
    cube = _swept(_cube(), STRENGTHS)
    rises = 0.2 * xr.DataArray(STRENGTHS, coords={"strength": STRENGTHS}) * (cube["dataset"] == "shapes")
    for name, sd in [("dice", 0.02), ("final_loss", 0.1)]:
        swept = cube[name] + rises + rng.normal(0.0, sd, size=cube[name].shape)
        cube[name][:] = swept.transpose(*cube[name].dims).values
    return cube


@pytest.fixture(scope="module")
def sweep_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory of :func:`_sweep_cube`, analysed once for the module."""
    directory = tmp_path_factory.mktemp("sweep")
    _sweep_cube().to_netcdf(directory / CUBE_NAME, engine=ENGINE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a sweep makes no analysis fail
        (directory / "terminal.txt").write_text(analyze_run(directory))
    return directory


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory holding the cube and everything ``analyze_run`` wrote, analysed once for the module."""
    directory = tmp_path_factory.mktemp("run")
    _cube().to_netcdf(directory / CUBE_NAME, engine=ENGINE)
    (directory / "terminal.txt").write_text(analyze_run(directory))
    return directory


def test_analyze_run_writes_every_table_and_the_summary_beside_the_cube(run_dir: Path) -> None:
    for name in FILES:
        assert (run_dir / name).is_file(), name
    assert set(pd.read_csv(run_dir / "mixed.csv")["metric"]) == {"dice"}
    assert set(pd.read_csv(run_dir / "periodicity.csv")["metric"]) == {"dice", "final_loss"}


def test_analysing_a_copy_of_the_cube_alone_reproduces_every_file(run_dir: Path, tmp_path: Path) -> None:
    shutil.copy(run_dir / CUBE_NAME, tmp_path / CUBE_NAME)
    result = CliRunner().invoke(cli, ["analyze", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in FILES:
        assert (tmp_path / name).read_text() == (run_dir / name).read_text(), name
    assert result.output.strip() == (run_dir / "terminal.txt").read_text().strip()


def test_summary_json_holds_the_design_and_each_metrics_interaction_and_dominant_periods(run_dir: Path) -> None:
    summary = json.loads((run_dir / SUMMARY_NAME).read_text())
    anova = pd.read_csv(run_dir / "anova.csv").set_index(["metric", "term"])

    assert summary["design"]["balanced"] is True
    assert summary["design"]["n_per_cell"] == "2"
    assert summary["design"]["grid"]["theta"] == THETAS
    dice = summary["metrics"]["dice"]
    for key in ["F", "p", "partial_eta_sq"]:
        assert dice["interaction"][key] == pytest.approx(anova.at[("dice", "theta:dataset"), key], rel=1e-12)
    periods = {row["dataset"]: row["dominant_period"] for row in dice["dominant_periods"]}
    assert periods["shapes"] == 180.0
    assert dice["mixed_interaction"]["df"] == 3
    assert summary["metrics"]["final_loss"]["mixed_interaction"] is None


def test_summary_json_holds_every_table_as_records_but_the_signature_pairs(run_dir: Path) -> None:
    tables = json.loads((run_dir / SUMMARY_NAME).read_text())["tables"]
    held = [name for name in TABLE_NAMES if name != "signature_similarity"]  # pairs grow as the square of the curves
    assert list(tables) == held
    for name in held:
        csv = pd.read_csv(run_dir / f"{name}.csv")
        assert len(tables[name]) == len(csv), name
        if len(csv):  # the prediction is skipped: this cube has one encoder-method combination
            assert list(tables[name][0]) == list(csv.columns), name


def test_terminal_text_is_the_anova_then_a_block_per_metric(run_dir: Path) -> None:
    text = (run_dir / "terminal.txt").read_text()
    heading = "ANOVA (Type II sums of squares, sum contrasts) on per-cell means"
    # One encoder and one method: the signature prediction has nothing to train on, and says so first.
    assert text.startswith("Skipped: signature prediction; each needs the curves of two or more encoder-method")
    assert f"\n\n{heading}\n\ndice: balanced, 2 observations per cell" in text
    dice_block = text.split("\n\ndice:\n")[1].split("\n\n")[0]
    assert "mixed model, theta:dataset: χ²(3)" in dice_block
    assert "shapes 180° (100%)" in dice_block.split("dominant period: ")[1]
    assert "orientation autocorr: coef" in dice_block
    assert "\n\nfinal_loss:\n  dominant period:" in text


def test_analyze_cube_returns_every_table_by_name() -> None:
    tables = analyze_cube(_cube())
    assert list(tables) == list(TABLE_NAMES)
    prediction = tables.pop("signature_prediction")  # one encoder-method combination: nothing to train on
    assert prediction.empty and "encoder-method combinations" in prediction.attrs[SKIPPED]
    assert all(isinstance(table, pd.DataFrame) and len(table) for table in tables.values())


def test_an_analysis_the_cube_cannot_support_is_skipped_with_a_warning_and_the_others_still_run() -> None:
    with pytest.warns(UserWarning, match="orientation_autocorr analysis skipped: the cube has no 'orientation_hist'"):
        tables = analyze_cube(_cube().drop_vars("orientation_hist"))
    assert tables["orientation_autocorr"].empty and tables["covariate"].empty
    assert list(tables["covariate"].columns)[:2] == ["metric", "coef"]
    assert len(tables["anova"]) and len(tables["mixed"]) and len(tables["periodicity"])


def test_a_metric_that_fails_is_named_in_each_analysis_and_the_others_are_kept() -> None:
    cube = _cube()
    cube["final_loss"][:] = np.nan
    with pytest.warns(UserWarning, match="skipped") as record:
        tables = analyze_cube(cube)
    messages = [str(w.message) for w in record]
    for analysis in ["ANOVA", "periodicity", "orientation covariate"]:
        assert any(m.startswith(f"{analysis} of metric 'final_loss' skipped") for m in messages), analysis
    for name in ["anova", "periodicity", "covariate"]:
        assert set(tables[name]["metric"]) == {"dice"}, name


@pytest.mark.parametrize("typ", ["2", "3"])
def test_the_printed_anova_names_its_type_of_sums_of_squares(run_dir: Path, tmp_path: Path, typ: str) -> None:
    shutil.copy(run_dir / CUBE_NAME, tmp_path / CUBE_NAME)
    result = CliRunner().invoke(cli, ["analyze", str(tmp_path), "--type", typ])
    assert result.exit_code == 0, result.output
    roman = {"2": "II", "3": "III"}[typ]
    assert f"\n\nANOVA (Type {roman} sums of squares, sum contrasts) on per-cell means\n" in result.output
    assert json.loads((tmp_path / SUMMARY_NAME).read_text())["anova_type"] == int(typ)


def _one_seed_cube() -> xr.Dataset:
    return _cube().isel(seed=[0])


def _second_seed_never_finished_cube() -> xr.Dataset:
    cube = _cube()
    for name in ["dice", "final_loss"]:
        cube[name].loc[{"seed": 1}] = np.nan
    return cube


@pytest.mark.parametrize("make_cube", [_one_seed_cube, _second_seed_never_finished_cube])
def test_without_replicates_the_analyses_that_need_them_are_skipped_quietly_and_named_once(make_cube) -> None:
    cube = make_cube()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning, statsmodels or "skipped" warning reaches the user
        tables = analyze_cube(cube, typ=3)
        text = format_summary(tables)

    assert text.startswith("Skipped: ANOVA, mixed model, Tukey HSD, curve test; each needs replicates")
    assert text.count("needs replicates") == 1
    assert not re.search(r"\bnan\b", text, re.IGNORECASE) and "No metric" not in text and "sums of squares" not in text
    for name in NEEDS_REPLICATES:
        assert tables[name].empty and tables[name].attrs[SKIPPED] == NO_REPLICATES, name
    for name in ["periodicity", "orientation_autocorr", "covariate"]:
        assert len(tables[name]) and SKIPPED not in tables[name].attrs, name
    assert "\n\ndice:\n  dominant period:" in text and "orientation autocorr: coef" in text


def test_without_replicates_the_skipped_tables_are_written_as_headers_and_summary_json_says_why(tmp_path: Path) -> None:
    _one_seed_cube().to_netcdf(tmp_path / CUBE_NAME, engine=ENGINE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        analyze_run(tmp_path)

    summary = json.loads((tmp_path / SUMMARY_NAME).read_text())
    skipped = summary["skipped"]
    assert skipped.pop("signature_prediction").startswith("needs the curves of two or more encoder-method")
    assert skipped == dict.fromkeys(NEEDS_REPLICATES, NO_REPLICATES)
    assert summary["anova_type"] is None and summary["design"]["n_per_cell"] is None
    for name in TABLE_NAMES:
        table = pd.read_csv(tmp_path / f"{name}.csv")
        assert table.empty == (name in [*NEEDS_REPLICATES, "signature_prediction"]), name
    assert list(pd.read_csv(tmp_path / "anova.csv").columns)[:2] == ["metric", "term"]


def test_summary_json_reports_every_study_interaction_and_names_the_swept_parameter(sweep_run_dir: Path) -> None:
    summary = json.loads((sweep_run_dir / SUMMARY_NAME).read_text())
    anova = pd.read_csv(sweep_run_dir / "anova.csv").set_index(["metric", "term"])

    assert summary["design"]["grid"]["strength"] == STRENGTHS
    assert summary["design"]["swept"] == {"strength": "augmentation.params.strength"}
    dice = summary["metrics"]["dice"]
    assert list(dice["interactions"]) == ["theta:dataset", "strength:dataset"]
    strength = dice["interactions"]["strength:dataset"]
    assert strength["anova"]["p"] == pytest.approx(anova.at[("dice", "strength:dataset"), "p"], rel=1e-12)
    assert strength["anova"]["p"] < 0.01 and strength["mixed"]["p"] < 0.01
    assert strength["mixed"]["df"] == 2
    # The θ x dataset keys of the first format are the same numbers.
    assert dice["interaction"] == dice["interactions"]["theta:dataset"]["anova"]
    assert dice["mixed_interaction"] == dice["interactions"]["theta:dataset"]["mixed"]
    assert summary["metrics"]["final_loss"]["interactions"]["strength:dataset"]["mixed"] is None
    assert {(row["dataset"], row["strength"]) for row in dice["dominant_periods"]} == {
        (dataset, s) for dataset in ["shapes", "brain"] for s in STRENGTHS
    }


def test_the_swept_run_has_every_table_with_a_column_for_the_swept_parameter(sweep_run_dir: Path) -> None:
    for name in ["periodicity", "tukey"]:
        table = pd.read_csv(sweep_run_dir / f"{name}.csv")
        assert sorted(table["strength"].unique()) == STRENGTHS, name
    assert len(pd.read_csv(sweep_run_dir / "covariate.csv")) == 2


def test_terminal_text_names_each_study_interaction_and_the_swept_value_of_each_series(sweep_run_dir: Path) -> None:
    text = (sweep_run_dir / "terminal.txt").read_text()
    dice_block = text.split("\n\ndice:\n")[1].split("\n\n")[0]
    assert "mixed model, theta:dataset: χ²(3)" in dice_block
    assert "mixed model, strength:dataset: χ²(2)" in dice_block
    assert "shapes/strength=0.25 180°" in dice_block.split("dominant period: ")[1]
    assert "strength:dataset" in text.split("\n\ndice:\n")[0]  # the ANOVA's term


def test_a_sweep_at_a_single_angle_skips_the_analyses_of_theta_quietly_says_so_once_and_runs_the_rest() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tables = analyze_cube(_sweep_cube().isel(theta=[0]))
    assert set(skipped_analyses(tables)) == set(ABOUT_THETA)
    note = skipped_note(tables)
    assert note.count("Skipped:") == 1
    assert (
        "periodicity, Tukey HSD, orientation covariate, curve test, signature similarity, signature prediction; "
        "each is about how" in note
    )
    assert format_summary(tables, ("strength:dataset",)).count("Skipped:") == 1
    assert list(tables["anova"].query("metric == 'dice'")["term"]) == ["strength", "dataset", "strength:dataset", "Residual"]
    assert "strength:dataset" in set(tables["mixed"]["term"])


def test_a_swept_parameter_at_a_single_level_changes_no_analysis() -> None:
    plain = analyze_cube(_cube())
    with_sweep = analyze_cube(_swept(_cube(), [1.0]))
    for name in TABLE_NAMES:
        pd.testing.assert_frame_equal(with_sweep[name].drop(columns="strength", errors="ignore"), plain[name], obj=name)


def test_analyze_run_without_a_cube_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(BenchsuiteError, match=r"has no results\.nc; run a suite first"):
        analyze_run(tmp_path)


def test_the_dominant_periods_of_many_series_are_counted_rather_than_listed() -> None:
    cube = synthetic_cube(datasets=4, thetas=36, seeds=1, encoders=4, images=2)  # 16 series per metric
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = format_summary(analyze_cube(cube))
    line = next(line for line in text.splitlines() if "dominant period" in line)
    assert line.startswith("  dominant period of 16 series: 90° in 4, 180° in 4, 360° in 4")  # set0 cos 4θ, set2 2θ, set3 θ


def _uneven_cube() -> xr.Dataset:
    """:func:`synthetic_cube` at θ = 0, 90, 270: periodicity cannot run on it and says why in a warning."""
    return _cube().isel(theta=[0, 1, 3])


def test_read_tables_gives_back_what_write_tables_wrote_with_the_reasons_tables_are_empty(tmp_path):
    cube = _uneven_cube().assign_coords(dataset=["001", "NA"])  # labels that a CSV reader would take for numbers or NaN
    with pytest.warns(UserWarning, match="do not cover the circle evenly"):
        tables = analyze_cube(cube.isel(seed=[0]))  # one seed: the ANOVA, mixed model and Tukey are skipped
    write_tables(cube, tables, tmp_path)
    back = read_tables(tmp_path)

    assert list(back) == list(TABLE_NAMES)
    for name, table in tables.items():
        assert back[name].attrs == table.attrs, name
        assert list(back[name].columns) == list(table.columns), name
        if len(table):
            pd.testing.assert_frame_equal(back[name], table.reset_index(drop=True), check_dtype=False)
    assert set(back["orientation_autocorr"]["dataset"]) == {"001", "NA"}
    assert back["anova"].attrs[SKIPPED].startswith("needs replicates")
    assert "do not cover the circle evenly" in back["periodicity"].attrs[WARNINGS][0]


def test_read_tables_restores_the_type_of_sums_of_squares_and_names_a_missing_file(tmp_path):
    cube = _cube()
    write_tables(cube, analyze_cube(cube, typ=3), tmp_path)
    assert read_tables(tmp_path)["anova"].attrs[SS_TYPE] == 3
    (tmp_path / "tukey.csv").unlink()
    with pytest.raises(BenchsuiteError, match=r"tukey\.csv is missing; write the tables with benchsuite analyze"):
        read_tables(tmp_path)
