"""The orientation covariate: circular autocorrelation of the histogram, and whether it predicts a metric."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from benchsuite.analysis.covariate import (
    CovariateError,
    autocorrelation_table,
    circular_autocorrelation,
    covariate_table,
    covariate_test,
)
from tests.results.test_anova import STRENGTHS, SWEEP

GRID = ("dataset", "theta", "seed", "method", "encoder")
BINS = 36
THETAS = 30.0 * np.arange(12)


def _histograms() -> dict[str, np.ndarray]:
    """Three datasets with different orientation structure: axis-aligned, two-fold, and lopsided."""
    centres = np.deg2rad((np.arange(BINS) + 0.5) * 360 / BINS)
    shapes = {
        "axes": 1 + 0.9 * np.cos(4 * centres),
        "stripes": 1 + 0.8 * np.cos(2 * centres),
        "lopsided": 1 + 0.5 * np.cos(centres) + 0.3 * np.sin(3 * centres),
    }
    return {name: h / h.sum() for name, h in shapes.items()}


def _cube(dice: np.ndarray, histograms: dict[str, np.ndarray]) -> xr.Dataset:
    """A cube with a cell-scope ``dice`` (dataset, theta, seed) and the datasets' orientation histograms."""
    return xr.Dataset(
        {
            "dice": (GRID, dice[..., None, None], {"role": "metric", "scope": "cell"}),
            "orientation_hist": (
                ("dataset", "orientation"),
                np.stack(list(histograms.values())),
                {"role": "covariate"},
            ),
        },
        coords={
            "dataset": list(histograms),
            "theta": THETAS,
            "seed": np.arange(dice.shape[2]),
            "method": ["moco_v2"],
            "encoder": ["small_cnn"],
            "orientation": (np.arange(BINS) + 0.5) * 360 / BINS,
        },
    )


