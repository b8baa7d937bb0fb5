"""Fourier power of metric(θ): known periods, the power convention, and which θ grids qualify."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import signal

from benchsuite.analysis.anova import cell_means
from benchsuite.analysis.periodicity import (
    PERIODICITY_COLUMNS,
    PeriodicityError,
    circle_step,
    fill_circle,
    gapped_harmonic_powers,
    harmonic_powers,
    periodicity,
    periodicity_table,
)
from benchsuite.results.synthetic import synthetic_cube
from tests.results.test_anova import STRENGTHS, SWEEP

GRID = ("dataset", "theta", "seed", "method", "encoder")


def _series(values: np.ndarray, step: float = 30.0, start: float = 0.0) -> pd.Series:
    return pd.Series(values, index=start + step * np.arange(len(values)))


def _radians(n: int, step: float = 30.0) -> np.ndarray:
    return np.deg2rad(step * np.arange(n))


def _cube(by_dataset: dict[str, np.ndarray], seed_offsets: np.ndarray) -> xr.Dataset:
    """A cell-scope metric ``dice``: one metric(θ) series per dataset, shifted per seed."""
    n_theta = len(next(iter(by_dataset.values())))
    values = np.stack([series[:, None] + seed_offsets for series in by_dataset.values()])
    return xr.Dataset(
        {"dice": (GRID, values[:, :, :, None, None], {"role": "metric", "scope": "cell"})},
        coords={
            "dataset": list(by_dataset),
            "theta": 360.0 / n_theta * np.arange(n_theta),
            "seed": np.arange(values.shape[2]),
            "method": ["moco_v2"],
            "encoder": ["small_cnn"],
        },
    )


def _swept(by_strength: list[xr.Dataset]) -> xr.Dataset:
    """One cube of :func:`_cube` per swept ``strength``, joined as the store writes a sweep: its dim after the grid's."""
    cube = xr.concat(by_strength, pd.Index(STRENGTHS, name="strength")).transpose(*GRID, "strength")
    cube["strength"].attrs.update(SWEEP)
    return cube


def test_a_four_fold_cosine_has_all_its_power_at_90_degrees() -> None:
    row = periodicity(_series(np.cos(4 * _radians(12)) + 0.3))
    assert row["power_90"] == pytest.approx(1.0)
    assert row["dominant_period"] == 90.0
    for period in ["360", "180", "120"]:
        assert row[f"power_{period}"] == pytest.approx(0.0, abs=1e-12)


def test_power_is_the_fraction_of_variance_each_harmonic_carries() -> None:
    # Amplitudes 2 and 1 at 360° and 180°, with a phase: variances 2 and 0.5 of 2.5 in all.
    theta = _radians(12)
    row = periodicity(_series(2 * np.cos(theta + 0.7) + np.sin(2 * theta)))
    assert row["power_360"] == pytest.approx(0.8)
    assert row["power_180"] == pytest.approx(0.2)
    assert row["dominant_period"] == 360.0


def test_harmonic_powers_match_scipy_periodogram_normalised_by_its_total() -> None:
    series = np.random.default_rng(5).normal(size=12)
    _, spectrum = signal.periodogram(series, detrend="constant", scaling="spectrum")
    np.testing.assert_allclose(harmonic_powers(series), spectrum / spectrum.sum(), rtol=1e-10, atol=1e-15)


def test_harmonics_beyond_nyquist_are_not_reported() -> None:
    row = periodicity(_series(np.cos(4 * _radians(12))))
    assert math.isnan(row["power_45"])


def test_a_45_degree_period_is_reported_when_theta_is_fine_enough() -> None:
    row = periodicity(_series(np.cos(8 * _radians(24, step=15.0)), step=15.0))
    assert row["power_45"] == pytest.approx(1.0)
    assert row["dominant_period"] == 45.0


def test_the_dominant_period_may_be_one_that_is_not_listed() -> None:
    row = periodicity(_series((-1.0) ** np.arange(12)))  # alternates: the Nyquist harmonic, 60°
    assert row["dominant_period"] == 60.0
    assert row["dominant_power"] == pytest.approx(1.0)


def test_a_constant_series_has_no_dominant_period() -> None:
    row = periodicity(_series(np.full(12, 0.4)))
    assert math.isnan(row["dominant_period"])
    assert math.isnan(row["power_90"])


def test_the_start_angle_does_not_matter() -> None:
    assert circle_step(15.0 + 30.0 * np.arange(12)) == 30.0


@pytest.mark.parametrize(
    ("thetas", "message"),
    [
        pytest.param([0, 30, 90, 180], "do not cover the circle evenly", id="uneven"),
        pytest.param([0, 30, 60, 90], "do not cover the circle evenly", id="arc"),
        pytest.param(list(range(0, 361, 90)), "same rotation", id="0-and-360"),
    ],
)
def test_theta_that_does_not_sample_the_circle_evenly_is_refused(thetas: list[float], message: str) -> None:
    with pytest.raises(PeriodicityError, match=message):
        circle_step(thetas)


