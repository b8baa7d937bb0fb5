"""θ as a periodic curve: the harmonic regression's F-tests and K, against statsmodels fitted directly."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from click.testing import CliRunner
from scipy import stats
from statsmodels.stats.anova import anova_lm

from benchsuite.analysis.anova import anova_heading, anova_table, format_anova, varying_factors
from benchsuite.analysis.harmonic import harmonic_anova, harmonic_basis, harmonic_table
from benchsuite.analysis.mixed import balanced_harmonic_fit, fit_mixed, image_values, mixed_table
from benchsuite.analysis.settings import DENSE_ABOVE, HARMONICS, HARMONICS_CHOSEN, AnalysisOptions, analysis_options, study_terms
from benchsuite.analysis.summary import SUMMARY_NAME, analyze_cube
from benchsuite.cli import cli
from benchsuite.engine.suite import AnalysisSettings
from benchsuite.results.cube import CUBE_NAME, ENGINE
from benchsuite.results.cube import factors as cube_factors
from benchsuite.results.errors import BenchsuiteError
from benchsuite.results.synthetic import synthetic_cube

THETAS = np.arange(0.0, 360.0, 10.0)


def _frame(shapes: dict[str, int], seeds: int = 2, noise: float = 0.05, encoders: int = 1, seed: int = 1) -> pd.DataFrame:
    """Cell means of datasets whose curve is 0.5 + 0.1 cos(kθ) (k = 0: flat), with an encoder offset and noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for dataset, k in shapes.items():
        for encoder in range(encoders):
            for replicate in range(seeds):
                values = 0.5 + 0.1 * np.cos(np.deg2rad(k * THETAS)) + 0.05 * encoder + rng.normal(0, noise, len(THETAS))
                rows += [
                    {"dataset": dataset, "encoder": f"e{encoder}", "seed": replicate, "theta": t, "value": v}
                    for t, v in zip(THETAS, values, strict=True)
                ]
    return pd.DataFrame(rows)


def _with_harmonics(frame: pd.DataFrame, k: int) -> tuple[pd.DataFrame, str]:
    columns = [f"h{i}" for i in range(2 * k)]
    basis = pd.DataFrame(harmonic_basis(frame["theta"].to_numpy(), k), columns=columns, index=frame.index)
    return pd.concat([frame, basis], axis=1), " + ".join(columns)


def test_the_basis_is_sin_and_cos_of_each_harmonic_in_order() -> None:
    radians = np.deg2rad(THETAS)
    expected = np.column_stack([np.sin(radians), np.cos(radians), np.sin(2 * radians), np.cos(2 * radians)])
    np.testing.assert_allclose(harmonic_basis(THETAS, 2), expected, atol=1e-12)


def test_f_tests_equal_statsmodels_nested_models_with_the_dataset_alone() -> None:
    frame = _frame({"a": 4, "b": 0, "c": 2})
    fit = harmonic_anova(frame, ["dataset"], 4)
    data, terms = _with_harmonics(frame, 4)
    flat = smf.ols("value ~ C(dataset, Sum)", data).fit()
    shared = smf.ols(f"value ~ C(dataset, Sum) + {terms}", data).fit()
    full = smf.ols(f"value ~ C(dataset, Sum) * ({terms})", data).fit()
    reference = anova_lm(flat, shared, full)  # every F over the full model's residual mean square
    for row, term in ((1, "harmonics"), (2, "harmonics:dataset")):
        ours = fit.terms.loc[term]
        assert ours["sum_sq"] == pytest.approx(reference["ss_diff"].iloc[row], rel=1e-9)
        assert ours["df"] == reference["df_diff"].iloc[row]
        assert ours["F"] == pytest.approx(reference["F"].iloc[row], rel=1e-9)
        assert ours["p"] == pytest.approx(stats.f.sf(reference["F"].iloc[row], ours["df"], full.df_resid), rel=1e-6)
    assert fit.terms.loc["Residual", "sum_sq"] == pytest.approx(full.ssr, rel=1e-9)
    assert fit.terms.loc["Residual", "df"] == full.df_resid


def test_with_two_factors_each_test_asks_whether_the_curve_depends_on_that_factor() -> None:
    frame = _frame({"a": 4, "b": 0}, encoders=2)
    fit = harmonic_anova(frame, ["dataset", "encoder"], 4)
    data, terms = _with_harmonics(frame, 4)
    full = smf.ols(f"value ~ C(dataset, Sum) * C(encoder, Sum) * ({terms})", data).fit()
    for factor, other in (("dataset", "encoder"), ("encoder", "dataset")):
        restricted = smf.ols(f"value ~ C(dataset, Sum) * C(encoder, Sum) + C({other}, Sum) * ({terms})", data).fit()
        reference = anova_lm(restricted, full)
        assert fit.terms.loc[f"harmonics:{factor}", "F"] == pytest.approx(reference["F"].iloc[1], rel=1e-9)
        assert fit.terms.loc[f"harmonics:{factor}", "df"] == reference["df_diff"].iloc[1]
    assert fit.terms.loc["harmonics:dataset", "p"] < 1e-6  # a cos 4θ and a flat dataset
    assert fit.terms.loc["harmonics:encoder", "p"] > 0.01  # the encoders shift the level, not the curve


