"""The mixed model of per-image values: its tests, its variances, and how it reports trouble."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import xarray as xr
from statsmodels.regression.mixed_linear_model import MixedLM

from benchsuite.analysis.anova import anova, cell_means
from benchsuite.analysis.mixed import MixedModelError, fit_mixed, image_values, mixed_table
from tests.results.test_anova import STRENGTHS, SWEEP

GRID = ("dataset", "theta", "seed", "method", "encoder")
THETAS = [0.0, 90.0, 180.0]


def _cube(interaction: float = 0.0, image_sd: float = 0.1, run_sd: float = 0.03, n_image: int = 6, n_seed: int = 3) -> xr.Dataset:
    """Per-image ``dice`` for 2 datasets x 3 angles with image, run and residual noise, and a cell-scope ``final_loss``.

    The planted interaction pattern sums to zero over datasets and angles, so it moves only the
    θ x dataset term.
    """
    rng = np.random.default_rng(11)
    shape = (2, len(THETAS), n_seed, 1, 1)
    pattern = np.array([[1.0, 0.0, -1.0], [-1.0, 0.0, 1.0]])
    means = 0.5 + np.array([0.0, 0.05, 0.1])[None, :] + np.array([[0.0], [0.1]]) + interaction * pattern
    image = rng.normal(0.0, image_sd, size=(2, 1, 1, 1, 1, n_image))
    run = rng.normal(0.0, run_sd, size=(*shape, 1))
    residual = rng.normal(0.0, 0.02, size=(*shape, n_image))
    dice = means[:, :, None, None, None, None] + image + run + residual
    return xr.Dataset(
        {
            "dice": ((*GRID, "image"), dice, {"role": "metric", "scope": "image"}),
            "final_loss": (GRID, rng.normal(size=shape), {"role": "metric", "scope": "cell"}),
        },
        coords={
            "dataset": ["brats", "kvasir"],
            "theta": THETAS,
            "seed": np.arange(n_seed),
            "method": ["moco_v2"],
            "encoder": ["small_cnn"],
            "image": np.arange(n_image),
        },
    )


def _strength_cube(interaction: float, n_image: int = 6, n_seed: int = 3) -> xr.Dataset:
    """Per-image ``dice`` for 2 datasets x 3 swept strengths at one θ, with image, run and residual noise.

    Dice rises with strength by ``0.1 + interaction`` per unit in ``brats`` and by ``0.1 -
    interaction`` in ``kvasir``, so ``interaction`` moves only the strength x dataset term.
    """
    rng = np.random.default_rng(12)
    shape = (2, 1, n_seed, 1, 1, len(STRENGTHS))
    slope = 0.1 + interaction * np.array([1.0, -1.0])
    means = 0.5 + slope[:, None] * np.array(STRENGTHS)[None, :]
    image = rng.normal(0.0, 0.1, size=(2, 1, 1, 1, 1, 1, n_image))
    run = rng.normal(0.0, 0.03, size=(*shape, 1))
    residual = rng.normal(0.0, 0.02, size=(*shape, n_image))
    dice = means[:, None, None, None, None, :, None] + image + run + residual
    return xr.Dataset(
        {"dice": ((*GRID, "strength", "image"), dice, {"role": "metric", "scope": "image"})},
        coords={
            "dataset": ["brats", "kvasir"],
            "theta": [0.0],
            "seed": np.arange(n_seed),
            "method": ["moco_v2"],
            "encoder": ["small_cnn"],
            "strength": ("strength", STRENGTHS, SWEEP),
            "image": np.arange(n_image),
        },
    )


def test_image_values_has_one_row_per_scored_image() -> None:
    cube = _cube()
    cube["dice"][0, 0, 0, 0, 0, 4:] = np.nan  # a dataset with fewer images is NaN-padded
    frame = image_values(cube, "dice")
    assert len(frame) == 2 * 3 * 3 * 6 - 2
    assert list(frame.columns) == [*GRID, "image", "value"]


def test_image_values_refuses_a_cell_scope_metric() -> None:
    with pytest.raises(MixedModelError, match="'final_loss' is not a per-image metric"):
        image_values(_cube(), "final_loss")


def test_wald_chi2_per_df_of_theta_terms_equals_the_anova_f_on_cell_means_in_a_balanced_design() -> None:
    cube = _cube(interaction=0.02)
    fit = fit_mixed(image_values(cube, "dice"), ["theta", "dataset"])
    table = anova(cell_means(cube, "dice"), ["theta", "dataset"])
    for term in ["theta", "theta:dataset"]:
        assert fit.terms.at[term, "df"] == table.at[term, "df"]
        assert fit.terms.at[term, "chi2"] / fit.terms.at[term, "df"] == pytest.approx(table.at[term, "F"], rel=1e-3)


def test_image_and_run_variances_are_estimated_separately() -> None:
    fit = fit_mixed(image_values(_cube(image_sd=0.1, run_sd=0.03, n_image=30), "dice"), ["theta", "dataset"])
    assert fit.image_var == pytest.approx(0.1**2, rel=0.5)
    assert fit.run_var == pytest.approx(0.03**2, rel=0.6)
    assert fit.residual_var == pytest.approx(0.02**2, rel=0.2)


def test_mixed_table_finds_a_planted_interaction() -> None:
    table = mixed_table(_cube(interaction=0.08)).set_index("term")
    assert table.at["theta:dataset", "p"] < 1e-6


def test_mixed_table_finds_no_interaction_where_none_is_planted() -> None:
    table = mixed_table(_cube(interaction=0.0)).set_index("term")
    assert table.at["theta:dataset", "p"] > 0.05
    assert table.at["theta", "p"] < 1e-4


def test_mixed_table_finds_a_planted_strength_dataset_interaction_with_runs_per_strength() -> None:
    table = mixed_table(_strength_cube(interaction=0.1)).set_index("term")
    assert list(table.index) == ["strength", "dataset", "strength:dataset"]
    assert table.at["strength:dataset", "p"] < 0.01
    # Every strength is a training run of its own: 2 datasets x 3 seeds x 3 strengths.
    assert set(table["n_runs"]) == {2 * 3 * len(STRENGTHS)}
    assert set(table["n_images"]) == {2 * 6}


def test_mixed_table_finds_no_strength_interaction_where_strength_acts_alike_in_every_dataset() -> None:
    table = mixed_table(_strength_cube(interaction=0.0)).set_index("term")
    assert table.at["strength:dataset", "p"] > 0.01
    assert table.at["strength", "p"] < 1e-4


def test_wald_chi2_per_df_of_the_strength_interaction_equals_the_anova_f_on_cell_means() -> None:
    cube = _strength_cube(interaction=0.02)
    fit = fit_mixed(image_values(cube, "dice"), ["strength", "dataset"])
    table = anova(cell_means(cube, "dice"), ["strength", "dataset"])
    term = "strength:dataset"
    assert fit.terms.at[term, "chi2"] / fit.terms.at[term, "df"] == pytest.approx(table.at[term, "F"], rel=1e-3)


def test_mixed_table_fits_only_per_image_metrics_and_reports_counts() -> None:
    table = mixed_table(_cube())
    assert set(table["metric"]) == {"dice"}
    assert list(table["term"]) == ["theta", "dataset", "theta:dataset"]
    assert set(table["n_obs"]) == {2 * 3 * 3 * 6}
    assert set(table["n_images"]) == {2 * 6}
    assert set(table["n_runs"]) == {2 * 3 * 3}
    assert table["converged"].all()


def test_mixed_table_reports_a_fit_that_did_not_converge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(MixedLM, "fit", functools.partialmethod(MixedLM.fit, maxiter=1))
    table = mixed_table(_cube())
    assert not table["converged"].any()
    assert table["note"].str.contains("failed").all()


def test_mixed_table_skips_an_all_nan_metric_with_a_warning_naming_it() -> None:
    cube = _cube()
    cube["dice"][:] = np.nan
    with pytest.warns(UserWarning, match="mixed model of metric 'dice' skipped: every image value is NaN"):
        table = mixed_table(cube)
    assert table.empty


def test_fit_mixed_refuses_a_factor_combination_without_values() -> None:
    frame = image_values(_cube(), "dice")
    frame = frame[~((frame["dataset"] == "kvasir") & (frame["theta"] == 90.0))]
    with pytest.raises(MixedModelError, match="only 5 of the 6 combinations"):
        fit_mixed(frame, ["theta", "dataset"])


def test_mixed_table_refuses_a_metric_name_that_is_not_per_image() -> None:
    with pytest.raises(MixedModelError, match="its per-image metrics are \\['dice'\\]"):
        mixed_table(_cube(), ["dcie"])