def test_periodicity_table_names_each_datasets_period_from_seed_averaged_means() -> None:
    theta = _radians(12)
    # The seeds add opposite 360° waves, which cancel in the seed average.
    offsets = 0.5 * np.stack([np.cos(theta), -np.cos(theta)], axis=1)
    cube = _cube({"shapes": np.cos(4 * theta), "brain": np.cos(2 * theta)}, offsets)
    table = periodicity_table(cube).set_index("dataset")
    assert table.at["shapes", "dominant_period"] == 90.0
    assert table.at["brain", "dominant_period"] == 180.0
    assert table.at["shapes", "power_360"] == pytest.approx(0.0, abs=1e-12)


def test_periodicity_table_has_a_series_per_swept_value_and_no_sweep_column_without_a_sweep() -> None:
    theta = _radians(12)
    offsets = np.zeros((1, 2))
    # The shape of metric(θ) changes with the strength in shapes and stays in brain.
    cube = _swept([_cube({"shapes": np.cos(harmonic * theta), "brain": np.cos(2 * theta)}, offsets) for harmonic in (4, 2, 1)])
    table = periodicity_table(cube)

    assert list(table.columns) == [*PERIODICITY_COLUMNS[:4], "strength", *PERIODICITY_COLUMNS[4:]]
    periods = table.set_index(["dataset", "strength"])["dominant_period"]
    assert [periods[("shapes", s)] for s in STRENGTHS] == [90.0, 180.0, 360.0]
    assert [periods[("brain", s)] for s in STRENGTHS] == [180.0] * 3
    assert list(periodicity_table(cube.isel(strength=0, drop=True)).columns) == PERIODICITY_COLUMNS


def test_periodicity_table_refuses_a_cube_whose_theta_does_not_cover_the_circle() -> None:
    cube = _cube({"shapes": np.arange(4.0)}, np.zeros((1, 2))).assign_coords(theta=[0.0, 30.0, 60.0, 90.0])
    with pytest.raises(PeriodicityError, match="periodicity is not analysed"):
        periodicity_table(cube)


def test_periodicity_table_analyses_a_series_missing_one_angle_and_skips_a_sparse_one() -> None:
    theta = _radians(12)
    cube = _cube({"shapes": np.cos(4 * theta), "brain": np.cos(2 * theta)}, np.zeros((1, 2)))
    cube["dice"].loc[{"dataset": "shapes", "theta": 0.0}] = np.nan
    cube["dice"].loc[{"dataset": "brain", "theta": [0.0, 60.0, 120.0, 180.0]}] = np.nan
    with pytest.warns(UserWarning, match=r"'dice' skipped for \(dataset='brain'.*only 8 of the 12 angles"):
        table = periodicity_table(cube)
    assert list(table["dataset"]) == ["shapes"]
    assert table["n_theta"].iloc[0] == 11 and table["dominant_period"].iloc[0] == 90.0


def test_lomb_scargle_powers_equal_the_periodogram_on_a_complete_grid() -> None:
    thetas = np.arange(12) * 30.0
    series = np.random.default_rng(3).normal(size=12) + np.cos(np.deg2rad(4 * thetas))
    np.testing.assert_allclose(gapped_harmonic_powers(thetas, series, 12), harmonic_powers(series), rtol=1e-8, atol=1e-12)


def test_a_series_missing_theta_0_still_finds_its_period() -> None:
    series = _series(np.cos(4 * _radians(12)) + 0.05 * np.random.default_rng(4).normal(size=12)).iloc[1:]
    row = periodicity(series, n_grid=12)
    # Leakage through the gap spreads some power, but four-fold variation still dominates.
    assert row["n_theta"] == 11 and row["dominant_period"] == 90.0 and row["power_90"] > 0.7


def test_a_gap_in_a_dense_grid_is_filled_around_the_circle() -> None:
    thetas = np.arange(3600) * 0.1
    known = pd.Series(np.cos(np.deg2rad(thetas)), index=thetas).iloc[1:-1]  # 0° and 359.9° missing
    filled = fill_circle(known, thetas)
    assert list(filled.index) == list(thetas)
    # 0° and 359.9° lie between 359.8° and 0.1°, across the wrap: two thirds and one third of the way.
    before, after = known.iloc[-1], known.iloc[0]
    np.testing.assert_allclose(filled.iloc[[0, -1]], [before + (after - before) * 2 / 3, before + (after - before) / 3])
    np.testing.assert_array_equal(filled.iloc[1:-1], known)


def test_a_dense_curve_with_a_missing_angle_gets_the_fft_of_the_filled_curve() -> None:
    cube = synthetic_cube(datasets=2, thetas=3600, seeds=1, images=2)  # saliency metrics miss θ = 0
    table = periodicity_table(cube, metrics=["auroc"], dense_above=36).set_index("dataset")
    assert table.at["set0", "n_theta"] == 3600 and table.at["set0", "dominant_period"] == 90.0  # cos 4θ
    series = cell_means(cube, "auroc").query("dataset == 'set0'").set_index("theta")["value"]
    expected = harmonic_powers(fill_circle(series, cube["theta"].values).to_numpy())
    assert table.at["set0", "power_90"] == pytest.approx(expected[4])
