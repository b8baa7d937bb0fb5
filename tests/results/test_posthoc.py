"""Tukey HSD between angles within each dataset, on cell means with seeds as replicates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats
from statsmodels.stats.multicomp import pairwise_tukeyhsd

from benchsuite.analysis.anova import cell_means
from benchsuite.analysis.posthoc import TUKEY_COLUMNS, PosthocError, angle_bins, tukey_hsd, tukey_table
from benchsuite.results.synthetic import synthetic_cube
from tests.results.test_anova import STRENGTHS, SWEEP

GRID = ("dataset", "theta", "seed", "method", "encoder")
THETAS = [0.0, 90.0, 180.0, 270.0]


def _cube(n_seed: int = 3, thetas: list[float] = THETAS) -> xr.Dataset:
    """Per-image ``dice``: 2 datasets; in ``shapes`` θ = 90° scores 0.3 higher, in ``brain`` nothing differs."""
    rng = np.random.default_rng(4)
    means = np.zeros((2, len(thetas)))
    means[0, thetas.index(90.0)] = 0.3
    dice = 0.5 + means[:, :, None, None, None, None] + rng.normal(0.0, 0.03, size=(2, len(thetas), n_seed, 1, 1, 5))
    return xr.Dataset(
        {"dice": ((*GRID, "image"), dice, {"role": "metric", "scope": "image"})},
        coords={
            "dataset": ["shapes", "brain"],
            "theta": thetas,
            "seed": np.arange(n_seed),
            "method": ["moco_v2"],
            "encoder": ["small_cnn"],
            "image": np.arange(5),
        },
    )


def _strength_cube() -> xr.Dataset:
    """Per-image ``dice`` swept over 3 strengths: in ``shapes`` θ = 90° scores 0.4 x (strength - 0.25) higher.

    In ``brain``, and at strength 0.25, nothing differs.
    """
    rng = np.random.default_rng(5)
    means = np.zeros((2, len(THETAS), len(STRENGTHS)))
    means[0, THETAS.index(90.0)] = 0.4 * (np.array(STRENGTHS) - STRENGTHS[0])
    noise = rng.normal(0.0, 0.03, size=(2, len(THETAS), 3, 1, 1, len(STRENGTHS), 5))
    return xr.Dataset(
        {
            "dice": (
                (*GRID, "strength", "image"),
                0.5 + means[:, :, None, None, None, :, None] + noise,
                {"role": "metric", "scope": "image"},
            )
        },
        coords={
            "dataset": ["shapes", "brain"],
            "theta": THETAS,
            "seed": np.arange(3),
            "method": ["moco_v2"],
            "encoder": ["small_cnn"],
            "strength": ("strength", STRENGTHS, SWEEP),
            "image": np.arange(5),
        },
    )


def test_tukey_hsd_matches_scipy() -> None:
    family = cell_means(_cube(), "dice").query("dataset == 'shapes'")
    pairs = tukey_hsd(family)

    samples = [family.loc[family["theta"] == t, "value"].to_numpy() for t in THETAS]
    theirs = stats.tukey_hsd(*samples)
    interval = theirs.confidence_interval(confidence_level=0.95)
    for row in pairs.itertuples():
        a, b = THETAS.index(row.theta_a), THETAS.index(row.theta_b)
        # scipy's statistic[i, j] is mean_i - mean_j; ours is mean_b - mean_a.
        assert row.meandiff == pytest.approx(theirs.statistic[b, a], rel=1e-9)
        assert row.p_adj == pytest.approx(theirs.pvalue[b, a], rel=1e-6, abs=1e-12)
        assert row.lower == pytest.approx(interval.low[b, a], rel=1e-6)
        assert row.upper == pytest.approx(interval.high[b, a], rel=1e-6)


def _assert_statsmodels_table(pairs: pd.DataFrame, values: np.ndarray, thetas: np.ndarray) -> None:
    """``pairs`` is statsmodels' ``pairwise_tukeyhsd`` table of ``values`` grouped by ``thetas``, row for row."""
    theirs = pairwise_tukeyhsd(values, thetas).summary_frame()
    np.testing.assert_array_equal(pairs["theta_a"], theirs["group_c"])
    np.testing.assert_array_equal(pairs["theta_b"], theirs["group_t"])
    np.testing.assert_array_equal(pairs["meandiff"], theirs["meandiff"])
    for mine, its in [("p_adj", "p-adj"), ("lower", "lower"), ("upper", "upper")]:
        np.testing.assert_allclose(pairs[mine], theirs[its], rtol=0, atol=1e-9, err_msg=mine)
    np.testing.assert_array_equal(pairs["reject"], theirs["reject"])


