"""The "shortcut" covariate: does gradient-orientation self-similarity under R_θ predict a metric?

The shortcut hypothesis says a network could match ``x`` with ``R_θ x`` by their distributions of
gradient orientations alone, without learning what the images show. The hypothesis then
predicts that what matters at θ is how similar a dataset's orientation histogram is to itself
rotated by θ, its circular autocorrelation::

    c(θ) = Σ_b h_b h_{b + θ/Δ} / Σ_b h_b²

over the histogram's bins b of width Δ (indices modulo the bin count). c(0) = 1; c is 1 at
every θ for a perfectly isotropic dataset and peaks at 90°, 180°, 270° for axis-aligned
structure. At a θ that is not a multiple of Δ, c is interpolated linearly between the two
neighbouring whole-bin shifts.

The test asks whether c(θ) explains the metric beyond the dataset's own level: an OLS of the
cell means (seeds as replicates) on ``C(dataset, Sum) + autocorr`` against the same model
without ``autocorr``, compared by the F-test of nested models. The method, the encoder and
each swept parameter enter both models as main effects when the suite varies them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
import xarray as xr
from statsmodels.stats.anova import anova_lm

from benchsuite.analysis.anova import cell_means, placeholders
from benchsuite.analysis.periodicity import SERIES_KEYS, series_keys
from benchsuite.results.cube import DATASET, ORIENTATION_HIST, THETA, metric_names
from benchsuite.results.errors import BenchsuiteError

AUTOCORR_COLUMNS = [DATASET, THETA, "autocorr"]
COVARIATE_COLUMNS = [
    "metric", "coef", "ci_low", "ci_high", "F", "df_num", "df_denom", "p",
    "r2_without", "r2_with", "delta_r2", "n_obs",
]  # fmt: skip


class CovariateError(BenchsuiteError, ValueError):
    """The cube cannot support the covariate analysis; the message says why."""


def circular_autocorrelation(histogram: np.ndarray, thetas: Sequence[float]) -> np.ndarray:
    """c(θ) of an orientation histogram whose B bins evenly cover 360°, at each of ``thetas`` (degrees).

    Whole-bin shifts are exact; shifts in between are interpolated linearly, and θ is taken
    modulo 360°. Raises :class:`CovariateError` for a histogram without mass.
    """
    h = np.asarray(histogram, dtype=float)
    energy = float(np.sum(h**2))
    if not energy > 0:
        raise CovariateError("the orientation histogram has no mass (or is NaN).")
    bins = len(h)
    by_shift = np.array([np.dot(h, np.roll(h, -shift)) for shift in range(bins)]) / energy
    shifts = np.mod(np.asarray(thetas, dtype=float), 360.0) * bins / 360.0
    # Closing the circle (shift B equals shift 0) lets np.interp cover the last bin gap.
    return np.interp(shifts, np.arange(bins + 1), np.append(by_shift, by_shift[0]))


def autocorrelation_table(cube: xr.Dataset) -> pd.DataFrame:
    """c(θ) of each dataset's ``orientation_hist`` at each θ of the suite.

    Columns: ``dataset, theta, autocorr``. Raises :class:`CovariateError` when the cube has no
    orientation histogram; a dataset whose histogram is empty is left out with a warning.
    """
    if ORIENTATION_HIST not in cube.data_vars:
        raise CovariateError(
            f"the cube has no {ORIENTATION_HIST!r} variable, so the orientation covariate cannot be "
            "computed; it is written by benchsuite runs that record dataset covariates."
        )
    thetas = cube[THETA].values.astype(float)
    rows = []
    for dataset in cube[DATASET].values:
        histogram = cube[ORIENTATION_HIST].sel({DATASET: dataset}).values
        try:
            autocorr = circular_autocorrelation(histogram, thetas)
        except CovariateError as error:
            warnings.warn(f"orientation autocorrelation of dataset {str(dataset)!r} skipped: {error}", stacklevel=2)
            continue
        rows += [{DATASET: str(dataset), THETA: t, "autocorr": c} for t, c in zip(thetas, autocorr, strict=True)]
    return pd.DataFrame(rows, columns=AUTOCORR_COLUMNS)


def covariate_test(frame: pd.DataFrame, controls: Sequence[str] = SERIES_KEYS) -> dict[str, float]:
    """Whether ``autocorr`` predicts ``value`` beyond the controls in ``frame``.

    ``frame`` holds ``value``, ``autocorr`` and the columns among ``controls``, the main effects
    both models hold (a cube's :func:`~benchsuite.analysis.periodicity.series_keys`: dataset,
    method, encoder, swept parameters); only those with more than one level enter. Returns the
    keys of :data:`COVARIATE_COLUMNS` but ``metric``: the autocorr coefficient with its 95%
    confidence interval, the nested-model F-test (``F, df_num, df_denom, p``), R² without and
    with autocorr and their difference, and the number of observations. Raises
    :class:`CovariateError` when autocorr does not vary within the controls' levels (then it is
    indistinguishable from them).
    """
    names = placeholders([c for c in controls if c in frame.columns and frame[c].nunique() > 1])
    data = frame[["value", "autocorr", *names.values()]].dropna().rename(columns={f: p for p, f in names.items()})
    # Categoricals, whose sorted categories are the levels patsy would find: patsy reads them by their
    # codes, where it checks an object column's labels one by one (35 s a metric at 921,600 cells).
    data = data.astype(dict.fromkeys(names, "category"))
    base = " + ".join(f"C({p}, Sum)" for p in names) or "1"
    without = smf.ols(f"value ~ {base}", data).fit()
    # Autocorr that the controls already explain would make the full model rank deficient.
    if np.ptp(smf.ols(f"autocorr ~ {base}", data).fit().resid) < 1e-9 * max(1.0, float(np.ptp(data["autocorr"]))):
        raise CovariateError(
            "the orientation autocorrelation does not vary within any dataset, so it cannot be "
            "told apart from the dataset effect."
        )
    with_autocorr = smf.ols(f"value ~ {base} + autocorr", data).fit()
    comparison = anova_lm(without, with_autocorr)
    low, high = with_autocorr.conf_int().loc["autocorr"]
    return {
        "coef": float(with_autocorr.params["autocorr"]),
        "ci_low": float(low),
        "ci_high": float(high),
        "F": float(comparison["F"].iloc[1]),
        "df_num": float(comparison["df_diff"].iloc[1]),
        "df_denom": float(comparison["df_resid"].iloc[1]),
        "p": float(comparison["Pr(>F)"].iloc[1]),
        "r2_without": float(without.rsquared),
        "r2_with": float(with_autocorr.rsquared),
        "delta_r2": float(with_autocorr.rsquared - without.rsquared),
        "n_obs": int(with_autocorr.nobs),
    }


def covariate_table(cube: xr.Dataset, metrics: Sequence[str] | None = None, autocorr: pd.DataFrame | None = None) -> pd.DataFrame:
    """:func:`covariate_test` of every metric's cell means against the orientation autocorrelation.

    ``metrics`` defaults to every variable with ``role="metric"``; ``autocorr`` to
    :func:`autocorrelation_table` of the cube. One row per metric with the columns of
    :data:`COVARIATE_COLUMNS`. A metric that cannot be tested is skipped with a warning naming
    it and the reason; a cube with a single θ cannot test any and raises :class:`CovariateError`.
    """
    if cube.sizes[THETA] < 2:
        # Said once here, rather than once per metric: a sweep of another parameter at one θ is a study of its own.
        raise CovariateError(
            "the cube has a single θ, so c(θ) is one number per dataset and cannot be told apart from the dataset effect."
        )
    autocorr = autocorrelation_table(cube) if autocorr is None else autocorr
    names = metric_names(cube) if metrics is None else list(metrics)
    rows = []
    for name in names:
        frame = cell_means(cube, name).merge(autocorr, on=[DATASET, THETA], how="inner")
        try:
            if frame.empty:
                raise CovariateError("every cell is NaN.")
            rows.append({"metric": name, **covariate_test(frame, series_keys(cube))})
        except CovariateError as error:
            warnings.warn(f"orientation covariate of metric {name!r} skipped: {error}", stacklevel=2)
    return pd.DataFrame(rows, columns=COVARIATE_COLUMNS)
