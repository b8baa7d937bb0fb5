"""The permutation test of whole θ-curves between datasets: its statistic, its p-value and planted answers."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from statsmodels.stats.anova import anova_lm

from benchsuite.analysis.functional import CURVE_TEST_COLUMNS, curve_test_table, functional_f, permutation_test
from benchsuite.results.synthetic import synthetic_cube

THETAS = np.arange(0.0, 360.0, 15.0)


def _curves(shapes: list[int], seeds: int, noise: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``seeds`` noisy curves 0.5 + 0.1 cos(kθ) per dataset (k = 0: flat), and their dataset labels."""
    rng = np.random.default_rng(seed)
    curves, labels = [], []
    for index, k in enumerate(shapes):
        for _ in range(seeds):
            curves.append(0.5 + 0.1 * np.cos(np.deg2rad(k * THETAS)) + rng.normal(0, noise, len(THETAS)))
            labels.append(f"set{index}")
    return np.array(curves), np.array(labels)


def test_the_statistic_is_the_ratio_of_statsmodels_between_and_within_sums_of_squares() -> None:
    curves, labels = _curves([4, 0, 2], seeds=3)
    frame = pd.DataFrame(
        [(label, t, v) for curve, label in zip(curves, labels, strict=True) for t, v in zip(THETAS, curve, strict=True)],
        columns=["dataset", "theta", "value"],
    )
    table = anova_lm(smf.ols("value ~ C(theta) * C(dataset)", frame).fit())
    between = table.loc["C(dataset)", "sum_sq"] + table.loc["C(theta):C(dataset)", "sum_sq"]
    k, n, n_theta = 3, len(curves), len(THETAS)
    expected = (between / ((k - 1) * n_theta)) / (table.loc["Residual", "sum_sq"] / ((n - k) * n_theta))
    assert functional_f(curves, labels) == pytest.approx(expected, rel=1e-9)


def test_the_p_value_approaches_the_exact_one_over_every_relabelling() -> None:
    curves, labels = _curves([2, 0], seeds=3, noise=0.15, seed=4)
    observed = functional_f(curves, labels)
    relabellings = [np.array(perm) for perm in set(itertools.permutations(labels))]
    exact = np.mean([functional_f(curves, perm) >= observed * (1 - 1e-12) for perm in relabellings])
    statistic, p = permutation_test(curves, labels, n_permutations=20_000)
    assert statistic == pytest.approx(observed)
    assert p == pytest.approx(exact, abs=0.01)


def test_a_cos_4_theta_dataset_differs_from_a_flat_one() -> None:
    curves, labels = _curves([4, 0], seeds=5)
    assert permutation_test(curves, labels)[1] < 0.05


def test_two_datasets_from_one_generator_differ_only_as_often_as_the_level_allows() -> None:
    p = np.array([permutation_test(*_curves([4, 4], seeds=5, seed=seed), n_permutations=199)[1] for seed in range(40)])
    assert np.mean(p < 0.05) <= 0.15  # 5% expected: 2 of 40
    assert 0.35 < p.mean() < 0.65  # uniform under the null


def test_the_p_value_is_the_same_on_every_call() -> None:
    curves, labels = _curves([4, 0], seeds=3)
    assert permutation_test(curves, labels) == permutation_test(curves, labels)


def test_the_table_has_a_row_per_combination_of_the_other_factors() -> None:
    cube = synthetic_cube(datasets=2, thetas=24, seeds=4, encoders=2, images=2)
    table = curve_test_table(cube, metrics=["auroc", "final_loss"])
    assert list(table.columns) == CURVE_TEST_COLUMNS
    assert list(zip(table["metric"], table["encoder"], strict=True)) == [
        ("auroc", "encoder0"), ("auroc", "encoder1"), ("final_loss", "encoder0"), ("final_loss", "encoder1"),
    ]  # fmt: skip
    assert list(table["n_theta"]) == [23, 23, 24, 24]  # saliency has no value at θ = 0
    assert (table["n_curves"] == 8).all() and (table["p"] < 0.05).all()


def test_a_combination_without_replicates_is_skipped_with_the_reason() -> None:
    cube = synthetic_cube(datasets=2, thetas=12, seeds=1, images=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = curve_test_table(cube, metrics=["auroc"])
    assert table.empty
    assert any("2 curves for 2 datasets leave no replicate" in str(w.message) for w in caught)