@pytest.mark.parametrize(("n_groups", "balanced"), [(2, True), (4, False), (12, True), (20, False)])
def test_tukey_hsd_is_statsmodels_pairwise_tukeyhsd(n_groups: int, balanced: bool) -> None:
    rng = np.random.default_rng(n_groups)
    counts = np.full(n_groups, 3) if balanced else rng.integers(2, 6, n_groups)
    thetas = np.repeat(np.arange(n_groups) * 360.0 / n_groups, counts)
    values = rng.normal(0.0, 0.1, len(thetas)) + 0.05 * np.sin(np.deg2rad(thetas))
    _assert_statsmodels_table(tukey_hsd(pd.DataFrame({"theta": thetas, "value": values})), values, thetas)


def test_tukey_table_of_a_default_suite_cube_is_statsmodels_per_family() -> None:
    cube = synthetic_cube(datasets=4, thetas=12, seeds=2, images=4)  # the default suite's design: k = 12, df = 12
    table = tukey_table(cube, metrics=["final_loss"])  # a value at every angle (saliency has none at 0°)
    families = table.groupby(["metric", "dataset"], sort=False)
    assert families.ngroups == 4
    for (metric, dataset), pairs in families:
        means = cell_means(cube, metric)
        family = means[means["dataset"] == dataset].dropna(subset=["value"])
        _assert_statsmodels_table(pairs, family["value"].to_numpy(dtype=float), family["theta"].to_numpy(dtype=float))


def test_tukey_table_has_every_pair_of_angles_once_per_dataset() -> None:
    table = tukey_table(_cube())
    assert len(table) == 2 * 6
    assert (table["theta_a"] < table["theta_b"]).all()
    assert list(table.columns) == [
        "metric", "dataset", "method", "encoder", "theta_a", "theta_b", "meandiff", "p_adj", "lower", "upper", "reject",
    ]  # fmt: skip


def test_tukey_table_rejects_exactly_the_pairs_with_a_planted_difference() -> None:
    table = tukey_table(_cube())
    rejected = table[table["reject"]]
    assert set(rejected["dataset"]) == {"shapes"}
    assert ((rejected["theta_a"] == 90.0) | (rejected["theta_b"] == 90.0)).all()
    assert len(rejected) == 3


def test_tukey_table_skips_a_family_without_replicates_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="add seeds") as record:
        table = tukey_table(_cube(n_seed=1))
    assert table.empty
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    for message, dataset in zip(messages, ["shapes", "brain"], strict=True):
        assert f"metric 'dice' skipped for (dataset={dataset!r}" in message


def test_tukey_table_compares_angles_within_each_swept_value() -> None:
    table = tukey_table(_strength_cube())
    assert list(table.columns) == [*TUKEY_COLUMNS[:4], "strength", *TUKEY_COLUMNS[4:]]
    assert len(table) == 2 * len(STRENGTHS) * 6
    ninety = table[(table["dataset"] == "shapes") & ((table["theta_a"] == 90.0) | (table["theta_b"] == 90.0))]
    assert ninety[ninety["strength"] == 1.0]["reject"].all()
    # Where nothing was planted the difference is noise, whatever a test at 0.05 makes of it.
    assert (ninety[ninety["strength"] == 0.25]["meandiff"].abs() < 0.05).all()


def test_tukey_table_of_a_sweep_at_one_angle_says_once_that_there_is_nothing_to_compare() -> None:
    with pytest.raises(PosthocError, match="1 θ value"):
        tukey_table(_strength_cube().isel(theta=[1]))


def test_tukey_table_refuses_a_sweep_with_too_many_angles() -> None:
    with pytest.raises(PosthocError, match="6 pairs per dataset"):
        tukey_table(_cube(), max_thetas=3)


def test_a_dense_grid_falls_into_equal_arcs_of_the_circle() -> None:
    thetas = np.arange(3600) * 0.1
    starts = angle_bins(thetas[1:], 12, thetas)  # the grid, not the values, sets the arcs
    assert set(starts) == set(np.arange(0.0, 360.0, 30.0))
    assert np.all((starts <= thetas[1:]) & (thetas[1:] < starts + 30))
    assert list(angle_bins(np.array([10.0, 19.0, 20.0, 40.0]), 2, np.array([10.0, 20.0, 30.0, 40.0]))) == [10.0, 10.0, 10.0, 30.0]


def test_tukey_of_a_dense_grid_compares_arcs_of_seed_means() -> None:
    cube = synthetic_cube(datasets=1, thetas=72, seeds=3, images=2)
    table = tukey_table(cube, metrics=["final_loss"], bins=12)
    assert len(table) == 12 * 11 // 2
    arcs = cell_means(cube, "final_loss").assign(arc=lambda f: (f["theta"] // 30) * 30)
    means = arcs.groupby(["seed", "arc"])["value"].mean().groupby("arc").mean()
    first = table.iloc[0]
    assert (first["theta_a"], first["theta_b"]) == (0.0, 30.0)
    assert first["meandiff"] == pytest.approx(means[30.0] - means[0.0], rel=1e-5)  # float32 cell means


def test_a_dense_grid_without_bins_is_still_refused() -> None:
    with pytest.raises(PosthocError, match="72 θ values"):
        tukey_table(synthetic_cube(datasets=1, thetas=72, seeds=2, images=2))