def test_missing_angles_are_left_out_as_statsmodels_leaves_out_missing_rows() -> None:
    frame = _frame({"a": 4, "b": 0})
    frame = frame[~((frame["dataset"] == "a") & (frame["theta"] == 0.0))].reset_index(drop=True)
    fit = harmonic_anova(frame, ["dataset"], 3)
    data, terms = _with_harmonics(frame, 3)
    shared = smf.ols(f"value ~ C(dataset, Sum) + {terms}", data).fit()
    full = smf.ols(f"value ~ C(dataset, Sum) * ({terms})", data).fit()
    assert fit.terms.loc["harmonics:dataset", "F"] == pytest.approx(anova_lm(shared, full)["F"].iloc[1], rel=1e-9)


def test_auto_chooses_the_k_whose_full_model_statsmodels_gives_the_smallest_aic() -> None:
    frame = _frame({"a": 4, "b": 0, "c": 2}, noise=0.03)
    data, _ = _with_harmonics(frame, 8)
    aic = [
        smf.ols(f"value ~ C(dataset, Sum) * ({' + '.join(f'h{i}' for i in range(2 * k))})", data).fit().aic for k in range(1, 9)
    ]
    assert harmonic_anova(frame, ["dataset"], "auto").harmonics == 1 + int(np.argmin(aic)) == 4


def test_too_many_harmonics_for_the_angles_skip_the_metric_with_the_reason() -> None:
    cube = synthetic_cube(datasets=2, thetas=40, seeds=2, images=2)
    with pytest.warns(UserWarning, match="angles cannot fit 25 harmonic"):
        table = harmonic_table(cube, 25)
    assert table.empty


def test_the_table_finds_a_cos_4_theta_dataset_apart_from_a_flat_one() -> None:
    cube = synthetic_cube(datasets=2, thetas=72, seeds=2, images=4)  # set0 follows cos 4θ, set1 is flat
    table = harmonic_table(cube)
    rows = table[table["term"] == "harmonics:dataset"]
    assert (rows["p"] < 1e-6).all()
    # AIC keeps the planted harmonic; it may add one or two that fit noise, as AIC does on small samples.
    assert set(table.attrs[HARMONICS_CHOSEN]) == {"auroc", "mass_in_mask", "pointing_game", "final_loss"}
    assert all(4 <= k <= 8 for k in table.attrs[HARMONICS_CHOSEN].values())


def test_the_table_finds_no_interaction_between_datasets_from_one_generator() -> None:
    frame = _frame({"a": 4, "b": 4}, seed=7)
    fit = harmonic_anova(frame, ["dataset"], "auto")
    assert fit.terms.loc["harmonics:dataset", "p"] > 0.05
    assert fit.terms.loc["harmonics", "p"] < 1e-6


def test_a_harmonic_table_is_named_as_one_with_each_metrics_k() -> None:
    table = harmonic_table(synthetic_cube(datasets=2, thetas=72, seeds=2, images=2), 3)
    assert anova_heading(table).startswith("Harmonic regression of θ")
    assert "auroc: balanced, 2 observations per cell, K = 3 harmonics" in format_anova(table)


def test_the_defaults_are_the_suites() -> None:
    settings = AnalysisSettings()
    assert (settings.dense_above, settings.harmonics) == (DENSE_ABOVE, HARMONICS)


def test_options_come_from_the_cube_and_an_override_wins() -> None:
    cube = synthetic_cube(datasets=2, thetas=12, seeds=2, images=2)
    assert analysis_options(cube) == AnalysisOptions()
    cube.attrs["analysis"] = json.dumps({"dense_above": 8, "harmonics": 2})
    assert analysis_options(cube) == AnalysisOptions(8, 2)
    assert analysis_options(cube, "auto") == AnalysisOptions(8, "auto")
    assert study_terms(cube, analysis_options(cube)) == ("harmonics:dataset",)
    cube.attrs["analysis"] = "not json"
    with pytest.raises(BenchsuiteError, match="analysis"):
        analysis_options(cube)