def _autocorr_by_dataset(histograms: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([circular_autocorrelation(h, THETAS) for h in histograms.values()])


def _study(weight: float, n_seed: int = 3) -> xr.Dataset:
    """``dice`` = dataset level + ``weight`` x c(θ) + a θ effect c does not explain + noise."""
    histograms = _histograms()
    rng = np.random.default_rng(8)
    level = np.array([0.4, 0.5, 0.6])[:, None, None]
    unrelated = 0.05 * np.sin(np.deg2rad(THETAS))[None, :, None]
    noise = rng.normal(0.0, 0.02, size=(3, len(THETAS), n_seed))
    dice = level + weight * _autocorr_by_dataset(histograms)[:, :, None] + unrelated + noise
    return _cube(dice, histograms)


def _swept_study(weight: float) -> xr.Dataset:
    """:func:`_study` at each of 3 swept strengths, each with its own noise, and a strong strength effect in one dataset."""
    rng = np.random.default_rng(9)
    dice = _study(weight)["dice"].expand_dims(strength=STRENGTHS).transpose(*GRID, "strength")
    shift = xr.DataArray(np.array(STRENGTHS), coords={"strength": STRENGTHS}) * (dice.dataset == "axes")
    cube = _study(weight).drop_vars("dice")
    cube["dice"] = (dice + 0.3 * shift + rng.normal(0.0, 0.02, size=dice.shape)).transpose(*GRID, "strength")
    cube["dice"].attrs.update(role="metric", scope="cell")
    cube["strength"].attrs.update(SWEEP)
    return cube


def test_autocorrelation_at_whole_bin_shifts_matches_the_fourier_definition() -> None:
    h = np.random.default_rng(2).uniform(size=BINS)
    shifts = np.arange(BINS)
    # Wiener-Khinchin: the circular autocorrelation is the inverse FFT of the power spectrum.
    expected = np.fft.ifft(np.abs(np.fft.fft(h)) ** 2).real / np.sum(h**2)
    np.testing.assert_allclose(circular_autocorrelation(h, shifts * 360.0 / BINS), expected, rtol=1e-12)


def test_autocorrelation_is_one_at_zero_and_for_a_flat_histogram() -> None:
    assert circular_autocorrelation(_histograms()["axes"], [0.0, 360.0]) == pytest.approx([1.0, 1.0])
    np.testing.assert_allclose(circular_autocorrelation(np.full(BINS, 1 / BINS), THETAS), 1.0)


def test_autocorrelation_between_bins_is_interpolated_linearly() -> None:
    h = _histograms()["lopsided"]
    low, high, middle = circular_autocorrelation(h, [10.0, 20.0, 15.0])
    assert middle == pytest.approx((low + high) / 2)
    last, first, wrapped = circular_autocorrelation(h, [350.0, 0.0, 355.0])
    assert wrapped == pytest.approx((last + first) / 2)


def test_autocorrelation_peaks_at_the_symmetry_angles_of_axis_aligned_structure() -> None:
    c = dict(zip(THETAS, circular_autocorrelation(_histograms()["axes"], THETAS), strict=True))
    assert c[90.0] == pytest.approx(1.0) and c[180.0] == pytest.approx(1.0)
    assert c[30.0] < 0.9


def test_autocorrelation_table_has_one_row_per_dataset_and_angle() -> None:
    table = autocorrelation_table(_study(weight=0.0))
    assert list(table.columns) == ["dataset", "theta", "autocorr"]
    assert len(table) == 3 * len(THETAS)
    stripes = table[table["dataset"] == "stripes"]["autocorr"].to_numpy()
    np.testing.assert_allclose(stripes, circular_autocorrelation(_histograms()["stripes"], THETAS))


def test_autocorrelation_table_needs_the_orientation_histogram() -> None:
    with pytest.raises(CovariateError, match="no 'orientation_hist'"):
        autocorrelation_table(_study(weight=0.0).drop_vars("orientation_hist"))


def test_a_metric_built_from_the_autocorrelation_is_detected() -> None:
    row = covariate_table(_study(weight=0.2)).iloc[0]
    assert row["p"] < 1e-10
    assert row["ci_low"] < 0.2 < row["ci_high"]
    assert row["delta_r2"] > 0.05


def test_a_metric_unrelated_to_the_autocorrelation_gives_a_high_p() -> None:
    row = covariate_table(_study(weight=0.0)).iloc[0]
    assert row["p"] > 0.2
    assert row["ci_low"] < 0.0 < row["ci_high"]


def test_a_swept_parameter_is_a_control_so_the_covariate_is_still_detected_or_not() -> None:
    detected = covariate_table(_swept_study(weight=0.2)).iloc[0]
    assert detected["p"] < 1e-10 and detected["ci_low"] < 0.2 < detected["ci_high"]
    assert detected["n_obs"] == 3 * len(THETAS) * 3 * len(STRENGTHS)
    assert covariate_table(_swept_study(weight=0.0)).iloc[0]["p"] > 0.05


def test_a_sweep_at_a_single_angle_is_refused_once_rather_than_per_metric() -> None:
    with pytest.raises(CovariateError, match="single θ"):
        covariate_table(_swept_study(weight=0.2).isel(theta=[3]))


def test_the_f_test_matches_residual_sums_of_squares_of_the_nested_models() -> None:
    cube = _study(weight=0.05)
    frame = (
        cube["dice"].squeeze(["method", "encoder"], drop=True).to_dataframe(name="value").reset_index()
        .merge(autocorrelation_table(cube), on=["dataset", "theta"])
    )  # fmt: skip
    dummies = pd.get_dummies(frame["dataset"], dtype=float).to_numpy()
    with_autocorr = np.column_stack([dummies, frame["autocorr"]])

    def rss(design: np.ndarray) -> float:
        _, residual, *_ = np.linalg.lstsq(design, frame["value"].to_numpy(), rcond=None)
        return float(residual[0])

    df_denom = len(frame) - with_autocorr.shape[1]
    f_value = (rss(dummies) - rss(with_autocorr)) / (rss(with_autocorr) / df_denom)
    tss = float(((frame["value"] - frame["value"].mean()) ** 2).sum())

    result = covariate_test(frame)
    assert result["F"] == pytest.approx(f_value, rel=1e-9)
    assert result["df_denom"] == df_denom
    assert result["delta_r2"] == pytest.approx((rss(dummies) - rss(with_autocorr)) / tss, rel=1e-9)


def test_autocorrelation_constant_within_datasets_is_skipped_with_a_warning() -> None:
    flat = {name: np.full(BINS, 1 / BINS) for name in ["a", "b", "c"]}
    cube = _cube(np.random.default_rng(0).normal(size=(3, len(THETAS), 2)), flat)
    with pytest.warns(UserWarning, match="metric 'dice' skipped: .* does not vary within any dataset"):
        table = covariate_table(cube)
    assert table.empty


def test_a_dataset_without_a_histogram_is_left_out_with_a_warning() -> None:
    cube = _study(weight=0.0)
    cube["orientation_hist"].loc[{"dataset": "stripes"}] = np.nan
    with pytest.warns(UserWarning, match="dataset 'stripes' skipped: the orientation histogram has no mass"):
        table = autocorrelation_table(cube)
    assert list(table["dataset"].unique()) == ["axes", "lopsided"]
