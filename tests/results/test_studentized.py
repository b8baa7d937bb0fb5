"""The studentized range distribution against scipy's adaptive integration, and exactly where k = 2."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats

from benchsuite.analysis.studentized import studentized_range_isf, studentized_range_sf

DFS = (1, 2, 3, 5, 12, 30, 100, 1000)


def test_the_survival_function_agrees_with_scipy_over_k_2_to_36() -> None:
    # Up to the 0.001 point, past which a p-value is below the tolerance anyway (scipy's ppf takes seconds).
    for k, df in zip(range(2, 37), itertools.cycle(DFS), strict=False):
        q = np.linspace(0.05, studentized_range_isf(0.001, k, df), 6)
        mine = studentized_range_sf(q, k, df)
        np.testing.assert_allclose(mine, stats.studentized_range.sf(q, k, df), rtol=0, atol=1e-9, err_msg=f"k={k}, df={df}")


@pytest.mark.parametrize("k", [3, 12, 36])
def test_the_survival_function_agrees_with_scipy_at_every_df(k: int) -> None:
    q = np.array([0.3, 1.0, 3.0, 5.0, 8.0, 15.0])
    for df in DFS:
        mine = studentized_range_sf(q, k, df)
        np.testing.assert_allclose(mine, stats.studentized_range.sf(q, k, df), rtol=0, atol=1e-9, err_msg=f"df={df}")


def test_the_default_suites_family_agrees_with_scipy() -> None:
    q = np.linspace(0.0, 12.0, 49)  # 12 angles, 2 seeds: df = 12
    np.testing.assert_allclose(studentized_range_sf(q, 12, 12), stats.studentized_range.sf(q, 12, 12), rtol=0, atol=1e-9)


@pytest.mark.parametrize("df", DFS)
def test_small_p_values_keep_their_relative_accuracy(df: int) -> None:
    # With two groups Q/√2 is |t| with df degrees of freedom: an exact oracle far into the tail,
    # where scipy's 1 - CDF is all rounding.
    q = np.linspace(0.01, 60.0, 600)
    exact = 2.0 * stats.t.sf(q / np.sqrt(2.0), df)
    shown = exact > 1e-100
    np.testing.assert_allclose(studentized_range_sf(q, 2, df)[shown], exact[shown], rtol=1e-12)


@pytest.mark.parametrize("df", [1e4, 1e5, 1e6])
def test_a_large_df_keeps_the_absolute_accuracy(df: float) -> None:
    # S is nearly 1 there, its density a narrow spike; scipy switches to the df = ∞ limit at 1e5
    # (1.7e-5 off at k = 12), so the oracle is the exact k = 2 tail again.
    q = np.linspace(0.01, 20.0, 200)
    np.testing.assert_allclose(studentized_range_sf(q, 2, df), 2.0 * stats.t.sf(q / np.sqrt(2.0), df), rtol=0, atol=1e-9)


@pytest.mark.parametrize(("alpha", "k", "df"), [(0.05, 12, 12), (0.05, 2, 1), (0.01, 36, 1000), (0.1, 5, 3)])
def test_the_critical_value_is_scipys_quantile(alpha: float, k: int, df: int) -> None:
    critical = studentized_range_isf(alpha, k, df)
    assert critical == pytest.approx(stats.studentized_range.ppf(1 - alpha, k, df), rel=1e-9)
    assert studentized_range_sf(critical, k, df) == pytest.approx(alpha, rel=1e-10)


def test_edges_are_scipys() -> None:
    q = np.array([[0.0, -1.0], [np.inf, np.nan]])
    np.testing.assert_array_equal(studentized_range_sf(q, 4, 10), [[1.0, 1.0], [0.0, np.nan]])


@pytest.mark.parametrize(("k", "df"), [(1, 10), (4, 0.5), (4, 2.5), (4, np.inf)])
def test_a_degenerate_distribution_or_a_fractional_df_is_refused(k: int, df: float) -> None:
    with pytest.raises(ValueError, match="k >= 2 groups and a whole df >= 1"):
        studentized_range_sf(1.0, k, df)