def test_a_coarse_grid_keeps_the_categorical_anova_exactly() -> None:
    cube = synthetic_cube(datasets=2, thetas=12, seeds=2, images=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tables = analyze_cube(cube)
    pd.testing.assert_frame_equal(tables["anova"], anova_table(cube))
    assert "theta:dataset" in set(tables["anova"]["term"])


def test_above_dense_above_the_anova_is_the_harmonic_regression_and_the_mixed_model_takes_its_terms() -> None:
    cube = synthetic_cube(datasets=2, thetas=12, seeds=2, images=3)
    cube.attrs["analysis"] = json.dumps({"dense_above": 8, "harmonics": 4})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tables = analyze_cube(cube)
    anova = tables["anova"][tables["anova"]["metric"] == "auroc"].set_index("term")
    assert list(anova.index) == ["harmonics", "harmonics:dataset", "Residual"]
    mixed = tables["mixed"][tables["mixed"]["metric"] == "auroc"].set_index("term")
    assert list(mixed.index) == ["harmonics", "harmonics:dataset"]
    assert mixed.at["harmonics:dataset", "df"] == 8  # 2K columns times (datasets - 1)
    assert mixed.at["harmonics:dataset", "p"] < 0.01
    # On a balanced design the run effect makes the Wald χ²/df the F of the cell means, as with categorical θ.
    assert mixed.at["harmonics:dataset", "chi2"] / 8 == pytest.approx(anova.at["harmonics:dataset", "F"], rel=1e-3)


def _dense_run(tmp_path: Path) -> Path:
    cube = synthetic_cube(datasets=2, thetas=72, seeds=4, encoders=2, images=2)  # 4 seeds: permutation p down to 0.03
    cube.to_netcdf(tmp_path / CUBE_NAME, engine=ENGINE)
    return tmp_path


def test_analyze_of_a_dense_cube_reads_harmonics_dataset_in_the_summary_and_its_text(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["analyze", str(_dense_run(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "Harmonic regression of θ (sin kθ, cos kθ; nested F-tests) on per-cell means" in result.output
    assert "  harmonics:dataset " in result.output and "theta:dataset" not in result.output
    summary = json.loads((tmp_path / SUMMARY_NAME).read_text())
    assert summary["theta"] == {"model": "harmonics", "dense_above": 36}
    auroc = summary["metrics"]["auroc"]
    assert list(auroc["interactions"]) == ["harmonics:dataset"]
    assert auroc["interaction"] == auroc["interactions"]["harmonics:dataset"]["anova"] and auroc["interaction"]["p"] < 1e-6
    assert auroc["harmonics"] >= 4
    assert auroc["signature_prediction"]["folds"] == 2 and auroc["curve_test"][0]["p"] < 0.05
    assert set(pd.read_csv(tmp_path / "tukey.csv")["theta_a"]) <= set(range(0, 360, 30))  # 12 arcs of 30°


def test_analyze_harmonics_overrides_the_suites(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["analyze", str(_dense_run(tmp_path)), "--harmonics", "2"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / SUMMARY_NAME).read_text())
    assert {entry["harmonics"] for entry in summary["metrics"].values()} == {2}


def test_analyze_refuses_a_harmonics_that_is_neither_auto_nor_a_count(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["analyze", str(_dense_run(tmp_path)), "--harmonics", "0"])
    assert result.exit_code == 2 and "neither 'auto' nor a whole number of at least 1" in result.output


@pytest.mark.parametrize("image_sd", [0.05, 0.0])
def test_the_balanced_mixed_model_in_closed_form_is_statsmodels_reml_fit(image_sd: float) -> None:
    cube = synthetic_cube(datasets=2, thetas=12, seeds=3, images=5, run_sd=0.05, image_sd=image_sd)
    fast = balanced_harmonic_fit(cube, "auroc", 4)
    frame = image_values(cube, "auroc")
    slow = fit_mixed(frame, varying_factors(frame, cube_factors(cube)), harmonics=4)
    terms = ["harmonics", "harmonics:dataset"]
    np.testing.assert_allclose(fast.terms.loc[terms, "chi2"], slow.terms.loc[terms, "chi2"], rtol=1e-4)
    assert list(fast.terms["df"]) == list(slow.terms.loc[terms, "df"]) == [8, 8]
    for variance in ("run_var", "residual_var"):
        assert getattr(fast, variance) == pytest.approx(getattr(slow, variance), rel=1e-3), variance
    assert fast.image_var == pytest.approx(slow.image_var, rel=1e-3, abs=1e-5)
    assert (fast.n_obs, fast.n_images, fast.n_runs) == (slow.n_obs, slow.n_images, slow.n_runs)


def test_an_image_missing_from_one_run_is_not_balanced_and_goes_to_statsmodels() -> None:
    cube = synthetic_cube(datasets=2, thetas=12, seeds=3, images=5)
    cube["auroc"][0, 3, 0, 0, 0, 4] = np.nan
    assert balanced_harmonic_fit(cube, "auroc", 4) is None
    table = mixed_table(cube, metrics=["auroc"], harmonics={"auroc": 4}).set_index("term")
    assert "dataset" in table.index and table.at["harmonics:dataset", "note"] != "closed form (balanced design)"
